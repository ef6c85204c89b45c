"""The authorization matrix: every add-in API operation, actor and object, against a hand table.

RELIABILITY.md, "Authorization has no holes". The expected answer of each cell comes from
`ACCESS` below, written by hand from ARCHITECTURE.md, "Permissions" (the vtiger model), never
from `crm.access`. Every actor calls with a real bearer token from `auth.issue_tokens`, so
authentication, the license gate and the record checks all run as in production.

The organisation (tests/conftest.py's, plus five people):

    CEO ─┬─ Sales manager (bob) ── Sales rep (alice, una: not licensed, dave: deactivated)
         ├─ Support manager ── Support agent (charlie: another branch)
         ├─ Marketing (gina: member of the group "Key accounts")
         ├─ Auditor (rita: reads the Partners' contacts through a read-only sharing rule)
         ├─ Partners (sam: owns the shared contact; not an actor)
         └─ Intern (nora: her profile has no Contacts module)
    admin: superuser.

Contacts and Companies are private (organisation-wide default), so only the role tree, groups
and sharing rules open records. The objects, all linked to one email (`LINKED_ID`):

    alice     alice's contact: own for alice, a subordinate's for bob, another's for the rest
    bob       bob's contact: his manager's for alice
    charlie   charlie's contact: another branch's for alice and bob
    group     owned by the group "Key accounts"
    nora      nora's own contact, in the module her profile lacks
    shared    sam's contact, readable by rita through a read-only sharing rule
    binned    alice's contact in the recycle bin (the add-in never offers deleted records)
    company   alice's company, addressed as a contact by the path operations ("other module")
    missing   an id no record has
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.db.models import Max
from django.test import override_settings
from rest_framework.test import APIClient

from crm.models import (
    Attachment,
    ChangeLog,
    Document,
    DocumentLink,
    Field,
    FieldPermission,
    Group,
    Message,
    MessageLink,
    Module,
    Profile,
    Record,
    Role,
    SharingRule,
    User,
)
from crm.models.access import Party
from crm.models.modules import Sharing
from crm.services import ingest
from crm.services import records as record_service
from licensing import services as licenses
from mailconnector import auth
from mailconnector.models import AddinSession
from tests.factories import (
    GroupFactory,
    ProfileFactory,
    RoleFactory,
    UserFactory,
    grant,
    grant_all,
    make_record,
)
from tests.licensing.vendor import CRM_URL, Vendor

API = "/api/addin/v1"
LINKED_ID = "<matrix-linked@customer.example>"  # the email every object is linked to
NEW_ID = "<matrix-new@customer.example>"  # the email the link cells try to store
_VENDOR = Vendor()

# --- The hand table -------------------------------------------------------------------------
# Access of each actor to each object in the object's own module:
#   w  view and edit    r  view only    -  not visible (answers 404, never listed)
# "company" is a Companies record: its column is its access as a company (suggestions and
# look-ups name it so); addressed as a contact (search, link, unlink in Contacts) it does not
# exist for anyone. "binned" is in the recycle bin: the add-in offers no deleted record.
ACCESS = """
           alice  bob  charlie  group  nora  shared  binned  company  missing
  admin      w     w     w        w     w      w       -        w        -
  bob        w     w     -        -     -      -       -        w        -
  alice      w     -     -        -     -      -       -        w        -
  charlie    -     -     w        -     -      -       -        -        -
  gina       -     -     -        w     -      -       -        -        -
  nora       -     -     -        -     -      -       -        -        -
  rita       -     -     -        -     -      r       -        -        -
