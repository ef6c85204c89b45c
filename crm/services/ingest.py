"""The one way an email enters the CRM, and the one way it is linked to a record.

`store(raw, ...)` keeps the exact bytes and turns them into one Message (the same email again
returns the existing one), its attachments into Documents. `link(message, record, ...)` puts the
message and its attachments on a record, for a user who may edit that record.
ARCHITECTURE.md, "The ingest pipeline".
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from crm import access, statements
from crm.email.addresses import Address
from crm.email.parse import ParsedEmail, Part, identity, parse
from crm.exceptions import Invalid
from crm.models import (
    Attachment,
    ChangeLog,
    Document,
    DocumentLink,
    Message,
    MessageLink,
    QuarantinedMessage,
    Record,
    User,
)
from crm.services import blobs
from crm.services.records import log_change, module_of

log = logging.getLogger(__name__)
Source = Message.Source
Direction = Message.Direction


Completeness = Message.Completeness


@dataclass(frozen=True)
class Stored:
    message: Message
    created: bool
    completed: bool = False  # a partial message was replaced by the whole email
    # False when an email with this identity was already stored and this one's bodies or
    # attachments differ from it: a look-alike (or a capture) rather than a copy.
    same_content: bool = True
    # Attachments that are not inline, when this store has just made them; else None.
    attachments_saved: int | None = None


def store(
    raw: bytes,
    *,
    source: str,
    actor: User | None = None,
    direction: str = Direction.INCOMING,
    origin: str = "",
    completeness: str = Completeness.FULL,
    parsed: ParsedEmail | None = None,
) -> Stored:
    """Store an email whole. Never drops it: what cannot be stored is quarantined, then raised.

    Files are written before the transaction (content-addressed, so a retry rewrites nothing);
    the rows are written in one transaction. A partial capture (a client that could not export
    the message) is replaced when the whole email arrives later, keeping its links.
    `parsed` is `parse(raw)`, from a caller that has already read the email (the converter's
    rules look at it first).
    """
    try:
        parsed = parsed if parsed is not None else parse(raw)
        key = identity(parsed, raw)
        existing = _stored(key)
        if existing is not None and not _may_complete(existing, completeness, actor):
            return Stored(existing, created=False, same_content=_same_content(existing, parsed))
        raw_name, raw_sha = blobs.put(raw, kind="raw")
        files = [(part, *blobs.put(part.payload, kind="files")) for part in parsed.parts]
        if existing is not None:
            return _complete(existing, parsed, raw_name, raw_sha, len(raw), files, actor)
        stored = _save(parsed, key, raw_name, raw_sha, len(raw), files, source, actor, direction)
        if completeness != Completeness.FULL and stored.created:
            Message.objects.filter(pk=stored.message.pk).update(completeness=completeness)
            stored.message.completeness = completeness
        return stored
    except Exception as exc:
        if not connection.needs_rollback:  # else the caller's transaction keeps nothing more
            quarantine(raw, source=source, origin=origin, error=exc)
        raise


def link(*, message: Message, record: Record, actor: User | None, via: str) -> bool:
    """Link the message and its attachments to the record; True if the link is new.

    A user needs edit access to the record. `actor=None` is the system acting on its own rules
    (the mail converter), which has already chosen the record.
    """
    if actor is not None:
        access.require(actor, "edit", record)
    module = module_of(record)
    if not module.accepts_messages:
        raise Invalid(f"{module.plural} do not take emails.", code="module_no_messages")
    # Checked above, and what follows cannot conflict: no savepoint inside a caller's
    # transaction (a mail scan links every message).
    with transaction.atomic(savepoint=False):
        now = timezone.now()
        created = _new_link(message, record, actor, via, now)
        _link_documents(message, [record.pk], now)
        if created:
            log_change(
                record=record,
                actor=actor,
                action=ChangeLog.Action.LINK,
                changes=_link_note(message),
            )
    return created


def unlink(*, message: Message, record: Record, actor: User) -> bool:
    """Take the message off the record, and its attachments unless another email there has them."""
    access.require(actor, "edit", record)
    with transaction.atomic():
        deleted, _ = MessageLink.objects.filter(message=message, record=record).delete()
        if not deleted:
            return False
        still_carried = Attachment.objects.filter(message__links__record=record).values_list(
            "document_id", flat=True
        )
        DocumentLink.objects.filter(record=record, document__attachments__message=message).exclude(
            document_id__in=still_carried
        ).delete()
        log_change(
            record=record, actor=actor, action=ChangeLog.Action.UNLINK, changes=_link_note(message)
        )
    return True


def quarantine(raw: bytes, *, source: str, origin: str, error: BaseException) -> QuarantinedMessage:
    """Keep bytes that could not be stored, with the reason, for an administrator."""
    name, sha = blobs.put(raw, kind="quarantine")
    log.warning("email quarantined (%s %s): %r", source, origin, error)
    return QuarantinedMessage.objects.create(
        raw=name,
        raw_sha256=sha,
        size=len(raw),
        source=source,
        origin=origin[:500],
        error=f"{type(error).__name__}: {error}"[:10_000],
        created_at=timezone.now(),
    )


# --- rows -----------------------------------------------------------------------------------


def _save(
    parsed: ParsedEmail,
    key: str,
    raw_name: str,
    raw_sha: str,
    size: int,
    files: list[tuple[Part, str, str]],
    source: str,
    actor: User | None,
    direction: str,
) -> Stored:
    nested = connection.in_atomic_block
    try:
        # Inside a caller's transaction (a mail scan), no savepoint: a concurrent store of the
        # same email then fails the caller's transaction, whose retry finds this one's.
        with transaction.atomic(savepoint=False):
            message = Message(
                identity=key,
                raw=raw_name,
                raw_sha256=raw_sha,
                size=size,
                direction=direction,
                source=source,
                stored_by=actor,
                stored_at=timezone.now(),
                **_headers(parsed),
            )
            statements.insert(message)
            # Known now, so that linking it needs no query when it has no attachments.
            message._document_ids = _attach(message, files, actor)  # type: ignore[attr-defined]
            saved = sum(not part.inline for part, _name, _sha in files)
    except IntegrityError:
        if nested:
            raise
        # Another process stored the same email at the same moment: that one is ours too.
        existing = Message.objects.filter(identity=key).first()
        if existing is None:
            raise
        return Stored(existing, created=False)
    return Stored(message, created=True, attachments_saved=saved)


def _stored(key: str) -> Message | None:
    """The Message stored under this identity. Most emails are new: they are answered by a
    statement written once, instead of compiling the query of a whole Message (about a
    millisecond of CPU, as much as the rest of the look-up)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {statements.table(Message)} WHERE identity = %s",  # noqa: S608
            [key],
        )
        row = cursor.fetchone()
    return None if row is None else Message.objects.filter(pk=row[0]).first()


