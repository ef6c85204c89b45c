"""The one way an email leaves the CRM: compose, store once, hand to the SMTP server, retry.

Every email the CRM sends (composed on a record, an answer by mail, a comment mailed to the
customer) goes through `send`. It checks the actor may edit the record, refuses header
injection and bad addresses before anything is stored, builds the MIME message, stores its
exact bytes once through `crm.services.ingest` as an outgoing Message linked to the record and
to the recipients' records, and writes an `OutgoingMail` row, all in one transaction. After the
commit a task hands the stored bytes to the server (`deliver`); transient failures are retried
with backoff (by Celery, and by the `retry_due` sweep when no retry is scheduled), permanent
ones are kept with the server's answer for the record's page. ARCHITECTURE.md, "Sending mail".

Bcc recipients are envelope recipients only: the stored (and sent) bytes carry no Bcc header,
and the row keeps who they were.

Open tracking (setting `open_tracking`): the stored bytes carry no tracking image. `send` plans
one copy per To/Cc recipient found on a record the email is linked to, each sent with its own
signed image for (message, that record), and one copy without image for everyone else (Bcc,
addresses on no record); `deliver` sends the copies not yet taken, so a retry never sends a
copy twice. crm.services.tracking has the details and the reasons.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from crm import access
from crm.email.addresses import is_automated_sender, normalise_domain
from crm.email.sanitize import html_to_text, sanitize_html
from crm.exceptions import Invalid, NotFound
from crm.models import (
    Document,
    Message,
    OutgoingMail,
    OutgoingMailSettings,
    Record,
    SmtpSecurity,
    SmtpSettings,
    User,
)
from crm.services import blobs, ingest, tracking

log = logging.getLogger(__name__)

Status = OutgoingMail.Status
PENDING = (Status.QUEUED, Status.RETRYING)
# Transient failures: the 1st retry after CRM_MAIL_RETRY_SECONDS (a minute), doubling up to an
# hour; after the 8th attempt (about two hours in all) the email is given up and shown as not
# delivered.
MAX_ATTEMPTS = 8
LONGEST_WAIT = timedelta(hours=1)
# RFC 3834 §5: "auto-replied" marks mail sent automatically in answer to another message.
AUTO_SUBMITTED = "auto-replied"

# Generated with CRLF, folded at 78, 7-bit transfer encodings only: every server takes it.
_POLICY = policy.SMTP.clone(cte_type="7bit")
_LINE_BREAK = re.compile(r"[\r\n\x00]")
_MESSAGE_ID = re.compile(r"^<?([^<>\s]+)>?$")
_TOKEN = re.compile(r"^[a-z0-9!#$&^_.+-]+$")  # RFC 6838 §4.2 type and subtype names


@dataclass(frozen=True)
class Upload:
    """A file attached at sending time (not yet a Document)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Sender:
    """Mail that leaves from another address than the user's (an "info" mailbox)."""

    email: str
    name: str = ""
    reply_to: str = ""


@dataclass(frozen=True)
class Draft:
    """What is to be sent: addresses as typed (`Name <addr>`), the body, files, threading.

    `automatic` mail (comments mailed, automatic answers) is marked Auto-Submitted, never goes
    to bounce or no-reply addresses, and counts against the hourly cap per sending address.
    """

    to: Sequence[str]
    subject: str
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    body_html: str = ""
    body_text: str = ""
    documents: Sequence[Document | int] = ()
    uploads: Sequence[Upload] = ()
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    automatic: bool = False
    sender: Sender | None = None


@dataclass(frozen=True)
class Composed:
    raw: bytes  # exactly what is stored and sent; no Bcc header
    message_id: str
    envelope_from: str
    recipients: tuple[str, ...]  # To, Cc and Bcc, each once
    bcc: tuple[str, ...]


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt did; `retry_in` seconds when another one is scheduled."""

    status: str
    words: str = ""
    retry_in: float | None = None


@dataclass(frozen=True)
class SettingsInput:
    host: str
    port: int
    security: str
    verify_certificate: bool
    username: str
    from_central: bool
    central_address: str
    central_name: str
    open_tracking: bool
    hourly_cap: int
    timeout_seconds: int


# --- Settings ------------------------------------------------------------------------------


def current_settings() -> OutgoingMailSettings:
    """The outgoing server's settings (unsaved defaults before an administrator sets them)."""
    return OutgoingMailSettings.objects.filter(pk=1).first() or OutgoingMailSettings(pk=1)