"""
# Actors stopped before any record is considered: (status, problem code).
GATED: dict[str, tuple[int, str]] = {
    "dave": (401, "session_expired"),  # deactivated after logging in
    "una": (403, "user_not_licensed"),  # active, logged in, not enabled for the connector
    "anonymous": (401, "not_authenticated"),  # no Authorization header
}
MAIL_MODULES = frozenset(
    {"Companies", "Contacts", "Leads", "Opportunities", "Tickets", "Events", "Tasks"}
)
# The modules each admitted actor is offered (those he may view that take emails).
MODULES: dict[str, frozenset[str]] = {
    "admin": MAIL_MODULES,
    "bob": MAIL_MODULES,
    "alice": MAIL_MODULES,
    "charlie": MAIL_MODULES,
    "gina": MAIL_MODULES,
    "nora": MAIL_MODULES - {"Contacts"},
    "rita": MAIL_MODULES,
}
# How a write on a record (link, unlink) is refused, by access letter; None: it is done.
REFUSAL: dict[str, tuple[int, str] | None] = {
    "w": None,
    "r": (403, "record_not_editable"),
    "-": (404, "not_found"),
}


def _parse(table: str) -> dict[str, dict[str, str]]:
    header, *rows = (line.split() for line in table.strip().splitlines())
    return {actor: dict(zip(header, letters, strict=True)) for actor, *letters in rows}


TABLE = _parse(ACCESS)
OBJECTS = tuple(next(iter(TABLE.values())))
ADMITTED = tuple(TABLE)
ACTORS = (*ADMITTED, *GATED)
SEEN = frozenset("rw")


def access_of(actor: str, obj: str) -> str:
    return TABLE[actor][obj]


def via_contacts(actor: str, obj: str) -> str:
    """Access to the object addressed as a Contacts record (search, link, unlink)."""
    return "-" if obj == "company" else access_of(actor, obj)


def cells(objects: tuple[str, ...] = OBJECTS) -> list[Any]:
    return [pytest.param(a, o, id=f"{a}-{o}") for a in ACTORS for o in objects]


# --- The organisation, built once for the module ---------------------------------------------


@dataclass(frozen=True)
class Obj:
    module: str
    pk: int
    label: str
    number: str
    email: str


@dataclass(frozen=True)
class World:
    objects: dict[str, Obj]
    tokens: dict[str, str]  # actor -> access token (anonymous has none)
    sessions: dict[str, int]  # actor -> the session his token belongs to
    spare: dict[str, int]  # actor -> a second session of his, to end
    linked: int  # pk of the email linked to every object


def _contact(key: str, owner: User | Group) -> Record:
    return make_record("Contacts", owner, last_name=f"Mx{key}Q", email=f"{key}@{key}.example")


def _email(message_id: str, attachments: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jane Doe <jane@customer.example>"
    msg["To"] = "someone@crm.example"
    msg["Subject"] = "Matrix"
    msg["Message-ID"] = message_id
    msg.set_content("Hello.")
    for n in range(attachments):
        msg.add_attachment(
            b"%PDF-1.4 x", maintype="application", subtype="pdf", filename=f"{n}.pdf"
        )
    return bytes(msg)


def _build() -> World:
    for module in Module.objects.filter(name__in=["Contacts", "Companies"]):
        module.default_sharing = Sharing.PRIVATE
        module.save()
    standard = ProfileFactory(name="Standard")
    grant_all(standard)
    no_contacts = ProfileFactory(name="No contacts")
    grant_all(no_contacts)
    grant(no_contacts, "Contacts", "")

    def role(name: str, parent: Role | None = None, profile: Profile = standard) -> Role:
        r: Role = RoleFactory(name=name, parent=parent)
        r.profiles.add(profile)
        return r

    ceo = role("CEO")
    sales_manager = role("Sales manager", ceo)
    sales_rep = role("Sales rep", sales_manager)
    support_agent = role("Support agent", role("Support manager", ceo))
    auditor = role("Auditor", ceo)
    partners = role("Partners", ceo)
    users = {
        "admin": UserFactory(username="admin", is_superuser=True, is_staff=True),
        "bob": UserFactory(username="bob", role=sales_manager),
        "alice": UserFactory(username="alice", role=sales_rep),
        "charlie": UserFactory(username="charlie", role=support_agent),
        "gina": UserFactory(username="gina", role=role("Marketing", ceo)),
        "nora": UserFactory(username="nora", role=role("Intern", ceo, no_contacts)),
        "rita": UserFactory(username="rita", role=auditor),
        "dave": UserFactory(username="dave", role=sales_rep),
        "una": UserFactory(username="una", role=sales_rep),
    }
    sam = UserFactory(username="sam", role=partners)
    key_accounts = GroupFactory(name="Key accounts")
    key_accounts.members.add(users["gina"])
    SharingRule.objects.create(
        module=Module.objects.get(name="Contacts"),
        source_kind=Party.ROLE,
        source_role=partners,
        target_kind=Party.ROLE,
        target_role=auditor,
        access=SharingRule.Access.READ,
    )

    records = {
        "alice": _contact("alice", users["alice"]),
        "bob": _contact("bob", users["bob"]),
        "charlie": _contact("charlie", users["charlie"]),
        "group": _contact("group", key_accounts),
        "nora": _contact("nora", users["nora"]),
        "shared": _contact("shared", sam),
        "binned": _contact("binned", users["alice"]),
        "company": make_record(
            "Companies", users["alice"], name="MxcompanyQ", email="company@company.example"
        ),
    }
    stored = ingest.store(_email(LINKED_ID), source=Message.Source.ADDIN)
    for record in records.values():
        ingest.link(message=stored.message, record=record, actor=None, via=Message.Source.ADDIN)
    record_service.delete(actor=users["admin"], record=records["binned"])

    objects = {
        key: Obj(r.module.name, r.pk, r.label, r.number, f"{key}@{key}.example")
        for key, r in records.items()
    }
    top = Record.objects.aggregate(top=Max("pk"))["top"]
    objects["missing"] = Obj("Contacts", top + 10_000, "MxmissingQ", "CON999999", "m@m.example")

    licenses.activate(actor=users["admin"], key=_VENDOR.key(users=10))
    enabled = [u for name, u in users.items() if name != "una"]
    licenses.enable_users(actor=users["admin"], users=enabled)

    tokens: dict[str, str] = {}
    sessions: dict[str, int] = {}
    spare: dict[str, int] = {}
    for name, user in users.items():
        pair = auth.issue_tokens(user=user, client="matrix", ip="127.0.0.1")
        tokens[name] = pair["access_token"]
        sessions[name] = pair["session_id"]
        spare[name] = auth.issue_tokens(user=user, client="spare", ip="127.0.0.1")["session_id"]
    users["dave"].is_active = False
    users["dave"].save()  # what an administrator does; it ends his sessions
    return World(objects, tokens, sessions, spare, stored.message.pk)


@pytest.fixture(scope="module")
def world(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The organisation, once: each test then runs in a savepoint inside this transaction."""
    media = tmp_path_factory.mktemp("matrix-media")
    with (
        django_db_blocker.unblock(),
        override_settings(
            LICENSE_PUBLIC_KEY=_VENDOR.public_key, CRM_BASE_URL=CRM_URL, MEDIA_ROOT=media
        ),
        transaction.atomic(),
    ):
        built = _build()
        yield built
        transaction.set_rollback(True)


