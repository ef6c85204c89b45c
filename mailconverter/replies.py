"""Answers by mail on converter tickets, and comments mailed to the customer.

ARCHITECTURE.md, "Mail converter", Answers. A ticket the converter created is a conversation
with whoever wrote to the mailbox. "Answer by mail" leaves from the user's address (or the
CRM's central address, Reply-To the user: the outgoing mail setting); "Answer by mail (info)"
and mailed comments leave from the mailbox's own address through the mailbox's SMTP server
(`smtp_for`). Every answer replies to the newest customer message on the ticket, so the
customer's mail client threads it, and the customer's reply finds the ticket again by its
subject (`Ticket Id: N`) or its References (`actions.update_ticket`).

Everything leaves through `crm.services.mail.send`: it checks edit access, refuses header
injection, stores the sent bytes as an outgoing Message on the ticket and delivers after the
commit. Comments are mailed once the comment's transaction has committed
(`crm.hooks.comment_added`): a refusal (the hourly cap, an automatic address, no mailbox
address) is written on the comment as "Not mailed: …" and never undoes the comment.

Defaults for a mailbox without its own SMTP settings: the mailbox's IMAP host, port 587
(submission, RFC 6409) with STARTTLS, or without TLS when the mailbox itself connects without
it (loopback), logging in with the mailbox's user name and password (not at all when there is
no password: a relay that trusts the CRM's host). A mailbox that logs in
with OAuth2 has no password to give the SMTP server: its mail leaves through the CRM's
outgoing server, still from the mailbox's address, unless an administrator sets a user name
and password for it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.html import escape, linebreaks

from crm import access
from crm.email.sanitize import html_to_text, sanitize_html
from crm.exceptions import Invalid, NotFound, ServiceError
from crm.models import (
    Comment,
    Document,
    Message,
    MessageLink,
    OutgoingMail,
    Record,
    SmtpSecurity,
    SmtpSettings,
    User,
)
from crm.selectors import messages as message_selectors
from crm.services import mail
from crm.services import records as record_service
from mailconverter import tickets
from mailconverter.models import Mailbox, MailboxSmtp, TicketOrigin

__all__ = [
    "Draft",
    "SmtpInput",
    "answer",
    "draft",
    "mail_comment",
    "mailbox_sender",
    "save_smtp",
    "smtp_for",
    "smtp_row",
    "test_smtp",
]

log = logging.getLogger(__name__)

TICKETS = "Tickets"
STATUS_WAITING = "Wait for response"
# Quoting a whole mail archive under every answer helps nobody: the newest part is enough.
MAX_QUOTE_CHARS = 20_000
_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|fwd?|wg)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_PLAIN_ID = re.compile(r"^<?[^<>\s]+>?$")


@dataclass(frozen=True)
class Reply:
    """What an answer on a ticket replies to, and how it is addressed."""

    parent: Message | None  # the newest customer message on the ticket
    to: str
    subject: str
    in_reply_to: str | None
    references: tuple[str, ...]
    quote_header: str
    quote_text: str

    def quote_as_text(self) -> str:
        if not self.quote_text:
            return ""
        lines = self.quote_text.splitlines() or [""]
        quoted = "\n".join(f"> {line}".rstrip() for line in lines)
        return f"{self.quote_header}\n{quoted}\n"

    def quote_as_html(self) -> str:
        if not self.quote_text:
            return ""
        return (
            f"<p>{escape(self.quote_header)}</p>"
            f"<blockquote>{escape(self.quote_text).replace(chr(10), '<br>')}</blockquote>"
        )


@dataclass(frozen=True)
class Draft:
    """What the answer page shows before the user writes."""

    ticket: Record
    origin: TicketOrigin
    info: bool
    sender: str  # who the customer sees the answer from
    reply: Reply
    documents: list[Document]


# --- Answers -----------------------------------------------------------------------------


def draft(*, actor: User, ticket: Record, info: bool) -> Draft:
    """The answer page's content; the same checks as `answer`, so a page never promises more."""
    access.require(actor, "edit", ticket)
    origin = _converter_origin(ticket)
    if info:
        sender = mailbox_sender(_mailbox_of(origin))
        shown = f"{sender.name} <{sender.email}>" if sender.name else sender.email
    else:
        shown = _user_sender(actor)
    return Draft(
        ticket=ticket,
        origin=origin,
        info=info,
        sender=shown,
        reply=reply_for(ticket, origin),
        documents=list(message_selectors.record_documents(actor, ticket)),
    )


