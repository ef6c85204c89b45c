"""THE permission check. Nothing else in the product decides who may see or change a record.

The vtiger model (ARCHITECTURE.md, "Permissions"): a user sees records owned by himself, by
users in roles below his, and by groups he belongs to (nested groups included); per module an
organisation-wide default and sharing rules open more; profiles (unioned over the user's role)
grant module actions, global view-all / edit-all, and hide fields or make them read-only.

A user's privileges are computed once and cached. Any change to roles, profiles, groups,
sharing, modules, fields or users bumps a generation number, which retires every cached entry.

`records()` and `can()` answer from the same cached privileges: one SQL filter, one Python test.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q, QuerySet
from django.db.models.signals import m2m_changed, post_delete, post_save

from crm import generations, statements
from crm.exceptions import Forbidden, NotFound
from crm.models import (
    Field,
    FieldPermission,
    Group,
    Module,
    ModulePermission,
    Profile,
    Record,
    Role,
    SharingRule,
    User,
)
from crm.models.access import Party
from crm.models.modules import Sharing

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    Actor = User | AnonymousUser

Action = Literal["view", "create", "edit", "delete"]
ACTIONS: tuple[Action, ...] = ("view", "create", "edit", "delete")

# What each organisation-wide default opens to every user allowed the action by his profile.
DEFAULT_GRANTS: dict[str, frozenset[str]] = {
    Sharing.PRIVATE: frozenset(),
    Sharing.PUBLIC_READ: frozenset({"view"}),
    Sharing.PUBLIC_READ_WRITE: frozenset({"view", "edit"}),
    Sharing.PUBLIC_READ_WRITE_DELETE: frozenset({"view", "edit", "delete"}),
}
RULE_GRANTS: dict[str, tuple[str, ...]] = {
    SharingRule.Access.READ: ("view",),
    SharingRule.Access.READ_WRITE: ("view", "edit"),
}


@dataclass(frozen=True)
class Owners:
    """Owners whose records are reachable: users and groups."""

    users: frozenset[int] = frozenset()
    groups: frozenset[int] = frozenset()

    def __or__(self, other: Owners) -> Owners:
        return Owners(self.users | other.users, self.groups | other.groups)

    def holds(self, record: Record) -> bool:
        if record.owner_user_id is not None:
            return record.owner_user_id in self.users
        return record.owner_group_id in self.groups


@dataclass(frozen=True)
class ModuleGrant:
    actions: frozenset[str]
    default_sharing: str
    shared: dict[str, Owners] = field(default_factory=dict)  # action -> owners via rules
    hidden_fields: frozenset[str] = frozenset()
    read_only_fields: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Privileges:
    user_id: int | None
    superuser: bool = False
    view_all: bool = False
    edit_all: bool = False
    own: Owners = Owners()  # himself, his subordinates, his groups: full access
    modules: dict[int, ModuleGrant] = field(default_factory=dict)


NOBODY = Privileges(user_id=None)
ALL: Literal["all"] = "all"


# --- Public API ----------------------------------------------------------------------------


def visible_modules(user: Actor) -> QuerySet[Module]:
    """Modules the user may see and view, in menu order."""
    p = privileges(user)
    qs = Module.objects.all()
    if p.superuser:
        return qs
    ids = [mid for mid, g in p.modules.items() if "view" in g.actions]
    return qs.filter(pk__in=ids)


def module_actions(user: Actor, module: Module) -> frozenset[str]:
    p = privileges(user)
    if p.superuser:
        return frozenset(ACTIONS)
    grant = p.modules.get(module.pk)
    return grant.actions if grant else frozenset()


def records(
    user: Actor, module: Module | int, action: Action = "view", *, in_recycle_bin: bool = False
) -> QuerySet[Record]:
    """The module's records the user may act on: one SQL query, no per-row Python filtering.

    The recycle bin holds deleted records; there, the user sees those he could delete.
    """
    module_id = module if isinstance(module, int) else module.pk
    qs = Record.objects.filter(module_id=module_id, deleted_at__isnull=not in_recycle_bin)
    scope = _scope(privileges(user), module_id, "delete" if in_recycle_bin else action)
    if scope == ALL:
        return qs
    if not scope.users and not scope.groups:
        return qs.none()
    return qs.filter(Q(owner_user_id__in=scope.users) | Q(owner_group_id__in=scope.groups))


def can(user: Actor, action: Action | Literal["restore", "purge"], record: Record) -> bool:
    p = privileges(user)
    if action == "purge":
        return p.superuser
    if action == "restore":
        return record.is_deleted and _allows(_scope(p, record.module_id, "delete"), record)
    if action == "create":
        return can_create(user, record.module)
    return not record.is_deleted and _allows(_scope(p, record.module_id, action), record)


def can_create(user: Actor, module: Module) -> bool:
    return "create" in module_actions(user, module)


def require(user: Actor, action: Action | Literal["restore", "purge"], record: Record) -> None:
    """Raise unless the user may do `action`; a record he may not see is "not found"."""
    visible = can(user, "restore" if record.is_deleted else "view", record)
    if not visible:
        raise NotFound("No such record.")
    if not can(user, action, record):
        raise Forbidden(f"You may not {action} this record.", code=f"record_not_{action}able")


def require_create(user: Actor, module: Module) -> None:
    if not module_actions(user, module):
        raise NotFound("No such module.")
    if not can_create(user, module):
        raise Forbidden(f"You may not create {module.plural}.")


def get_record(user: Actor, module: Module | int, pk: int, action: Action = "view") -> Record:
    """Load one record for an action: NotFound if invisible or missing, Forbidden if only seen.

    Loaded by primary key and tested with `can`, the decision `records()` writes as SQL: the
    same answer, from a statement whose text does not grow with the owners the user sees (so
    PostgreSQL plans it once, not at every call with a few hundred owner ids).
    """
    module_id = module if isinstance(module, int) else module.pk
    record = _record_with_module(pk, module_id)
    if record is None or not can(user, "view", record):
        raise NotFound("No such record.")
    if action != "view":
        require(user, action, record)
    return record


def records_with_ids(
    user: Actor, module: Module | int, ids: Iterable[int], action: Action = "view"
) -> list[Record]:
    """`list(records(user, module, action).filter(pk__in=ids).order_by("pk"))`, each with its
    module, as `get_record` loads one: by primary key from a statement written once, then
    tested with `can` (which refuses a deleted record). For callers that find records by
    another index first (an address, a link) and ask which of them the user may act on, once
    per email."""
    module_id = module if isinstance(module, int) else module.pk
    return [r for r in _records_with_module(set(ids), module_id) if can(user, action, r)]


def _record_with_module(pk: int, module_id: int) -> Record | None:
    """`Record.objects.select_related("module").filter(pk=pk, module_id=module_id).first()`
    from a statement written once (`crm.statements`): every page and API call about a record
    makes it, and compiling the query cost more than running it."""
    found = _records_with_module({pk}, module_id)
    return found[0] if found else None


def _records_with_module(pks: set[int], module_id: int) -> list[Record]:
    """The module's records with these ids, deleted or not, each with its module, by id."""
    if not pks:
        return []
    sql, rows = _records_statement(len(pks))
    loaded = []
    for record, module in rows.all(sql, [*sorted(pks), module_id]):
        record.module = module
        loaded.append(record)
    return loaded