@pytest.fixture
def w(world: World, db: None, settings: Any) -> World:
    settings.LICENSE_PUBLIC_KEY = _VENDOR.public_key
    settings.CRM_BASE_URL = CRM_URL
    return world


def client(world: World, actor: str) -> APIClient:
    c = APIClient()
    if actor in world.tokens:
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {world.tokens[actor]}")
    return c


# --- Assertions --------------------------------------------------------------------------------


def assert_problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == code


def assert_gated(response: Any, actor: str) -> None:
    assert_problem(response, *GATED[actor])


def assert_no_trace(response: Any, obj: Obj) -> None:
    """Nothing in the answer names the object: not its label, number or address."""
    body = response.content.decode()
    assert obj.label not in body
    assert f'"{obj.number}"' not in body
    assert obj.email not in body


def assert_same_without(world: World, obj: str, send: Any) -> None:
    """The answer is byte for byte what it is when the object does not exist at all."""
    before = send()
    Record.objects.filter(pk=world.objects[obj].pk).delete()
    after = send()
    assert (before.status_code, before.content) == (after.status_code, after.content)


def assert_same_404(invisible: Any, missing: Any) -> None:
    assert invisible.status_code == missing.status_code == 404
    assert invisible["Content-Type"] == missing["Content-Type"]
    assert invisible.content == missing.content


def listed(response: Any, key: str = "results") -> set[tuple[str, int]]:
    return {(r["module"], r["id"]) for r in response.json()[key]}


def ref(world: World, obj: str) -> tuple[str, int]:
    return (world.objects[obj].module, world.objects[obj].pk)