def _may_complete(existing: Message, completeness: str, actor: User | None) -> bool:
    """A partial capture is replaced by the whole email, but never on behalf of a user who
    cannot see it: a look-alike must not overwrite what others stored."""
    if existing.completeness != Completeness.PARTIAL or completeness != Completeness.FULL:
        return False
    return actor is None or access.can_see_message(actor, existing)


def _same_content(existing: Message, parsed: ParsedEmail) -> bool:
    """The same bodies and the same attachments: a copy of the stored email, whatever its
    headers (relays add their own), as opposed to a look-alike reusing its identity."""
    stored = set(existing.attachments.values_list("document__sha256", flat=True))
    incoming = {hashlib.sha256(part.payload).hexdigest() for part in parsed.parts}
    return (
        stored == incoming
        and _squeeze(existing.text_body) == _squeeze(parsed.text_body or "")
        and _squeeze(existing.html_body) == _squeeze(parsed.html_body or "")
    )


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def _complete(
    message: Message,
    parsed: ParsedEmail,
    raw_name: str,
    raw_sha: str,
    size: int,
    files: list[tuple[Part, str, str]],
    actor: User | None,
) -> Stored:
    """Replace a partial capture by the whole email; its links (and their documents) stay."""
    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=message.pk)
        if message.completeness == Completeness.FULL:  # completed meanwhile by someone else
            return Stored(message, created=False)
        for name, value in {
            **_headers(parsed),
            "raw": raw_name,
            "raw_sha256": raw_sha,
            "size": size,
            "completeness": Completeness.FULL,
        }.items():
            setattr(message, name, value)
        message.save()
        message.attachments.all().delete()
        _attach(message, files, actor)
        record_ids = list(message.links.values_list("record_id", flat=True))
        _link_documents(message, record_ids, timezone.now())
    return Stored(message, created=False, completed=True)


def _attach(
    message: Message, files: list[tuple[Part, str, str]], actor: User | None
) -> frozenset[int]:
    """One Attachment per part, each on the Document of its bytes (made once per content);
    returns the Documents' ids.

    One cached INSERT per attachment, and two statements for the Documents whatever their
    number: the same file arriving in a concurrent store is taken, not inserted twice
    (`ON CONFLICT`).
    """
    if not files:
        return frozenset()
    first: dict[str, tuple[Part, str]] = {}
    for part, name, sha in files:
        first.setdefault(sha, (part, name))  # the same file twice: titled after the first
    documents = _documents(first, actor)
    for part, _name, sha in files:  # an email has a few: one cached INSERT each
        attachment = Attachment(
            message=message,
            document=documents[sha],
            filename=_title(part)[:255],
            content_type=part.content_type[:255],
            content_id=(part.content_id or "")[:255],
            inline=part.inline,
            part_path=part.part_path,
            size=part.size,
        )
        statements.insert(attachment)
    return frozenset(d.pk for d in documents.values())