@functools.lru_cache(maxsize=32)
def _records_statement(count: int) -> tuple[str, statements.Rows]:
    rows = statements.rows_of((Record, "r"), (Module, "m"))
    sql = (
        f"SELECT {rows.columns} FROM {statements.table(Record)} r "  # noqa: S608
        f"JOIN {statements.table(Module)} m ON m.id = r.module_id "
        f"WHERE r.id IN ({', '.join(['%s'] * count)}) AND r.module_id = %s ORDER BY r.id"
    )
    return sql, rows


@dataclass(frozen=True)
class FieldAccess:
    field: Field
    read_only: bool


def visible_fields(user: Actor, module: Module) -> list[FieldAccess]:
    """The module's fields the user may see, in order, each saying whether he may change it."""
    p = privileges(user)
    fields = list(Field.objects.filter(module=module).select_related("reference_module"))
    if p.superuser:
        return [FieldAccess(f, False) for f in fields]
    grant = p.modules.get(module.pk)
    if grant is None or "view" not in grant.actions:
        return []
    return [
        FieldAccess(f, f.name in grant.read_only_fields)
        for f in fields
        if f.name not in grant.hidden_fields
    ]


def can_see_message(user: Actor, message: Any) -> bool:
    """An email is seen through the records it is linked to."""
    from crm.models import Record

    linked = Record.objects.filter(message_links__message=message, deleted_at=None)
    return any(can(user, "view", record) for record in linked)


