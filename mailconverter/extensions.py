"""The converter's parts of the CRM's record pages, registered into `crm.web.extensions`.

On a ticket the converter created: the "Mail information" block and a "Mark as spam" button;
on the Tickets list: the "Mark as spam" mass action; after marking: the notice with "Undo".
The record pages have already checked that the user sees the record; the buttons appear only
for users who may also delete it (the service checks again).
"""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse

from crm import access
from crm.models import Module, Record, User
from crm.web.extensions import Action, Panel, register
from mailconverter import tickets
from mailconverter.models import SpamMark

TICKETS = "Tickets"
# The session key under which the last mark waits for its notice (shown once).
NOTICE_KEY = "mailconverter.spam_mark"


def mail_information(user: User, record: Record) -> list[Panel]:
    if record.module.name != TICKETS:
        return []
    origin = tickets.origin_of(record)
    if origin is None:
        return []
    return [Panel("mailconverter/ticket_mail_information.html", {"origin": origin})]


def spam_button(user: User, record: Record) -> list[Action]:
    if record.module.name != TICKETS or not access.can(user, "delete", record):
        return []
    if tickets.origin_of(record) is None:
        return []
    url = reverse("converter_tickets:mark_spam", kwargs={"pk": record.pk})
    return [Action("Mark as spam", url, "danger")]


def answer_buttons(user: User, record: Record) -> list[Action]:
    """ "Answer by mail" and "Answer by mail (info)": pages with the answer form."""
    if record.module.name != TICKETS or not access.can(user, "edit", record):
        return []
    origin = tickets.origin_of(record)
    if origin is None:
        return []
    own = reverse("converter_answers:answer", kwargs={"pk": record.pk})
    actions = [Action("Answer by mail", own, "primary", method="get")]
    if origin.mailbox is not None:
        info = reverse("converter_answers:answer_info", kwargs={"pk": record.pk})
        actions.append(Action("Answer by mail (info)", info, "primary", method="get"))
    return actions


def comment_hint(user: User, record: Record) -> list[str]:
    """Say before typing that a comment here reaches the customer (and from which address)."""
    if record.module.name != TICKETS:
        return []
    origin = tickets.origin_of(record)
    if origin is None or origin.mailbox is None:
        return []
    to = origin.sender_address or "the customer"
    return [f"Comments added here are mailed to {to} from the {origin.mailbox.name} mailbox."]


def spam_mass_action(user: User, module: Module) -> list[Action]:
    if module.name != TICKETS or "delete" not in access.module_actions(user, module):
        return []
    return [Action("Mark as spam", reverse("converter_tickets:mark_spam_many"), "danger")]


def spam_notice(request: HttpRequest) -> list[Panel]:
    session = getattr(request, "session", None)
    if session is None or NOTICE_KEY not in session:
        return []
    pk = session.pop(NOTICE_KEY)
    user = getattr(request, "user", None)
    mark = (
        SpamMark.objects.filter(pk=pk, actor_id=getattr(user, "pk", None), undone_at=None)
        .prefetch_related("tickets", "leads")
        .first()
    )
    if mark is None:
        return []
    return [Panel("mailconverter/ticket_spam_notice.html", {"mark": mark})]


def install() -> None:
    register(actions=answer_buttons, comment_hints=comment_hint)
    register(
        panels=mail_information,
        actions=spam_button,
        list_actions=spam_mass_action,
        notices=spam_notice,
    )
