"""Reading records for pages and APIs: every read starts from `crm.access.records()`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import Q, QuerySet

from crm import access, generations
from crm.exceptions import NotFound
from crm.models import ChangeLog, Comment, Group, Module, Record, User
from crm.models.modules import FieldType

SORTS = {
    "modified": ("-modified_at", "-id"),
    "created": ("-created_at", "-id"),
    "label": ("label", "id"),
    "number": ("id",),
}


def visible_module(user: access.Actor, name: str) -> Module:
    module = _visible_modules_by_name(user).get(name)
    if module is None:
        raise NotFound("No such module.")
    return copy.copy(module)  # the kept one is shared by the process's requests


def _visible_modules_by_name(user: access.Actor) -> dict[str, Module]:
    """The user's visible modules by name, kept by the process under the privileges'
    generation (which any change to modules, roles or profiles bumps): asked on every page
    and API call about a record."""
    key = (
        f"crm:visible-modules:{access.generation()}:{getattr(user, 'pk', None)}:"
        f"{int(bool(getattr(user, 'is_active', False)))}"
        f"{int(bool(getattr(user, 'is_superuser', False)))}"
    )
    return generations.kept(
        f"crm:visible-modules:{getattr(user, 'pk', None)}",
        key,
        # Without the counter, which moves at every record created: a copy saved later must
        # not write an old value back (Django saves only the fields it loaded).
        lambda: {m.name: m for m in access.visible_modules(user).defer("next_number")},
        settings.CRM_PRIVILEGES_CACHE_SECONDS,
    )


def search(
    user: access.Actor, module: Module, q: str = "", *, action: access.Action = "view"
) -> QuerySet[Record]:
    """Visible records matching `q` on label, number or an email address."""
    qs = access.records(user, module, action)
    q = q.strip()
    if q:
        emails = access.visible_email_fields(user, [module])
        qs = qs.filter(
            Q(label__icontains=q)
            | Q(number__iexact=q)
            | Q(addresses__address__istartswith=q.lower(), addresses__field_id__in=emails)
        ).distinct()
    return qs


def record_page(
    user: access.Actor,
    module: Module,
    *,
    q: str = "",
    sort: str = "modified",
    page: Any = 1,
    per_page: int = 50,
) -> Page:
    order = sort.lstrip("-")
    fields = SORTS.get(order, SORTS["modified"])
    if sort.startswith("-"):
        fields = tuple(f[1:] if f.startswith("-") else f"-{f}" for f in fields)
    qs = search(user, module, q).order_by(*fields).select_related("owner_user", "owner_group")
    return Paginator(qs, per_page).get_page(page)


@dataclass(frozen=True)
class ShownField:
    name: str
    label: str
    type: str
    value: Any
    display: str
    read_only: bool
    link: Record | None = None


def shown_fields(user: access.Actor, record: Record) -> list[ShownField]:
    """The record's values for the fields this user may see, references resolved when visible."""
    result = []
    for fa in access.visible_fields(user, record.module):
        f = fa.field
        value = record.data.get(f.name)
        link = None
        display = "" if value is None else str(value)
        if f.type == FieldType.REFERENCE and value:
            link = _visible_reference(user, value)
            display = str(link) if link else "(a record you cannot see)"
        elif f.type == FieldType.BOOLEAN and value is not None:
            display = "Yes" if value else "No"
        result.append(ShownField(f.name, f.label, f.type, value, display, fa.read_only, link))
    return result


def _visible_reference(user: access.Actor, pk: Any) -> Record | None:
    target = Record.objects.filter(pk=pk, deleted_at=None).only("module_id").first()
    if target is None:
        return None
    return access.records(user, target.module_id).select_related("module").filter(pk=pk).first()


def reference_choices(user: access.Actor, target: Module | None, limit: int = 200) -> list[Record]:
    modules = [target] if target else list(access.visible_modules(user))
    choices: list[Record] = []
    for m in modules:
        if m is not None:
            qs = access.records(user, m).select_related("module").order_by("-modified_at")
            choices.extend(qs[:limit])
    return choices


def history(user: access.Actor, record: Record) -> list[dict[str, Any]]:
    """The record's ChangeLog, without values of fields hidden from this user."""
    access.require(user, "view", record)
    shown = {fa.field.name: fa.field.label for fa in access.visible_fields(user, record.module)}
    shown["owner"] = "Owner"
    shown["comment"] = "Comment"
    rows = []
    for entry in ChangeLog.objects.filter(record=record).select_related("actor")[:200]:
        changes = [
            {"field": shown[name], "old": old, "new": new}
            for name, (old, new) in sorted(entry.changes.items())
            if name in shown and isinstance(entry.changes[name], list)
        ]
        rows.append({"entry": entry, "changes": changes})
    return rows


def comments(user: access.Actor, record: Record) -> QuerySet[Comment]:
    access.require(user, "view", record)
    return Comment.objects.filter(record=record).select_related("author")


def recycle_bin(user: access.Actor) -> list[tuple[Module, list[Record]]]:
    result = []
    for module in access.visible_modules(user):
        deleted = access.records(user, module, in_recycle_bin=True).order_by("-deleted_at")[:200]
        rows = list(deleted.select_related("deleted_by", "module"))
        if rows:
            result.append((module, rows))
    return result


def deleted_record(user: access.Actor, pk: int) -> Record:
    record = Record.objects.filter(pk=pk, deleted_at__isnull=False).select_related("module").first()
    if record is None or not access.can(user, "restore", record):
        raise NotFound("No such record in the recycle bin.")
    return record


def owner_choices() -> tuple[list[User], list[Group]]:
    users = list(User.objects.filter(is_active=True).order_by("first_name", "username"))
    return users, list(Group.objects.order_by("name"))


def recent_changes(user: User, limit: int = 10) -> list[ChangeLog]:
    """The user's own latest changes, for the home page."""
    rows = (
        ChangeLog.objects.filter(actor=user, record__deleted_at=None)
        .select_related("record", "module")
        .order_by("-at")[: limit * 5]
    )
    return [c for c in rows if c.record and access.can(user, "view", c.record)][:limit]