def answer(
    *,
    actor: User,
    ticket: Record,
    body_html: str,
    info: bool,
    documents: Sequence[Document | int] = (),
) -> OutgoingMail:
    """Answer the customer of a converter ticket by mail.

    The answer replies to the newest customer message (quoted under it), is stored as an
    outgoing Message on the ticket, its text becomes the user's comment, and the ticket waits
    for the customer's response. All of it in one transaction: nothing is half done.
    """
    access.require(actor, "edit", ticket)
    origin = _converter_origin(ticket)
    html = sanitize_html(body_html, allow_remote_images=True).html
    text = html_to_text(html).strip()
    if not text:
        raise Invalid(fields={"body": "Write your answer first."})
    with transaction.atomic():
        outgoing = _send_reply(
            actor=actor,
            ticket=ticket,
            origin=origin,
            body_html=html,
            body_text=text,
            info=info,
            automatic=False,
            documents=documents,
        )
        record_service.add_comment(
            actor=actor,
            record=ticket,
            body=text,
            mail_note=f"Sent by mail to {', '.join(outgoing.recipients)}",
        )
        _wait_for_response(actor, ticket)
    return outgoing


def reply_for(ticket: Record, origin: TicketOrigin) -> Reply:
    """Address, subject and threading of an answer on this ticket."""
    parent = _newest_customer_message(ticket)
    to = _customer_address(parent, origin)
    if not to:
        raise Invalid(
            "This ticket has no customer address to answer: its email has no sender.",
            code="no_customer_address",
        )
    in_reply_to = parent.message_id if parent and _PLAIN_ID.match(parent.message_id) else None
    references: tuple[str, ...] = ()
    if parent is not None:
        references = tuple(r for r in parent.references if r and _PLAIN_ID.match(r))
    header, quoted = _quote(parent)
    return Reply(
        parent=parent,
        to=to,
        subject=answer_subject(ticket),
        in_reply_to=in_reply_to,
        references=references,
        quote_header=header,
        quote_text=quoted,
    )


def answer_subject(ticket: Record) -> str:
    """`Re: <title> - Ticket Id: <number>`: the number brings the customer's reply back."""
    title = str(ticket.data.get("title") or ticket.label or "")
    title = " ".join(_REPLY_PREFIX.sub("", title).split())  # one line, one "Re:"
    return (
        f"Re: {title} - Ticket Id: {ticket.number}" if title else f"Re: Ticket Id: {ticket.number}"
    )


def _send_reply(
    *,
    actor: User,
    ticket: Record,
    origin: TicketOrigin,
    body_html: str,
    body_text: str,
    info: bool,
    automatic: bool,
    documents: Sequence[Document | int] = (),
) -> OutgoingMail:
    reply = reply_for(ticket, origin)
    sender: mail.Sender | None = None
    smtp: SmtpSettings | None = None
    if info:
        mailbox = _mailbox_of(origin)
        sender, smtp = mailbox_sender(mailbox), smtp_for(mailbox)
    quote_text = reply.quote_as_text()
    draft = mail.Draft(
        to=[reply.to],
        subject=reply.subject,
        body_html=body_html + reply.quote_as_html(),
        body_text=f"{body_text}\n\n{quote_text}" if quote_text else body_text,
        documents=documents,
        in_reply_to=reply.in_reply_to,
        references=reply.references,
        automatic=automatic,
        sender=sender,
    )
    return mail.send(actor=actor, record=ticket, draft=draft, smtp=smtp)


