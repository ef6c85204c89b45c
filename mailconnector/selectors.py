"""What the add-in reads: modules, suggestions, search, look-ups. Every read via crm.access."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet

from crm import access
from crm.email.addresses import is_free_mail, normalise_email
from crm.email.parse import normalise_message_id
from crm.exceptions import Invalid
from crm.models import (
    Field,
    Message,
    MessageLink,
    Module,
    Record,
    RecordAddress,
    RecordReference,
)
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

    One statement (`_SUGGESTIONS_SQL`), visibility from `access.visible_records_sql`: the
    add-in asks at every email opened, and a query per step and module cost twice as much.
    """
    skip = {normalise_email(a) for a in ignore} | {normalise_email(getattr(user, "email", ""))}
    wanted = _wanted(addresses, skip - {None})
    if not wanted:
        return []
    modules = {m.pk: m for m in modules_for(user)}
    # The address index is read only through email fields the user may see.
    email_fields = access.visible_email_fields(user, list(modules.values()))
    visible, params = access.visible_records_sql(user, modules, alias="r")
    if not email_fields or visible == "FALSE":
        return []
    by_name = {m.name: m.pk for m in modules.values()}
    senders = [a for a, role in wanted.items() if role in ("from", "sender")]
    domains = {a.rpartition("@")[2] for a in senders} - {""}
    params |= {
        "addresses": list(wanted),
        "roles": list(wanted.values()),
        "ranks": [ROLE_RANK.get(role, 9) for role in wanted.values()],
        "email_fields": email_fields,
        "domains": sorted(d for d in domains if not is_free_mail(d)),
        "companies": by_name.get("Companies", -1),
        "contacts": by_name.get("Contacts", -1),
        "message_id": normalise_message_id(message_id),  # None matches nothing
    }
    with connection.cursor() as cursor:
        cursor.execute(_suggestions_sql(visible), params)
        rows = cursor.fetchall()
    found = [_suggestion(row, modules) for row in rows]
    found.sort(key=lambda s: (s.rank, s.record.label.lower(), s.record.pk))
    return found[:MAX_SUGGESTIONS]


def _suggestion(row: tuple[Any, ...], modules: dict[int, Module]) -> Suggestion:
    pk, module_id, number, label, tier, sub, role, linked = row
    record = Record(id=pk, module_id=module_id, number=number, label=label)
    record.module = modules[module_id]
    if tier == 0:
        reason = f"{role} address"
    elif tier == 1:
        reason = "sender's company domain"
    elif modules[module_id].name == "Companies":
        reason = "contact's company"
    else:
        reason = "company's contact"
    return Suggestion(record, reason, (tier, sub), bool(linked))


# Tier 0: a visible record with one of the addresses on an email field the user may see (its
# best role wins); tier 1: visible companies with an email on the sender's domain; tier 2: the
# companies of the contacts found and the contacts of the companies found, if visible. A record
# found several ways keeps its best tier.
_SUGGESTIONS_SQL = """
WITH wanted(address, role, rank) AS (
    SELECT * FROM unnest(%(addresses)s::text[], %(roles)s::text[], %(ranks)s::int[])
), candidate AS (
    SELECT ra.record_id, 0 AS tier, min(w.rank) AS sub,
           (array_agg(w.role ORDER BY w.rank))[1] AS role
    FROM {address} ra JOIN wanted w ON w.address = ra.address
    WHERE ra.field_id = ANY(%(email_fields)s::bigint[])
    GROUP BY ra.record_id
    UNION ALL
    SELECT DISTINCT ra.record_id, 1, 0, NULL
    FROM {address} ra
    JOIN {record} r ON r.id = ra.record_id AND r.module_id = %(companies)s
    WHERE ra.domain = ANY(%(domains)s::text[]) AND ra.field_id = ANY(%(email_fields)s::bigint[])
), found AS (
    SELECT r.id, r.module_id, c.tier, c.sub, c.role
    FROM candidate c JOIN {record} r ON r.id = c.record_id
    WHERE {visible}
), company_field AS (
    SELECT f.id FROM {field} f WHERE f.module_id = %(contacts)s AND f.name = 'company'
), related AS (
    SELECT rr.target_id AS id FROM found f
    JOIN {reference} rr ON rr.record_id = f.id AND rr.field_id IN (SELECT id FROM company_field)
    WHERE f.module_id = %(contacts)s
    UNION
    SELECT rr.record_id FROM found f
    JOIN {reference} rr ON rr.target_id = f.id AND rr.field_id IN (SELECT id FROM company_field)
    WHERE f.module_id = %(companies)s
), ranked AS (
    SELECT id, tier, sub, role FROM found
    UNION ALL
    SELECT r.id, 2, 0, NULL FROM related x JOIN {record} r ON r.id = x.id WHERE {visible}
)
SELECT DISTINCT ON (r.id) r.id, r.module_id, r.number, r.label, x.tier, x.sub, x.role,
       EXISTS (SELECT 1 FROM {link} ml JOIN {message} m ON m.id = ml.message_id
               WHERE m.message_id = %(message_id)s AND ml.record_id = r.id)
FROM ranked x JOIN {record} r ON r.id = x.id
ORDER BY r.id, x.tier, x.sub
"""


def _suggestions_sql(visible: str) -> str:
    return _SUGGESTIONS_SQL.format(
        visible=visible,
        address=RecordAddress._meta.db_table,
        record=Record._meta.db_table,
        field=Field._meta.db_table,
        reference=RecordReference._meta.db_table,
        link=MessageLink._meta.db_table,
        message=Message._meta.db_table,
    )


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