def visible_email_fields(user: Actor, modules: list[Module]) -> list[int]:
    """Ids of the email fields the user may see in these modules: the address index may be
    matched or searched only through them, or a hidden address could be confirmed.

    The rule of `visible_fields`, for several modules in one query.
    """
    from crm.models.modules import FieldType

    p = privileges(user)
    fields = Field.objects.filter(module__in=modules, type=FieldType.EMAIL)
    found = fields.order_by("pk").values_list("pk", "module_id", "name")
    if p.superuser:
        return [pk for pk, _module_id, _name in found]
    grants = p.modules
    return [
        pk
        for pk, module_id, name in found
        if (grant := grants.get(module_id)) is not None
        and "view" in grant.actions
        and name not in grant.hidden_fields
    ]


def visible_records_sql(
    user: Actor, module_ids: Iterable[int], *, alias: str = "r"
) -> tuple[str, dict[str, Any]]:
    """The condition `records(user, module)` applies, for several modules at once, as SQL.

    For a statement the ORM cannot write that looks up a few records by id in several modules
    (the add-in's suggestions): the same decision (`_scope`), never a second one. One CASE on
    the module rather than an OR per module, so that PostgreSQL does not plan an index path
    for each. The text depends only on the number of modules, never on the user: the module
    ids, whether a module is visible whole, and its owner sets are parameters (named
    `access_*`; owner sets as array literals), so one prepared statement serves every user.
    """
    p = privileges(user)
    arms: list[str] = []
    params: dict[str, Any] = {}
    for i, module_id in enumerate(sorted(set(module_ids))):
        scope = _scope(p, module_id, "view")
        owners = scope if isinstance(scope, Owners) else Owners()
        arms.append(
            f"WHEN %(access_m{i})s THEN (%(access_a{i})s"
            f" OR {alias}.owner_user_id = ANY(%(access_u{i})s::bigint[])"
            f" OR {alias}.owner_group_id = ANY(%(access_g{i})s::bigint[]))"
        )
        params[f"access_m{i}"] = module_id
        params[f"access_a{i}"] = scope == ALL
        params[f"access_u{i}"] = _array_literal(owners.users)
        params[f"access_g{i}"] = _array_literal(owners.groups)
    if not arms:
        return "FALSE", {}
    case = f"CASE {alias}.module_id {' '.join(arms)} ELSE FALSE END"
    return f"{alias}.deleted_at IS NULL AND {case}", params


@functools.lru_cache(maxsize=1024)
def _array_literal(ids: frozenset[int]) -> str:
    """`{1,2,3}`: bound as text and cast in the statement, so that the parameter's type does
    not vary with the ids' sizes or an empty set (each would be another prepared statement).
    Owner sets are frozensets held by the cached privileges: each is written out once."""
    return "{" + ",".join(str(int(i)) for i in sorted(ids)) + "}"


# --- Scope: the one decision both records() and can() use ----------------------------------


def _scope(p: Privileges, module_id: int, action: str) -> Owners | Literal["all"]:
    if p.superuser:
        return ALL
    grant = p.modules.get(module_id)
    if grant is None or action not in grant.actions:
        return Owners()
    if p.edit_all or (p.view_all and action == "view"):
        return ALL
    if action in DEFAULT_GRANTS[grant.default_sharing]:
        return ALL
    return p.own | grant.shared.get(action, Owners())


def _allows(scope: Owners | Literal["all"], record: Record) -> bool:
    return scope == ALL or (isinstance(scope, Owners) and scope.holds(record))


# --- Privileges: computed once per user, cached ---------------------------------------------

_GENERATION_KEY = generations.register("crm:access:generation")


def privileges(user: Actor) -> Privileges:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return NOBODY
    if user.is_superuser:
        return Privileges(user_id=user.pk, superuser=True)
    key = f"crm:access:{generation()}:{user.pk}"
    # Kept by the process under the generation: a request checks access several times, and
    # the add-in asks at every email opened.
    return generations.kept(
        f"crm:access:{user.pk}",
        key,
        lambda: _cached_privileges(key, user.pk),
        settings.CRM_PRIVILEGES_CACHE_SECONDS,
    )