def _wait_for_response(actor: User, ticket: Record) -> None:
    if ticket.data.get("status") == STATUS_WAITING:
        return
    try:
        record_service.update(actor=actor, record=ticket, data={"status": STATUS_WAITING})
    except Invalid as exc:  # the status is read-only for this user: the answer still goes out
        log.info("ticket %s: status not changed after an answer: %s", ticket.number, exc.detail)


# --- Comments mailed to the customer -------------------------------------------------------


def mail_comment(sender: Any = None, *, comment: Comment, **_: Any) -> None:
    """`crm.hooks.comment_added` receiver: mail a CRM comment on a converter ticket.

    Runs after the comment's commit, so it must never raise: the outcome is written on the
    comment ("Mailed to …" or "Not mailed: …") for the ticket's Comments tab.
    """
    try:
        note = _mail_comment(comment)
    except Exception:
        log.exception("comment %s: mailing it to the customer failed", comment.pk)
        note = "Not mailed: an unexpected error (see the server log)."
    if note:
        Comment.objects.filter(pk=comment.pk).update(mail_note=note[:500])


def _mail_comment(comment: Comment) -> str:
    # The customer's own comments (by mail) and answers already sent are never mailed again.
    if comment.via_mail or comment.author_address or comment.mail_note:
        return ""
    author = comment.author
    ticket = Record.objects.select_related("module").filter(pk=comment.record_id).first()
    if author is None or ticket is None or ticket.module.name != TICKETS or ticket.is_deleted:
        return ""
    origin = tickets.origin_of(ticket)
    if origin is None:
        return ""  # a ticket made by hand: comments stay in the CRM
    if origin.mailbox is None:
        return "Not mailed: the mailbox this ticket came from was deleted."
    try:
        with transaction.atomic():
            outgoing = _send_reply(
                actor=author,
                ticket=ticket,
                origin=origin,
                body_html=linebreaks(escape(comment.body)),
                body_text=comment.body,
                info=True,
                automatic=True,
            )
    except ServiceError as exc:
        return f"Not mailed: {_reason(exc)}"
    return f"Mailed to {', '.join(outgoing.recipients)}"


def _reason(exc: ServiceError) -> str:
    if isinstance(exc, Invalid) and exc.fields:
        return " ".join(exc.fields.values())
    if isinstance(exc, NotFound | Invalid):
        return exc.detail
    return f"{exc.detail} Only users who may edit the ticket mail the customer."


# --- The mailbox as sender -----------------------------------------------------------------


def mailbox_sender(mailbox: Mailbox) -> mail.Sender:
    """The mailbox's address as From (its name as the display name); replies come back to it."""
    address = mailbox.address or (mailbox.username if "@" in mailbox.username else "")
    if not address:
        raise Invalid(
            f"The mailbox {mailbox.name} has no address of its own: an administrator enters it "
            "in the mailbox's settings.",
            code="mailbox_no_address",
        )
    return mail.Sender(email=address, name=mailbox.name)


def smtp_for(mailbox: Mailbox) -> SmtpSettings | None:
    """The server "info" mail of this mailbox leaves through; None: the CRM's own server."""
    row = smtp_row(mailbox)
    if not row.username and mailbox.auth == Mailbox.Auth.XOAUTH2:
        return None  # no password to log in with: the CRM's server, from the mailbox's address
    server = row.smtp_settings()
    if not server.password:  # nothing to log in with: a relay that trusts the CRM's host
        server = dataclasses.replace(server, username="")
    return dataclasses.replace(server, timeout_seconds=mail.current_settings().timeout_seconds)


@dataclass(frozen=True)
class SmtpInput:
    host: str
    port: int
    security: str
    username: str


def smtp_row(mailbox: Mailbox) -> MailboxSmtp:
    """The mailbox's SMTP settings, or the unsaved defaults `smtp_for` uses without them."""
    row = MailboxSmtp.objects.filter(mailbox=mailbox).first()
    if row is None:
        security = "none" if mailbox.security == Mailbox.Security.NONE else "starttls"
        row = MailboxSmtp(mailbox=mailbox, security=security)
    return row