def require_administrator(actor: access.Actor) -> None:
    """The outgoing mail settings exist only for CRM administrators; to others, not found."""
    if not (getattr(actor, "is_authenticated", False) and actor.is_active and actor.is_superuser):
        raise NotFound("Page not found.")


def save_settings(
    *, actor: User, values: SettingsInput, password: str = "", clear_password: bool = False
) -> OutgoingMailSettings:
    """Save the outgoing server. A blank password keeps the stored one (the page never shows
    it); `clear_password` removes it."""
    require_administrator(actor)
    _check_settings(values)
    with transaction.atomic():
        row = OutgoingMailSettings.objects.select_for_update().filter(pk=1).first()
        row = row or OutgoingMailSettings(pk=1)
        for name, value in vars(values).items():
            setattr(row, name, value.strip() if isinstance(value, str) else value)
        if clear_password:
            row.set_password("")
        elif password:
            row.set_password(password)
        row.modified_at = timezone.now()
        row.modified_by = actor
        row.save()
    return row


def _check_settings(values: SettingsInput) -> None:
    errors: dict[str, str] = {}
    if values.host and (any(c.isspace() for c in values.host.strip()) or "/" in values.host):
        errors["host"] = "Enter a server name or IP address, without spaces or slashes."
    if not 1 <= values.port <= 65535:
        errors["port"] = "A port is a number from 1 to 65535."
    if values.security not in SmtpSecurity.values:
        errors["security"] = "Choose SSL/TLS, STARTTLS or none."
    if values.from_central and not values.central_address.strip():
        errors["central_address"] = "Enter the central address, or send from each user's address."
    for name in ("central_address", "central_name", "username"):
        if _LINE_BREAK.search(getattr(values, name)):
            errors[name] = "Line breaks are not allowed here."
    if values.central_address.strip() and "central_address" not in errors:
        try:
            _one_address("central_address", values.central_address)
        except Invalid as exc:
            errors.update(exc.fields)
    if values.hourly_cap < 1:
        errors["hourly_cap"] = "Allow at least one automatic mail per hour."
    if not 1 <= values.timeout_seconds <= 300:
        errors["timeout_seconds"] = "Wait between 1 and 300 seconds."
    if errors:
        raise Invalid(fields=errors)


# --- Sending -------------------------------------------------------------------------------


def send(
    *,
    actor: User | None,
    record: Record,
    draft: Draft,
    smtp: SmtpSettings | None = None,
) -> OutgoingMail:
    """Send `draft` from `record`: stored and linked now, handed to the server after commit.

    `actor=None` is the system acting on its own rules (as in `ingest.link`); its draft must
    name a `sender`, and the email is linked to `record` only. `smtp` replaces the CRM's server
    (an "info" mailbox's own).
    """
    if actor is not None:
        access.require(actor, "edit", record)
    if not record.module.accepts_messages:
        raise Invalid(f"{record.module.plural} do not take emails.", code="module_no_messages")
    config = current_settings()
    if smtp is None and not config.configured:
        raise Invalid(
            "No outgoing mail server is set up: an administrator sets it under Outgoing mail.",
            code="smtp_not_configured",
        )
    composed = compose(actor=actor, record=record, draft=draft, config=config)
    with transaction.atomic():
        if draft.automatic:
            _check_hourly_cap(composed.envelope_from, config.hourly_cap)
        outgoing = _store(actor, record, composed, automatic=draft.automatic, smtp=smtp)
        # Open tracking: one copy per tracked recipient, each with its own image; the stored
        # Message stays one, without any image (crm.services.tracking explains the choice).
        tracking.plan_copies(
            actor=actor, outgoing=outgoing, record=record, has_html=bool(draft.body_html.strip())
        )
        transaction.on_commit(lambda: _enqueue(outgoing.pk))
    return outgoing