def generation() -> int:
    """The generation of everything privileges depend on (roles, profiles, groups, sharing,
    modules, fields, users): a key holding it is retired by any change to them."""
    return generations.current(_GENERATION_KEY)


def _cached_privileges(key: str, user_id: int) -> Privileges:
    cached = cache.get(key)
    if cached is None:
        cached = compute_privileges(user_id)
        cache.set(key, cached, settings.CRM_PRIVILEGES_CACHE_SECONDS)
    return cached  # type: ignore[no-any-return]


def invalidate() -> None:
    """Retire every cached privilege set (now, and again when the transaction commits)."""
    generations.bump(_GENERATION_KEY)


def compute_privileges(user_id: int) -> Privileges:
    user = User.objects.select_related("role").get(pk=user_id)
    if not user.is_active:
        return NOBODY
    if user.is_superuser:
        return Privileges(user_id=user.pk, superuser=True)
    if user.role is None:
        return Privileges(user_id=user.pk, own=Owners(frozenset({user.pk})))
    profiles = list(user.role.profiles.all())
    graph = _GroupGraph.load()
    my_groups = graph.groups_of(user.pk)
    own = Owners(
        users=frozenset({user.pk}) | _users_below(user.role),
        groups=my_groups,
    )
    return Privileges(
        user_id=user.pk,
        view_all=any(p.view_all for p in profiles),
        edit_all=any(p.edit_all for p in profiles),
        own=own,
        modules=_module_grants(user, profiles, my_groups, graph),
    )


def _users_below(role: Role) -> frozenset[int]:
    # Inactive subordinates included: a manager keeps seeing the records of someone who left.
    ids = User.objects.filter(role__path__startswith=role.path).exclude(role=role)
    return frozenset(ids.values_list("pk", flat=True))


def _module_grants(
    user: User, profiles: list[Profile], my_groups: frozenset[int], graph: _GroupGraph
) -> dict[int, ModuleGrant]:
    profile_ids = [p.pk for p in profiles]
    actions: dict[int, set[str]] = {}
    for mp in ModulePermission.objects.filter(profile_id__in=profile_ids, visible=True):
        granted = {a for a in ACTIONS if mp.allows(a)}
        actions.setdefault(mp.module_id, set()).update(granted)
    hidden, read_only = _field_restrictions(profile_ids)
    shared = _shared_owners(user, my_groups, graph)
    defaults = dict(Module.objects.values_list("pk", "default_sharing"))
    return {
        mid: ModuleGrant(
            actions=frozenset(acts),
            default_sharing=defaults[mid],
            shared=shared.get(mid, {}),
            hidden_fields=hidden.get(mid, frozenset()),
            read_only_fields=read_only.get(mid, frozenset()),
        )
        for mid, acts in actions.items()
        if "view" in acts
    }


def _field_restrictions(
    profile_ids: list[int],
) -> tuple[dict[int, frozenset[str]], dict[int, frozenset[str]]]:
    """Hidden: hidden by every profile. Read-only: read-only in every profile that shows it.

    A profile without a row for a field shows it and lets it be changed.
    """
    rows = FieldPermission.objects.filter(profile_id__in=profile_ids).values_list(
        "profile_id", "field_id", "field__module_id", "field__name", "visible", "read_only"
    )
    per_field: dict[tuple[int, str], dict[int, tuple[bool, bool]]] = {}
    for profile_id, _fid, module_id, name, visible, ro in rows:
        per_field.setdefault((module_id, name), {})[profile_id] = (visible, ro)
    hidden: dict[int, set[str]] = {}
    read_only: dict[int, set[str]] = {}
    for (module_id, name), by_profile in per_field.items():
        states = [by_profile.get(pid, (True, False)) for pid in profile_ids]
        shown = [ro for visible, ro in states if visible]
        if not shown:
            hidden.setdefault(module_id, set()).add(name)
        elif all(shown):
            read_only.setdefault(module_id, set()).add(name)
    return (
        {k: frozenset(v) for k, v in hidden.items()},
        {k: frozenset(v) for k, v in read_only.items()},
    )