def save_smtp(
    *,
    actor: User,
    mailbox: Mailbox,
    values: SmtpInput,
    password: str = "",
    clear_password: bool = False,
) -> MailboxSmtp:
    """Save how "info" mail leaves this mailbox (administrators only).

    The password is write-only: blank keeps the stored one, `clear_password` removes it. A
    changed user name needs its password (the saved one was another account's).
    """
    mail.require_administrator(actor)
    errors: dict[str, str] = {}
    host = values.host.strip()
    if host and (any(c.isspace() for c in host) or "/" in host):
        errors["host"] = "Enter a server name or IP address, without spaces or slashes."
    if not 1 <= values.port <= 65535:
        errors["port"] = "A port is a number from 1 to 65535."
    if values.security not in SmtpSecurity.values:
        errors["security"] = "Choose SSL/TLS, STARTTLS or none."
    username = values.username.strip()
    if any(c in username for c in "\r\n\x00"):
        errors["username"] = "Line breaks are not allowed here."
    with transaction.atomic():
        row = MailboxSmtp.objects.select_for_update().filter(mailbox=mailbox).first()
        row = row or MailboxSmtp(mailbox=mailbox)
        # The saved password belongs to the saved user name: another name needs its own.
        keeps_secret = bool(row.secret) and not clear_password and username == row.username
        if username and not (password or keeps_secret):
            errors["password"] = "Enter the password for this user name."  # noqa: S105
        if errors:
            raise Invalid(fields=errors)
        row.host, row.port, row.security, row.username = (
            host,
            values.port,
            values.security,
            username,
        )
        if clear_password or not username:
            row.set_password("")
        elif password:
            row.set_password(password)
        row.save()
    return row


def test_smtp(*, actor: User, mailbox: Mailbox, to: str) -> str:
    """Send a test mail from the mailbox's address through its server; the answer in words."""
    mail.require_administrator(actor)
    try:
        sender = mailbox_sender(mailbox)
    except Invalid as exc:
        return f"Not sent. {exc.detail}"
    return mail.send_test(actor=actor, to=to, sender=sender, smtp=smtp_for(mailbox))


# --- Helpers -------------------------------------------------------------------------------


def _converter_origin(ticket: Record) -> TicketOrigin:
    origin = tickets.origin_of(ticket) if ticket.module.name == TICKETS else None
    if origin is None:
        raise Invalid(
            "Only tickets the mail converter created from an email are answered by mail.",
            code="not_a_converter_ticket",
        )
    return origin


def _mailbox_of(origin: TicketOrigin) -> Mailbox:
    if origin.mailbox is None:
        raise Invalid(
            "The mailbox this ticket came from was deleted: answer from your own address.",
            code="mailbox_deleted",
        )
    return origin.mailbox


def _newest_customer_message(ticket: Record) -> Message | None:
    """The incoming message that reached the ticket last (by when it was linked: a sender's
    Date header may say anything)."""
    link = (
        MessageLink.objects.filter(record=ticket, message__direction=Message.Direction.INCOMING)
        .select_related("message")
        .order_by("-linked_at", "-pk")
        .first()
    )
    return link.message if link is not None else None


def _customer_address(parent: Message | None, origin: TicketOrigin) -> str:
    if parent is not None:
        for entry in parent.reply_to:
            if entry.get("email"):
                return str(entry["email"])
        if parent.from_address:
            return parent.from_address
    return origin.sender_address


def _quote(parent: Message | None) -> tuple[str, str]:
    if parent is None:
        return "", ""
    text = parent.text_body or html_to_text(parent.html_body)
    text = text.strip()[:MAX_QUOTE_CHARS]
    if not text:
        return "", ""
    who = parent.from_name or parent.from_address or "the customer"
    when = parent.date
    if when is None:
        return f"{who} wrote:", text
    return f"On {timezone.localtime(when):%a, %d %b %Y at %H:%M}, {who} wrote:", text


def _user_sender(actor: User) -> str:
    config = mail.current_settings()
    if config.from_central and config.central_address:
        name = config.central_name
        central = f"{name} <{config.central_address}>" if name else config.central_address
        return f"{central}, replies to {actor.email or 'you'}"
    return actor.email or "(your user has no email address)"
