"""Storing emails whole and linking them: one Message per email, files stored once, nothing lost."""

from __future__ import annotations

import hashlib
import json
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from crm.exceptions import Forbidden, Invalid, NotFound
from crm.models import (
    Attachment,
    ChangeLog,
    Document,
    DocumentLink,
    Message,
    MessageLink,
    Module,
    QuarantinedMessage,
)
from crm.models.modules import Sharing
from crm.services import blobs, ingest, thumbnails
from tests.conftest import Org
from tests.factories import make_record

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "emails"
MANIFEST = json.loads((FIXTURES / "MANIFEST.json").read_text())["files"]
EML_FILES = sorted(p.name for p in FIXTURES.glob("*.eml"))


@pytest.fixture(autouse=True)
def _media(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"


def _email(
    subject: str = "Quote",
    *,
    attachments: dict[str, bytes] | None = None,
    message_id: str | None = "<q-1@customer.example>",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jane Doe <jane@customer.example>"
    msg["To"] = "sales@crm.example"
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    msg.set_content("Please send a quote.\n")
    for name, data in (attachments or {}).items():
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return bytes(msg)


@pytest.mark.parametrize("name", EML_FILES)
def test_every_fixture_is_stored_with_its_exact_bytes(org: Org, name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    stored = ingest.store(raw, source="import", actor=org.alice)
    message = stored.message
    assert stored.created
    assert blobs.read(message.raw.name) == raw
    assert message.raw_sha256 == hashlib.sha256(raw).hexdigest()
    expect = MANIFEST.get(name, {}).get("expect", {})
    if "subject" in expect and expect["subject"] is not None:
        assert message.subject == expect["subject"]
    for part in expect.get("parts", []):
        if "sha256" in part:
            doc = Document.objects.get(sha256=part["sha256"])
            assert hashlib.sha256(blobs.read(doc.file.name)).hexdigest() == part["sha256"]


def test_storing_the_same_email_twice_gives_one_message(org: Org) -> None:
    raw = _email(attachments={"quote.pdf": b"%PDF-1.4 quote"})
    first = ingest.store(raw, source="addin", actor=org.alice)
    second = ingest.store(raw, source="converter")
    assert first.created
    assert not second.created
    assert first.message.pk == second.message.pk
    assert Message.objects.count() == 1
    assert Document.objects.count() == 1


def test_one_message_id_with_two_subjects_is_two_messages(org: Org) -> None:
    a = ingest.store(_email("Invoice March"), source="import")
    b = ingest.store(_email("Invoice April"), source="import")
    assert a.message.pk != b.message.pk


def test_without_a_message_id_identity_is_the_bytes(org: Org) -> None:
    raw = _email(message_id=None)
    stored = ingest.store(raw, source="import")
    assert stored.message.identity == hashlib.sha256(raw).hexdigest()
    assert not ingest.store(raw, source="import").created
    assert ingest.store(raw + b"\n", source="import").created


def test_the_same_file_in_two_emails_is_stored_once(org: Org) -> None:
    pdf = b"%PDF-1.4 price list"
    ingest.store(
        _email("One", attachments={"prices.pdf": pdf}, message_id="<a@x>"), source="import"
    )
    ingest.store(
        _email("Two", attachments={"prices-2026.pdf": pdf}, message_id="<b@x>"), source="import"
    )
    assert Document.objects.count() == 1
    assert sorted(Attachment.objects.values_list("filename", flat=True)) == [
        "prices-2026.pdf",
        "prices.pdf",
    ]
    files = list(Path(default_storage.location, "files").rglob("*"))
    assert len([f for f in files if f.is_file()]) == 1


def test_a_file_another_store_saved_meanwhile_is_taken_as_it_is(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other store's Document row appears between the look-up and the insert."""
    pdf = b"%PDF-1.4 price list"
    ingest.store(
        _email("One", attachments={"prices.pdf": pdf}, message_id="<a@x>"), source="import"
    )
    first = Document.objects.get()
    monkeypatch.setattr(ingest.Document.objects, "filter", lambda **_: Document.objects.none())
    ingest.store(
        _email("Two", attachments={"renamed.pdf": pdf}, message_id="<b@x>"), source="import"
    )
    monkeypatch.undo()
    assert list(Document.objects.values_list("pk", "title")) == [(first.pk, "prices.pdf")]
    second = Message.objects.get(message_id="b@x")
    assert [a.document_id for a in second.attachments.all()] == [first.pk]


def test_hostile_filenames_never_reach_the_storage_path(org: Org) -> None:
    names = ["../../etc/passwd", "/abs/path.pdf", "con.pdf", "a\u202egnp.exe", "x" * 300]
    raw = _email(attachments={n: n.encode() * 3 for n in names})
    message = ingest.store(raw, source="import").message
    media = Path(default_storage.location).resolve()
    for attachment in message.attachments.select_related("document"):
        stored = Path(default_storage.path(attachment.document.file.name)).resolve()
        assert stored.is_relative_to(media)
        assert attachment.document.sha256 in stored.name
        assert "passwd" not in str(stored)
        assert "abs" not in str(stored)
    assert not (media.parent / "etc").exists()


def test_linking_puts_the_message_and_its_attachments_on_the_record(org: Org) -> None:
    company = make_record("Companies", org.alice, name="Customer Ltd")
    message = ingest.store(_email(attachments={"q.pdf": b"%PDF q"}), source="addin").message
    assert ingest.link(message=message, record=company, actor=org.alice, via="addin")
    assert MessageLink.objects.get().linked_by == org.alice
    assert DocumentLink.objects.get().record == company
    assert ChangeLog.objects.filter(record=company, action="link").count() == 1


def test_linking_the_same_email_twice_keeps_one_link(org: Org) -> None:
    company = make_record("Companies", org.alice, name="Customer Ltd")
    message = ingest.store(_email(attachments={"q.pdf": b"%PDF q"}), source="addin").message
    ingest.link(message=message, record=company, actor=org.alice, via="addin")
    assert not ingest.link(message=message, record=company, actor=org.bob, via="addin")
    assert MessageLink.objects.count() == 1
    assert DocumentLink.objects.count() == 1
    assert ChangeLog.objects.filter(action="link").count() == 1


def test_one_email_on_two_records_is_one_message(org: Org) -> None:
    company = make_record("Companies", org.alice, name="Customer Ltd")
    contact = make_record("Contacts", org.alice, last_name="Doe")
    message = ingest.store(_email(), source="addin").message
    ingest.link(message=message, record=company, actor=org.alice, via="addin")
    ingest.link(message=message, record=contact, actor=org.alice, via="addin")
    assert Message.objects.count() == 1
    assert MessageLink.objects.count() == 2


def test_linking_needs_edit_access_and_hides_invisible_records(org: Org) -> None:
    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = Sharing.PRIVATE
    contacts.save()
    companies = Module.objects.get(name="Companies")
    companies.default_sharing = Sharing.PUBLIC_READ
    companies.save()
    hidden = make_record(contacts, org.charlie, last_name="Secret")
    readable = make_record(companies, org.charlie, name="Read only Ltd")
    message = ingest.store(_email(), source="addin").message
    with pytest.raises(NotFound):
        ingest.link(message=message, record=hidden, actor=org.alice, via="addin")
    with pytest.raises(Forbidden):
        ingest.link(message=message, record=readable, actor=org.alice, via="addin")
    assert not MessageLink.objects.exists()


def test_a_module_that_takes_no_emails_refuses_links(org: Org) -> None:
    document = make_record("Documents", org.alice, title="Contract")
    message = ingest.store(_email(), source="addin").message
    with pytest.raises(Invalid):
        ingest.link(message=message, record=document, actor=org.alice, via="addin")


def test_unlinking_removes_the_attachments_only_carried_by_that_email(org: Org) -> None:
    company = make_record("Companies", org.alice, name="Customer Ltd")
    shared, own = b"%PDF shared", b"%PDF own"
    first = ingest.store(
        _email("A", attachments={"s.pdf": shared, "o.pdf": own}, message_id="<a@x>"), source="addin"
    ).message
    second = ingest.store(
        _email("B", attachments={"s.pdf": shared}, message_id="<b@x>"), source="addin"
    ).message
    for message in (first, second):
        ingest.link(message=message, record=company, actor=org.alice, via="addin")
    assert ingest.unlink(message=first, record=company, actor=org.alice)
    remaining = set(DocumentLink.objects.values_list("document__sha256", flat=True))
    assert remaining == {hashlib.sha256(shared).hexdigest()}
    assert ChangeLog.objects.filter(record=company, action="unlink").count() == 1
    assert not ingest.unlink(message=first, record=company, actor=org.alice)


def test_an_image_gets_its_thumbnail_when_first_asked_and_a_broken_one_is_still_stored(
    org: Org,
) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), "teal").save(buffer, "PNG")
    msg = EmailMessage()
    msg["Subject"] = "Pictures"
    msg["Message-ID"] = "<pics@x>"
    msg.set_content("see attached")
    msg.add_attachment(buffer.getvalue(), maintype="image", subtype="png", filename="ok.png")
    msg.add_attachment(b"\x89PNG broken", maintype="image", subtype="png", filename="bad.png")
    msg.add_attachment(b"%PDF-1.7 x", maintype="application", subtype="pdf", filename="a.pdf")
    ingest.store(bytes(msg), source="import")
    good = Document.objects.get(title="ok.png")
    bad = Document.objects.get(title="bad.png")
    pdf = Document.objects.get(title="a.pdf")
    assert not good.thumbnail  # storing the email does not make it
    assert good.may_have_thumbnail
    assert bad.may_have_thumbnail
    assert not pdf.may_have_thumbnail

    name = thumbnails.of(good)
    assert name is not None
    with default_storage.open(name) as handle:
        assert max(Image.open(handle).size) <= 240
    assert Document.objects.get(pk=good.pk).thumbnail.name == name  # kept, made once
    assert thumbnails.of(Document.objects.get(pk=good.pk)) == name

    assert thumbnails.of(bad) is None
    bad.refresh_from_db()
    assert bad.no_thumbnail
    assert not bad.may_have_thumbnail
    assert blobs.read(bad.file.name) == b"\x89PNG broken"
    assert thumbnails.of(pdf) is None


def test_an_image_bomb_is_stored_but_never_decoded(org: Org) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, "PNG")  # 144 Mpx, a few kB compressed
    msg = EmailMessage()
    msg["Subject"] = "Bomb"
    msg["Message-ID"] = "<bomb@x>"
    msg.set_content("x")
    msg.add_attachment(buffer.getvalue(), maintype="image", subtype="png", filename="b.png")
    ingest.store(bytes(msg), source="import")
    document = Document.objects.get(title="b.png")
    assert thumbnails.of(document) is None
    assert Document.objects.get(pk=document.pk).no_thumbnail
    assert blobs.read(document.file.name) == buffer.getvalue()


def test_a_failure_while_storing_quarantines_the_bytes_and_says_why(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _email("Will fail")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest, "_save", broken)
    with pytest.raises(RuntimeError):
        ingest.store(raw, source="import", origin="inbox.mbox#3")
    quarantined = QuarantinedMessage.objects.get()
    assert blobs.read(quarantined.raw.name) == raw
    assert "disk full" in quarantined.error
    assert quarantined.origin == "inbox.mbox#3"
    assert not Message.objects.exists()


def test_on_postgresql_a_long_body_is_compressed_with_lz4(org: Org) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("column compression is PostgreSQL's")
    msg = EmailMessage()
    msg["Subject"] = "Minutes"
    msg["Message-ID"] = "<minutes@x>"
    msg.set_content("The meeting agreed on the following points. " * 400)
    message = ingest.store(bytes(msg), source="import").message
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_compression(text_body) FROM crm_message WHERE id = %s", [message.pk]
        )
        assert cursor.fetchone()[0] == "lz4"
    assert Message.objects.get(pk=message.pk).text_body == message.text_body
