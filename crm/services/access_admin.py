"""Changes to the role tree. Privilege caches are retired by `crm.access` on every change."""

from __future__ import annotations

from django.db import transaction

from crm.exceptions import Invalid
from crm.models import Role


@transaction.atomic
def save_role(*, role: Role) -> Role:
    """Create or move a role, keeping the materialised paths of it and its subtree right."""
    old_path = role.path
    if role.pk and role.parent_id:
        parent = Role.objects.get(pk=role.parent_id)
        if parent.path.startswith(old_path):
            raise Invalid(fields={"parent": "A role cannot report to itself or its subordinates."})
    role.save()
    parent_path = Role.objects.get(pk=role.parent_id).path if role.parent_id else "/"
    new_path = f"{parent_path}{role.pk}/"
    if new_path != old_path:
        Role.objects.filter(pk=role.pk).update(path=new_path)
        role.path = new_path
        if old_path:
            for sub in Role.objects.filter(path__startswith=old_path).exclude(pk=role.pk):
                sub.path = new_path + sub.path[len(old_path) :]
                sub.save(update_fields=["path"])
    return role


@transaction.atomic
def create_role(*, name: str, parent: Role | None = None) -> Role:
    return save_role(role=Role(name=name, parent=parent))