def compose(
    *,
    actor: User | None,
    record: Record,
    draft: Draft,
    config: OutgoingMailSettings | None = None,
) -> Composed:
    """Build the message bytes, refusing anything that could smuggle a header or an address.

    Writes nothing and checks no access (`send` does). Every refusal is an `Invalid` naming
    the field.
    """
    config = config or current_settings()
    if _LINE_BREAK.search(draft.subject):
        raise Invalid(
            fields={"subject": "The subject may not contain a line break."},
            code="header_injection",
        )
    to_list = _addresses("to", draft.to)
    cc_list = _addresses("cc", draft.cc)
    bcc_list = _addresses("bcc", draft.bcc)
    if not (to_list or cc_list or bcc_list):
        raise Invalid(fields={"to": "Enter at least one recipient."}, code="no_recipients")
    recipients = _unique(a.addr_spec for a in (*to_list, *cc_list, *bcc_list))
    if draft.automatic:
        _refuse_automated_recipients(recipients)
    from_, reply_to = _from_and_reply_to(actor, config, draft.sender)
    parent = _message_id("in_reply_to", draft.in_reply_to) if draft.in_reply_to else None
    chain = [_message_id("references", r) for r in draft.references]
    if parent and parent not in chain:
        chain.append(parent)  # RFC 5322 §3.6.4: the parent's References, then the parent

    msg = EmailMessage(policy=_POLICY)
    msg["From"] = from_
    if to_list:
        msg["To"] = to_list
    if cc_list:
        msg["Cc"] = cc_list
    if reply_to is not None:
        msg["Reply-To"] = reply_to
    msg["Subject"] = draft.subject
    msg["Date"] = format_datetime(timezone.now())
    message_id = make_msgid(domain=_crm_domain())
    msg["Message-ID"] = message_id
    if parent:
        msg["In-Reply-To"] = parent
    if chain:
        msg["References"] = " ".join(chain)
    if draft.automatic:
        msg["Auto-Submitted"] = AUTO_SUBMITTED
    _set_body(msg, draft.body_html, draft.body_text)
    files = [*_record_documents(record, draft.documents), *draft.uploads]
    _check_size(msg, files)
    for upload in files:
        maintype, subtype = _content_type(upload.content_type)
        msg.add_attachment(
            upload.data, maintype=maintype, subtype=subtype, filename=_filename(upload.filename)
        )
    try:
        raw = msg.as_bytes(policy=_POLICY)
    except (ValueError, TypeError, HeaderParseError) as exc:  # the policy's last word
        raise Invalid(f"This email cannot be built: {exc}", code="unbuildable") from exc
    return Composed(
        raw=raw,
        message_id=message_id,
        envelope_from=from_.addr_spec,
        recipients=recipients,
        bcc=_unique(a.addr_spec for a in bcc_list),
    )


def _store(
    actor: User | None,
    record: Record,
    composed: Composed,
    *,
    automatic: bool,
    smtp: SmtpSettings | None,
) -> OutgoingMail:
    stored = ingest.store(
        composed.raw,
        source=Message.Source.CRM,
        actor=actor,
        direction=Message.Direction.OUTGOING,
        origin=f"sent from {record.number}",
    )
    message = stored.message
    ingest.link(message=message, record=record, actor=actor, via=Message.Source.CRM)
    if actor is not None:
        for other in _recipient_records(actor, composed.recipients):
            if other.pk != record.pk:
                ingest.link(message=message, record=other, actor=actor, via=Message.Source.CRM)
    now = timezone.now()
    return OutgoingMail.objects.create(
        message=message,
        record=record,
        actor=actor,
        envelope_from=composed.envelope_from,
        recipients=list(composed.recipients),
        bcc=list(composed.bcc),
        automatic=automatic,
        smtp=smtp.to_stored() if smtp is not None else {},
        status=Status.QUEUED,
        next_attempt_at=now,
        created_at=now,
    )


