"""Linking the email open in Outlook to records: through the one ingest pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime

from crm import access
from crm.email.parse import message_id_of, normalise_message_id
from crm.exceptions import Conflict, Invalid, NotFound
from crm.models import Message, Record, User
from crm.selectors.records import visible_module
from crm.services import ingest

VIA = Message.Source.ADDIN


@dataclass(frozen=True)
class LinkTarget:
    module: str
    id: int


@dataclass(frozen=True)
class LinkedRecord:
    record: Record
    newly_linked: bool


@dataclass
class LinkResult:
    message: Message
    created: bool
    completed: bool
    attachments_saved: int
    records: list[LinkedRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Capture:
    """An email described by its fields, from hosts that cannot export the message itself."""

    subject: str
    message_id: str
    sender: str
    to: list[str]
    cc: list[str]
    date: datetime | None
    text_body: str
    html_body: str
    attachments: list[tuple[str, str, bytes]]  # (filename, content type, bytes)
    attachments_pending: list[str]  # names of attachments the host could not hand over


def link_email(
    *,
    actor: User,
    raw: bytes,
    targets: list[LinkTarget],
    idempotency_key: str | None,
    client: str = "",
) -> LinkResult:
    """Store the whole email (once) and link it to each target the user may edit."""
    records = _targets(actor, targets)
    _check_key(idempotency_key, message_id_of(raw))
    stored = ingest.store(raw, source=VIA, actor=actor, origin=client)
    return _link(actor, stored, records)


def link_capture(
    *,
    actor: User,
    capture: Capture,
    targets: list[LinkTarget],
    idempotency_key: str | None,
) -> LinkResult:
    """Store a partial email built from its fields (completed when the whole email arrives)."""
    records = _targets(actor, targets)
    _check_key(idempotency_key, capture.message_id)
    try:
        raw = _compose(capture)
    except (ValueError, TypeError) as exc:  # CR/LF in a header, an unparsable address...
        raise Invalid(f"The email's fields cannot make an email: {exc}") from exc
    stored = ingest.store(raw, source=VIA, actor=actor, completeness=Message.Completeness.PARTIAL)
    return _link(actor, stored, records)


def unlink_email(*, actor: User, message_id: int, module: str, record_id: int) -> None:
    record = access.get_record(actor, visible_module(actor, module), record_id)
    message = Message.objects.filter(pk=message_id, links__record=record).first()
    if message is None:
        raise NotFound("This email is not linked to that record.")
    ingest.unlink(message=message, record=record, actor=actor)


# --- helpers ----------------------------------------------------------------------------------


def _targets(actor: User, targets: list[LinkTarget]) -> list[Record]:
    """Every target checked before anything is stored: visible (else 404) and editable (403)."""
    if not targets:
        raise Invalid(fields={"links": "Choose at least one record."})
    records = []
    for target in targets:
        module = visible_module(actor, target.module)
        if not module.accepts_messages:
            raise Invalid(fields={"links": f"{module.plural} do not take emails."})
        records.append(access.get_record(actor, module, target.id, "edit"))
    return records


def _link(actor: User, stored: ingest.Stored, records: list[Record]) -> LinkResult:
    if not stored.same_content and not access.can_see_message(actor, stored.message):
        # Taking it for the stored email would put what others stored on this user's record.
        raise Conflict(
            "An email with this Message-ID and subject is already in the CRM and this one "
            "differs from it, so it was not linked. Link it from Outlook on a computer.",
            code="email_conflict",
        )
    saved = stored.attachments_saved
    if saved is None:  # stored before: count what it has
        saved = stored.message.attachments.filter(inline=False).count()
    result = LinkResult(stored.message, stored.created, stored.completed, saved)
    for record in records:
        created = ingest.link(message=stored.message, record=record, actor=actor, via=VIA)
        result.records.append(LinkedRecord(record, created))
    return result


def _check_key(key: str | None, message_id: str | None) -> None:
    """Idempotency-Key is the email's Message-ID: a mismatch means the wrong email was sent."""
    if key and normalise_message_id(key) != normalise_message_id(message_id):
        raise Conflict(
            "The Idempotency-Key is not this email's Message-ID.", code="idempotency_conflict"
        )


def _compose(capture: Capture) -> bytes:
    msg = EmailMessage(policy=default_policy)
    msg["Subject"] = capture.subject
    msg["From"] = capture.sender
    if capture.to:
        msg["To"] = ", ".join(capture.to)
    if capture.cc:
        msg["Cc"] = ", ".join(capture.cc)
    msg["Message-ID"] = capture.message_id
    if capture.date:
        msg["Date"] = format_datetime(capture.date)
    msg["X-CRM-Capture"] = "fields captured by the Outlook add-in; not the original bytes"
    if capture.attachments_pending:
        msg["X-CRM-Attachments-Pending"] = ", ".join(capture.attachments_pending)[:900]
    msg.set_content(capture.text_body or "")
    if capture.html_body:
        msg.add_alternative(capture.html_body, subtype="html")
    for filename, content_type, data in capture.attachments:
        maintype, _, subtype = (content_type or "application/octet-stream").partition("/")
        msg.add_attachment(
            data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename
        )
    return bytes(msg)
