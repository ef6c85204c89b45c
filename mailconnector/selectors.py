"""What the add-in reads: modules, suggestions, search, look-ups. Every read via crm.access."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet

from crm import access, generations
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
# How long a process keeps a user's modules and visible email fields; any change to them bumps
# the privileges' generation first, so this only bounds memory.
SCOPE_SECONDS = 3600
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

    On PostgreSQL one statement (`_SUGGESTIONS_SQL`), visibility from
    `access.visible_records_sql`: the add-in asks at every email opened, and a query per step
    and module cost twice as much. Elsewhere (SQLite, the embedded default) the same steps as
    portable queries (`suggestions_by_step`).
    """
    wanted = wanted_addresses(user, addresses, ignore)
    if not wanted:
        return []
    if connection.vendor != "postgresql":  # the embedded default: portable, a query a step
        from mailconnector.suggestions_by_step import suggestions_by_step

        return suggestions_by_step(user, wanted, message_id)
    scope = _suggestion_scope(user)
    if not scope.email_fields:
        return []
    modules = scope.modules
    visible, params = access.visible_records_sql(user, scope.all_module_ids, alias="r")
    by_name = {m.name: m.pk for m in modules.values()}
    senders = [a for a, role in wanted.items() if role in ("from", "sender")]
    domains = {a.rpartition("@")[2] for a in senders} - {""}
    params |= {
        "addresses": list(wanted),
        "roles": list(wanted.values()),
        "ranks": [ROLE_RANK.get(role, 9) for role in wanted.values()],
        "email_fields": scope.email_fields,
        "company_email_fields": scope.company_email_fields,
        "domains": sorted(d for d in domains if not is_free_mail(d)),
        "companies": by_name.get("Companies", -1),
        "contacts": by_name.get("Contacts", -1),
        "company_field": scope.company_field,
        "message_id": normalise_message_id(message_id),  # None matches nothing
    }
    rows = _fetch_planned_once(_suggestions_sql(visible), params)
    found = [_suggestion(row, modules) for row in rows]
    found.sort(key=lambda s: (s.rank, s.record.label.lower(), s.record.pk))
    return found[:MAX_SUGGESTIONS]


@dataclass(frozen=True)
class _Scope:
    modules: dict[int, Module]  # the user's modules that take emails
    email_fields: str  # the email fields he may see in them, as an array literal
    company_email_fields: str  # those of Companies (the domain step), as an array literal
    all_module_ids: tuple[int, ...]  # every module that takes emails: the statement's shape
    company_field: int  # the visible Contacts' "company" reference field, or -1


def _suggestion_scope(user: access.Actor) -> _Scope:
    """What suggestions need of the user's privileges, kept by the process per generation
    (modules and fields are part of it): two queries the add-in would repeat at every email."""
    key = (
        f"mailconnector:suggestion-scope:{access.generation()}:{getattr(user, 'pk', None)}:"
        f"{int(bool(getattr(user, 'is_active', False)))}"
        f"{int(bool(getattr(user, 'is_superuser', False)))}"
    )
    slot = f"mailconnector:suggestion-scope:{getattr(user, 'pk', None)}"
    return generations.kept(slot, key, lambda: _compute_scope(user), SCOPE_SECONDS)


def _compute_scope(user: access.Actor) -> _Scope:
    # Kept across requests: without the record counter, which moves at every record created.
    modules = {m.pk: m for m in modules_for(user).defer("next_number")}
    fields = access.visible_email_fields(user, list(modules.values()))
    companies = [m for m in modules.values() if m.name == "Companies"]
    company_fields = access.visible_email_fields(user, companies) if companies else []
    every = Module.objects.filter(accepts_messages=True).values_list("pk", flat=True)
    contacts = next((pk for pk, m in modules.items() if m.name == "Contacts"), -1)
    company = Field.objects.filter(module_id=contacts, name="company").values_list("pk", flat=True)
    return _Scope(
        company_field=next(iter(company), -1),
        modules=modules,
        email_fields="{" + ",".join(str(pk) for pk in fields) + "}" if fields else "",
        company_email_fields="{" + ",".join(str(pk) for pk in company_fields) + "}",
        all_module_ids=tuple(sorted(every)),
    )


_SUGGESTION_FIELDS = ["id", "module_id", "number", "label"]