def _enqueue(outgoing_id: int) -> None:
    """Queue the delivery. If the queue cannot take it now, the row stays queued and the
    sweep sends it: the user's request never fails after the email was stored."""
    from crm import tasks

    try:
        tasks.deliver_outgoing.delay(outgoing_id)
    except Exception:
        log.exception("outgoing mail %s not queued; the retry sweep will send it", outgoing_id)


def _recipient_records(actor: User, addresses: Iterable[str]) -> list[Record]:
    """Records carrying a recipient's address that the actor may put the email on.

    Matched only through email fields the actor sees, so a hidden address is never confirmed;
    linking needs edit access (ingest.link), so read-only records are left alone.
    """
    addresses = list(addresses)
    found: list[Record] = []
    for module in access.visible_modules(actor).filter(accepts_messages=True):
        field_ids = access.visible_email_fields(actor, [module])
        if not field_ids:
            continue
        found.extend(
            access.records(actor, module, "edit")
            .filter(addresses__address__in=addresses, addresses__field_id__in=field_ids)
            .select_related("module")
            .distinct()
        )
    return found


def _check_hourly_cap(envelope_from: str, cap: int) -> None:
    since = timezone.now() - timedelta(hours=1)
    sent = OutgoingMail.objects.filter(
        automatic=True, envelope_from=envelope_from, created_at__gte=since
    ).count()
    if sent >= cap:
        raise Invalid(
            f"{envelope_from} already sent {sent} automatic emails in the last hour, the limit "
            "an administrator set: this one is not sent.",
            code="hourly_cap",
        )


def _refuse_automated_recipients(recipients: Iterable[str]) -> None:
    automated = [r for r in recipients if is_automated_sender(r)]
    if automated:
        raise Invalid(
            fields={
                "to": f"{', '.join(automated)} is an automatic address (mailer-daemon, "
                "postmaster, no-reply): automatic mail is never sent to it."
            },
            code="automated_recipient",
        )


# --- Building the message ------------------------------------------------------------------


def _addresses(field: str, values: Sequence[str] | str) -> list[Address]:
    if isinstance(values, str):
        values = [values]
    result: list[Address] = []
    for value in values:
        if value.strip():
            result.extend(_parse_addresses(field, value))
    return result


def _one_address(field: str, value: str) -> Address:
    found = _parse_addresses(field, value)
    if len(found) != 1:
        raise Invalid(fields={field: "Enter one email address."})
    return found[0]


def _parse_addresses(field: str, value: str) -> list[Address]:
    if _LINE_BREAK.search(value):
        raise Invalid(
            fields={field: "An address may not contain a line break."}, code="header_injection"
        )
    try:
        header = policy.default.header_factory("to", value)  # an address-list header
        parsed = list(header.addresses)  # type: ignore[attr-defined]
        defects = list(header.defects)  # type: ignore[attr-defined]
    except (HeaderParseError, IndexError, ValueError, TypeError, RecursionError):
        parsed, defects = [], ["unreadable"]
    if defects or not parsed:
        raise Invalid(fields={field: f"“{value.strip()}” is not an email address."})
    result = []
    for item in parsed:
        domain = normalise_domain(item.domain or "")
        if not item.username or "." not in domain.strip("."):
            raise Invalid(fields={field: f"“{value.strip()}” is not an email address."})
        if not item.username.isascii() or not domain.isascii():
            raise Invalid(
                fields={
                    field: f"{item.addr_spec}: addresses with accented letters before the @ "
                    "cannot be sent to."
                }
            )
        result.append(
            Address(display_name=item.display_name, username=item.username, domain=domain)
        )
    return result


