"""Loading the demo organisation.

Every expected figure is read from fixtures/demo.json (its lists, counts, owners taken in turn,
rules), never from the loader.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings
from django.urls import reverse

from crm import access
from crm.exceptions import Conflict, Invalid, NotFound
from crm.models import (
    ChangeLog,
    Field,
    FieldPermission,
    Group,
    Module,
    ModulePermission,
    Profile,
    Record,
    RecordAddress,
    Role,
    SharingRule,
    User,
)
from crm.services import access_admin, demo

DEMO = Path(settings.BASE_DIR) / "fixtures" / "demo.json"
# The production hasher costs a second per demo user and per login; what is tested is that
# the stated passwords work, not the hasher.
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
Spec = dict[str, Any]


@pytest.fixture(autouse=True)
def _fast_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = FAST_HASHERS


@pytest.fixture(scope="module")
def spec() -> Spec:
    return json.loads(DEMO.read_text(encoding="utf-8"))


# --- What the file says, worked out from the file alone ----------------------------------------


def expected_counts(spec: Spec) -> dict[str, int]:
    return {m: len(s["items"]) if "items" in s else s["count"] for m, s in spec["records"].items()}


def expected_owners(spec: Spec, module: str) -> Counter[str]:
    """Records go to the module's owners in turn (the file's "about")."""
    owners = spec["records"][module]["owners"]
    return Counter(owners[i % len(owners)] for i in range(expected_counts(spec)[module]))


def roles_under(spec: Spec, name: str) -> set[str]:
    """The role and every role below it in the file's tree."""
    below = {name}
    while more := {r["name"] for r in spec["roles"] if r["parent"] in below} - below:
        below |= more
    return below


def users_in(spec: Spec, roles: set[str]) -> set[str]:
    return {u["username"] for u in spec["users"] if u.get("role") in roles}


# --- What the database holds ---------------------------------------------------------------


def owner_name(record: Record) -> str:
    if record.owner_group is not None:
        return f"group:{record.owner_group.name}"
    return record.owner_user.username


def visible_owners(username: str, module: str, action: access.Action = "view") -> set[str]:
    """Owners of the records `username` may act on, as the file names them."""
    user = User.objects.get(username=username)
    qs = access.records(user, Module.objects.get(name=module), action)
    return {owner_name(r) for r in qs.select_related("owner_user", "owner_group")}


def table_sizes() -> dict[str, int]:
    models = (
        ChangeLog, Field, FieldPermission, Group, Module, ModulePermission, Profile, Record,
        RecordAddress, Role, SharingRule, User,
    )  # fmt: skip
    return {m.__name__: m._default_manager.count() for m in models}


def snapshot() -> list[tuple[str, str, str, str]]:
    """The records as a user sees them: a reference shown as the referred record's number."""
    numbers = dict(Record.objects.values_list("pk", "number"))
    references = set(Field.objects.filter(type="reference").values_list("module__name", "name"))
    rows = []
    for r in Record.objects.select_related("module", "owner_user", "owner_group"):
        data = {k: numbers[v] if (r.module.name, k) in references else v for k, v in r.data.items()}
        rows.append((r.number, r.label, owner_name(r), json.dumps(data, sort_keys=True)))
    return sorted(rows)


# --- The loaded demo -------------------------------------------------------------------------


@pytest.fixture(scope="class")
def loaded(django_db_setup: None, django_db_blocker: Any) -> Iterator[demo.DemoSummary]:
    """The demo, loaded once for the tests that only read it, and rolled back after them.

    A load is some 3000 queries; each test still runs in its own savepoint, so one that
    changes something (a sharing rule) leaves the next one the demo as loaded.
    """
    with (
        django_db_blocker.unblock(),
        override_settings(PASSWORD_HASHERS=FAST_HASHERS),
        transaction.atomic(),
    ):
        yield demo.load(path=DEMO)
        transaction.set_rollback(True)


