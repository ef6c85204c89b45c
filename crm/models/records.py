"""Records of any module, and the address index behind suggestions and look-ups."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from crm.models.access import Group
from crm.models.modules import Field, Module


class Record(models.Model):
    module = models.ForeignKey(Module, on_delete=models.PROTECT, related_name="records")
    number = models.CharField(max_length=32)
    label = models.CharField(max_length=255, blank=True)
    owner_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="owned_records",
    )
    owner_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.PROTECT, related_name="owned_records"
    )
    data = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    modified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    modified_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["module", "number"], name="record_unique_number"),
            models.CheckConstraint(
                name="record_one_owner",
                condition=Q(owner_user__isnull=False, owner_group=None)
                | Q(owner_user=None, owner_group__isnull=False),
            ),
        ]
        indexes = [
            # The list page: live records of a module, newest change first.
            models.Index(
                fields=["module", "-modified_at", "-id"],
                condition=Q(deleted_at=None),
                name="record_live_by_modified",
            ),
            models.Index(
                fields=["owner_user", "module", "-modified_at"],
                condition=Q(deleted_at=None),
                name="record_user_by_modified",
            ),
            models.Index(
                fields=["owner_group", "module", "-modified_at"],
                condition=Q(deleted_at=None),
                name="record_group_by_modified",
            ),
            models.Index(
                fields=["module", "-deleted_at"],
                condition=Q(deleted_at__isnull=False),
                name="record_recycle_bin",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.number} {self.label}".strip()

    @property
    def owner(self) -> models.Model:
        return self.owner_user or self.owner_group  # type: ignore[return-value]

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class RecordAddress(models.Model):
    """One email address of a record, lowercased, with its domain; kept in step on every save."""

    record = models.ForeignKey(  # indexed by record_address_unique, which it leads
        Record, on_delete=models.CASCADE, related_name="addresses", db_index=False
    )
    field = models.ForeignKey(Field, on_delete=models.CASCADE, related_name="+")
    address = models.CharField(max_length=254)
    domain = models.CharField(max_length=253)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["record", "field", "address"], name="record_address_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["address"], name="record_address_address"),
            models.Index(fields=["domain"], name="record_address_domain"),
        ]

    def __str__(self) -> str:
        return self.address


class RecordReference(models.Model):
    """One reference field's value as a row, so "contacts of this company" is an index scan."""

    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="references")
    field = models.ForeignKey(Field, on_delete=models.CASCADE, related_name="+")
    target = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="referenced_by")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["record", "field"], name="record_reference_unique"),
        ]
        indexes = [models.Index(fields=["target", "field"], name="record_reference_target")]

    def __str__(self) -> str:
        return f"{self.record_id}.{self.field_id} → {self.target_id}"
