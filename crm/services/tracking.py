"""Open tracking: a one-pixel image per (message, recipient record), counted when fetched.

How the pixels travel (ARCHITECTURE.md, "Sending mail"). The Message is stored once, exactly
as composed, and its stored bytes carry **no** tracking image: the CRM's own pages of the email
never contain it, so opening the email in the CRM can never count. When the email is sent with
tracking on, `plan_copies` splits its envelope: each To/Cc recipient whose address is on one of
the records the email is linked to (through an email field the sender sees) gets a copy of his
own carrying the image signed for (message, that record); everyone else (Bcc, addresses on no
record) gets one copy without any image. All copies have the same headers (To and Cc list
everyone, as composed). Progress is kept per copy (`MailCopy.sent_at`), so a retry sends only
what the server has not taken yet. An address on several linked records is counted for the
record the email was sent from when it carries it, else for the oldest such record.

The image URL is signed (django.core.signing, a salt of its own) and says nothing but the two
ids; the image answers the same GIF to every valid URL whether or not it counted, and a
tampered URL is a plain 404. Not counted: fetches from a signed-in CRM session, fetches whose
Referer is the CRM itself (someone viewing a reply that quotes the image), and repeats within an
hour for the same (message, record). Counts are indicative: mail clients prefetch images (which
counts without a reader) or block them (no count although read).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from html import unescape
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from crm import access
from crm.models import (
    MailCopy,
    MailOpen,
    Message,
    OutgoingMail,
    OutgoingMailSettings,
    Record,
    RecordAddress,
    User,
)

SALT = "crm.mail.open-tracking"
REPEAT_WINDOW = timedelta(hours=1)
# The smallest transparent GIF (43 bytes).
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
    b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
# "~" rather than ":" so the token is a plain path segment everywhere (mail clients, proxies).
_SIGNER = signing.Signer(salt=SALT, sep="~")
_TOKEN = re.compile(r"^([0-9]{1,18})\.([0-9]{1,18})~[A-Za-z0-9_-]{20,100}$")
_POLICY = policy.SMTP.clone(cte_type="7bit")
_IMG = re.compile(r'<img\b[^>]*?\ssrc="([^"]*)"[^>]*>', re.IGNORECASE)


# --- The URL -------------------------------------------------------------------------------


def token_for(message_id: int, record_id: int) -> str:
    return _SIGNER.sign(f"{message_id}.{record_id}")


def pixel_url(message_id: int, record_id: int) -> str:
    path = reverse("crm:open_pixel", args=[token_for(message_id, record_id)])
    return settings.CRM_BASE_URL.rstrip("/") + path


def read_token(token: str) -> tuple[int, int] | None:
    """(message id, record id) of a URL the CRM signed; None for anything else."""
    if not _TOKEN.match(token):
        return None
    try:
        value = _SIGNER.unsign(token)
    except signing.BadSignature:
        return None
    message_id, _, record_id = value.partition(".")
    return int(message_id), int(record_id)


def is_own_pixel(url: str) -> bool:
    """Whether an image URL is one of the CRM's own tracking images (in a quoted reply)."""
    base = urlsplit(settings.CRM_BASE_URL)
    parts = urlsplit(url)
    prefix = reverse("crm:open_pixel", args=["x"]).rsplit("x", 1)[0]
    return (
        parts.hostname == base.hostname
        and parts.path.startswith(prefix)
        and read_token(parts.path[len(prefix) :].removesuffix(".gif")) is not None
    )


def without_own_pixels(html: str) -> str:
    """Sanitised email HTML without the CRM's own tracking images.

    A customer's reply may quote the email with its image. The CRM shows emails in a sandboxed
    frame that sends neither the session cookie nor a Referer, so a fetch from there would look
    like the customer's; such images are taken out before the page shows the email.
    """
    return _IMG.sub(lambda m: "" if is_own_pixel(unescape(m.group(1))) else m.group(0), html)


# --- Sending: one copy per tracked recipient -----------------------------------------------


def plan_copies(
    *, actor: User | None, outgoing: OutgoingMail, record: Record, has_html: bool
) -> list[MailCopy]:
    """Split a just-stored email's envelope into tracked copies (see the module docstring).

    Nothing is planned (one envelope, no image) when tracking is off, for mail the system sends
    on its own, for plain-text mail, or when no recipient is on a record.
    """
    config = OutgoingMailSettings.objects.filter(pk=1).first()
    if actor is None or not has_html or config is None or not config.open_tracking:
        return []
    hidden = {a.lower() for a in outgoing.bcc}
    shown = [a for a in outgoing.recipients if a.lower() not in hidden]
    owners = _recipient_records(actor, outgoing.message, record, shown)
    if not owners:
        return []
    copies = [
        MailCopy(outgoing=outgoing, record_id=owners[a.lower()], recipients=[a])
        for a in shown
        if a.lower() in owners
    ]
    rest = [a for a in outgoing.recipients if a.lower() not in owners or a.lower() in hidden]
    if rest:
        copies.append(MailCopy(outgoing=outgoing, record=None, recipients=rest))
    return MailCopy.objects.bulk_create(copies)


