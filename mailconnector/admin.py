"""Administration of the add-in's session policy and sessions (superusers only).

Sessions are read-only here: an administrator can end them (through `auth.end_sessions`), not
edit or delete them, so the list stays an honest record of who was logged in from where.
Tokens never appear: only their digests are stored, and those are of no use to anyone.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from mailconnector import auth
from mailconnector.models import AddinSession, ConnectorPolicy


class _SuperuserOnly:
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    has_change_permission = has_view_permission


@admin.register(ConnectorPolicy)
class ConnectorPolicyAdmin(_SuperuserOnly, admin.ModelAdmin):
    list_display = ("__str__", "idle_minutes", "absolute_hours", "access_token_seconds")
    fields = ("idle_minutes", "absolute_hours", "access_token_seconds")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # One policy: it can be created once (until then the defaults apply), never removed.
        return self.has_module_permission(request) and not ConnectorPolicy.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: ConnectorPolicy, form: Any, change: bool
    ) -> None:
        obj.pk = ConnectorPolicy.SINGLETON_PK
        super().save_model(request, obj, form, change)


@admin.register(AddinSession)
class AddinSessionAdmin(_SuperuserOnly, admin.ModelAdmin):
    list_display = (
        "user",
        "client",
        "ip",
        "created_at",
        "last_used_at",
        "revoked_at",
        "revoked_reason",
    )
    list_filter = ("revoked_reason", "created_at")
    search_fields = ("user__username", "user__email", "client", "ip")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    actions = ["end_selected"]
    readonly_fields = (
        "user",
        "client",
        "ip",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoked_reason",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="End the selected sessions")
    def end_selected(self, request: HttpRequest, queryset: QuerySet[AddinSession]) -> None:
        count = auth.end_sessions(sessions=queryset, reason=AddinSession.EndReason.ENDED_BY_ADMIN)
        self.message_user(request, f"{count} sessions ended.", messages.SUCCESS)
