"""Messages and Documents are seen through the records they are linked to.

Every function takes a record the caller already loaded through `crm.access` (so it is
visible) and answers only what hangs off that record: an email or file linked elsewhere is
"not found" here, whatever its id.
"""

from __future__ import annotations

from django.core.paginator import Page, Paginator
from django.db.models import Prefetch, QuerySet

from crm import access
from crm.exceptions import NotFound
from crm.models import Attachment, Document, Message, Record


def record_messages(user: access.Actor, record: Record, *, page: int | str | None = 1) -> Page:
    access.require(user, "view", record)
    qs = (
        Message.objects.filter(links__record=record)
        .order_by("-date", "-id")
        .prefetch_related(Prefetch("attachments", Attachment.objects.filter(inline=False)))
    )
    return Paginator(qs, 25).get_page(page)


def record_message(user: access.Actor, record: Record, message_id: int) -> Message:
    access.require(user, "view", record)
    message = Message.objects.filter(pk=message_id, links__record=record).first()
    if message is None:
        raise NotFound("No such email on this record.")
    return message


def message_attachment(message: Message, attachment_id: int) -> Attachment:
    attachment = (
        Attachment.objects.filter(pk=attachment_id, message=message)
        .select_related("document")
        .first()
    )
    if attachment is None:
        raise NotFound("No such attachment.")
    return attachment


def inline_parts(message: Message) -> dict[str, Attachment]:
    """The message's parts by Content-ID, for `cid:` images in its HTML."""
    parts = message.attachments.exclude(content_id="").select_related("document")
    return {a.content_id: a for a in parts}


def record_documents(user: access.Actor, record: Record) -> QuerySet[Document]:
    access.require(user, "view", record)
    return Document.objects.filter(links__record=record).order_by("-created_at", "-id")


def record_document(user: access.Actor, record: Record, document_id: int) -> Document:
    document = record_documents(user, record).filter(pk=document_id).first()
    if document is None:
        raise NotFound("No such document on this record.")
    return document
