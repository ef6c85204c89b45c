"""Who may do what: users, the role tree, profiles, groups and sharing rules.

Only `crm.access` reads these to decide access; see ARCHITECTURE.md, "Permissions".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from crm.models.modules import Field, Module


class Role(models.Model):
    """A node of the role tree. `path` is materialised ("/1/4/9/") by the access services."""

    name = models.CharField(max_length=100, unique=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    path = models.CharField(max_length=500, db_index=True, editable=False, default="")
    # Through model: Django's implicit Role_profiles (which the stubs cannot name here).
    profiles: models.ManyToManyField[Profile, Any] = models.ManyToManyField(
        "Profile", related_name="roles", blank=True
    )

    class Meta:
        ordering = ["path"]

    def __str__(self) -> str:
        return self.name

    @property
    def depth(self) -> int:
        return self.path.count("/") - 1


class User(AbstractUser):
    role = models.ForeignKey(
        Role, null=True, blank=True, on_delete=models.PROTECT, related_name="users"
    )

    # AbstractUser.Meta, restated: the stubs do not declare it, so it cannot be subclassed.
    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        abstract = False
        swappable = "AUTH_USER_MODEL"

    def __str__(self) -> str:
        return self.get_full_name() or self.username


class Profile(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    view_all = models.BooleanField(
        default=False, help_text="View every record of the modules this profile may view."
    )
    edit_all = models.BooleanField(
        default=False,
        help_text="View, edit and delete every record of the modules this profile allows.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModulePermission(models.Model):
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="module_perms")
    module = models.ForeignKey(Module, on_delete=models.CASCADE, related_name="+")
    visible = models.BooleanField(default=True)
    # "can_" keeps "delete" from shadowing Model.delete (the admin deletes inline rows with it).
    can_view = models.BooleanField("view", default=True)
    can_create = models.BooleanField("create", default=True)
    can_edit = models.BooleanField("edit", default=True)
    can_delete = models.BooleanField("delete", default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["profile", "module"], name="module_perm_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.profile} / {self.module}"

    def allows(self, action: str) -> bool:
        return bool(getattr(self, f"can_{action}"))

    @staticmethod
    def flags(actions: Iterable[str]) -> dict[str, bool]:
        """Field values granting exactly `actions` (view, create, edit, delete)."""
        wanted = set(actions)
        return {f"can_{a}": a in wanted for a in ("view", "create", "edit", "delete")}


class FieldPermission(models.Model):
    """A field hidden or read-only for a profile; without a row a field is visible and writable."""

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="field_perms")
    field = models.ForeignKey(Field, on_delete=models.CASCADE, related_name="+")
    visible = models.BooleanField(default=True)
    read_only = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["profile", "field"], name="field_perm_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.profile} / {self.field}"


class Group(models.Model):
    """Owns records; its members (and members of groups nested in it) act as owners."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(User, related_name="crm_groups", blank=True)
    subgroups = models.ManyToManyField(
        "self", symmetrical=False, related_name="parent_groups", blank=True
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "CRM group"

    def __str__(self) -> str:
        return self.name


class Party(models.TextChoices):
    ROLE = "role", "Role"
    ROLE_AND_SUBORDINATES = "role_and_subordinates", "Role and subordinates"
    GROUP = "group", "Group"


class SharingRule(models.Model):
    """Records of a module owned by the source are readable (or writable) by the target."""

    class Access(models.TextChoices):
        READ = "read", "Read only"
        READ_WRITE = "read_write", "Read and write"

    module = models.ForeignKey(Module, on_delete=models.CASCADE, related_name="sharing_rules")
    source_kind = models.CharField(max_length=32, choices=Party.choices)
    source_role = models.ForeignKey(
        Role, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    source_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    target_kind = models.CharField(max_length=32, choices=Party.choices)
    target_role = models.ForeignKey(
        Role, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    target_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    access = models.CharField(max_length=16, choices=Access.choices, default=Access.READ)

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="sharing_source_set",
                condition=(Q(source_kind="group", source_group__isnull=False, source_role=None))
                | (~Q(source_kind="group") & Q(source_role__isnull=False, source_group=None)),
            ),
            models.CheckConstraint(
                name="sharing_target_set",
                condition=(Q(target_kind="group", target_group__isnull=False, target_role=None))
                | (~Q(target_kind="group") & Q(target_role__isnull=False, target_group=None)),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.module}: {self.source} → {self.target} ({self.get_access_display()})"

    @property
    def source(self) -> str:
        return _party(self.source_kind, self.source_role, self.source_group)

    @property
    def target(self) -> str:
        return _party(self.target_kind, self.target_role, self.target_group)


def _party(kind: str, role: Role | None, group: Group | None) -> str:
    if kind == Party.GROUP:
        return f"group {group}"
    suffix = " and subordinates" if kind == Party.ROLE_AND_SUBORDINATES else ""
    return f"role {role}{suffix}"