def stored_rows() -> tuple[int, ...]:
    return tuple(
        m.objects.count()
        for m in (Message, MessageLink, Attachment, Document, DocumentLink, ChangeLog)
    )


# --- modules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ACTORS)
def test_modules_offers_exactly_the_mail_modules_the_actor_may_view(w: World, actor: str) -> None:
    response = client(w, actor).get(f"{API}/modules")
    if actor in GATED:
        assert_gated(response, actor)
        return
    assert response.status_code == 200
    assert {m["name"] for m in response.json()} == MODULES[actor]


# --- suggestions -------------------------------------------------------------------------------


@pytest.mark.parametrize(("actor", "obj"), cells())
def test_suggestions_offer_a_record_only_to_actors_who_may_see_it(
    w: World, actor: str, obj: str
) -> None:
    target = w.objects[obj]

    def send() -> Any:
        body = {"addresses": [{"email": target.email, "role": "from"}], "message_id": LINKED_ID}
        return client(w, actor).post(f"{API}/suggestions", body, format="json")

    response = send()
    if actor in GATED:
        assert_gated(response, actor)
        assert_no_trace(response, target)
        return
    assert response.status_code == 200, response.content
    if access_of(actor, obj) in SEEN:
        assert listed(response) == {ref(w, obj)}
        (result,) = response.json()["results"]
        assert result["label"] == target.label
        assert result["already_linked"] is True
    else:
        assert response.json() == {"results": []}
        assert_no_trace(response, target)
        assert_same_without(w, obj, send)


# --- search in a module ------------------------------------------------------------------------


@pytest.mark.parametrize(("actor", "obj"), cells())
def test_search_in_contacts_finds_a_record_only_for_actors_who_may_see_it(
    w: World, actor: str, obj: str
) -> None:
    target = w.objects[obj]

    def send(module: str = "Contacts") -> Any:
        return client(w, actor).get(f"{API}/modules/{module}/records", {"q": target.label})

    response = send()
    if actor in GATED:
        assert_gated(response, actor)
        return
    if "Contacts" not in MODULES[actor]:
        assert_same_404(response, send("NoSuchModule"))
        assert_problem(response, 404, "not_found")
        assert_no_trace(response, target)
        return
    assert response.status_code == 200, response.content
    if via_contacts(actor, obj) in SEEN:
        assert listed(response) == {ref(w, obj)}
        assert response.json()["results"][0]["label"] == target.label
    else:
        assert response.json() == {"results": [], "next_cursor": None}
        assert_no_trace(response, target)
        assert_same_without(w, obj, send)


# --- lookup ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("actor", "obj"), cells())
def test_lookup_names_a_linked_record_only_to_actors_who_may_see_it(
    w: World, actor: str, obj: str
) -> None:
    target = w.objects[obj]

    def send() -> Any:
        return client(w, actor).get(f"{API}/emails/lookup", {"message_id": LINKED_ID})

    response = send()
    if actor in GATED:
        assert_gated(response, actor)
        assert_no_trace(response, target)
        return
    assert response.status_code == 200, response.content
    everything_seen = {ref(w, o) for o in OBJECTS if access_of(actor, o) in SEEN}
    assert listed(response, "records") <= everything_seen
    assert (ref(w, obj) in listed(response, "records")) == (access_of(actor, obj) in SEEN)
    if access_of(actor, obj) in SEEN:
        assert target.label in {r["label"] for r in response.json()["records"]}
    else:
        assert_no_trace(response, target)
        assert_same_without(w, obj, send)


# --- POST emails (linking) ---------------------------------------------------------------------


def _link(world: World, actor: str, module: str, pk: int) -> Any:
    body = {
        "eml": SimpleUploadedFile("mail.eml", _email(NEW_ID, attachments=1), "message/rfc822"),
        "links": json.dumps([{"module": module, "id": pk}]),
    }
    return client(world, actor).post(
        f"{API}/emails", body, format="multipart", HTTP_IDEMPOTENCY_KEY=NEW_ID
    )


