"""The demo organisation: roles, profiles, groups, users, a custom module and ~200 records.

Everything comes from a declarative file (fixtures/demo.json). Records are generated from its
compact lists with a random generator seeded from the file and written through
`records.create`, so the same file always gives the same data, numbered, labelled, indexed and
logged like records a user enters. Roles go through `access_admin.create_role` (it keeps the
paths right). Profiles, permissions, groups, users, sharing rules and the custom module are
administrator configuration without services of their own yet: they are written here, and
only here.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import models, transaction

from crm import access
from crm.exceptions import Conflict, Invalid, NotFound
from crm.models import (
    Field,
    FieldPermission,
    Group,
    Module,
    ModulePermission,
    Profile,
    Role,
    SharingRule,
    User,
)
from crm.models.access import Party
from crm.models.modules import Sharing
from crm.services import access_admin
from crm.services import records as record_service

Spec = dict[str, Any]
Values = dict[str, Any]
M = TypeVar("M", bound=models.Model)
T = TypeVar("T")

GROUP = "group:"  # an owner named "group:Sales team" is the group, any other name a user
ACTIONS = ("view", "create", "edit", "delete")


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str  # as written in the file; a user may have changed it since
    role: str
    note: str
    visible: dict[str, int]  # per module he may see: how many demo records he may view


@dataclass(frozen=True)
class DemoSummary:
    created: bool  # False: the demo was already there and nothing changed
    message: str
    counts: dict[str, int] = field(default_factory=dict)  # what was created, by kind
    records: dict[str, int] = field(default_factory=dict)  # records created, by module
    logins: list[DemoLogin] = field(default_factory=list)


def load(*, path: Path) -> DemoSummary:
    """Load the demo described by `path` in one transaction; a second load changes nothing."""
    spec = _read(path)
    try:
        with transaction.atomic():
            if _already_loaded(spec):
                return DemoSummary(
                    created=False,
                    message="The demo is already loaded; nothing was changed.",
                    logins=_logins(spec),
                )
            counts, made = _build(spec)
    except KeyError as exc:
        raise Invalid(f"The demo file {path} lacks the entry {exc}.") from exc
    name = spec["organisation"]["name"]
    return DemoSummary(
        created=True,
        message=f"Loaded the demo organisation {name}.",
        counts=counts,
        records=made,
        logins=_logins(spec),
    )


# --- Reading and checking the file -------------------------------------------------------------


def _read(path: Path) -> Spec:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFound(f"There is no demo file at {path}.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"The demo file {path} cannot be read: {exc}.") from exc
    except json.JSONDecodeError as exc:
        raise Invalid(f"The demo file {path} is not valid JSON: {exc}.") from exc
    if not isinstance(spec, dict):
        raise Invalid(f"The demo file {path} should hold one JSON object.")
    return spec


def _already_loaded(spec: Spec) -> bool:
    """The demo's users are its identity; a database holding only part of the demo is refused.

    Loading into it would collide on unique names half-way, or mix the demo with real data.
    """
    usernames = [u["username"] for u in spec["users"]]
    if User.objects.filter(username__in=usernames).count() == len(usernames):
        return True
    taken = _taken_names(spec)
    if taken:
        raise Conflict(
            f"This database already has {', '.join(taken)}, which the demo would create. "
            "Load the demo into an empty database."
        )
    return False


def _taken_names(spec: Spec) -> list[str]:
    wanted: list[tuple[str, type[models.Model], str, list[str]]] = [
        ("user", User, "username", [u["username"] for u in spec["users"]]),
        ("role", Role, "name", [r["name"] for r in spec["roles"]]),
        ("profile", Profile, "name", [p["name"] for p in spec["profiles"]]),
        ("group", Group, "name", [g["name"] for g in spec["groups"]]),
        ("module", Module, "name", [m["name"] for m in spec["custom_modules"]]),
        ("number prefix", Module, "number_prefix", [m["prefix"] for m in spec["custom_modules"]]),
    ]
    taken: list[str] = []
    for kind, model, attr, names in wanted:
        found = model._default_manager.filter(**{f"{attr}__in": names})
        taken += [f"{kind} {name!r}" for name in sorted(found.values_list(attr, flat=True))]
    return taken


def _named(mapping: Mapping[str, T], name: str, kind: str) -> T:
    try:
        return mapping[name]
    except KeyError:
        raise Invalid(f"The demo file names an unknown {kind}: {name!r}.") from None


def _validated(obj: M, what: str) -> M:
    # The file is written by hand: model validation catches a bad prefix or field name early.
    try:
        obj.full_clean()
    except ValidationError as exc:
        raise Invalid(f"The demo's {what} is not valid: {'; '.join(exc.messages)}") from exc
    return obj


# --- Building the organisation -----------------------------------------------------------------


def _build(spec: Spec) -> tuple[dict[str, int], dict[str, int]]:
    custom = [_create_module(m) for m in spec["custom_modules"]]
    # Profiles name modules with "*": custom modules must exist before them.
    modules = {m.name: m for m in Module.objects.all()}
    _set_default_sharing(spec["default_sharing"], modules)
    profiles = {p["name"]: _create_profile(p, modules) for p in spec["profiles"]}
    roles = _create_roles(spec["roles"], profiles)
    domain = spec["organisation"]["domain"]
    users = {u["username"]: _create_user(u, roles, domain) for u in spec["users"]}
    groups = _create_groups(spec["groups"], users)
    rules = [_create_sharing_rule(r, modules, roles, groups) for r in spec["sharing_rules"]]
    owners: dict[str, User | Group] = {**users, **{GROUP + n: g for n, g in groups.items()}}
    drafts = Planner(spec).plan(spec["records"])
    made = _write_records(drafts, modules, owners, actor=_administrator(users))
    counts = {
        "roles": len(roles),
        "profiles": len(profiles),
        "groups": len(groups),
        "users": len(users),
        "custom modules": len(custom),
        "sharing rules": len(rules),
        "records": sum(made.values()),
    }
    return counts, made


def _create_module(spec: Spec) -> Module:
    module = Module(
        name=spec["name"],
        singular=spec["singular"],
        plural=spec["plural"],
        number_prefix=spec["prefix"],
        icon=spec.get("icon", ""),
        position=spec.get("position", 100),
        accepts_messages=spec.get("accepts_messages", True),
        accepts_documents=spec.get("accepts_documents", True),
        is_custom=True,
    )
    _validated(module, f"module {module.name}").save()
    for position, f in enumerate(spec["fields"], start=1):
        reference = f.get("reference")
        new = Field(
            module=module,
            name=f["name"],
            label=f["label"],
            type=f["type"],
            required=f.get("required", False),
            is_label=f.get("is_label", False),
            choices=f.get("choices", []),
            position=position * 10,
            reference_module=Module.objects.filter(name=reference).first() if reference else None,
            is_custom=True,
        )
        if reference and new.reference_module is None:
            raise Invalid(f"The demo's field {module.name}.{new.name} refers to {reference!r}.")
        _validated(new, f"field {module.name}.{new.name}").save()
    return module


def _set_default_sharing(spec: Spec, modules: dict[str, Module]) -> None:
    for name in set(spec) - {"*", "about"}:
        _named(modules, name, "module")
    for module in modules.values():
        level = spec.get(module.name, spec["*"])
        if level not in Sharing.values:
            raise Invalid(f"The demo's sharing for {module.name}, {level!r}, is not a level.")
        module.default_sharing = level
        module.save(update_fields=["default_sharing"])


def _create_profile(spec: Spec, modules: dict[str, Module]) -> Profile:
    profile = Profile.objects.create(
        name=spec["name"],
        description=spec.get("description", ""),
        view_all=spec.get("view_all", False),
        edit_all=spec.get("edit_all", False),
    )
    for name, actions in _module_actions(spec["modules"], modules).items():
        ModulePermission.objects.create(
            profile=profile, module=modules[name], visible=True, **_actions(actions)
        )
    for dotted, rule in spec.get("fields", {}).items():
        if rule not in ("hidden", "read_only"):
            raise Invalid(f"The demo's rule for {dotted} should be hidden or read_only.")
        FieldPermission.objects.create(
            profile=profile,
            field=_field(dotted),
            visible=rule != "hidden",
            read_only=rule == "read_only",
        )
    return profile


def _module_actions(spec: dict[str, str], modules: dict[str, Module]) -> dict[str, str]:
    """Actions per module; "*" stands for every module not named."""
    named = {_named(modules, n, "module").name: a for n, a in spec.items() if n != "*"}
    every = {n: spec["*"] for n in modules} if "*" in spec else {}
    return every | named


def _actions(words: str) -> dict[str, bool]:
    wanted = set(words.split())
    if wanted - set(ACTIONS):
        raise Invalid(
            f"The demo names unknown actions: {', '.join(sorted(wanted - set(ACTIONS)))}."
        )
    return ModulePermission.flags(wanted)


def _field(dotted: str) -> Field:
    module, _, name = dotted.partition(".")
    found = Field.objects.filter(module__name=module, name=name).first()
    if found is None:
        raise Invalid(f"The demo file names an unknown field: {dotted!r}.")
    return found


def _create_roles(specs: list[Spec], profiles: dict[str, Profile]) -> dict[str, Role]:
    roles: dict[str, Role] = {}
    for spec in specs:
        # A parent must come earlier in the file: the tree is written top down.
        parent = _named(roles, spec["parent"], "parent role") if spec["parent"] else None
        role = access_admin.create_role(name=spec["name"], parent=parent)
        role.profiles.set([_named(profiles, p, "profile") for p in spec["profiles"]])
        roles[role.name] = role
    return roles


def _create_user(spec: Spec, roles: dict[str, Role], domain: str) -> User:
    superuser = bool(spec.get("superuser", False))
    user = User(
        username=spec["username"],
        first_name=spec.get("first_name", ""),
        last_name=spec.get("last_name", ""),
        email=f"{spec['username']}@{domain}",
        is_superuser=superuser,
        is_staff=superuser,
        role=_named(roles, spec["role"], "role") if spec.get("role") else None,
    )
    # Set directly: demo passwords are meant to be known, so the validators do not apply.
    user.set_password(spec["password"])
    user.save()
    return user


def _create_groups(specs: list[Spec], users: dict[str, User]) -> dict[str, Group]:
    groups = {
        s["name"]: Group.objects.create(name=s["name"], description=s.get("description", ""))
        for s in specs
    }
    # Memberships after every group exists, so a group may contain one defined later.
    for s in specs:
        group = groups[s["name"]]
        group.members.set([_named(users, u, "user") for u in s.get("members", [])])
        group.subgroups.set([_named(groups, g, "group") for g in s.get("groups", [])])
    return groups


def _create_sharing_rule(
    spec: Spec, modules: dict[str, Module], roles: dict[str, Role], groups: dict[str, Group]
) -> SharingRule:
    if spec["access"] not in SharingRule.Access.values:
        raise Invalid(f"The demo's sharing rule access {spec['access']!r} is not read/read_write.")
    return SharingRule.objects.create(
        module=_named(modules, spec["module"], "module"),
        access=spec["access"],
        **_party("source", spec["from"], roles, groups),
        **_party("target", spec["to"], roles, groups),
    )


def _party(
    side: str, spec: dict[str, str], roles: dict[str, Role], groups: dict[str, Group]
) -> dict[str, Any]:
    if len(spec) != 1 or next(iter(spec)) not in Party.values:
        raise Invalid(f"A demo sharing rule's party should be one of {', '.join(Party.values)}.")
    ((kind, name),) = spec.items()
    if kind == Party.GROUP:
        return {f"{side}_kind": kind, f"{side}_group": _named(groups, name, "group")}
    return {f"{side}_kind": kind, f"{side}_role": _named(roles, name, "role")}


def _administrator(users: dict[str, User]) -> User:
    admin = next((u for u in users.values() if u.is_superuser), None)
    if admin is None:
        raise Invalid("The demo needs a superuser: he enters the demo's records.")
    return admin


# --- Records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A record planned earlier; written as its primary key once it exists."""

    module: str
    index: int


