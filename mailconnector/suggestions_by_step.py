"""Suggestions one step at a time, in portable ORM queries: the embedded default (SQLite).

The same answers as the one PostgreSQL statement of `selectors.suggestions` (the add-in
benchmark checks them against each other): a query per step and per module found, each
record read through `crm.access.records`.
"""

from __future__ import annotations

from django.db.models import Q

from crm import access
from crm.email.addresses import is_free_mail
from crm.models import Module, Record, RecordAddress, RecordReference
from mailconnector import selectors
from mailconnector.selectors import ROLE_RANK, Suggestion

_Best = dict[int, Suggestion]


def suggestions_by_step(
    user: access.Actor, wanted: dict[str, str], message_id: str | None
) -> list[Suggestion]:
    """`wanted`: address → its best role, the mailbox owner's own already left out."""
    best: _Best = {}
    modules = {m.pk: m for m in selectors.modules_for(user)}
    email_fields = access.visible_email_fields(user, list(modules.values()))
    _exact(user, wanted, email_fields, best)
    _by_domain(user, wanted, modules, email_fields, best)
    _related(user, modules, best)
    result = sorted(best.values(), key=lambda s: (s.rank, s.record.label.lower(), s.record.pk))
    result = result[: selectors.MAX_SUGGESTIONS]
    linked = set(selectors.linked_record_ids(message_id)) if message_id else set()
    for s in result:
        s.already_linked = s.record.pk in linked
    return result


def _offer(best: _Best, record: Record, reason: str, rank: tuple[int, int]) -> None:
    current = best.get(record.pk)
    if current is None or rank < current.rank:
        best[record.pk] = Suggestion(record, reason, rank)


def _exact(
    user: access.Actor, wanted: dict[str, str], email_fields: list[int], best: _Best
) -> None:
    rows = list(
        RecordAddress.objects.filter(
            address__in=list(wanted), field_id__in=email_fields
        ).values_list("record__module_id", "record_id", "address")
    )
    role_of: dict[int, str] = {}
    for _, record_id, address in rows:
        role = wanted[address]
        if record_id not in role_of or ROLE_RANK.get(role, 9) < ROLE_RANK.get(
            role_of[record_id], 9
        ):
            role_of[record_id] = role
    for module_id, ids in selectors.by_module((m, r) for m, r, _ in rows).items():
        for record in selectors.visible_of_module(user, module_id, ids):
            role = role_of[record.pk]
            _offer(best, record, f"{role} address", (0, ROLE_RANK.get(role, 9)))


def _by_domain(
    user: access.Actor,
    wanted: dict[str, str],
    modules: dict[int, Module],
    email_fields: list[int],
    best: _Best,
) -> None:
    companies = next((m for m in modules.values() if m.name == "Companies"), None)
    senders = [a for a, role in wanted.items() if role in ("from", "sender")]
    domains = {a.rpartition("@")[2] for a in senders} - {""}
    domains = {d for d in domains if not is_free_mail(d)}
    if companies is None or not domains:
        return
    ids = RecordAddress.objects.filter(
        domain__in=domains, field_id__in=email_fields, record__module=companies
    ).values_list("record_id", flat=True)
    for record in selectors.visible_of_module(user, companies.pk, ids):
        _offer(best, record, "sender's company domain", (1, 0))


def _related(user: access.Actor, modules: dict[int, Module], best: _Best) -> None:
    """Companies of the contacts found, and contacts of the companies found."""
    found = list(best.values())
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
        for record in selectors.visible_of_module(user, module_id, ids):
            _offer(best, record, kind, (2, 0))