def _from_and_reply_to(
    actor: User | None, config: OutgoingMailSettings, sender: Sender | None
) -> tuple[Address, Address | None]:
    """From the "info" address when one is given; else the central address with Reply-To the
    user, or the user's own address, as the administrator chose."""
    if sender is not None:
        from_ = _one_address("sender", _format(sender.name, sender.email))
        reply_to = _one_address("reply_to", sender.reply_to) if sender.reply_to else None
        return from_, reply_to
    if actor is None:
        raise Invalid("Mail the system sends names its sender.", code="no_sender_address")
    user_address = _user_address(actor)
    if config.from_central:
        if not config.central_address:
            raise Invalid(
                "The central sending address is not set: ask an administrator.",
                code="no_sender_address",
            )
        return _one_address("sender", _format(config.central_name, config.central_address)), (
            user_address
        )
    if user_address is None:
        raise Invalid(
            "Your user has no email address, so mail cannot leave from it: ask an administrator "
            "to add one, or to send CRM mail from a central address.",
            code="no_sender_address",
        )
    return user_address, None


def _user_address(user: User) -> Address | None:
    if not user.email:
        return None
    # A user's name is typed by people: line breaks in it never reach a header.
    name = " ".join(_LINE_BREAK.sub(" ", user.get_full_name()).split())
    try:
        return _one_address("sender", _format(name, user.email))
    except Invalid:
        return None


def _format(name: str, email: str) -> str:
    if _LINE_BREAK.search(name) or _LINE_BREAK.search(email):
        raise Invalid(fields={"sender": "A line break is not allowed in the sender."})
    return str(Address(display_name=name, addr_spec=email.strip())) if name else email.strip()


def _message_id(field: str, value: str) -> str:
    match = _MESSAGE_ID.match(value.strip()) if not _LINE_BREAK.search(value) else None
    if match is None:
        raise Invalid(fields={field: "Not a Message-ID."}, code="header_injection")
    return f"<{match.group(1)}>"


def _crm_domain() -> str:
    return urlsplit(settings.CRM_BASE_URL).hostname or "crm.invalid"


def _set_body(msg: EmailMessage, body_html: str, body_text: str) -> None:
    if not body_html.strip():
        msg.set_content(body_text or "")
        return
    # What the user composed is sanitised like any email HTML: no script reaches a customer.
    html = sanitize_html(body_html, allow_remote_images=True).html
    msg.set_content(body_text or html_to_text(html))
    msg.add_alternative(
        f'<!doctype html>\n<html><head><meta charset="utf-8"></head><body>{html}</body></html>\n',
        subtype="html",
    )


def _record_documents(record: Record, documents: Sequence[Document | int]) -> list[Upload]:
    wanted = {d.pk if isinstance(d, Document) else int(d) for d in documents}
    if not wanted:
        return []
    found = list(Document.objects.filter(pk__in=wanted, links__record=record).distinct())
    if len(found) != len(wanted):
        raise Invalid(fields={"documents": "A chosen document is not on this record."})
    return [Upload(d.title, d.content_type, blobs.read(d.file.name)) for d in found]


def _check_size(msg: EmailMessage, files: Sequence[Upload]) -> None:
    size = sum(len(f.data) for f in files) + len(str(msg.get_body() or ""))
    cap = settings.CRM_MAIL_MAX_BYTES
    if size > cap:
        raise Invalid(
            fields={"uploads": f"This email is larger than {cap // (1024 * 1024)} MB."},
            code="too_large",
        )


def _content_type(value: str) -> tuple[str, str]:
    """A declared type as (maintype, subtype); anything odd is sent as plain bytes."""
    maintype, _, subtype = value.split(";")[0].strip().lower().partition("/")
    if _TOKEN.match(maintype) and _TOKEN.match(subtype) and maintype != "multipart":
        return maintype, subtype
    return "application", "octet-stream"


def _filename(name: str) -> str:
    cleaned = " ".join(_LINE_BREAK.sub(" ", name).split()).strip()
    return cleaned[:200] or "attachment"


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for a in addresses:
        seen.setdefault(a.lower(), a)
    return tuple(seen.values())


# --- Delivery ------------------------------------------------------------------------------


