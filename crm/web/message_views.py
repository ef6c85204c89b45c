"""Pages for the emails and documents on a record.

An email's HTML is untrusted. It is sanitised (nh3), then served as its own document inside a
sandboxed frame (no scripts, opaque origin) under a Content-Security-Policy that allows only
images from the CRM (`cid:` parts, through short-lived signed URLs, since the opaque frame
carries no session) until the user asks for remote images.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_sameorigin

from crm import access
from crm.email.sanitize import sanitize_html
from crm.exceptions import NotFound
from crm.models import Attachment, Record
from crm.selectors import messages as message_selectors
from crm.selectors import records as record_selectors
from crm.services import thumbnails, tracking
from crm.web import downloads

PART_SALT = "crm.inline-part"
PART_MAX_AGE = 60 * 60
FRAME_POLICY = (
    "default-src 'none'; img-src 'self' data:{remote}; style-src 'unsafe-inline'; "
    "font-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


def _record(request: HttpRequest, module: str, pk: int) -> Record:
    mod = record_selectors.visible_module(request.user, module)
    return access.get_record(request.user, mod, pk)


@login_required
def message_detail(request: HttpRequest, module: str, pk: int, message_id: int) -> HttpResponse:
    record = _record(request, module, pk)
    message = message_selectors.record_message(request.user, record, message_id)
    remote = request.GET.get("images") == "1"
    body_url = reverse("crm:message_body", args=[record.module.name, record.pk, message.pk])
    blocked = 0
    if message.html_body:
        blocked = sanitize_html(message.html_body, allow_remote_images=False).blocked_remote_images
    return render(
        request,
        "crm/message_detail.html",
        {
            "module": record.module,
            "record": record,
            "message": message,
            "attachments": message.attachments.filter(inline=False),
            "body_url": f"{body_url}?images=1" if remote else body_url,
            "remote_images": remote,
            "blocked_images": blocked,
        },
    )


@login_required
@xframe_options_sameorigin
def message_body(request: HttpRequest, module: str, pk: int, message_id: int) -> HttpResponse:
    record = _record(request, module, pk)
    message = message_selectors.record_message(request.user, record, message_id)
    remote = request.GET.get("images") == "1"
    parts = message_selectors.inline_parts(message)

    def cid_url(content_id: str) -> str | None:
        part = parts.get(content_id)
        return part_url(part) if part else None

    clean = sanitize_html(message.html_body, allow_remote_images=remote, cid_url=cid_url)
    html = tracking.without_own_pixels(clean.html)  # quoted in a reply: never counted here
    response = render(request, "crm/message_body.html", {"html": html})
    response["Content-Security-Policy"] = FRAME_POLICY.format(
        remote=" https: http:" if remote else ""
    )
    response["Referrer-Policy"] = "no-referrer"
    return response


@login_required
def message_raw(request: HttpRequest, module: str, pk: int, message_id: int) -> FileResponse:
    record = _record(request, module, pk)
    message = message_selectors.record_message(request.user, record, message_id)
    return downloads.serve(
        message.raw.name,
        filename=f"{message.subject or 'email'}.eml",
        content_type="message/rfc822",
        inline=False,
    )


@login_required
def attachment_download(
    request: HttpRequest, module: str, pk: int, message_id: int, attachment_id: int
) -> FileResponse:
    record = _record(request, module, pk)
    message = message_selectors.record_message(request.user, record, message_id)
    attachment = message_selectors.message_attachment(message, attachment_id)
    return downloads.serve(
        attachment.document.file.name,
        filename=attachment.filename,
        content_type=attachment.content_type,
        inline=False,
    )


# "~" keeps the token free of ":", which the sanitiser rightly refuses in image URLs.
_PART_SIGNER = signing.TimestampSigner(salt=PART_SALT, sep="~")


def part_url(attachment: Attachment) -> str:
    return reverse("crm:inline_part", args=[_PART_SIGNER.sign_object(attachment.pk)])


def inline_part(request: HttpRequest, token: str) -> FileResponse:
    """An inline image of an email, by a signed, short-lived token (see the module docstring)."""
    try:
        attachment_id = _PART_SIGNER.unsign_object(token, max_age=PART_MAX_AGE)
    except signing.BadSignature as exc:
        raise NotFound("No such image.") from exc
    attachment = Attachment.objects.select_related("document").filter(pk=attachment_id).first()
    if attachment is None or attachment.content_type.lower() not in downloads.INLINE_IMAGES:
        raise NotFound("No such image.")
    return downloads.serve(
        attachment.document.file.name,
        filename=attachment.filename,
        content_type=attachment.content_type,
        inline=True,
    )


@login_required
def document_download(request: HttpRequest, module: str, pk: int, document_id: int) -> FileResponse:
    record = _record(request, module, pk)
    document = message_selectors.record_document(request.user, record, document_id)
    return downloads.serve(
        document.file.name,
        filename=document.title,
        content_type=document.content_type,
        inline=False,
    )


@login_required
def document_thumbnail(
    request: HttpRequest, module: str, pk: int, document_id: int
) -> FileResponse:
    record = _record(request, module, pk)
    document = message_selectors.record_document(request.user, record, document_id)
    name = thumbnails.of(document)
    if name is None:
        raise NotFound("No thumbnail.")
    return downloads.serve(name, filename="thumbnail.png", content_type="image/png", inline=True)
