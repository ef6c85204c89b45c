"""The Messages and Documents of a record: listed, shown safely, downloaded with permission."""

from __future__ import annotations

import io
import re
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image

from crm.models import Message, Module, Record
from crm.models.modules import Sharing
from crm.services import ingest
from tests.conftest import Org
from tests.factories import make_record

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "orange").save(buffer, "PNG")
    return buffer.getvalue()


def _hostile(subject: str = "Offer", message_id: str = "<offer@customer.example>") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jane Doe <jane@customer.example>"
    msg["To"] = "alice@crm.example"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg.set_content("Plain text version")
    msg.add_alternative(
        "<p>Hello <b>there</b></p><script>alert(1)</script>"
        '<img src="https://tracker.example/pixel.gif"><img src="cid:logo@x">'
        '<a href="javascript:alert(2)">click</a><div onclick="alert(3)">x</div>',
        subtype="html",
    )
    msg.get_payload()[1].add_related(_png(), maintype="image", subtype="png", cid="<logo@x>")
    msg.add_attachment(
        b"<html><script>alert(4)</script></html>",
        maintype="text",
        subtype="html",
        filename="../../evil.html",
    )
    return bytes(msg)


def _linked(org: Org, owner=None, raw: bytes | None = None) -> tuple[Record, Message]:  # type: ignore[no-untyped-def]
    record = make_record("Companies", owner or org.alice, name="Customer Ltd")
    message = ingest.store(raw or _hostile(), source="addin").message
    ingest.link(message=message, record=record, actor=None, via="addin")
    return record, message


def _url(name: str, record: Record, *args: object) -> str:
    return reverse(name, args=[record.module.name, record.pk, *args])


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def test_the_messages_tab_lists_the_records_emails_newest_first(org: Org) -> None:
    record = make_record("Companies", org.alice, name="Customer Ltd")
    for n, date in ((1, "Mon, 2 Nov 2026 10:00:00 +0000"), (2, "Mon, 9 Nov 2026 10:00:00 +0000")):
        msg = EmailMessage()
        msg["Subject"], msg["Message-ID"], msg["Date"] = f"Email {n}", f"<e{n}@x>", date
        msg["From"] = "jane@customer.example"
        msg.set_content("x")
        message = ingest.store(bytes(msg), source="import").message
        ingest.link(message=message, record=record, actor=None, via="import")
    other = ingest.store(_hostile("Elsewhere", "<elsewhere@x>"), source="import").message
    ingest.link(
        message=other,
        record=make_record("Companies", org.alice, name="Other"),
        actor=None,
        via="import",
    )
    page = _client(org.alice).get(_url("crm:record_tab", record, "messages")).content.decode()
    assert page.index("Email 2") < page.index("Email 1")
    assert "Elsewhere" not in page


def test_an_email_on_an_invisible_record_is_not_found_even_through_another_record(
    org: Org,
) -> None:
    companies = Module.objects.get(name="Companies")
    companies.default_sharing = Sharing.PRIVATE
    companies.save()
    hidden, message = _linked(org, owner=org.charlie)
    mine = make_record("Companies", org.alice, name="Mine")
    client = _client(org.alice)
    assert client.get(_url("crm:message_detail", hidden, message.pk)).status_code == 404
    # The email exists, but not on her record: still not found.
    assert client.get(_url("crm:message_detail", mine, message.pk)).status_code == 404
    assert client.get(_url("crm:message_raw", mine, message.pk)).status_code == 404


def test_the_body_is_sanitised_and_served_in_a_locked_down_frame(org: Org) -> None:
    record, message = _linked(org)
    client = _client(org.alice)
    page = client.get(_url("crm:message_detail", record, message.pk))
    assert b'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page.content
    assert b"1 remote image blocked" in page.content
    body = client.get(_url("crm:message_body", record, message.pk))
    html = body.content.decode()
    assert "Hello <b>there</b>" in html
    for bad in ("<script", "alert(1)", "javascript:", "onclick"):
        assert bad not in html
    assert not re.search(r'(?<!blocked-)src="https://tracker', html)
    policy = body["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy
    assert "https:" not in policy
    assert body["X-Frame-Options"] == "SAMEORIGIN"


def test_remote_images_load_only_when_asked(org: Org) -> None:
    record, message = _linked(org)
    body = _client(org.alice).get(_url("crm:message_body", record, message.pk) + "?images=1")
    assert 'src="https://tracker.example/pixel.gif"' in body.content.decode()
    assert "https:" in body["Content-Security-Policy"]


def test_inline_images_are_served_by_a_signed_link_and_a_tampered_one_is_404(org: Org) -> None:
    record, message = _linked(org)
    html = _client(org.alice).get(_url("crm:message_body", record, message.pk)).content.decode()
    src = html.split('src="/inline/', 1)[1].split('"', 1)[0]
    anonymous = Client()  # the sandboxed frame has no session: the signature is the permission
    image = anonymous.get(f"/inline/{src}")
    assert image.status_code == 200
    assert b"".join(image.streaming_content) == _png()
    assert image["Content-Type"] == "image/png"
    assert anonymous.get(f"/inline/{src[:-3]}xx/").status_code == 404


def test_the_eml_downloads_byte_for_byte(org: Org) -> None:
    raw = _hostile()
    record, message = _linked(org, raw=raw)
    response = _client(org.alice).get(_url("crm:message_raw", record, message.pk))
    assert b"".join(response.streaming_content) == raw
    assert response["Content-Disposition"].startswith("attachment;")


def test_an_html_attachment_is_never_served_as_a_page(org: Org) -> None:
    record, message = _linked(org)
    attachment = message.attachments.get(inline=False)
    response = _client(org.alice).get(
        _url("crm:attachment_download", record, message.pk, attachment.pk)
    )
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Content-Type-Options"] == "nosniff"
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "/" not in disposition.split("filename", 1)[1]
    assert "sandbox" in response["Content-Security-Policy"]


def test_the_documents_tab_shows_attachments_with_thumbnails(org: Org) -> None:
    msg = EmailMessage()
    msg["Subject"], msg["Message-ID"] = "Photos", "<photos@x>"
    msg.set_content("see attached")
    msg.add_attachment(_png(), maintype="image", subtype="png", filename="site.png")
    msg.add_attachment(b"\x89PNG cut", maintype="image", subtype="png", filename="cut.png")
    record = make_record("Companies", org.alice, name="Customer Ltd")
    message = ingest.store(bytes(msg), source="import").message
    ingest.link(message=message, record=record, actor=None, via="import")
    client = _client(org.alice)
    page = client.get(_url("crm:record_tab", record, "documents")).content.decode()
    assert "site.png" in page
    document = message.attachments.get(filename="site.png").document
    broken = message.attachments.get(filename="cut.png").document
    thumb_url = _url("crm:document_thumbnail", record, document.pk)
    broken_url = _url("crm:document_thumbnail", record, broken.pk)
    assert thumb_url in page
    assert broken_url in page
    thumb = client.get(thumb_url)
    assert Image.open(io.BytesIO(b"".join(thumb.streaming_content))).size[0] <= 240
    assert client.get(broken_url).status_code == 404
    page = client.get(_url("crm:record_tab", record, "documents")).content.decode()
    assert thumb_url in page
    assert broken_url not in page
    download = client.get(_url("crm:document_download", record, document.pk))
    assert b"".join(download.streaming_content) == _png()
    assert (
        _client(org.charlie)
        .get(
            _url(
                "crm:document_download",
                make_record("Companies", org.charlie, name="C"),
                document.pk,
            )
        )
        .status_code
        == 404
    )
