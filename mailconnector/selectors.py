"""What the add-in reads: modules, suggestions, search, look-ups. Every read via crm.access."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q, QuerySet

from crm import access
from crm.email.addresses import is_free_mail, normalise_email
from crm.email.parse import normalise_message_id
from crm.exceptions import Invalid
from crm.models import MessageLink, Module, Record, RecordAddress, RecordReference
from crm.selectors import records as record_selectors

MAX_SUGGESTIONS = 20
ROLE_RANK = {"from": 0, "sender": 0, "reply_to": 1, "to": 2, "cc": 3}


def modules_for(user: access.Actor) -> QuerySet[Module]:
    """Modules the user may see that take emails (custom ones included)."""
    return access.visible_modules(user).filter(accepts_messages=True)


def linkable_module(user: access.Actor, name: str) -> Module:
    return record_selectors.visible_module(user, name)


@dataclass
class Suggestion:
    record: Record
    reason: str
    rank: tuple[int, int]
    already_linked: bool = False


@dataclass
class _Ranked:
    best: dict[int, Suggestion] = field(default_factory=dict)

    def offer(self, record: Record, reason: str, rank: tuple[int, int]) -> None:
        current = self.best.get(record.pk)
        if current is None or rank < current.rank:
            self.best[record.pk] = Suggestion(record, reason, rank)


def suggestions(
    user: access.Actor,
    addresses: Iterable[tuple[str, str]],
    *,
    ignore: Iterable[str] = (),
    message_id: str | None = None,
) -> list[Suggestion]:
    """Records for the email's addresses, best first, only those the user may see.

    1. a record with the exact address on any email field; 2. companies by the sender's
    domain (free-mail domains never); 3. the companies of contacts found, and the contacts of
    companies found. Each says why it matched and whether the email is already on it.
    """
    skip = {normalise_email(a) for a in ignore} | {normalise_email(getattr(user, "email", ""))}
    wanted = _wanted(addresses, skip - {None})
    ranked = _Ranked()
    modules = {m.pk: m for m in modules_for(user)}
    # The address index is read only through email fields the user may see.
    email_fields = access.visible_email_fields(user, list(modules.values()))
    _exact(user, wanted, modules, email_fields, ranked)
    _by_domain(user, wanted, modules, email_fields, ranked)
    _related(user, modules, ranked)
    result = sorted(ranked.best.values(), key=lambda s: (s.rank, s.record.label.lower()))
    result = result[:MAX_SUGGESTIONS]
    linked = set(linked_record_ids(message_id)) if message_id else set()
    for s in result:
        s.already_linked = s.record.pk in linked
    return result


def _wanted(addresses: Iterable[tuple[str, str]], skip: set[str | None]) -> dict[str, str]:
    """Address → its best role (from beats to beats cc)."""
    wanted: dict[str, str] = {}
    for raw, role in addresses:
        email = normalise_email(raw)
        if email is None or email in skip:
            continue
        if email not in wanted or ROLE_RANK.get(role, 9) < ROLE_RANK.get(wanted[email], 9):
            wanted[email] = role
    return wanted


def _visible(user: access.Actor, module_id: int, ids: Iterable[int]) -> QuerySet[Record]:
    return access.records(user, module_id).filter(pk__in=list(ids)).select_related("module")


def _by_module(rows: Iterable[tuple[int, int]]) -> dict[int, set[int]]:
    grouped: dict[int, set[int]] = {}
    for module_id, record_id in rows:
        grouped.setdefault(module_id, set()).add(record_id)
    return grouped


def _exact(
    user: access.Actor,
    wanted: dict[str, str],
    modules: dict[int, Module],
    email_fields: list[int],
    ranked: _Ranked,
) -> None:
    if not wanted:
        return
    rows = RecordAddress.objects.filter(
        address__in=list(wanted),
        field_id__in=email_fields,
    ).values_list("record__module_id", "record_id", "address")
    role_of: dict[int, str] = {}
    for _, record_id, address in rows:
        role = wanted[address]
        if record_id not in role_of or ROLE_RANK.get(role, 9) < ROLE_RANK.get(
            role_of[record_id], 9
        ):
            role_of[record_id] = role
    for module_id, ids in _by_module((m, r) for m, r, _ in rows).items():
        for record in _visible(user, module_id, ids):
            role = role_of[record.pk]
            ranked.offer(record, f"{role} address", (0, ROLE_RANK.get(role, 9)))


def _companies_module(modules: dict[int, Module]) -> Module | None:
    return next((m for m in modules.values() if m.name == "Companies"), None)


def _by_domain(
    user: access.Actor,
    wanted: dict[str, str],
    modules: dict[int, Module],
    email_fields: list[int],
    ranked: _Ranked,
) -> None:
    companies = _companies_module(modules)
    senders = [a for a, role in wanted.items() if role in ("from", "sender")]
    domains = {a.rpartition("@")[2] for a in senders} - {""}
    domains = {d for d in domains if not is_free_mail(d)}
    if companies is None or not domains:
        return
    ids = RecordAddress.objects.filter(
        domain__in=domains, field_id__in=email_fields, record__module=companies
    ).values_list("record_id", flat=True)
    for record in _visible(user, companies.pk, ids):
        ranked.offer(record, "sender's company domain", (1, 0))


def _related(user: access.Actor, modules: dict[int, Module], ranked: _Ranked) -> None:
    """Companies of the contacts found, and contacts of the companies found."""
    found = list(ranked.best.values())
    names = {m.pk: m.name for m in modules.values()}
    contact_ids = [s.record.pk for s in found if names.get(s.record.module_id) == "Contacts"]
    company_ids = [s.record.pk for s in found if names.get(s.record.module_id) == "Companies"]
    refs = RecordReference.objects.filter(
        Q(record_id__in=contact_ids, field__name="company")
        | Q(target_id__in=company_ids, record__module__name="Contacts", field__name="company")
    ).values_list("record_id", "target_id", "record__module_id", "target__module_id")
    related: dict[int, set[int]] = {}
    for record_id, target_id, record_module, target_module in refs:
        if record_id in contact_ids:
            related.setdefault(target_module, set()).add(target_id)
        else:
            related.setdefault(record_module, set()).add(record_id)
    for module_id, ids in related.items():
        if module_id not in modules:
            continue
        kind = "contact's company" if names[module_id] == "Companies" else "company's contact"
        for record in _visible(user, module_id, ids):
            ranked.offer(record, kind, (2, 0))


# --- search --------------------------------------------------------------------------------


@dataclass
class SearchPage:
    records: list[Record]
    next_cursor: str | None


def search(
    user: access.Actor, module: Module, q: str, *, cursor: str | None, limit: int = 25
) -> SearchPage:
    """Visible records of one module matching `q`, newest change first, by keyset cursor."""
    qs = record_selectors.search(user, module, q).select_related("module")
    qs = qs.order_by("-modified_at", "-id")
    if cursor:
        modified, pk = _decode_cursor(cursor)
        qs = qs.filter(Q(modified_at__lt=modified) | Q(modified_at=modified, id__lt=pk))
    rows = list(qs[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return SearchPage(rows, _encode_cursor(rows[-1]) if more and rows else None)


def _encode_cursor(record: Record) -> str:
    data = json.dumps([record.modified_at.isoformat(), record.pk]).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        modified, pk = json.loads(raw)
        return datetime.fromisoformat(modified), int(pk)
    except (ValueError, TypeError) as exc:
        raise Invalid(fields={"cursor": "Not a cursor from this API."}) from exc


# --- look-ups ------------------------------------------------------------------------------


def linked_record_ids(message_id: str | None) -> list[int]:
    normalised = normalise_message_id(message_id)
    if not normalised:
        return []
    return list(
        MessageLink.objects.filter(message__message_id=normalised).values_list(
            "record_id", flat=True
        )
    )


def lookup(user: access.Actor, message_id: str) -> list[Record]:
    """The records the user may see that an email (by Message-ID) is already linked to.

    Links to records he may not see are not mentioned, not even as a count.
    """
    normalised = normalise_message_id(message_id)
    if not normalised:
        raise Invalid(fields={"message_id": "Give the email's Message-ID."})
    links = MessageLink.objects.filter(message__message_id=normalised).values_list(
        "record__module_id", "record_id"
    )
    records: list[Record] = []
    for module_id, ids in _by_module(links).items():
        records.extend(_visible(user, module_id, ids))
    return sorted(records, key=lambda r: (r.module.position, r.label.lower()))
