"""The add-in's sessions: a server-side row per login, tokens stored only as digests.

A token is 32 random bytes shown once to the add-in; the database keeps its SHA-256 digest
(`AddinToken.digest`), so a dump of the database holds nothing that authenticates. Every token
belongs to one `AddinSession`, and ending the session ends all of its tokens at once.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class ConnectorPolicy(models.Model):
    """The session policy for the add-in, set by an administrator. One row (pk=1) at most.

    Without a row the defaults apply; `mailconnector.auth.session_policy()` reads it.
    """

    SINGLETON_PK = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_PK, editable=False)
    idle_minutes = models.PositiveIntegerField(
        "idle timeout (minutes)",
        default=7 * 24 * 60,
        validators=[MinValueValidator(5), MaxValueValidator(90 * 24 * 60)],
        help_text="A session unused for this long ends. Default: 7 days.",
    )
    absolute_hours = models.PositiveIntegerField(
        "absolute lifetime (hours)",
        default=30 * 24,
        validators=[MinValueValidator(1), MaxValueValidator(365 * 24)],
        help_text=(
            "A session ends this long after its login, used or not. Default: 30 days. "
            "Shortening it applies to existing sessions at once; lengthening it only to new ones."
        ),
    )
    access_token_seconds = models.PositiveIntegerField(
        "access token lifetime (seconds)",
        default=15 * 60,
        validators=[MinValueValidator(60), MaxValueValidator(60 * 60)],
        help_text="How long an access token works before the add-in must refresh it.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "add-in session policy"
        verbose_name_plural = "add-in session policy"
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="connector_policy_singleton"),
        ]

    def __str__(self) -> str:
        return "Add-in session policy"


class AddinSession(models.Model):
    """One login of the add-in: what the user sees on his profile page and can end."""

    class EndReason(models.TextChoices):
        LOGOUT = "logout", "Logged out"
        ENDED_BY_USER = "ended_by_user", "Ended by the user"
        ENDED_BY_ADMIN = "ended_by_admin", "Ended by an administrator"
        PASSWORD_CHANGED = "password_changed", "Password changed"
        DEACTIVATED = "deactivated", "User deactivated"
        REFRESH_REUSE = "refresh_reuse", "A used refresh token came back (possible theft)"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="addin_sessions"
    )
    created_at = models.DateTimeField()
    last_used_at = models.DateTimeField()
    # Fixed at login from the policy then in force; a later, shorter policy cuts it further.
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, choices=EndReason.choices, blank=True)
    # The add-in's version and the host's user agent, as the add-in sent them at login.
    client = models.CharField(max_length=255, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        verbose_name = "add-in session"
        indexes = [
            models.Index(
                fields=["user", "-last_used_at"],
                condition=Q(revoked_at__isnull=True),
                name="addin_session_open_by_user",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} · {self.client or 'add-in'} · {self.created_at:%Y-%m-%d %H:%M}"


class AddinToken(models.Model):
    """An access or refresh token of a session, known only by its SHA-256 digest."""

    class Kind(models.TextChoices):
        ACCESS = "access", "Access"
        REFRESH = "refresh", "Refresh"

    session = models.ForeignKey(AddinSession, on_delete=models.CASCADE, related_name="tokens")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    # Refresh tokens are single use; a used one is kept so that its return is recognised.
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "add-in token"
        indexes = [models.Index(fields=["session", "kind"], name="addin_token_by_session")]

    def __str__(self) -> str:
        return f"{self.kind} token of session {self.session_id}"


class MfaChallenge(models.Model):
    """The step between a right password and a TOTP code: short-lived, single use, bound to
    the user, and dead after a few wrong codes."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveSmallIntegerField(default=0)

    class Meta:
        verbose_name = "MFA challenge"

    def __str__(self) -> str:
        return f"MFA challenge of {self.user} at {self.created_at:%Y-%m-%d %H:%M}"