@dataclass(frozen=True)
class Draft:
    module: str
    owner: str
    data: Values


def _write_records(
    drafts: list[Draft],
    modules: dict[str, Module],
    owners: dict[str, User | Group],
    *,
    actor: User,
) -> dict[str, int]:
    """Create the drafts in order, each through the records service.

    The administrator enters them, as an import would: a rep's read-only field or a lead
    private to someone else must not stop the demo data. The owner is who the file says.
    """
    pks: dict[str, list[int]] = {}
    for draft in drafts:
        data = {
            k: pks[v.module][v.index] if isinstance(v, Ref) else v for k, v in draft.data.items()
        }
        record = record_service.create(
            actor=actor,
            module=_named(modules, draft.module, "module"),
            data=data,
            owner=_named(owners, draft.owner, "owner"),
        )
        pks.setdefault(draft.module, []).append(record.pk)
    return {module: len(ids) for module, ids in pks.items()}


RecordMaker = Callable[["Planner", Spec], list[Values]]


class Planner:
    """Turns the file's compact lists into record drafts, the same ones on every run.

    Every random choice comes from one generator seeded by the file, drawn in the file's order;
    dates are offsets from the file's reference date, never from today.
    """

    def __init__(self, spec: Spec) -> None:
        # Reproducible demo data, not secrets: a seeded generator is what is wanted here.
        self.rng = random.Random(spec["seed"])  # noqa: S311
        self.today = dt.date.fromisoformat(spec["reference_date"])
        self.people: Spec = spec["people"]
        self.drafts: dict[str, list[Values]] = {}
        self._names = self._name_pairs()

    def plan(self, spec: Spec) -> list[Draft]:
        drafts: list[Draft] = []
        for module, module_spec in spec.items():
            if module == "about":
                continue
            make = _named(GENERATORS, module, "module to generate records for")
            values = [
                {k: v for k, v in d.items() if v is not None} for d in make(self, module_spec)
            ]
            self.drafts[module] = values
            owners: list[str] = module_spec["owners"]
            drafts += [Draft(module, owners[i % len(owners)], d) for i, d in enumerate(values)]
        return drafts

    def _name_pairs(self) -> Iterator[tuple[str, str]]:
        pairs = [
            (f, last) for f in self.people["first_names"] for last in self.people["last_names"]
        ]
        self.rng.shuffle(pairs)
        return iter(pairs)

    def person(self) -> tuple[str, str]:
        pair = next(self._names, None)
        if pair is None:
            raise Invalid("The demo wants more people than its name lists can pair.")
        return pair

    def fill(self, pattern: str) -> str:
        return "".join(str(self.rng.randrange(10)) if c == "#" else c for c in pattern)

    def phone(self, country: str) -> str:
        return self.fill(self.people["phone_patterns"][country])

    def day(self, offset: int) -> str:
        return (self.today + dt.timedelta(days=offset)).isoformat()

    def choices(self, module: str, field_name: str) -> list[str]:
        # Picklists come from the modules themselves, so the file does not repeat them.
        return list(Field.objects.get(module__name=module, name=field_name).choices)

    def contacts_of(self, company: int) -> list[int]:
        ref = Ref("Companies", company)
        return [i for i, c in enumerate(self.drafts["Contacts"]) if c.get("company") == ref]

    def about_opportunity(self, index: int) -> dict[str, str]:
        """Names an event or task subject may use: '{contact}', '{company}', '{opportunity}'."""
        opportunity = self.drafts["Opportunities"][index]
        contact = self.drafts["Contacts"][opportunity["contact"].index]
        company = self.drafts["Companies"][opportunity["company"].index]
        return {
            "contact": f"{contact['first_name']} {contact['last_name']}",
            "company": company["name"],
            "opportunity": opportunity["name"],
            "city": company["city"],
            "email": contact["email"],
        }


