"""Rule actions: create or update a ticket, link to Contacts, Companies and Leads, or nothing.

ARCHITECTURE.md, "Mail converter", Actions. Every record is written through
`crm.services.records` as the mailbox's owner, every email linked through `crm.services.ingest`.
Look-ups go through `crm.access` (`records`, `records_with_ids`) as the owner: the converter
never finds what its owner could not see.

An action that cannot apply (no ticket for the number, nobody to link, the sender over the
ticket limit, data the CRM refuses) returns `ok=False` with a reason, so the scanner falls
through to the next rule. A permission problem (the owner may not create tickets) raises: the
message is quarantined with that error for an administrator to fix, never silently dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from crm import access, statements
from crm.email.addresses import is_free_mail
from crm.exceptions import Invalid
from crm.models import Message, MessageLink, Module, Record, RecordAddress, User
from crm.services import ingest
from crm.services import records as record_service
from mailconverter import tickets
from mailconverter.models import LedgerEntry, Mailbox, Outcome
from mailconverter.rules import find_ticket_number

__all__ = ["ACTION_TYPES", "ActionResult", "MailContext", "run", "validate"]

VIA = Message.Source.CONVERTER
TICKETS, CONTACTS, COMPANIES, LEADS = "Tickets", "Contacts", "Companies", "Leads"
LINKABLE = (CONTACTS, COMPANIES, LEADS)
STATUS_NEW = "Open"
STATUS_ANSWERED = "Answered by customer"
MAX_TITLE = 255


@dataclass(frozen=True)
class MailContext:
    """What the actions of one message see."""

    mailbox: Mailbox
    owner: User
    message: Message
    body: str  # the text body (HTML converted to text when there is none)
    own_addresses: frozenset[str] = frozenset()
    capture: str | None = None  # the rule's regex capture or ticket number
    entry: LedgerEntry | None = None  # the ledger row acting on the email (the scanner's)
    # Definitions read once for many messages (modules by name); the scanner empties it.
    memo: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionResult:
    ok: bool
    outcome: str = Outcome.UNMATCHED
    records: list[Record] = field(default_factory=list)
    reason: str = ""


def run(action: Mapping[str, Any], ctx: MailContext) -> ActionResult:
    kind = action.get("type")
    handler = _HANDLERS.get(str(kind))
    if handler is None:
        return ActionResult(False, reason=f"unknown action {kind!r}")
    try:
        return handler(action, ctx)
    except Invalid as exc:  # the CRM refused the data (a field too long, a bad address…)
        return ActionResult(False, reason=f"{kind}: {exc.detail}"[:500])


# --- create ticket -----------------------------------------------------------------------------


def create_ticket(action: Mapping[str, Any], ctx: MailContext) -> ActionResult:
    sender = ctx.message.from_address
    limited = _over_sender_limit(sender)
    if limited:
        return ActionResult(False, reason=limited)
    module = _module(TICKETS, ctx.memo)
    contact = _first(_by_address(ctx.owner, CONTACTS, [sender], memo=ctx.memo))
    company = None
    if contact is not None:
        company = _company_of(ctx.owner, contact, ctx.memo)
    if company is None:
        company = _first(_by_address(ctx.owner, COMPANIES, [sender], domains=True, memo=ctx.memo))
    made: list[Record] = []
    lead = created_lead = None
    if contact is None and company is None and action.get("create_lead"):
        lead = _first(_by_address(ctx.owner, LEADS, [sender], memo=ctx.memo))
        if lead is None:
            lead = created_lead = _create_person(ctx, LEADS, ctx.message.from_name, sender)
        made.append(lead)
    data: dict[str, Any] = {
        "title": _title(ctx.message.subject),
        "status": action.get("status") or STATUS_NEW,
        "description": ctx.body,
    }
    if action.get("priority"):
        data["priority"] = action["priority"]
    if contact is not None:
        data["contact"] = contact.pk
    if company is not None:
        data["company"] = company.pk
    ticket = record_service.create(actor=ctx.owner, module=module, data=data, owner=ctx.owner)
    for record in (ticket, *made):
        ingest.link(message=ctx.message, record=record, actor=None, via=VIA)
    tickets.record_origin(
        ticket=ticket,
        mailbox=ctx.mailbox,
        message=ctx.message,
        created_lead=created_lead,
        entry=ctx.entry,
    )
    return ActionResult(True, Outcome.CREATED, [ticket, *made])


def _over_sender_limit(sender: str) -> str:
    limit = settings.CONVERTER_SENDER_TICKET_LIMIT
    minutes = settings.CONVERTER_SENDER_WINDOW_MINUTES
    if not sender or limit <= 0:
        return ""
    _one_sender_at_a_time(sender)
    since = timezone.now() - timedelta(minutes=minutes)
    with connection.cursor() as cursor:
        # Written out: once per ticket a scan opens (converter_ledger_created_by's columns).
        cursor.execute(
            f"SELECT COUNT(*) FROM {statements.table(LedgerEntry)} "  # noqa: S608
            "WHERE outcome = %s AND sender = %s AND created_at >= %s",
            [Outcome.CREATED.value, sender, since],
        )
        created = cursor.fetchone()[0]
    if created >= limit:
        return f"sender limit: {sender} already opened {created} tickets in {minutes} minutes"
    return ""


def _one_sender_at_a_time(sender: str) -> None:
    """Conversions of one sender's mail count his tickets one after the other, until commit:
    scans and workers side by side cannot both find him under the limit (PostgreSQL; SQLite
    has one writer)."""
    if connection.vendor != "postgresql":
        return
    digest = hashlib.sha256(f"sender-limit:{sender}".encode()).digest()
    key = int.from_bytes(digest[:8], signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _title(subject: str) -> str:
    title = " ".join(subject.split()) or "(no subject)"
    return title if len(title) <= MAX_TITLE else title[: MAX_TITLE - 1] + "…"


# --- update ticket -----------------------------------------------------------------------------


def update_ticket(action: Mapping[str, Any], ctx: MailContext) -> ActionResult:
    ticket, how = _find_ticket(ctx)
    if ticket is None:
        return ActionResult(False, reason=how)
    ingest.link(message=ctx.message, record=ticket, actor=None, via=VIA)
    m = ctx.message
    text = ctx.body.strip() or m.subject.strip() or "(empty message)"
    record_service.add_comment(
        actor=ctx.owner, record=ticket, body=text, author_address=m.from_address, via_mail=True
    )
    status = action.get("status") or STATUS_ANSWERED
    if ticket.data.get("status") != status:  # a closed ticket is reopened this way
        ticket = record_service.update(actor=ctx.owner, record=ticket, data={"status": status})
    return ActionResult(True, Outcome.UPDATED, [ticket], reason=how)


def _find_ticket(ctx: MailContext) -> tuple[Record | None, str]:
    module = _module(TICKETS, ctx.memo)
    prefix = module.number_prefix
    m = ctx.message
    # Looked for in this order, each only when the one before found no ticket: most mail
    # names none, and then no query runs at all.
    numbers = (
        ("the rule's capture", lambda: _as_ticket_number(ctx.capture, prefix)),
        ("the subject", lambda: find_ticket_number(m.subject, prefix)),
        ("Ticket Id in the body", lambda: _labelled_ticket_number(ctx.body, prefix)),
    )
    tried = []
    for where, find in numbers:
        number = find()
        if not number:
            continue
        tried.append(number)
        # As stored (the module's prefix, then the digits): the unique index finds it.
        digits = int(_TRAILING_DIGITS.search(number).group())  # type: ignore[union-attr]
        tickets = access.records(ctx.owner, module, "edit")
        ticket = tickets.filter(number=f"{prefix}{digits}").first()
        if ticket is not None:
            return ticket, f"{number} from {where}"
    ticket = _replied_ticket(m, ctx.owner, module)
    if ticket is not None:
        return ticket, f"{ticket.number} from In-Reply-To/References"
    if tried:
        return None, f"no ticket {', '.join(dict.fromkeys(tried))}"
    return None, "no ticket number and no reply to a ticket's email"


def _replied_ticket(m: Message, owner: User, module: Module) -> Record | None:
    """The ticket of the latest link of an email this one replies to.

    Each step starts from what is known to be few, by an index: the emails replied to, their
    links, then which of those records are tickets the owner may edit. A join from the tickets'
    side walks every ticket whenever the planner misjudges how many there are (a table that
    grew since it was last analysed).
    """
    refs = [r for r in [m.in_reply_to, *m.references] if r]
    if not refs:
        return None
    refs = sorted(set(refs))
    marks = ", ".join(["%s"] * len(refs))
    replied = _ids(
        # A PEC reply may quote only the certified id (mailconverter.pec, Threading).
        f"SELECT id FROM {statements.table(Message)} "  # noqa: S608
        f"WHERE (message_id IN ({marks}) OR certified_id IN ({marks})) AND id <> %s",
        [*refs, *refs, m.pk],
    )
    if not replied:
        return None
    linked = _ids(
        f"SELECT record_id FROM {statements.table(MessageLink)} "  # noqa: S608
        f"WHERE message_id IN ({', '.join(['%s'] * len(replied))}) "
        "ORDER BY linked_at DESC, id DESC",
        replied,
    )
    if not linked:
        return None
    found = {t.pk: t for t in access.records_with_ids(owner, module, linked, "edit")}
    return next((found[pk] for pk in linked if pk in found), None)


def _as_ticket_number(capture: str | None, prefix: str) -> str | None:
    if not capture:
        return None
    found = find_ticket_number(capture, prefix)
    if found:
        return found
    digits = capture.strip()
    return f"{prefix}{int(digits)}" if digits.isdigit() and len(digits) < 10 else None


_TRAILING_DIGITS = re.compile(r"\d+$")
_LABELLED = re.compile(r"\bticket[ ]?id:?\s*(?P<rest>\S+)", re.IGNORECASE)


def _labelled_ticket_number(body: str, prefix: str) -> str | None:
    """Only the explicit "Ticket Id: N" form: a bare "TT12" in quoted text proves little."""
    text = body[:100_000]
    # A quick look first: the case-blind search tries every position of the text. Its "i"
    # also matches a dotless one; no letter of "cket" has a case partner lower() misses.
    if "cket" not in text.lower():
        return None
    m = _LABELLED.search(text)
    return find_ticket_number(m.group(0), prefix) if m else None


# --- link, link or create ----------------------------------------------------------------------


def link(action: Mapping[str, Any], ctx: MailContext) -> ActionResult:
    module_name, addresses = _link_target(action, ctx)
    if module_name is None:
        return ActionResult(False, reason=f"cannot link to {action.get('module')!r}")
    found = _by_address(
        ctx.owner, module_name, addresses, domains=module_name == COMPANIES, memo=ctx.memo
    )
    if not found:
        return ActionResult(False, reason=f"no {module_name} for {', '.join(addresses) or '-'}")
    for record in found:
        ingest.link(message=ctx.message, record=record, actor=None, via=VIA)
    return ActionResult(True, Outcome.LINKED, found)


def link_or_create(action: Mapping[str, Any], ctx: MailContext) -> ActionResult:
    linked = link(action, ctx)
    if linked.ok:
        return linked
    module_name, addresses = _link_target(action, ctx)
    if module_name is None or not addresses:
        return linked
    names = _names(ctx)
    made = [_create_person(ctx, module_name, names.get(a, ""), a) for a in addresses]
    for record in made:
        ingest.link(message=ctx.message, record=record, actor=None, via=VIA)
    return ActionResult(True, Outcome.LINKED, made)


def _link_target(action: Mapping[str, Any], ctx: MailContext) -> tuple[str | None, list[str]]:
    module_name = action.get("module")
    if module_name not in LINKABLE:
        return None, []
    by = action.get("by", "sender")
    m = ctx.message
    addresses: list[str] = []
    if by in ("sender", "both"):
        addresses.append(m.from_address)
    if by in ("recipients", "both"):
        addresses.extend(a.get("email", "") for a in [*m.to, *m.cc])
    return str(module_name), [
        a for a in dict.fromkeys(x.lower() for x in addresses) if a and a not in ctx.own_addresses
    ]


def _names(ctx: MailContext) -> dict[str, str]:
    m = ctx.message
    names = {a.get("email", "").lower(): a.get("name", "") for a in [*m.to, *m.cc]}
    names[m.from_address.lower()] = m.from_name
    return names


def _create_person(ctx: MailContext, module_name: str, name: str, address: str) -> Record:
    local, _, domain = address.rpartition("@")
    if module_name == COMPANIES:
        data: dict[str, Any] = {"name": name or domain or address, "email": address}
    else:
        first, _, last = " ".join(name.split()).rpartition(" ")
        data = {"first_name": first, "last_name": last or local or address, "email": address}
        if module_name == LEADS:
            data |= {"status": "New", "source": "Email"}
    return record_service.create(
        actor=ctx.owner, module=_module(module_name, ctx.memo), data=data, owner=ctx.owner
    )


# --- do nothing --------------------------------------------------------------------------------


def nothing(action: Mapping[str, Any], ctx: MailContext) -> ActionResult:
    return ActionResult(True, Outcome.IGNORED, reason="a rule says to do nothing")


_HANDLERS = {
    "create_ticket": create_ticket,
    "update_ticket": update_ticket,
    "link": link,
    "link_or_create": link_or_create,
    "nothing": nothing,
}
ACTION_TYPES = tuple(_HANDLERS)


def validate(actions: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """Problems per action index, in words, for the rule form (empty when all is well)."""
    problems: dict[int, str] = {}
    listed = list(actions)
    if not listed:
        return {0: "Add at least one action."}
    for index, action in enumerate(listed):
        kind = action.get("type")
        if kind not in _HANDLERS:
            problems[index] = "Choose an action."
        elif kind in ("link", "link_or_create"):
            if action.get("module") not in LINKABLE:
                problems[index] = f"Link to one of {', '.join(LINKABLE)}."
            elif action.get("by", "sender") not in ("sender", "recipients", "both"):
                problems[index] = "Link by the sender, the recipients or both."
    return problems


# --- look-ups ----------------------------------------------------------------------------------


def _module(name: str, memo: dict[str, Any] | None = None) -> Module:
    """The module by name; with a memo, read once for all the messages it serves."""
    if memo is None:
        return Module.objects.get(name=name)
    key = f"module:{name}"
    if key not in memo:
        memo[key] = Module.objects.get(name=name)
    return memo[key]  # type: ignore[no-any-return]


def _by_address(
    owner: User,
    module_name: str,
    addresses: Iterable[str],
    *,
    domains: bool = False,
    memo: dict[str, Any] | None = None,
) -> list[Record]:
    """Live records the owner may edit with one of these addresses (every match, oldest first).

    With `domains`, a company also matches by its addresses' domain, free-mail domains excepted.
    """
    addresses = sorted({a.lower() for a in addresses if a})
    module = _module(module_name, memo)
    business = sorted(
        {d for d in (a.rpartition("@")[2] for a in addresses) if d and not is_free_mail(d)}
        if domains
        else ()
    )
    # Most senders are nobody's yet: then no query for the records.
    return access.records_with_ids(owner, module, _addressed(addresses, business), "edit")


def _ids(sql: str, params: list[Any]) -> list[int]:
    """The first column of a statement written out for the per-email path (compiling the ORM's
    query costs more than running it)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def _addressed(addresses: list[str], domains: list[str]) -> list[int]:
    """The records (of any module, deleted or not) with one of these addresses or domains, from
    the address index alone: the module and the owner's access narrow them down after."""
    if not addresses:
        return []
    where = [f"address IN ({', '.join(['%s'] * len(addresses))})"]
    if domains:
        where.append(f"domain IN ({', '.join(['%s'] * len(domains))})")
    return _ids(
        f"SELECT DISTINCT record_id FROM {statements.table(RecordAddress)} "  # noqa: S608
        f"WHERE {' OR '.join(where)}",
        [*addresses, *domains],
    )


def _first(records: list[Record]) -> Record | None:
    return records[0] if records else None


def _company_of(owner: User, contact: Record, memo: dict[str, Any] | None = None) -> Record | None:
    """The contact's company, if it is live and the owner may see it (as a ticket's reference
    must be: `crm.services.fieldvalues`)."""
    pk = contact.data.get("company")
    if not isinstance(pk, int):
        return None
    return _first(access.records_with_ids(owner, _module(COMPANIES, memo), [pk]))