@pytest.mark.django_db
class TestTheLoadedDemo:
    def test_the_role_tree_is_the_one_the_file_draws(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        assert Role.objects.count() == len(spec["roles"])
        for entry in spec["roles"]:
            role = Role.objects.get(name=entry["name"])
            if entry["parent"] is None:
                assert role.parent is None
                assert role.path == f"/{role.pk}/"
            else:
                assert role.parent.name == entry["parent"]
                assert role.path == f"{role.parent.path}{role.pk}/"
            assert {p.name for p in role.profiles.all()} == set(entry["profiles"])

    def test_every_demo_user_logs_in_with_the_stated_password(
        self, loaded: demo.DemoSummary, spec: Spec, client: Any
    ) -> None:
        assert len(spec["users"]) >= 6
        assert User.objects.count() == len(spec["users"])
        for entry in spec["users"]:
            credentials = {"username": entry["username"], "password": entry["password"]}
            response = client.post(reverse("login"), credentials)
            assert response.status_code == 302, entry["username"]
            user = User.objects.get(username=entry["username"])
            assert client.session["_auth_user_id"] == str(user.pk)
            assert user.is_superuser == entry.get("superuser", False)
            client.logout()

    def test_the_summary_gives_each_login_its_password_role_and_view(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        assert loaded.created
        assert [(x.username, x.password) for x in loaded.logins] == [
            (u["username"], u["password"]) for u in spec["users"]
        ]
        roles = {x.username: x.role for x in loaded.logins}
        assert all(roles[u["username"]] == u["role"] for u in spec["users"] if "role" in u)
        # "What they can see" leaves out the modules a login's profile does not show.
        support = next(p for p in spec["profiles"] if p["name"] == "Support")
        support_roles = {r["name"] for r in spec["roles"] if r["profiles"] == ["Support"]}
        agents = [x for x in loaded.logins if x.role in support_roles]
        assert agents
        for agent in agents:
            assert set(agent.visible) == set(support["modules"]) & set(spec["records"])

    def test_groups_nest_as_the_file_says(self, loaded: demo.DemoSummary, spec: Spec) -> None:
        for entry in spec["groups"]:
            group = Group.objects.get(name=entry["name"])
            assert {u.username for u in group.members.all()} == set(entry["members"])
            assert {g.name for g in group.subgroups.all()} == set(entry["groups"])

    def test_profiles_hide_or_lock_the_fields_the_file_names(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        checked = 0
        for profile in (p for p in spec["profiles"] if p.get("fields")):
            roles = {r["name"] for r in spec["roles"] if profile["name"] in r["profiles"]}
            for username in users_in(spec, roles):
                user = User.objects.get(username=username)
                for dotted, rule in profile["fields"].items():
                    module, _, name = dotted.partition(".")
                    shown = {
                        fa.field.name: fa.read_only
                        for fa in access.visible_fields(user, Module.objects.get(name=module))
                    }
                    if rule == "hidden":
                        assert name not in shown, (username, dotted)
                    else:
                        assert shown[name] is True, (username, dotted)
                    checked += 1
        assert checked >= 2

    def test_the_records_are_as_many_as_the_file_counts(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        expected = expected_counts(spec)
        actual = {m: Record.objects.filter(module__name=m).count() for m in expected}
        assert actual == expected
        assert loaded.records == expected
        assert sum(expected.values()) >= 190

    def test_records_go_to_their_owners_in_turn_so_groups_own_some(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        group_owned = 0
        for module in spec["records"]:
            records = Record.objects.filter(module__name=module)
            found = records.select_related("owner_user", "owner_group")
            assert Counter(owner_name(r) for r in found) == expected_owners(spec, module)
            group_owned += records.filter(owner_group__isnull=False).count()
        assert group_owned > 0

    def test_projects_is_a_custom_module_whose_email_feeds_the_address_index(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        wanted = next(m for m in spec["custom_modules"] if m["name"] == "Projects")
        module = Module.objects.get(name="Projects")
        assert module.is_custom
        assert module.number_prefix == wanted["prefix"]
        fields = [(f.name, f.type) for f in Field.objects.filter(module=module)]
        assert fields == [(f["name"], f["type"]) for f in wanted["fields"]]
        count = spec["records"]["Projects"]["count"]
        numbers = set(Record.objects.filter(module=module).values_list("number", flat=True))
        assert numbers == {f"{wanted['prefix']}{i}" for i in range(1, count + 1)}
        company_domains = {c["domain"] for c in spec["records"]["Companies"]["items"]}
        addresses = RecordAddress.objects.filter(record__module=module)
        assert addresses.count() == count
        assert set(addresses.values_list("domain", flat=True)) <= company_domains

    def test_every_company_has_contacts_writing_from_its_domain(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        domains = {c["name"]: c["domain"] for c in spec["records"]["Companies"]["items"]}
        companies = {r.pk: r.data["name"] for r in Record.objects.filter(module__name="Companies")}
        contacts = list(Record.objects.filter(module__name="Contacts"))
        for contact in contacts:
            company = companies[contact.data["company"]]
            assert contact.data["email"].endswith("@" + domains[company])
        assert {companies[c.data["company"]] for c in contacts} == set(domains)

    def test_every_few_leads_write_from_a_free_mail_address(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        leads = spec["records"]["Leads"]
        free = RecordAddress.objects.filter(
            record__module__name="Leads", domain__in=leads["free_mail_domains"]
        )
        assert free.count() == len(range(0, leads["count"], leads["free_mail_every"]))

    def test_tickets_take_every_status(self, loaded: demo.DemoSummary) -> None:
        statuses = Field.objects.get(module__name="Tickets", name="status").choices
        tickets = Record.objects.filter(module__name="Tickets")
        assert {t.data["status"] for t in tickets} == set(statuses)

    def test_private_leads_open_only_to_the_sharing_rules_target(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        assert spec["default_sharing"]["Leads"] == "private"
        assert Module.objects.get(name="Leads").default_sharing == "private"
        rule = next(r for r in spec["sharing_rules"] if r["module"] == "Leads")
        sources = users_in(spec, roles_under(spec, rule["from"]["role_and_subordinates"]))
        targets = users_in(spec, {rule["to"]["role"]})
        shared = sources & set(spec["records"]["Leads"]["owners"])
        assert targets
        assert shared
        for target in targets:
            assert visible_owners(target, "Leads") == shared
        SharingRule.objects.filter(module__name="Leads").delete()
        for target in targets:
            assert visible_owners(target, "Leads") == set()

    def test_a_private_lead_stays_hidden_from_a_colleague_of_the_same_role(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        owners = set(spec["records"]["Leads"]["owners"])
        first, second = sorted(users_in(spec, {"Sales rep"}) & owners)[:2]
        assert first in visible_owners(first, "Leads")
        assert second not in visible_owners(first, "Leads")
        assert first not in visible_owners(second, "Leads")

    def test_the_opportunity_rule_lets_its_target_edit_the_groups_deals(
        self, loaded: demo.DemoSummary, spec: Spec
    ) -> None:
        rule = next(r for r in spec["sharing_rules"] if r["module"] == "Opportunities")
        group = next(g for g in spec["groups"] if g["name"] == rule["from"]["group"])
        source = set(group["members"]) | {f"group:{group['name']}"}
        owners = set(spec["records"]["Opportunities"]["owners"])
        targets = users_in(spec, {rule["to"]["role"]})
        assert targets
        for target in targets:
            editable = visible_owners(target, "Opportunities", "edit")
            assert editable == (source & owners) | ({target} & owners)

    def test_loading_twice_changes_nothing(self, loaded: demo.DemoSummary) -> None:
        before = table_sizes()
        again = demo.load(path=DEMO)
        assert not again.created
        assert "already" in again.message
        assert table_sizes() == before
        assert again.logins == loaded.logins


# --- Loading from scratch ----------------------------------------------------------------------


def test_the_same_file_gives_the_same_records_every_time(db: None) -> None:
    with transaction.atomic():
        demo.load(path=DEMO)
        first = snapshot()
        transaction.set_rollback(True)
    assert not Record.objects.exists()
    demo.load(path=DEMO)
    assert snapshot() == first


def test_a_database_holding_part_of_the_demo_is_refused_in_plain_words(db: None) -> None:
    access_admin.create_role(name="CEO")
    with pytest.raises(Conflict, match="role 'CEO'"):
        demo.load(path=DEMO)
    assert not User.objects.exists()
    assert not Module.objects.filter(name="Projects").exists()


def test_a_missing_file_is_reported(db: None, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no demo file"):
        demo.load(path=tmp_path / "demo.json")


def test_a_file_that_is_not_json_is_reported(db: None, tmp_path: Path) -> None:
    path = tmp_path / "demo.json"
    path.write_text("{roles: []}")
    with pytest.raises(Invalid, match="not valid JSON"):
        demo.load(path=path)


# --- The command -----------------------------------------------------------------------------


def test_the_command_loads_the_demo_and_prints_the_logins(db: None, spec: Spec) -> None:
    out = StringIO()
    call_command("load_demo", stdout=out)
    for entry in spec["users"]:
        assert entry["username"] in out.getvalue()
        assert entry["password"] in out.getvalue()
    again = StringIO()
    call_command("load_demo", stdout=again)
    assert "already loaded" in again.getvalue()


def test_the_command_names_a_missing_file(db: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no demo file"):
        call_command("load_demo", "--path", str(tmp_path / "nope.json"), stdout=StringIO())
