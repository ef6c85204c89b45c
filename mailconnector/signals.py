"""Ending add-in sessions when the credentials behind them change.

A password change (any path: the admin, a reset, `changepassword`, a hasher upgrade) or a
deactivation ends every add-in session of the user at once. The user row is compared with
what the database held before the save; a bulk `update()` bypasses signals, which is why
`auth.authenticate_access_token` also refuses an inactive user's tokens on every call.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from mailconnector import auth
from mailconnector.models import AddinSession, ConnectorPolicy

_WATCHED = {"password", "is_active"}
_BEFORE = "_mailconnector_credentials_before"


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="mailconnector_user_pre_save")
def remember_credentials(
    sender: Any, instance: Any, raw: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    if raw or instance.pk is None:
        return
    # last_login and other partial saves cost no query.
    if update_fields is not None and not _WATCHED & set(update_fields):
        return
    before = sender._default_manager.filter(pk=instance.pk).values("password", "is_active").first()
    setattr(instance, _BEFORE, before)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="mailconnector_user_post_save")
def end_sessions_on_credential_change(
    sender: Any, instance: Any, created: bool = False, raw: bool = False, **kwargs: Any
) -> None:
    before = instance.__dict__.pop(_BEFORE, None)
    if raw or created or before is None:
        return
    if before["is_active"] and not instance.is_active:
        auth.revoke_all(user=instance, reason=AddinSession.EndReason.DEACTIVATED)
    elif before["password"] != instance.password:
        auth.revoke_all(user=instance, reason=AddinSession.EndReason.PASSWORD_CHANGED)


@receiver(post_save, sender=ConnectorPolicy, dispatch_uid="mailconnector_policy_saved")
def policy_saved(**kwargs: Any) -> None:
    auth.forget_policy()