def deliver(*, outgoing_id: int) -> Attempt:
    """One attempt to hand a stored email to its server; safe to call twice at once.

    The row is locked for the attempt (a second caller skips it), and only a due, pending row
    is sent; the bytes are the stored Message's, so a retry never stores anything again.
    """
    with transaction.atomic():
        row = (
            OutgoingMail.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("message")
            .filter(pk=outgoing_id)
            .first()
        )
        if row is None:
            return Attempt(status="busy")
        now = timezone.now()
        if row.status not in PENDING or (row.next_attempt_at and row.next_attempt_at > now):
            return Attempt(status=row.status)
        row.attempts += 1
        try:
            server = _server_for(row)
            handed = _hand_over(row, server, _raw(row), now)
        except SmtpFailure as failure:
            return _after_failure(row, failure, now)
        row.status = Status.SENT
        row.sent_at = now
        row.smtp_response = handed.answer
        row.last_error = handed.refused
        row.next_attempt_at = None
        row.smtp = {}
        row.save()
    return Attempt(status=Status.SENT, words=handed.answer)


def retry_due(*, limit: int = 100) -> int:
    """Send what is due: retries whose time came, and queued mail whose task never ran."""
    now = timezone.now()
    due = (
        OutgoingMail.objects.filter(status__in=PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    ids = list(due)
    for pk in ids:
        try:
            deliver(outgoing_id=pk)
        except Exception:  # one email's trouble must not hold up the others
            log.exception("outgoing mail %s: delivery attempt failed", pk)
    return len(ids)


def delivery_status(actor: access.Actor, record: Record) -> list[OutgoingMail]:
    """Emails sent from this record that have not reached their server (yet), or that it took
    for some recipients only; newest first."""
    access.require(actor, "view", record)
    return list(
        OutgoingMail.objects.filter(record=record)
        .exclude(status=Status.SENT, last_error="")
        .select_related("message")
        .order_by("-created_at")[:20]
    )


def _hand_over(row: OutgoingMail, server: SmtpSettings, raw: bytes, now: datetime) -> Handover:
    """The stored bytes to every recipient in one envelope; or, for an email sent with open
    tracking, each copy not yet taken (crm.services.tracking), its progress kept per copy."""
    copies = list(row.copies.order_by("pk"))
    if not copies:
        return _transmit(server, row.envelope_from, list(row.recipients), raw)
    answer = ""
    for copy in copies:
        if copy.sent_at is not None:
            continue
        data = tracking.copy_bytes(raw, row.message_id, copy)
        try:
            handed = _transmit(server, row.envelope_from, list(copy.recipients), data)
        except SmtpFailure as failure:
            if not failure.refused or failure.transient:
                raise  # the others wait for the retry; this copy is sent again then
            copy.refused = failure.words
        else:
            answer = handed.answer
            copy.refused = handed.refused
        copy.sent_at = now
        copy.save(update_fields=["sent_at", "refused"])
    refused = [c.refused for c in copies if c.refused]
    if not answer and len(refused) == len(copies):
        raise SmtpFailure(" ".join(refused), transient=False)
    return Handover(answer=answer or "Taken earlier.", refused=" ".join(refused))


def _server_for(row: OutgoingMail) -> SmtpSettings:
    if row.smtp:
        return SmtpSettings.from_stored(row.smtp)
    config = current_settings()
    if not config.configured:
        raise SmtpFailure(
            "No outgoing mail server is set up: an administrator sets it under Outgoing mail.",
            transient=True,
        )
    return config.smtp_settings()


def _raw(row: OutgoingMail) -> bytes:
    try:
        return blobs.read(row.message.raw.name)
    except OSError as exc:  # storage unreachable for now, or the file lost
        raise SmtpFailure(f"The stored email cannot be read ({exc}).", transient=True) from exc


def _after_failure(row: OutgoingMail, failure: SmtpFailure, now: datetime) -> Attempt:
    row.last_error = failure.words
    if failure.transient and row.attempts < MAX_ATTEMPTS:
        first = timedelta(seconds=settings.CRM_MAIL_RETRY_SECONDS)
        wait = min(first * 2 ** (row.attempts - 1), LONGEST_WAIT)
        row.status = Status.RETRYING
        row.next_attempt_at = now + wait
        row.save()
        return Attempt(status=row.status, words=failure.words, retry_in=wait.total_seconds())
    if failure.transient:
        row.last_error = f"Given up after {row.attempts} attempts. {failure.words}"
    row.status = Status.FAILED
    row.next_attempt_at = None
    row.smtp = {}
    row.save()
    log.warning("outgoing mail %s not delivered: %s", row.pk, row.last_error)
    return Attempt(status=row.status, words=row.last_error)


# --- Test button ---------------------------------------------------------------------------


def send_test(
    *, actor: User, to: str, sender: Sender | None = None, smtp: SmtpSettings | None = None
) -> str:
    """Send a test email with the saved settings now; the server's answer in words.

    Not stored on any record: it tests the server, not a conversation. `sender` and `smtp`
    test an "info" mailbox's address and server instead of the CRM's.
    """
    require_administrator(actor)
    config = current_settings()
    if smtp is None and not config.configured:
        return "No outgoing server is saved yet: enter the server, save, then test."
    recipient = _one_address("to", to)
    from_, reply_to = _from_and_reply_to(actor, config, sender)
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = from_
    msg["To"] = recipient
    if reply_to is not None:
        msg["Reply-To"] = reply_to
    msg["Subject"] = "Test mail from the CRM"
    msg["Date"] = format_datetime(timezone.now())
    msg["Message-ID"] = make_msgid(domain=_crm_domain())
    msg.set_content(
        "This is a test mail sent from the CRM's outgoing mail settings.\n"
        "If it arrived, mail from the CRM leaves through this server.\n"
    )
    server = smtp or config.smtp_settings()
    try:
        handed = _transmit(server, from_.addr_spec, [recipient.addr_spec], bytes(msg))
    except SmtpFailure as failure:
        return f"Not sent. {failure.words}"
    return f"Sent. The server accepted the test mail for {recipient.addr_spec}: {handed.answer}"


# --- SMTP ----------------------------------------------------------------------------------


class SmtpFailure(Exception):
    """A hand-over that did not happen, in words; `transient` when trying later may work."""

    def __init__(self, words: str, *, transient: bool, refused: bool = False) -> None:
        super().__init__(words)
        self.words = words
        self.transient = transient
        self.refused = refused  # the server refused the recipients, not the email


@dataclass(frozen=True)
class Handover:
    answer: str  # the server's last reply, "250 2.0.0 Ok: queued as …"
    refused: str = ""  # recipients the server refused while taking the others


def _transmit(
    server: SmtpSettings, envelope_from: str, recipients: list[str], raw: bytes
) -> Handover:
    """MAIL, RCPT per recipient, DATA: like `smtplib.sendmail`, keeping the server's answer."""
    where = f"{server.host}:{server.port}"
    conn: smtplib.SMTP | None = None
    try:
        conn = _connect(server)
        code, reply = conn.mail(envelope_from)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, envelope_from)
        refused: dict[str, tuple[int, bytes]] = {}
        for recipient in recipients:
            code, reply = conn.rcpt(recipient)
            if code not in (250, 251):
                refused[recipient] = (code, reply)
        if len(refused) == len(recipients):
            raise smtplib.SMTPRecipientsRefused(refused)  # type: ignore[arg-type]
        code, reply = conn.data(raw)
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
    except SmtpFailure:
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        raise _refused_failure(exc.recipients) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise _failure(exc, where, server) from exc
    except Exception as exc:
        # Not the server's doing (a bug, an address smtplib cannot encode): counted as an
        # attempt like any failure, so the email ends as "not delivered" instead of looping.
        log.exception("sending through %s failed unexpectedly", where)
        raise SmtpFailure(f"Sending through {where} failed: {exc}.", transient=True) from exc
    finally:
        if conn is not None:
            _close(conn)
    note = "; ".join(f"{r}: {_reply(c, t)}" for r, (c, t) in refused.items())
    return Handover(answer=_reply(code, reply), refused=f"Not delivered to {note}" if note else "")


def _connect(server: SmtpSettings) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if not server.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    timeout = float(server.timeout_seconds)
    conn: smtplib.SMTP
    if server.security == SmtpSecurity.SSL:
        conn = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=context)
    else:
        conn = smtplib.SMTP(server.host, server.port, timeout=timeout)
    try:
        conn.ehlo()
        if server.security == SmtpSecurity.STARTTLS:
            if not conn.has_extn("starttls"):
                raise SmtpFailure(
                    f"The server at {server.host}:{server.port} does not offer STARTTLS. Choose "
                    "SSL/TLS if it expects TLS from the start (usually port 465).",
                    transient=True,
                )
            conn.starttls(context=context)
            conn.ehlo()
        if server.username:
            conn.login(server.username, server.password)
    except BaseException:
        _close(conn)
        raise
    return conn


