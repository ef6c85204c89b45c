"""The audit trail: who changed which record, when, field by field."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from crm.models.modules import Module
from crm.models.records import Record


class ChangeLog(models.Model):
    class Action(models.TextChoices):
        CREATE = "create", "Created"
        UPDATE = "update", "Updated"
        DELETE = "delete", "Moved to the recycle bin"
        RESTORE = "restore", "Restored"
        PURGE = "purge", "Purged"
        LINK = "link", "Linked"
        UNLINK = "unlink", "Unlinked"
        COMMENT = "comment", "Commented"

    # SET_NULL: the trail outlives a purged record; module and number say what it was.
    record = models.ForeignKey(  # indexed by changelog_by_record, which it leads
        Record, null=True, on_delete=models.SET_NULL, related_name="changes", db_index=False
    )
    module = models.ForeignKey(Module, on_delete=models.PROTECT, related_name="+")
    record_number = models.CharField(max_length=32)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField()
    action = models.CharField(max_length=16, choices=Action.choices)
    # {field name: [old, new]} for create/update; {"kind": ..., "id": ..., "label": ...} for links.
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["record", "-at"], name="changelog_by_record")]
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.record_number} {self.action} at {self.at:%Y-%m-%d %H:%M}"