@pytest.mark.parametrize(("actor", "obj"), cells())
def test_linking_an_email_needs_edit_access_and_otherwise_stores_nothing(
    w: World, actor: str, obj: str
) -> None:
    target = w.objects[obj]
    before = stored_rows()
    response = _link(w, actor, "Contacts", target.pk)
    if actor in GATED:
        assert_gated(response, actor)
        assert stored_rows() == before
        return
    refusal = REFUSAL[via_contacts(actor, obj)]
    if refusal is None:
        assert response.status_code == 201, response.content
        assert [r["id"] for r in response.json()["records"]] == [target.pk]
        links = MessageLink.objects.filter(message__message_id__icontains="matrix-new")
        assert list(links.values_list("record_id", flat=True)) == [target.pk]
        return
    assert_problem(response, *refusal)
    assert stored_rows() == before
    if refusal[0] == 404:
        assert_no_trace(response, target)
        assert_same_404(response, _link(w, actor, "Contacts", w.objects["missing"].pk))


@pytest.mark.parametrize(
    "obj", [o for o in OBJECTS if via_contacts("alice", o) != "w" and o != "missing"]
)
def test_linking_to_an_editable_and_an_unreachable_record_at_once_stores_nothing(
    w: World, obj: str
) -> None:
    before = stored_rows()
    body = {
        "eml": SimpleUploadedFile("mail.eml", _email(NEW_ID, attachments=1), "message/rfc822"),
        "links": json.dumps(
            [{"module": "Contacts", "id": w.objects[o].pk} for o in ("alice", obj)]
        ),
    }
    response = client(w, "alice").post(f"{API}/emails", body, format="multipart")
    assert_problem(response, 404, "not_found")
    assert_no_trace(response, w.objects[obj])
    assert stored_rows() == before


# --- DELETE emails/{id}/links/{module}/{record} ------------------------------------------------


def _unlink(world: World, actor: str, pk: int) -> Any:
    return client(world, actor).delete(f"{API}/emails/{world.linked}/links/Contacts/{pk}")


@pytest.mark.parametrize(("actor", "obj"), cells())
def test_unlinking_an_email_needs_edit_access_and_otherwise_keeps_the_link(
    w: World, actor: str, obj: str
) -> None:
    target = w.objects[obj]
    was_linked = MessageLink.objects.filter(message_id=w.linked, record_id=target.pk).exists()
    assert was_linked == (obj != "missing")
    response = _unlink(w, actor, target.pk)
    still_linked = MessageLink.objects.filter(message_id=w.linked, record_id=target.pk).exists()
    if actor in GATED:
        assert_gated(response, actor)
        assert still_linked == was_linked
        return
    refusal = REFUSAL[via_contacts(actor, obj)]
    if refusal is None:
        assert response.status_code == 204, response.content
        assert not still_linked
        return
    assert_problem(response, *refusal)
    assert still_linked == was_linked
    if refusal[0] == 404:
        assert_no_trace(response, target)
        assert_same_404(response, _unlink(w, actor, w.objects["missing"].pk))


# --- auth/sessions -----------------------------------------------------------------------------

SESSION_OBJECTS = ("own", "another's", "missing")
# The session list and ending a session need a login but no license: a user can always end
# his sessions. Another user's session is not found, like a missing one, even for admin.
SESSION_GATED = {k: v for k, v in GATED.items() if k != "una"}
SESSION_ACTORS = (*ADMITTED, *GATED)


def _session_of(world: World, actor: str, obj: str) -> int:
    if obj == "own" and actor in world.spare:
        return world.spare[actor]
    if obj in ("own", "another's"):  # anonymous has no session: any user's stands in
        return world.spare["alice" if actor == "charlie" else "charlie"]
    return max(world.spare.values()) + 10_000


@pytest.mark.parametrize("actor", SESSION_ACTORS)
def test_the_session_list_shows_only_the_actors_own_live_sessions(w: World, actor: str) -> None:
    response = client(w, actor).get(f"{API}/auth/sessions")
    if actor in SESSION_GATED:
        assert_problem(response, *SESSION_GATED[actor])
        return
    assert response.status_code == 200, response.content
    assert {s["id"] for s in response.json()} == {w.sessions[actor], w.spare[actor]}
    assert [s["id"] for s in response.json() if s["current"]] == [w.sessions[actor]]