def _suggestion(row: tuple[Any, ...], modules: dict[int, Module]) -> Suggestion:
    pk, module_id, number, label, tier, sub, role, linked = row
    # As loaded from the database, the other fields deferred: half the cost of Record(...).
    record = Record.from_db(connection.alias, _SUGGESTION_FIELDS, (pk, module_id, number, label))
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
# best role wins); tier 1: visible companies with an email on the sender's domain (read from
# the Companies' email fields only: an address row's field is one of its record's module, so
# the domain step needs no look-up of each address's record); tier 2: the
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
    WHERE ra.domain = ANY(%(domains)s::text[])
      AND ra.field_id = ANY(%(company_email_fields)s::bigint[])
), found AS (
    SELECT r.id, r.module_id, r.number, r.label, c.tier, c.sub, c.role
    FROM candidate c JOIN {record} r ON r.id = c.record_id
    WHERE (c.tier = 0 OR r.module_id = %(companies)s) AND {visible}
), related AS (
    SELECT rr.target_id AS id FROM found f
    JOIN {reference} rr ON rr.record_id = f.id AND rr.field_id = %(company_field)s
    WHERE f.module_id = %(contacts)s
    UNION
    SELECT rr.record_id FROM found f
    JOIN {reference} rr ON rr.target_id = f.id AND rr.field_id = %(company_field)s
    WHERE f.module_id = %(companies)s
), ranked AS (
    SELECT id, module_id, number, label, tier, sub, role FROM found
    UNION ALL
    SELECT r.id, r.module_id, r.number, r.label, 2, 0, NULL
    FROM related x JOIN {record} r ON r.id = x.id WHERE {visible}
)
SELECT DISTINCT ON (x.id) x.id, x.module_id, x.number, x.label, x.tier, x.sub, x.role,
       EXISTS (SELECT 1 FROM {link} ml JOIN {message} m ON m.id = ml.message_id
               WHERE m.message_id = %(message_id)s AND ml.record_id = x.id)
FROM ranked x
ORDER BY x.id, x.tier, x.sub
"""


# Left to choose, PostgreSQL plans the statement at every call (about 1 ms of its CPU): the
# generic plan guesses ten sender domains and makes that step a parallel scan (8-10 ms), so it
# never wins. Built once without parallel workers, it serves every user and email as fast as
# a planned one, with the same rows. So each call asks for it, with settings local to the
# implicit transaction of one pipeline (it ends at the pipeline's Sync): no other statement
# of the connection sees them, and there is no BEGIN or COMMIT to wait for.
_GENERIC_PLAN = (
    "SELECT set_config('plan_cache_mode', 'force_generic_plan', true),"
    " set_config('max_parallel_workers_per_gather', '0', true)"
)


def _fetch_planned_once(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    # Inside the caller's transaction the settings would outlive this statement; without
    # psycopg 3's pipeline (libpq 14 or later) they would need a BEGIN and a COMMIT.
    if connection.in_atomic_block or not _pipelines():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    # The cursor first: Django checks and opens the connection before the pipeline starts.
    with connection.cursor() as cursor, connection.connection.pipeline():
        cursor.execute(_GENERIC_PLAN)
        cursor.execute(sql, params)
        return cursor.fetchall()


@functools.cache
def _pipelines() -> bool:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        return False
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


@functools.lru_cache(maxsize=16)
def _suggestions_sql(visible: str) -> str:
    return _SUGGESTIONS_SQL.format(
        visible=visible,
        address=RecordAddress._meta.db_table,
        record=Record._meta.db_table,
        reference=RecordReference._meta.db_table,
        link=MessageLink._meta.db_table,
        message=Message._meta.db_table,
    )


def wanted_addresses(
    user: access.Actor, addresses: Iterable[tuple[str, str]], ignore: Iterable[str]
) -> dict[str, str]:
    """The email's addresses to look for (the mailbox owner's and the user's own left out)."""
    skip = {normalise_email(a) for a in ignore} | {normalise_email(getattr(user, "email", ""))}
    return _wanted(addresses, skip - {None})


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


def visible_of_module(user: access.Actor, module_id: int, ids: Iterable[int]) -> QuerySet[Record]:
    return access.records(user, module_id).filter(pk__in=list(ids)).select_related("module")


def by_module(rows: Iterable[tuple[int, int]]) -> dict[int, set[int]]:
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
    for module_id, ids in by_module(links).items():
        records.extend(visible_of_module(user, module_id, ids))
    return sorted(records, key=lambda r: (r.module.position, r.label.lower()))