def _recipient_records(
    actor: User, message: Message, record: Record, addresses: list[str]
) -> dict[str, int]:
    """Address (lower case) → id of the linked record it is counted for."""
    linked = list(
        Record.objects.filter(message_links__message=message, deleted_at=None).select_related(
            "module"
        )
    )
    modules = list({r.module_id: r.module for r in linked}.values())
    fields = access.visible_email_fields(actor, modules)
    rows = RecordAddress.objects.filter(
        record__in=linked, field_id__in=fields, address__in=[a.lower() for a in addresses]
    ).values_list("address", "record_id")
    owners: dict[str, int] = {}
    for address, record_id in sorted(rows, key=lambda row: (row[1] != record.pk, row[1])):
        owners.setdefault(address, record_id)
    return owners


def copy_bytes(raw: bytes, message_id: int, copy: MailCopy) -> bytes:
    """The stored bytes for an untracked copy; with this recipient's image for a tracked one."""
    if copy.record_id is None:
        return raw
    return with_pixel(raw, pixel_url(message_id, copy.record_id))


def with_pixel(raw: bytes, url: str) -> bytes:
    """The email with a one-pixel image at the end of its HTML body (the text part is untouched)."""
    msg = message_from_bytes(raw, policy=_POLICY)
    for part in msg.walk():
        if (
            isinstance(part, EmailMessage)
            and part.get_content_type() == "text/html"
            and not part.is_attachment()
        ):
            html = part.get_content()
            image = (
                f'<img src="{url}" width="1" height="1" alt="" '
                'style="display:block;width:1px;height:1px;border:0">'
            )
            at = html.lower().rfind("</body>")
            html = html[:at] + image + html[at:] if at >= 0 else html + image
            part.set_content(html, subtype="html", charset="utf-8")
            if part is not msg:
                del part["MIME-Version"]  # set_content adds it; it belongs to the top only
            break
    return msg.as_bytes(policy=_POLICY)


# --- The image is fetched ------------------------------------------------------------------


def count_open(
    *, token: str, signed_in: bool, referer: str = "", now: datetime | None = None
) -> bool:
    """Count a fetch of a tracking image. False when the token is not one the CRM signed.

    A valid token is True whether or not the fetch counted, so that the caller answers every
    valid URL the same way.
    """
    ids = read_token(token)
    if ids is None:
        return False
    if signed_in or _from_crm(referer):
        return True
    message_id, record_id = ids
    now = now or timezone.now()
    counted = MailOpen.objects.filter(
        message_id=message_id, record_id=record_id, last_at__lte=now - REPEAT_WINDOW
    ).update(count=F("count") + 1, last_at=now)
    if counted or MailOpen.objects.filter(message_id=message_id, record_id=record_id).exists():
        return True
    if not _still_linked(message_id, record_id):
        return True  # signed once, since deleted: nothing to count, nothing to tell
    try:
        with transaction.atomic():
            MailOpen.objects.create(
                message_id=message_id, record_id=record_id, first_at=now, last_at=now
            )
    except IntegrityError:
        pass  # a simultaneous fetch counted it first: one open
    return True


def _from_crm(referer: str) -> bool:
    if not referer:
        return False
    return urlsplit(referer).hostname == urlsplit(settings.CRM_BASE_URL).hostname


def _still_linked(message_id: int, record_id: int) -> bool:
    return Record.objects.filter(
        pk=record_id, message_links__message_id=message_id, deleted_at=None
    ).exists()


# --- The Messages tab ------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipientOpens:
    record: Record
    count: int
    last_at: datetime | None


def opens_by_message(
    actor: access.Actor, messages: list[Message]
) -> dict[int, list[RecipientOpens]]:
    """Per outgoing message sent with tracking: each tracked recipient record the user may see,
    with its (indicative) open count; zero when never opened."""
    outgoing = [m.pk for m in messages if m.direction == Message.Direction.OUTGOING]
    if not outgoing:
        return {}
    tracked = (
        MailCopy.objects.filter(outgoing__message_id__in=outgoing, record__isnull=False)
        .select_related("record", "record__module", "outgoing")
        .order_by("pk")
    )
    opens = {
        (o.message_id, o.record_id): o for o in MailOpen.objects.filter(message_id__in=outgoing)
    }
    result: dict[int, list[RecipientOpens]] = defaultdict(list)
    seen: set[tuple[int, int]] = set()
    for copy in tracked:
        target = copy.record
        key = (copy.outgoing.message_id, copy.record_id or 0)
        if target is None or key in seen or not access.can(actor, "view", target):
            continue
        seen.add(key)
        hit = opens.get(key)
        result[key[0]].append(
            RecipientOpens(target, hit.count if hit else 0, hit.last_at if hit else None)
        )
    return dict(result)