@pytest.mark.parametrize(
    ("actor", "obj"),
    [pytest.param(a, o, id=f"{a}-{o}") for a in SESSION_ACTORS for o in SESSION_OBJECTS],
)
def test_ending_a_session_works_only_on_the_actors_own_sessions(
    w: World, actor: str, obj: str
) -> None:
    session_id = _session_of(w, actor, obj)

    def send(pk: int) -> Any:
        return client(w, actor).delete(f"{API}/auth/sessions/{pk}")

    response = send(session_id)
    ended = AddinSession.objects.filter(pk=session_id, revoked_at__isnull=False).exists()
    if actor in SESSION_GATED:
        assert_problem(response, *SESSION_GATED[actor])
        assert not ended or actor == "dave"  # dave's sessions ended with his account
        return
    if obj == "own":
        assert response.status_code == 204, response.content
        assert ended
        return
    assert_problem(response, 404, "not_found")
    assert not ended
    if obj == "another's":
        assert_same_404(response, send(_session_of(w, actor, "missing")))


# --- An email stored for others, reached through a look-alike ------------------------------------


def _look_alike(world: World, how: str, message_id: str, subject: str) -> Any:
    """Charlie links, to his own contact, an email with only the Message-ID and subject of one
    stored for alice: either a short whole email he wrote, or a partial capture's fields."""
    links = json.dumps([{"module": "Contacts", "id": world.objects["charlie"].pk}])
    if how == "whole email":
        msg = EmailMessage()
        msg["From"], msg["Subject"], msg["Message-ID"] = "x@customer.example", subject, message_id
        msg.set_content("Anything.")
        body: dict[str, Any] = {
            "eml": SimpleUploadedFile("mail.eml", bytes(msg), "message/rfc822"),
            "links": links,
        }
    else:
        body = {"message_id": message_id, "subject": subject, "sender": "x@customer.example"}
        body["links"] = links
    return client(world, "charlie").post(f"{API}/emails", body, format="multipart")


@pytest.mark.parametrize("how", ["whole email", "partial capture"])
def test_a_look_alike_of_an_email_stored_for_others_does_not_reveal_it(w: World, how: str) -> None:
    message_id, subject = "<board-pack@customer.example>", "Board pack Q4"
    msg = EmailMessage()
    msg["From"], msg["Subject"], msg["Message-ID"] = "ceo@customer.example", subject, message_id
    msg.set_content("Confidential figures.")
    msg.add_attachment(b"%PDF secret", maintype="application", subtype="pdf", filename="q4.pdf")
    original = ingest.store(bytes(msg), source=Message.Source.ADDIN).message
    alices = Record.objects.get(pk=w.objects["alice"].pk)
    ingest.link(message=original, record=alices, actor=None, via=Message.Source.ADDIN)

    response = _look_alike(w, how, message_id, subject)

    charlies = w.objects["charlie"].pk
    assert not MessageLink.objects.filter(message=original, record_id=charlies).exists()
    assert not DocumentLink.objects.filter(
        record_id=charlies, document__attachments__message=original
    ).exists()
    # Nor does the answer say that such an email is already in the CRM ("200 already there").
    assert response.status_code != 200, response.content


# --- A field the actor's profile hides ------------------------------------------------------------


@pytest.mark.parametrize("operation", ["suggestions", "search"])
def test_an_email_field_hidden_by_the_profile_is_neither_matched_nor_searched(
    w: World, operation: str
) -> None:
    # Alice's profile ("Standard") stops showing the contacts' email field: her contact stays
    # visible, but its address is no longer hers to read, nor to find the contact by.
    email = Field.objects.get(module__name="Contacts", name="email")
    standard = Profile.objects.get(name="Standard")
    FieldPermission.objects.create(profile=standard, field=email, visible=False)
    target = w.objects["alice"]
    if operation == "suggestions":
        body = {"addresses": [{"email": target.email, "role": "from"}]}
        response = client(w, "alice").post(f"{API}/suggestions", body, format="json")
    else:
        # A prefix past the "@" (the label holds the local part): letter by letter, a prefix
        # search would spell the whole address.
        query = {"q": target.email[: target.email.index("@") + 3]}
        response = client(w, "alice").get(f"{API}/modules/Contacts/records", query)
    assert response.status_code == 200, response.content
    assert response.json()["results"] == []