def _shared_owners(
    user: User, my_groups: frozenset[int], graph: _GroupGraph
) -> dict[int, dict[str, Owners]]:
    """Per module and action, the owners whose records sharing rules open to this user."""
    result: dict[int, dict[str, Owners]] = {}
    rules = SharingRule.objects.select_related("source_role", "target_role")
    for rule in rules:
        if not _is_target(rule, user, my_groups):
            continue
        owners = _source_owners(rule, graph)
        per_action = result.setdefault(rule.module_id, {})
        for action in RULE_GRANTS[rule.access]:
            per_action[action] = per_action.get(action, Owners()) | owners
    return result


def _is_target(rule: SharingRule, user: User, my_groups: frozenset[int]) -> bool:
    if rule.target_kind == Party.GROUP:
        return rule.target_group_id in my_groups
    if user.role is None or rule.target_role is None:  # the check constraints forbid the latter
        return False
    if rule.target_kind == Party.ROLE:
        return user.role_id == rule.target_role_id
    return user.role.path.startswith(rule.target_role.path)


def _source_owners(rule: SharingRule, graph: _GroupGraph) -> Owners:
    """Records owned by a group: the group, groups nested in it, and its members."""
    if rule.source_group_id is not None:
        return Owners(
            users=graph.members_of(rule.source_group_id),
            groups=graph.nested_in(rule.source_group_id),
        )
    if rule.source_role is None:  # the check constraints forbid it
        return Owners()
    users = User.objects.all()
    if rule.source_kind == Party.ROLE:
        users = users.filter(role=rule.source_role)
    else:
        users = users.filter(role__path__startswith=rule.source_role.path)
    return Owners(users=frozenset(users.values_list("pk", flat=True)))


class _GroupGraph:
    """Group nesting and membership, loaded in two queries (groups are few)."""

    def __init__(self, children: dict[int, set[int]], members: dict[int, set[int]]):
        self.children = children
        self.members = members

    @classmethod
    def load(cls) -> _GroupGraph:
        children: dict[int, set[int]] = {}
        for parent, child in Group.subgroups.through.objects.values_list(
            "from_group_id", "to_group_id"
        ):
            children.setdefault(parent, set()).add(child)
        members: dict[int, set[int]] = {}
        for gid, uid in Group.members.through.objects.values_list("group_id", "user_id"):
            members.setdefault(gid, set()).add(uid)
        return cls(children, members)

    def nested_in(self, group_id: int) -> frozenset[int]:
        """The group and every group nested in it, at any depth (cycles tolerated)."""
        seen: set[int] = set()
        todo = [group_id]
        while todo:
            gid = todo.pop()
            if gid not in seen:
                seen.add(gid)
                todo.extend(self.children.get(gid, ()))
        return frozenset(seen)

    def members_of(self, group_id: int) -> frozenset[int]:
        return frozenset(
            uid for gid in self.nested_in(group_id) for uid in self.members.get(gid, ())
        )

    def groups_of(self, user_id: int) -> frozenset[int]:
        """Groups the user belongs to, directly or through a group nested in them."""
        all_groups: Iterable[int] = set(self.children) | set(self.members)
        return frozenset(g for g in all_groups if user_id in self.members_of(g))


# --- Invalidation ----------------------------------------------------------------------------

_WATCHED = (Role, Profile, ModulePermission, FieldPermission, Group, SharingRule, Module, Field)


def _on_change(sender: Any, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    invalidate()


def _on_user_change(sender: Any, instance: User, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= {"last_login", "password"}:
        return  # a login changes nothing about access
    invalidate()


for _model in _WATCHED:
    post_save.connect(_on_change, sender=_model, dispatch_uid=f"access-save-{_model.__name__}")
    post_delete.connect(_on_change, sender=_model, dispatch_uid=f"access-del-{_model.__name__}")
post_save.connect(_on_user_change, sender=User, dispatch_uid="access-save-user")
post_delete.connect(_on_change, sender=User, dispatch_uid="access-del-user")
for _m2m in (Role.profiles.through, Group.members.through, Group.subgroups.through):
    m2m_changed.connect(_on_change, sender=_m2m, dispatch_uid=f"access-m2m-{_m2m.__name__}")