def _documents(wanted: dict[str, tuple[Part, str]], actor: User | None) -> dict[str, Document]:
    """The Document of each sha256, created for content not seen before (its thumbnail, if it
    is an image, is made when a page first asks for it: crm.services.thumbnails)."""
    found = {d.sha256: d for d in _documents_with(list(wanted))}
    missing = [sha for sha in wanted if sha not in found]
    if missing:
        now = timezone.now()
        # A concurrent store of the same file won: its row is taken as it is. The "update"
        # writes the size that row already has (same bytes), so that its id comes back too.
        created = Document.objects.bulk_create(
            [_new_document(sha, *wanted[sha], actor, now) for sha in missing],
            update_conflicts=True,
            unique_fields=["sha256"],
            update_fields=["size"],
        )
        found |= {d.sha256: d for d in created}
    return found


def _documents_with(shas: list[str]) -> list[Document]:
    """`Document.objects.filter(sha256__in=shas)` from a statement written once per count."""
    sql, rows = _documents_statement(len(shas))
    return [document for (document,) in rows.all(sql, shas)]


@functools.lru_cache(maxsize=16)
def _documents_statement(count: int) -> tuple[str, statements.Rows]:
    rows = statements.rows_of((Document, "d"))
    marks = ", ".join(["%s"] * count)
    sql = f"SELECT {rows.columns} FROM {statements.table(Document)} d WHERE d.sha256 IN ({marks})"  # noqa: S608
    return sql, rows


def _new_document(sha: str, part: Part, name: str, actor: User | None, now: Any) -> Document:
    return Document(
        sha256=sha,
        file=name,
        title=_title(part)[:255],
        content_type=part.content_type[:255],
        size=part.size,
        owner=actor,
        created_at=now,
    )


def _new_link(message: Message, record: Record, actor: User | None, via: str, now: Any) -> bool:
    """Link the message to the record unless it is already; True if the link is new.

    One statement that a concurrent link of the same pair cannot make fail (the ORM's
    get_or_create takes a read, a savepoint and an insert, and cannot say "inserted" otherwise).
    """
    table = connection.ops.quote_name(MessageLink._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (message_id, record_id, linked_by_id, via, linked_at) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (message_id, record_id) DO NOTHING "
            "RETURNING id",
            [message.pk, record.pk, actor.pk if actor is not None else None, via, _db_time(now)],
        )
        return cursor.fetchone() is not None


def _link_documents(message: Message, record_ids: list[int], now: Any) -> None:
    """Put the message's attachment Documents on the records (those already there stay): one
    statement per record, none for the attachments' ids, none at all for a message that
    `store` has just made without attachments."""
    if getattr(message, "_document_ids", None) == frozenset():
        return
    links = connection.ops.quote_name(DocumentLink._meta.db_table)
    attachments = connection.ops.quote_name(Attachment._meta.db_table)
    with connection.cursor() as cursor:
        for record_id in record_ids:
            cursor.execute(
                f"INSERT INTO {links} (document_id, record_id, linked_at) "  # noqa: S608
                f"SELECT DISTINCT document_id, %s, %s FROM {attachments} WHERE message_id = %s "
                "ON CONFLICT (document_id, record_id) DO NOTHING",
                [record_id, _db_time(now), message.pk],
            )


def _db_time(value: Any) -> Any:
    """A datetime as the ORM would send it (SQLite stores text in its own format)."""
    return connection.ops.adapt_datetimefield_value(value)


def _title(part: Part) -> str:
    return part.filename or _untitled(part)


def _headers(p: ParsedEmail) -> dict[str, Any]:
    return {
        "message_id": (p.message_id or "")[:998],
        "subject": p.subject,
        "from_name": (p.from_.name if p.from_ else "")[:255],
        "from_address": (p.from_.email if p.from_ else "")[:320],
        "sender": (p.sender.email if p.sender else "")[:320],
        "to": _addresses(p.to),
        "cc": _addresses(p.cc),
        "bcc": _addresses(p.bcc),
        "reply_to": _addresses(p.reply_to),
        # In UTC: a sender's offset can be beyond what PostgreSQL accepts (+16:00 seen).
        "date": p.date.astimezone(UTC) if p.date else None,
        "in_reply_to": (p.in_reply_to or "")[:998],
        "references": list(p.references),
        "auto_submitted": (p.auto_submitted or "")[:100],
        "text_body": p.text_body or "",
        "html_body": p.html_body or "",
        "defects": list(p.defects),
    }


def _addresses(addresses: tuple[Address, ...]) -> list[dict[str, str]]:
    return [{"name": a.name, "email": a.email} for a in addresses]


def _untitled(part: Part) -> str:
    kind = part.content_type.partition("/")[2] or "bin"
    return f"part-{part.part_path}.{kind}"


def _link_note(message: Message) -> dict[str, Any]:
    return {"message": [None, f"{message.subject or '(no subject)'} <{message.from_address}>"]}


def certify(*, messages: list[Message], certified_id: str) -> None:
    """Record the Message-ID a PEC provider certified on a stored envelope and its original.

    Replies to certified mail may quote only that id (mailconverter.pec, "Threading"); an id
    recorded before stays.
    """
    if certified_id:
        Message.objects.filter(pk__in=[m.pk for m in messages], certified_id=None).update(
            certified_id=certified_id[:998]
        )
