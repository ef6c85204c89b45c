"""Every rule of the permission model, each with a user who may and a user who may not."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm import access
from crm.exceptions import Forbidden, NotFound
from crm.models import FieldPermission, Module, SharingRule
from crm.models.access import Party
from crm.models.modules import Sharing
from crm.services import records as record_service
from tests.conftest import Org
from tests.factories import (
    GroupFactory,
    ProfileFactory,
    RoleFactory,
    UserFactory,
    grant,
    make_record,
)

pytestmark = pytest.mark.django_db


def _private(name: str = "Contacts") -> Module:
    module = Module.objects.get(name=name)
    module.default_sharing = Sharing.PRIVATE
    module.save()
    return module


def _visible(user, module: Module) -> set[int]:  # type: ignore[no-untyped-def]
    return set(access.records(user, module).values_list("pk", flat=True))


# --- The role tree ---------------------------------------------------------------------------


def test_a_manager_sees_his_subordinates_records_but_not_the_reverse(org: Org) -> None:
    contacts = _private()
    alices = make_record(contacts, org.alice)
    bobs = make_record(contacts, org.bob)
    assert _visible(org.bob, contacts) == {alices.pk, bobs.pk}
    assert _visible(org.alice, contacts) == {alices.pk}


def test_the_top_of_the_tree_sees_every_branch(org: Org) -> None:
    contacts = _private()
    ceo = UserFactory(role=org.ceo)
    made = {make_record(contacts, u).pk for u in (org.alice, org.bob, org.charlie)}
    assert _visible(ceo, contacts) == made


def test_a_sibling_branch_sees_nothing_of_the_other(org: Org) -> None:
    contacts = _private()
    make_record(contacts, org.alice)
    make_record(contacts, org.bob)
    charlies = make_record(contacts, org.charlie)
    assert _visible(org.charlie, contacts) == {charlies.pk}


def test_a_colleague_in_the_same_role_does_not_see_my_records(org: Org) -> None:
    contacts = _private()
    dave = UserFactory(role=org.sales_rep)
    make_record(contacts, org.alice)
    assert _visible(dave, contacts) == set()


def test_moving_a_role_in_the_tree_moves_what_its_managers_see(org: Org) -> None:
    from crm.services.access_admin import save_role

    contacts = _private()
    alices = make_record(contacts, org.alice)
    support_manager = UserFactory(role=org.support_manager)
    assert alices.pk not in _visible(support_manager, contacts)
    org.sales_manager.parent = org.support_manager
    save_role(role=org.sales_manager)
    assert alices.pk in _visible(support_manager, contacts)


# --- Groups ----------------------------------------------------------------------------------


def test_group_owned_records_are_visible_to_members_only(org: Org) -> None:
    contacts = _private()
    team = GroupFactory(name="Key accounts")
    team.members.add(org.alice)
    owned = make_record(contacts, team)
    assert _visible(org.alice, contacts) == {owned.pk}
    assert _visible(org.charlie, contacts) == set()
    assert access.can(org.alice, "edit", owned)
    assert access.can(org.alice, "delete", owned)


def test_members_of_a_nested_group_act_as_owners_of_the_outer_groups_records(org: Org) -> None:
    contacts = _private()
    emea = GroupFactory(name="EMEA")
    sales = GroupFactory(name="Sales team")
    emea.subgroups.add(sales)
    sales.members.add(org.charlie)
    owned_by_emea = make_record(contacts, emea)
    owned_by_sales = make_record(contacts, sales)
    assert _visible(org.charlie, contacts) == {owned_by_emea.pk, owned_by_sales.pk}
    emea_only = UserFactory(role=org.sales_rep)
    emea.members.add(emea_only)
    # Membership of the outer group does not reach into the inner one.
    assert _visible(emea_only, contacts) == {owned_by_emea.pk}


def test_leaving_a_group_takes_its_records_away_at_once(org: Org) -> None:
    contacts = _private()
    team = GroupFactory()
    team.members.add(org.alice)
    owned = make_record(contacts, team)
    assert owned.pk in _visible(org.alice, contacts)
    team.members.remove(org.alice)
    assert owned.pk not in _visible(org.alice, contacts)


# --- Organisation-wide defaults -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "allowed"),
    [
        (Sharing.PRIVATE, set()),
        (Sharing.PUBLIC_READ, {"view"}),
        (Sharing.PUBLIC_READ_WRITE, {"view", "edit"}),
        (Sharing.PUBLIC_READ_WRITE_DELETE, {"view", "edit", "delete"}),
    ],
)
def test_each_default_opens_exactly_its_actions_to_everyone(
    org: Org, level: str, allowed: set[str]
) -> None:
    module = Module.objects.get(name="Companies")
    module.default_sharing = level
    module.save()
    alices = make_record(module, org.alice)
    for action in ("view", "edit", "delete"):
        assert access.can(org.charlie, action, alices) is (action in allowed), action
        in_query = alices.pk in set(
            access.records(org.charlie, module, action).values_list("pk", flat=True)
        )
        assert in_query is (action in allowed), action
    # The owner keeps full access whatever the default.
    assert all(access.can(org.alice, a, alices) for a in ("view", "edit", "delete"))


# --- Sharing rules -----------------------------------------------------------------------------


def _rule(module: Module, source: tuple[str, object], target: tuple[str, object], access_: str):  # type: ignore[no-untyped-def]
    kwargs: dict[str, object] = {"module": module, "access": access_}
    for side, (kind, party) in (("source", source), ("target", target)):
        kwargs[f"{side}_kind"] = kind
        kwargs[f"{side}_{'group' if kind == Party.GROUP else 'role'}"] = party
    return SharingRule.objects.create(**kwargs)


def test_a_read_rule_from_role_to_role_opens_viewing_not_editing(org: Org) -> None:
    contacts = _private()
    alices = make_record(contacts, org.alice)
    _rule(contacts, (Party.ROLE, org.sales_rep), (Party.ROLE, org.support_agent), "read")
    assert access.can(org.charlie, "view", alices)
    assert not access.can(org.charlie, "edit", alices)
    assert not access.can(org.charlie, "delete", alices)
    support_manager = UserFactory(role=org.support_manager)
    # "Role" means that role only, not its managers.
    assert not access.can(support_manager, "view", alices)


def test_a_read_write_rule_opens_editing_but_never_deleting(org: Org) -> None:
    contacts = _private()
    alices = make_record(contacts, org.alice)
    _rule(contacts, (Party.ROLE, org.sales_rep), (Party.ROLE, org.support_agent), "read_write")
    assert access.can(org.charlie, "edit", alices)
    assert not access.can(org.charlie, "delete", alices)


def test_a_rule_from_role_and_subordinates_covers_the_whole_subtree(org: Org) -> None:
    contacts = _private()
    alices = make_record(contacts, org.alice)
    bobs = make_record(contacts, org.bob)
    ceos = make_record(contacts, UserFactory(role=org.ceo))
    _rule(
        contacts,
        (Party.ROLE_AND_SUBORDINATES, org.sales_manager),
        (Party.ROLE, org.support_agent),
        "read",
    )
    assert _visible(org.charlie, contacts) == {alices.pk, bobs.pk}
    assert ceos.pk not in _visible(org.charlie, contacts)


def test_a_rule_to_role_and_subordinates_reaches_everyone_below(org: Org) -> None:
    contacts = _private()
    alices = make_record(contacts, org.alice)
    _rule(
        contacts,
        (Party.ROLE, org.sales_rep),
        (Party.ROLE_AND_SUBORDINATES, org.support_manager),
        "read",
    )
    support_manager = UserFactory(role=org.support_manager)
    assert access.can(support_manager, "view", alices)
    assert access.can(org.charlie, "view", alices)
    assert not access.can(UserFactory(role=org.sales_rep), "view", alices)


def test_a_rule_from_a_group_shares_the_group_and_its_members_records(org: Org) -> None:
    contacts = _private()
    team = GroupFactory()
    team.members.add(org.alice)
    group_owned = make_record(contacts, team)
    member_owned = make_record(contacts, org.alice)
    bobs = make_record(contacts, org.bob)
    _rule(contacts, (Party.GROUP, team), (Party.ROLE, org.support_agent), "read")
    assert _visible(org.charlie, contacts) == {group_owned.pk, member_owned.pk}
    assert bobs.pk not in _visible(org.charlie, contacts)


def test_a_rule_to_a_group_reaches_its_members_and_nested_members(org: Org) -> None:
    contacts = _private()
    alices = make_record(contacts, org.alice)
    outer, inner = GroupFactory(), GroupFactory()
    outer.subgroups.add(inner)
    inner.members.add(org.charlie)
    _rule(contacts, (Party.ROLE, org.sales_rep), (Party.GROUP, outer), "read_write")
    assert access.can(org.charlie, "edit", alices)
    outsider = UserFactory(role=org.support_agent)
    assert not access.can(outsider, "view", alices)


def test_rules_apply_only_to_their_module(org: Org) -> None:
    contacts, leads = _private("Contacts"), _private("Leads")
    lead = make_record(leads, org.alice)
    _rule(contacts, (Party.ROLE, org.sales_rep), (Party.ROLE, org.support_agent), "read")
    assert not access.can(org.charlie, "view", lead)


# --- Profiles ------------------------------------------------------------------------------------


def test_a_profile_without_the_module_hides_it_and_its_records(org: Org) -> None:
    limited = ProfileFactory(name="No opportunities")
    for name in ("Contacts", "Companies"):
        grant(limited, name)
    role = RoleFactory(name="Limited", parent=org.sales_manager)
    role.profiles.add(limited)
    eve = UserFactory(role=role)
    opportunities = Module.objects.get(name="Opportunities")
    mine = make_record(opportunities, eve)
    assert set(access.visible_modules(eve).values_list("name", flat=True)) == {
        "Contacts",
        "Companies",
    }
    assert not access.can(eve, "view", mine)
    assert _visible(eve, opportunities) == set()
    with pytest.raises(NotFound):
        access.require(eve, "view", mine)


def test_profiles_of_a_role_are_unioned(org: Org) -> None:
    viewer, creator = ProfileFactory(), ProfileFactory()
    grant(viewer, "Contacts", "view")
    grant(creator, "Contacts", "view create")
    grant(creator, "Leads", "view")
    role = RoleFactory(parent=org.ceo)
    role.profiles.add(viewer, creator)
    user = UserFactory(role=role)
    contacts = Module.objects.get(name="Contacts")
    assert access.can_create(user, contacts)
    assert set(access.visible_modules(user).values_list("name", flat=True)) == {
        "Contacts",
        "Leads",
    }


def test_module_actions_limit_even_my_own_records(org: Org) -> None:
    viewer = ProfileFactory()
    grant(viewer, "Contacts", "view")
    role = RoleFactory(parent=org.ceo)
    role.profiles.add(viewer)
    user = UserFactory(role=role)
    mine = make_record("Contacts", user)
    assert access.can(user, "view", mine)
    assert not access.can(user, "edit", mine)
    assert not access.can(user, "delete", mine)
    assert not access.can_create(user, mine.module)
    with pytest.raises(Forbidden):
        access.require(user, "edit", mine)


def test_view_all_shows_every_record_but_edits_only_reachable_ones(org: Org) -> None:
    contacts = _private()
    org.standard.view_all = True
    org.standard.save()
    charlies = make_record(contacts, org.charlie)
    assert access.can(org.alice, "view", charlies)
    assert not access.can(org.alice, "edit", charlies)


def test_edit_all_opens_view_edit_and_delete_everywhere(org: Org) -> None:
    contacts = _private()
    charlies = make_record(contacts, org.charlie)
    assert not access.can(org.alice, "edit", charlies)
    org.standard.edit_all = True
    org.standard.save()
    assert all(access.can(org.alice, a, charlies) for a in ("view", "edit", "delete"))


def test_a_superuser_sees_and_changes_everything(org: Org) -> None:
    contacts = _private()
    charlies = make_record(contacts, org.charlie)
    assert all(access.can(org.admin, a, charlies) for a in ("view", "edit", "delete"))
    assert access.can(org.admin, "purge", charlies)
    assert not access.can(org.alice, "purge", make_record(contacts, org.alice))


def test_an_inactive_user_sees_nothing(org: Org) -> None:
    mine = make_record("Contacts", org.alice)
    org.alice.is_active = False
    org.alice.save()
    assert not access.can(org.alice, "view", mine)
    assert not access.visible_modules(org.alice).exists()


def test_a_user_without_a_role_sees_nothing(org: Org) -> None:
    loner = UserFactory(role=None)
    make_record("Contacts", org.alice)
    assert not access.visible_modules(loner).exists()
    assert _visible(loner, Module.objects.get(name="Contacts")) == set()


# --- Fields ---------------------------------------------------------------------------------


def _field_rule(org: Org, module: str, name: str, *, visible: bool, read_only: bool) -> None:
    field = Module.objects.get(name=module).fields.get(name=name)
    FieldPermission.objects.create(
        profile=org.standard, field=field, visible=visible, read_only=read_only
    )


def test_a_hidden_field_is_not_among_visible_fields_and_cannot_be_written(org: Org) -> None:
    _field_rule(org, "Contacts", "mobile", visible=False, read_only=False)
    contacts = Module.objects.get(name="Contacts")
    names = {fa.field.name for fa in access.visible_fields(org.alice, contacts)}
    assert "mobile" not in names
    assert "mobile" in {fa.field.name for fa in access.visible_fields(org.admin, contacts)}
    mine = make_record(contacts, org.alice, last_name="Doe", mobile="+1 555 0100")
    from crm.exceptions import Invalid

    with pytest.raises(Invalid) as caught:
        record_service.update(actor=org.alice, record=mine, data={"mobile": "+1 555 0199"})
    assert "mobile" in caught.value.fields


def test_a_read_only_field_is_shown_but_refused_on_write_and_kept_on_save(org: Org) -> None:
    _field_rule(org, "Contacts", "email", visible=True, read_only=True)
    contacts = Module.objects.get(name="Contacts")
    shown = {fa.field.name: fa.read_only for fa in access.visible_fields(org.alice, contacts)}
    assert shown["email"] is True
    mine = make_record(contacts, org.alice, last_name="Doe", email="doe@example.com")
    record_service.update(actor=org.alice, record=mine, data={"last_name": "Doe-Smith"})
    mine.refresh_from_db()
    assert mine.data["email"] == "doe@example.com"
    from crm.exceptions import Invalid

    with pytest.raises(Invalid):
        record_service.update(actor=org.alice, record=mine, data={"email": "x@example.com"})


def test_a_field_hidden_by_one_profile_but_shown_by_another_stays_visible(org: Org) -> None:
    _field_rule(org, "Contacts", "mobile", visible=False, read_only=False)
    other = ProfileFactory()
    grant(other, "Contacts")
    org.sales_rep.profiles.add(other)
    contacts = Module.objects.get(name="Contacts")
    assert "mobile" in {fa.field.name for fa in access.visible_fields(org.alice, contacts)}


# --- The recycle bin -----------------------------------------------------------------------------


def test_deleted_records_are_invisible_and_in_the_recycle_bin_of_who_may_delete(org: Org) -> None:
    contacts = _private()
    mine = make_record(contacts, org.alice)
    record_service.delete(actor=org.alice, record=mine)
    mine.refresh_from_db()
    assert not access.can(org.alice, "view", mine)
    assert mine.pk not in _visible(org.alice, contacts)
    assert list(access.records(org.alice, contacts, in_recycle_bin=True)) == [mine]
    assert list(access.records(org.charlie, contacts, in_recycle_bin=True)) == []
    assert access.can(org.bob, "restore", mine)
    assert not access.can(org.charlie, "restore", mine)


# --- require(): invisible is "not found", visible-but-not-allowed is "forbidden" ---------


def test_require_says_not_found_for_an_invisible_record_and_forbidden_for_a_read_only_one(
    org: Org,
) -> None:
    companies = Module.objects.get(name="Companies")
    companies.default_sharing = Sharing.PUBLIC_READ
    companies.save()
    contacts = _private()
    hidden = make_record(contacts, org.charlie)
    readable = make_record(companies, org.charlie)
    with pytest.raises(NotFound):
        access.require(org.alice, "edit", hidden)
    with pytest.raises(Forbidden):
        access.require(org.alice, "edit", readable)
    with pytest.raises(NotFound):
        access.get_record(org.alice, contacts, hidden.pk)
    with pytest.raises(NotFound):
        access.get_record(org.alice, contacts, 987654321)


def test_get_record_loads_the_record_and_its_module_as_the_orm_does_in_one_query(
    org: Org,
) -> None:
    contacts = _private()
    companies = Module.objects.get(name="Companies")
    mine = record_service.create(
        actor=org.alice,
        module=contacts,
        data={"first_name": "Zoë", "last_name": "Ünal", "email": "zoe@example.com"},
    )
    with CaptureQueriesContext(connection) as queries:
        loaded = access.get_record(org.alice, contacts.pk, mine.pk, "edit")
    assert len(queries.captured_queries) == 1
    expected = type(mine).objects.select_related("module").get(pk=mine.pk)

    def values(instance: object) -> dict[str, object]:
        return {k: v for k, v in vars(instance).items() if not k.startswith("_")}

    assert values(loaded) == values(expected)
    assert values(loaded.module) == values(expected.module)
    assert loaded.data["first_name"] == "Zoë"
    assert not loaded._state.adding
    with pytest.raises(NotFound):  # the id of a Contact asked as a Company
        access.get_record(org.alice, companies, mine.pk)


def test_records_with_ids_loads_the_ones_the_user_may_act_on_with_their_module_in_one_query(
    org: Org,
) -> None:
    contacts = _private()
    mine = make_record(contacts, org.alice)
    hidden = make_record(contacts, org.charlie)
    company = make_record("Companies", org.alice)
    access.privileges(org.alice)  # computed once per user and kept
    with CaptureQueriesContext(connection) as queries:
        found = access.records_with_ids(org.alice, contacts, [hidden.pk, mine.pk, company.pk])
    assert len(queries.captured_queries) == 1
    assert [r.pk for r in found] == [mine.pk]  # not another's, not another module's
    assert found[0].module == contacts
    assert found[0].data == type(mine).objects.get(pk=mine.pk).data
    assert access.records_with_ids(org.alice, contacts, []) == []


# --- Caching -------------------------------------------------------------------------------------


def test_privileges_are_cached_so_records_costs_one_query(org: Org) -> None:
    contacts = _private()
    make_record(contacts, org.alice)
    list(access.records(org.alice, contacts)[:50])
    with CaptureQueriesContext(connection) as queries:
        list(access.records(org.alice, contacts).order_by("-modified_at")[:50])
    assert len(queries) == 1


@pytest.mark.parametrize(
    "change",
    ["profile", "role_profiles", "sharing", "default", "user_role", "group"],
)
def test_every_kind_of_access_change_is_seen_at_once(org: Org, change: str) -> None:
    contacts = _private()
    charlies = make_record(contacts, org.charlie)
    team = GroupFactory()
    team.members.add(org.charlie)
    group_owned = make_record(contacts, team)
    assert not access.can(org.alice, "view", charlies)  # now cached
    target = charlies
    if change == "profile":
        org.standard.view_all = True
        org.standard.save()
    elif change == "role_profiles":
        viewer = ProfileFactory(view_all=True)
        grant(viewer, contacts)
        org.sales_rep.profiles.add(viewer)
    elif change == "sharing":
        _rule(contacts, (Party.ROLE, org.support_agent), (Party.ROLE, org.sales_rep), "read")
    elif change == "default":
        Module.objects.filter(pk=contacts.pk).update(default_sharing=Sharing.PUBLIC_READ)
        contacts.refresh_from_db()
        contacts.save()  # admin saves go through save(); a bare update is not a supported path
    elif change == "user_role":
        org.alice.role = org.support_manager
        org.alice.save()
    elif change == "group":
        team.members.add(org.alice)
        target = group_owned
    assert access.can(org.alice, "view", target)


def test_revoking_a_module_permission_hides_the_module_at_once(org: Org) -> None:
    mine = make_record("Contacts", org.alice)
    assert access.can(org.alice, "view", mine)
    grant(org.standard, "Contacts", "")
    assert not access.can(org.alice, "view", mine)
    assert not access.visible_modules(org.alice).filter(name="Contacts").exists()