def _address_part(name: str) -> str:
    """'Zoë' -> 'zoe', "O'Connor" -> 'oconnor': what people really use before the @."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", ascii_name.lower())


def _domain_of(company: Values) -> str:
    # A company's own address (info@<domain>) carries its domain.
    return str(company["email"]).rpartition("@")[2]


def _companies(p: Planner, spec: Spec) -> list[Values]:
    return [
        {
            "name": c["name"],
            "website": f"https://www.{c['domain']}",
            "email": f"info@{c['domain']}",
            "phone": p.phone(c["country"]),
            "industry": c["industry"],
            "city": c["city"],
            "country": c["country"],
        }
        for c in spec["items"]
    ]


def _contacts(p: Planner, spec: Spec) -> list[Values]:
    companies = p.drafts["Companies"]
    contacts = []
    for i in range(spec["count"]):
        # Every company gets a contact before any gets a second one.
        index = i if i < len(companies) else p.rng.randrange(len(companies))
        company = companies[index]
        first, last = p.person()
        contacts.append(
            {
                "first_name": first,
                "last_name": last,
                "email": f"{_address_part(first)}.{_address_part(last)}@{_domain_of(company)}",
                "phone": p.phone(company["country"]),
                "mobile": p.fill(p.people["mobile_pattern"]) if p.rng.random() < 0.6 else None,
                "job_title": p.rng.choice(p.people["job_titles"]),
                "company": Ref("Companies", index),
            }
        )
    return contacts


def _leads(p: Planner, spec: Spec) -> list[Values]:
    statuses, sources = p.choices("Leads", "status"), p.choices("Leads", "source")
    countries = sorted(set(p.people["phone_patterns"]) - {"about"})
    leads = []
    for i in range(spec["count"]):
        first, last = p.person()
        prospect = p.rng.choice(spec["prospects"])
        local = f"{_address_part(first)}.{_address_part(last)}"
        if i % spec["free_mail_every"] == 0:
            # Free-mail senders: suggestions must not match them to a company by domain.
            email = f"{local}{p.rng.randint(10, 99)}@{p.rng.choice(spec['free_mail_domains'])}"
        else:
            email = f"{local}@{prospect['domain']}"
        leads.append(
            {
                "first_name": first,
                "last_name": last,
                "company_name": prospect["name"],
                "email": email,
                "phone": p.phone(p.rng.choice(countries)),
                "status": p.rng.choice(statuses),
                "source": p.rng.choice(sources),
            }
        )
    return leads


def _opportunities(p: Planner, spec: Spec) -> list[Values]:
    stages = p.choices("Opportunities", "stage")
    companies = p.drafts["Companies"]
    opportunities = []
    for _ in range(spec["count"]):
        index = p.rng.randrange(len(companies))
        stage = p.rng.choice(stages)
        # Closed deals closed in the past; open ones are expected to close later.
        offset = p.rng.randint(-90, -1) if stage.startswith("Closed") else p.rng.randint(7, 150)
        opportunities.append(
            {
                "name": f"{companies[index]['name']} – {p.rng.choice(spec['products'])}",
                "company": Ref("Companies", index),
                "contact": Ref("Contacts", p.rng.choice(p.contacts_of(index))),
                "amount": p.rng.randrange(
                    spec["amount_min"], spec["amount_max"] + 1, spec["amount_step"]
                ),
                "stage": stage,
                "close_date": p.day(offset),
            }
        )
    return opportunities


def _tickets(p: Planner, spec: Spec) -> list[Values]:
    statuses, priorities = p.choices("Tickets", "status"), p.choices("Tickets", "priority")
    contacts = p.drafts["Contacts"]
    tickets = []
    for i in range(spec["count"]):
        index = p.rng.randrange(len(contacts))
        contact = contacts[index]
        tickets.append(
            {
                "title": p.rng.choice(spec["titles"]),
                "status": statuses[i % len(statuses)],  # in turn: every status appears
                "priority": p.rng.choice(priorities),
                "contact": Ref("Contacts", index),
                "company": contact["company"],
                "description": f"Reported by {contact['first_name']} {contact['last_name']} "
                f"<{contact['email']}>.",
            }
        )
    return tickets


def _projects(p: Planner, spec: Spec) -> list[Values]:
    statuses = p.choices("Projects", "status")
    companies, contacts = p.drafts["Companies"], p.drafts["Contacts"]
    projects = []
    for _ in range(spec["count"]):
        index = p.rng.randrange(len(companies))
        lead_contact = contacts[p.rng.choice(p.contacts_of(index))]
        projects.append(
            {
                "name": f"{companies[index]['name']} – {p.rng.choice(spec['kinds'])}",
                "company": Ref("Companies", index),
                "status": p.rng.choice(statuses),
                "budget": p.rng.randrange(
                    spec["budget_min"], spec["budget_max"] + 1, spec["budget_step"]
                ),
                "deadline": p.day(p.rng.randint(14, 240)),
                "lead_contact_email": lead_contact["email"],
            }
        )
    return projects


def _events(p: Planner, spec: Spec) -> list[Values]:
    kinds = p.choices("Events", "type")
    events = []
    for i in range(spec["count"]):
        kind = kinds[i % len(kinds)]
        index = p.rng.randrange(len(p.drafts["Opportunities"]))
        about = p.about_opportunity(index)
        day = p.today + dt.timedelta(days=p.rng.randint(1, 21))
        start = dt.datetime.combine(day, dt.time(p.rng.choice([9, 10, 11, 14, 15, 16])), dt.UTC)
        minutes = 30 if kind == "Call" else 60
        events.append(
            {
                "subject": p.rng.choice(spec["subjects"][kind]).format(**about),
                "type": kind,
                "start": start.isoformat(),
                "end": (start + dt.timedelta(minutes=minutes)).isoformat(),
                "location": about["city"] if kind == "Meeting" else "Phone",
                "related_to": Ref("Opportunities", index),
                "attendees": about["email"],
            }
        )
    return events


def _tasks(p: Planner, spec: Spec) -> list[Values]:
    statuses, priorities = p.choices("Tasks", "status"), p.choices("Tasks", "priority")
    tasks = []
    for i in range(spec["count"]):
        index = p.rng.randrange(len(p.drafts["Opportunities"]))
        tasks.append(
            {
                "subject": p.rng.choice(spec["subjects"]).format(**p.about_opportunity(index)),
                "due_date": p.day(p.rng.randint(-5, 30)),
                "status": statuses[i % len(statuses)],
                "priority": p.rng.choice(priorities),
                "related_to": Ref("Opportunities", index),
            }
        )
    return tasks


GENERATORS: dict[str, RecordMaker] = {
    "Companies": _companies,
    "Contacts": _contacts,
    "Leads": _leads,
    "Opportunities": _opportunities,
    "Tickets": _tickets,
    "Projects": _projects,
    "Events": _events,
    "Tasks": _tasks,
}


# --- What each login sees ----------------------------------------------------------------------


def _logins(spec: Spec) -> list[DemoLogin]:
    demo_modules = list(Module.objects.filter(name__in=list(spec["records"])))
    logins = []
    for entry in spec["users"]:
        user = User.objects.select_related("role").get(username=entry["username"])
        shown = set(access.visible_modules(user).values_list("pk", flat=True))
        logins.append(
            DemoLogin(
                username=user.username,
                password=entry["password"],
                role=_role_label(user),
                note=entry.get("note", ""),
                visible={
                    m.name: access.records(user, m).count() for m in demo_modules if m.pk in shown
                },
            )
        )
    return logins


def _role_label(user: User) -> str:
    if user.role is not None:
        return user.role.name
    return "Administrator" if user.is_superuser else "(no role)"
