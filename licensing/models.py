"""Activated license keys (with their history) and the users enabled for the connector.

Rows are written only by `licensing.services`; see ARCHITECTURE.md, "Licensing".
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from licensing import keys


class LicenseQuerySet(models.QuerySet["License"]):
    def current(self) -> LicenseQuerySet:
        return self.filter(is_current=True)


class License(models.Model):
    """One activated key. A new key replaces the current one; replaced rows stay as history.

    `key` is the text as verified (whitespace removed); the other fields are its payload,
    decoded once at activation for display. The gate re-verifies `key` itself, so editing
    these columns cannot grant anything.
    """

    key = models.TextField()
    license_id = models.CharField(max_length=keys.MAX_LICENSE_ID)
    installation = models.CharField(max_length=keys.MAX_INSTALLATION)
    crm_url = models.CharField("CRM URL", max_length=keys.MAX_URL)
    users = models.PositiveIntegerField()
    features = models.JSONField(default=list)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    activated_at = models.DateTimeField()
    # True on exactly one row at most; replaced_at is set when it stops being current.
    is_current = models.BooleanField(default=True)
    replaced_at = models.DateTimeField(null=True, blank=True)
    # Usernames disabled because this key allowed fewer users than were enabled (a renewal).
    users_disabled = models.JSONField(default=list, blank=True)

    objects = LicenseQuerySet.as_manager()

    class Meta:
        ordering = ["-activated_at", "-pk"]
        constraints = [
            # Two administrators activating at once: one wins, the other gets an error.
            models.UniqueConstraint(
                fields=["is_current"], condition=Q(is_current=True), name="license_one_current"
            ),
            models.CheckConstraint(
                condition=Q(is_current=True, replaced_at__isnull=True)
                | Q(is_current=False, replaced_at__isnull=False),
                name="license_replaced_iff_not_current",
            ),
            models.CheckConstraint(condition=Q(users__gte=1), name="license_users_positive"),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=F("issued_at")),
                name="license_expires_after_issue",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.installation} ({self.license_id})"


class LicensedUser(models.Model):
    """A user the administrator enabled for the connector: the row is the seat.

    Seats outlive a key (a renewal keeps them). Only active users count against the key's
    `users`; a deactivated user's row stays, so reactivating him needs no new ticking, but
    the gate seats the earliest enabled first, so he can never push the total over the limit.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="connector_seat"
    )
    enabled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    enabled_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["enabled_at", "pk"]
        verbose_name = "licensed user"

    def __str__(self) -> str:
        return str(self.user)
