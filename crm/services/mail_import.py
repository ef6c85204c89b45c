"""Importing emails from files: each one stored through the ingest pipeline, then linked."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from crm import access
from crm.exceptions import NotFound
from crm.models import Message, Record, User
from crm.selectors.records import visible_module
from crm.services import ingest


@dataclass
class ImportReport:
    stored: int = 0
    already_there: int = 0
    linked: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (origin, reason)


def find_target(*, actor: User, module_name: str, number: str) -> Record:
    """The record named MODULE:NUMBER, which the actor must be able to edit."""
    module = visible_module(actor, module_name)
    record = access.records(actor, module).filter(number__iexact=number).first()
    if record is None:
        raise NotFound(f"No {module.singular.lower()} {number} that you can see.")
    access.require(actor, "edit", record)
    return record


def import_messages(
    *,
    messages: Iterable[tuple[str, bytes]],
    actor: User,
    record: Record | None,
    progress: Callable[[str], None] = lambda origin: None,
) -> ImportReport:
    """Store (and link) every message; one bad message is reported and the rest go on."""
    report = ImportReport()
    for origin, raw in messages:
        try:
            stored = ingest.store(raw, source=Message.Source.IMPORT, actor=actor, origin=origin)
            report.stored += stored.created
            report.already_there += not stored.created
            if record is not None and ingest.link(
                message=stored.message, record=record, actor=actor, via=Message.Source.IMPORT
            ):
                report.linked += 1
        except Exception as exc:  # reported by name; the bytes are quarantined, never lost
            report.failed.append((origin, f"{type(exc).__name__}: {exc}"))
        progress(origin)
    return report