def _close(conn: smtplib.SMTP) -> None:
    """QUIT politely; a server that hangs up at that point has already taken the mail."""
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        conn.close()


def _seconds(n: float) -> str:
    return f"{n:g} second{'' if n == 1 else 's'}"


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}".strip()


def _refused_failure(refused: dict[str, tuple[int, bytes]]) -> SmtpFailure:
    answers = "; ".join(f"{r}: {_reply(c, t)}" for r, (c, t) in refused.items())
    transient = any(400 <= c < 500 for c, _ in refused.values())
    return SmtpFailure(
        f"The server refused every recipient ({answers}).", transient=transient, refused=True
    )


def _failure(exc: BaseException, where: str, server: SmtpSettings) -> SmtpFailure:
    """The exception in words, and whether trying later may work.

    RFC 5321 §4.2.1: 4yz replies are transient, 5yz permanent; a connection that fails is
    tried again. A refused login or a failed TLS handshake says nothing about the email, only
    about the settings, which an administrator may correct meanwhile: those are tried again.
    """
    if isinstance(exc, SmtpFailure):
        return exc
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        answer = _reply(exc.smtp_code, exc.smtp_error)
        return SmtpFailure(
            f"The server refused the user name or password ({answer}).", transient=True
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SmtpFailure(
            f"The server at {where} does not offer what is needed: {exc}. Check the security "
            "setting (servers offer login only over TLS) and the user name.",
            transient=True,
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(
        exc.__context__, TimeoutError
    ):
        exc = exc.__context__  # smtplib reports a silent server as a disconnection
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SmtpFailure(
            f"The server at {where} closed the connection before confirming the email.",
            transient=True,
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        answer = _reply(exc.smtp_code, exc.smtp_error)
        if 400 <= exc.smtp_code < 500:
            return SmtpFailure(f"The server asked to try again later ({answer}).", transient=True)
        return SmtpFailure(f"The server refused the email ({answer}).", transient=False)
    if isinstance(exc, ConnectionRefusedError):
        return SmtpFailure(
            f"Nothing answers at {where}: the connection was refused. Check the server name "
            "and port.",
            transient=True,
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return SmtpFailure(
            f"The server at {where} did not answer within {_seconds(server.timeout_seconds)}.",
            transient=True,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SmtpFailure(
            f"The server's TLS certificate cannot be trusted ({exc.verify_message}).",
            transient=True,
        )
    if isinstance(exc, ssl.SSLError):
        return SmtpFailure(
            f"The TLS handshake with {where} failed ({exc.reason or exc}). Check the security "
            "setting: port 465 usually means SSL/TLS, port 587 STARTTLS.",
            transient=True,
        )
    if isinstance(exc, socket.gaierror):
        return SmtpFailure(f"The server name {server.host} cannot be found.", transient=True)
    if isinstance(exc, ConnectionError):
        return SmtpFailure(
            f"The connection to {where} was cut ({exc.strerror or exc}).", transient=True
        )
    return SmtpFailure(f"Sending through {where} failed: {exc}.", transient=True)
