"""Random organisations: the SQL of `records()` and the Python of `can()` agree with each other
and with a plain reference reading of the rules, written here independently of crm.access."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.core.cache import cache
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm import access
from crm.models import Group, Module, ModulePermission, Profile, Record, SharingRule, User
from crm.models.access import Party
from crm.models.modules import Sharing
from crm.services import access_admin
from tests.factories import make_record

pytestmark = pytest.mark.django_db

MODULES = ("Contacts", "Leads")
ACTIONS = ("view", "edit", "delete")
LEVELS = [s.value for s in Sharing]
EVERYTHING = frozenset({"view", "create", "edit", "delete"})
GRANTS = st.one_of(
    st.just(EVERYTHING),
    st.just(EVERYTHING),
    st.just(frozenset({"view", "edit"})),
    st.sets(st.sampled_from(sorted(EVERYTHING))),
)


@dataclass
class Spec:
    parents: list[int | None]
    profiles: list[dict[str, Any]]
    role_profiles: list[list[int]]
    users: list[tuple[int | None, bool]]  # (role index or None, active)
    groups: list[list[int]]  # member user indexes
    nesting: list[tuple[int, int]]  # (outer, inner)
    defaults: dict[str, str]
    rules: list[dict[str, Any]]
    records: list[tuple[str, str, int, bool]]  # (module, "u"|"g", owner index, deleted)


@st.composite
def organisations(draw: st.DrawFn) -> Spec:
    n_roles = draw(st.integers(1, 5))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n_roles)]
    n_profiles = draw(st.integers(1, 3))
    profiles = [
        {
            # Mostly ordinary profiles, so that ownership, defaults and rules get exercised.
            "view_all": draw(st.sampled_from([False, False, False, True])),
            "edit_all": draw(st.sampled_from([False, False, False, False, True])),
            "grants": {m: draw(GRANTS) for m in MODULES},
        }
        for _ in range(n_profiles)
    ]
    profile_ix = st.integers(0, n_profiles - 1)
    role_profiles = [
        draw(st.lists(profile_ix, min_size=1, max_size=2, unique=True)) for _ in parents
    ]
    # Role -1 is "no role", and one user in eight has left: both rare, as in life.
    users = [
        (role if role >= 0 else None, draw(st.integers(0, 7)) > 0)
        for role in draw(st.lists(st.integers(-1, n_roles - 1), min_size=2, max_size=6))
    ]
    n_users = len(users)
    groups = draw(st.lists(st.lists(st.integers(0, n_users - 1), max_size=3), max_size=4))
    n_groups = len(groups)
    nesting = (
        draw(
            st.lists(
                st.tuples(st.integers(0, n_groups - 1), st.integers(0, n_groups - 1)), max_size=3
            )
        )
        if n_groups
        else []
    )
    defaults = {m: draw(st.sampled_from([Sharing.PRIVATE] * 3 + LEVELS)) for m in MODULES}
    party_kinds = [Party.ROLE, Party.ROLE_AND_SUBORDINATES] + ([Party.GROUP] if n_groups else [])
    rules = [
        {
            "module": draw(st.sampled_from(MODULES)),
            "source": (
                k1 := draw(st.sampled_from(party_kinds)),
                draw(st.integers(0, (n_groups if k1 == Party.GROUP else n_roles) - 1)),
            ),
            "target": (
                k2 := draw(st.sampled_from(party_kinds)),
                draw(st.integers(0, (n_groups if k2 == Party.GROUP else n_roles) - 1)),
            ),
            "access": draw(st.sampled_from(["read", "read_write"])),
        }
        for _ in range(draw(st.integers(0, 4)))
    ]
    owner_kinds = ["u", "g"] if n_groups else ["u"]
    records = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(owner_kinds))
        owner = draw(st.integers(0, (n_groups if kind == "g" else n_users) - 1))
        records.append((draw(st.sampled_from(MODULES)), kind, owner, draw(st.booleans())))
    return Spec(parents, profiles, role_profiles, users, groups, nesting, defaults, rules, records)


def _build(spec: Spec) -> tuple[list[User], list[Record]]:
    roles = []
    for i, parent in enumerate(spec.parents):
        roles.append(
            access_admin.create_role(
                name=f"R{i}", parent=roles[parent] if parent is not None else None
            )
        )
    profiles = []
    for i, p in enumerate(spec.profiles):
        profile = Profile.objects.create(
            name=f"P{i}", view_all=p["view_all"], edit_all=p["edit_all"]
        )
        for module_name, actions in p["grants"].items():
            ModulePermission.objects.create(
                profile=profile,
                module=Module.objects.get(name=module_name),
                **ModulePermission.flags(actions),
            )
        profiles.append(profile)
    for role, ixs in zip(roles, spec.role_profiles, strict=True):
        role.profiles.set([profiles[i] for i in ixs])
    users = [
        User.objects.create(username=f"u{i}", role=roles[r] if r is not None else None)
        for i, (r, _active) in enumerate(spec.users)
    ]
    groups = [Group.objects.create(name=f"G{i}") for i in range(len(spec.groups))]
    for group, members in zip(groups, spec.groups, strict=True):
        group.members.set([users[i] for i in members])
    for outer, inner in spec.nesting:
        groups[outer].subgroups.add(groups[inner])
    for name, level in spec.defaults.items():
        module = Module.objects.get(name=name)
        module.default_sharing = level
        module.save()
    for rule in spec.rules:
        kw: dict[str, Any] = {
            "module": Module.objects.get(name=rule["module"]),
            "access": rule["access"],
        }
        for side in ("source", "target"):
            kind, ix = rule[side]
            kw[f"{side}_kind"] = kind
            kw[f"{side}_{'group' if kind == Party.GROUP else 'role'}"] = (
                groups[ix] if kind == Party.GROUP else roles[ix]
            )
        SharingRule.objects.create(**kw)
    records = []
    for module_name, kind, ix, deleted in spec.records:
        owner = groups[ix] if kind == "g" else users[ix]
        record = make_record(module_name, owner)
        if deleted:
            Record.objects.filter(pk=record.pk).update(deleted_at=record.created_at)
            record.refresh_from_db()
        records.append(record)
    # People leave after their records were made: deactivate last.
    for user, (_role, active) in zip(users, spec.users, strict=True):
        if not active:
            user.is_active = False
            user.save()
    return users, records


# --- The reference reading of the rules (deliberately plain and slow) -----------------------


def _member_groups(user: User) -> set[int]:
    """Groups the user is in, directly or through a group nested inside them."""
    result = set(user.crm_groups.values_list("pk", flat=True))
    grew = True
    while grew:
        outer = set(Group.objects.filter(subgroups__in=result).values_list("pk", flat=True))
        grew = not outer <= result
        result |= outer
    return result


def _party_has_user(kind: str, role: Any, group: Any, user: User) -> bool:
    if kind == Party.GROUP:
        return group.pk in _member_groups(user)
    if user.role is None:
        return False
    if kind == Party.ROLE:
        return user.role_id == role.pk
    return user.role.path.startswith(role.path)


def _owned_by_party(kind: str, role: Any, group: Any, record: Record) -> bool:
    if record.owner_group_id is not None:
        if kind != Party.GROUP:
            return False
        inside = {record.owner_group_id}
        frontier = {record.owner_group_id}
        while frontier:  # every group containing the owner group
            frontier = (
                set(Group.objects.filter(subgroups__in=frontier).values_list("pk", flat=True))
                - inside
            )
            inside |= frontier
        return group.pk in inside
    return _party_has_user(kind, role, group, record.owner_user)


def expected(user: User, action: str, record: Record) -> bool:
    if not user.is_active or record.deleted_at is not None:
        return False
    if user.is_superuser:
        return True
    if user.role is None:
        return False
    profiles = list(user.role.profiles.all())
    perms = ModulePermission.objects.filter(
        profile__in=profiles, module=record.module_id, visible=True
    )
    granted = {a for p in perms for a in ACTIONS if getattr(p, f"can_{a}")}
    if "view" not in granted or action not in granted:
        return False
    if any(p.edit_all for p in profiles) or (
        action == "view" and any(p.view_all for p in profiles)
    ):
        return True
    level = record.module.default_sharing
    if (
        level == Sharing.PUBLIC_READ_WRITE_DELETE
        or (level == Sharing.PUBLIC_READ_WRITE and action != "delete")
        or (level == Sharing.PUBLIC_READ and action == "view")
    ):
        return True
    if record.owner_user_id is not None:
        owner = record.owner_user
        if owner.pk == user.pk:
            return True
        if (
            owner.role is not None
            and owner.role.path.startswith(user.role.path)
            and (owner.role_id != user.role_id)
        ):
            return True
    elif record.owner_group_id in _member_groups(user):
        return True
    for rule in SharingRule.objects.filter(module=record.module_id):
        if action == "delete" or (action == "edit" and rule.access == "read"):
            continue
        if _party_has_user(rule.target_kind, rule.target_role, rule.target_group, user) and (
            _owned_by_party(rule.source_kind, rule.source_role, rule.source_group, record)
        ):
            return True
    return False


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=organisations())
def test_records_holds_exactly_the_records_can_allows_and_the_rules_say(spec: Spec) -> None:
    with transaction.atomic():
        cache.clear()
        users, records = _build(spec)
        for user in users:
            user.refresh_from_db()
            for module_name in MODULES:
                module = Module.objects.get(name=module_name)
                mine = [r for r in records if r.module_id == module.pk]
                for action in ACTIONS:
                    listed = set(access.records(user, module, action).values_list("pk", flat=True))
                    allowed = {r.pk for r in mine if access.can(user, action, r)}
                    truth = {r.pk for r in mine if expected(user, action, r)}
                    assert listed == allowed, (user.username, module_name, action)
                    assert allowed == truth, (user.username, module_name, action)
                    # Asked by id (ids of the other module's records too): the same answer.
                    every = [r.pk for r in records]
                    by_ids = access.records_with_ids(user, module, every, action)
                    assert [r.pk for r in by_ids] == sorted(listed), (user.username, action)
        transaction.set_rollback(True)
