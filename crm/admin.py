"""Administration of people, access and modules (Django admin, superusers only).

Saving roles goes through the access service so the role tree's paths stay right; every other
change here retires cached privileges through crm.access's signal handlers.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group as AuthGroup
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from crm.exceptions import Invalid
from crm.models import (
    ChangeLog,
    EmailTemplate,
    Field,
    FieldPermission,
    Group,
    Module,
    ModulePermission,
    OutgoingMailSettings,
    Profile,
    Role,
    SharingRule,
    User,
)
from crm.services import access_admin

admin.site.site_header = "CRM administration"
admin.site.site_title = "CRM administration"
# The CRM's own groups own records; Django's permission groups are not used.
admin.site.unregister(AuthGroup)


class SuperuserOnly:
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    has_add_permission = has_view_permission  # type: ignore[assignment]
    has_change_permission = has_view_permission
    has_delete_permission = has_view_permission


@admin.register(User)
class UserAdmin(SuperuserOnly, BaseUserAdmin):
    list_display = ("username", "first_name", "last_name", "email", "role", "is_active")
    list_filter = ("is_active", "is_superuser", "role")
    fieldsets = (
        *(BaseUserAdmin.fieldsets or ())[:2],
        ("CRM access", {"fields": ("role", "is_active", "is_staff", "is_superuser")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"fields": ("username", "email", "role", "password1", "password2")}),)


@admin.register(Role)
class RoleAdmin(SuperuserOnly, admin.ModelAdmin):
    list_display = ("indented_name", "parent")
    filter_horizontal = ("profiles",)
    fields = ("name", "parent", "profiles")

    @admin.display(description="Role")
    def indented_name(self, role: Role) -> str:
        return "— " * (role.depth - 1) + role.name

    def save_model(self, request: HttpRequest, obj: Role, form: Any, change: bool) -> None:
        try:
            access_admin.save_role(role=obj)
        except Invalid as exc:
            raise ValidationError(exc.detail) from exc


class ModulePermissionInline(admin.TabularInline):
    model = ModulePermission
    extra = 0


class FieldPermissionInline(admin.TabularInline):
    model = FieldPermission
    extra = 0
    autocomplete_fields = ("field",)


@admin.register(Profile)
class ProfileAdmin(SuperuserOnly, admin.ModelAdmin):
    list_display = ("name", "view_all", "edit_all")
    inlines = (ModulePermissionInline, FieldPermissionInline)


@admin.register(Group)
class GroupAdmin(SuperuserOnly, admin.ModelAdmin):
    list_display = ("name", "description")
    filter_horizontal = ("members", "subgroups")


class FieldInline(admin.TabularInline):
    model = Field
    fk_name = "module"
    extra = 1
    fields = (
        "name",
        "label",
        "type",
        "required",
        "is_label",
        "position",
        "choices",
        "reference_module",
    )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # values stored under a field would be orphaned; hide it by profile instead


@admin.register(Module)
class ModuleAdmin(SuperuserOnly, admin.ModelAdmin):
    list_display = (
        "plural",
        "name",
        "number_prefix",
        "default_sharing",
        "is_custom",
        "accepts_messages",
    )
    list_editable = ("default_sharing",)
    inlines = (FieldInline,)
    fields = (
        "name",
        "singular",
        "plural",
        "number_prefix",
        "icon",
        "position",
        "default_sharing",
        "accepts_messages",
        "accepts_documents",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Module | None = None) -> tuple:
        # A module's name and prefix are in URLs and record numbers: fixed once created.
        return ("name", "number_prefix") if obj else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Field)
class FieldAdmin(SuperuserOnly, admin.ModelAdmin):
    list_display = ("label", "name", "module", "type", "required")
    list_filter = ("module", "type")
    search_fields = ("name", "label", "module__name")


@admin.register(SharingRule)
class SharingRuleAdmin(SuperuserOnly, admin.ModelAdmin):
    list_display = ("module", "source", "target", "access")
    list_filter = ("module", "access")


@admin.register(ChangeLog)
class ChangeLogAdmin(SuperuserOnly, admin.ModelAdmin):
    list_display = ("at", "record_number", "module", "action", "actor")
    list_filter = ("action", "module")
    search_fields = ("record_number",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(EmailTemplate)
class EmailTemplateAdmin(SuperuserOnly, admin.ModelAdmin):
    """Templates offered on the compose page; merge fields are explained on the body field and
    rendered by crm.services.mail_templates (never by the Django template engine)."""

    list_display = ("name", "module", "subject", "is_active", "modified_at")
    list_filter = ("module", "is_active")
    search_fields = ("name", "subject")
    fields = ("name", "module", "is_active", "subject", "body_html")


@admin.register(OutgoingMailSettings)
class OutgoingMailSettingsAdmin(SuperuserOnly, admin.ModelAdmin):
    """Shown for reference only: the settings are changed on the "Outgoing mail" page, which
    checks them and encrypts the password. The password (encrypted) is never shown here."""

    exclude = ("secret",)
    list_display = ("host", "port", "security", "from_central", "open_tracking")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
