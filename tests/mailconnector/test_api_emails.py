"""POST emails, GET emails/lookup, DELETE emails/{id}/links/...: linking from Outlook."""

from __future__ import annotations

import json
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from crm.models import Document, DocumentLink, Message, MessageLink, Module
from crm.models.modules import Sharing
from crm.services import blobs
from tests.conftest import Org
from tests.factories import make_eml, make_record

pytestmark = pytest.mark.django_db
Api = Callable[[Any], APIClient]
MESSAGE_ID = "<deal-42@customer.example>"


def _eml(subject: str = "Order", message_id: str = MESSAGE_ID, files: int = 2) -> bytes:
    return make_eml(message_id, subject=subject, files=files)


def _post(
    client: APIClient, raw: bytes, links: list[dict[str, Any]], key: str | None = None, **extra: Any
) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    body = {
        "eml": SimpleUploadedFile("mail.eml", raw, "message/rfc822"),
        "links": json.dumps(links),
        **extra,
    }
    return client.post("/api/addin/v1/emails", body, format="multipart", **headers)


def test_linking_stores_the_whole_email_and_its_attachments_as_documents(
    org: Org, api: Api
) -> None:
    company = make_record("Companies", org.alice, name="Customer Ltd")
    raw = _eml()
    response = _post(api(org.alice), raw, [{"module": "Companies", "id": company.pk}], MESSAGE_ID)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["attachments_saved"] == 2
    assert body["records"][0]["number"] == company.number
    assert body["records"][0]["newly_linked"] is True
    message = Message.objects.get()
    assert blobs.read(message.raw.name) == raw
    assert message.source == "addin"
    assert DocumentLink.objects.filter(record=company).count() == 2


def test_the_same_email_again_is_200_and_links_merge(org: Org, api: Api) -> None:
    company = make_record("Companies", org.alice, name="Customer Ltd")
    contact = make_record("Contacts", org.alice, last_name="Doe")
    client = api(org.alice)
    _post(client, _eml(), [{"module": "Companies", "id": company.pk}], MESSAGE_ID)
    again = _post(
        client,
        _eml(),
        [{"module": "Companies", "id": company.pk}, {"module": "Contacts", "id": contact.pk}],
        MESSAGE_ID,
    )
    assert again.status_code == 200
    assert again.json()["attachments_saved"] == 2
    assert [r["newly_linked"] for r in again.json()["records"]] == [False, True]
    assert Message.objects.count() == 1
    assert MessageLink.objects.count() == 2
    assert Document.objects.count() == 2


def test_attachments_saved_counts_attachments_not_inline_images(org: Org, api: Api) -> None:
    msg = EmailMessage()
    msg["From"] = "jane@customer.example"
    msg["Subject"] = "Logo and order"
    msg["Message-ID"] = MESSAGE_ID
    msg.set_content("See the logo.")
    msg.add_alternative('<p>Logo: <img src="cid:logo@x"></p>', subtype="html")
    msg.get_payload()[1].add_related(
        b"\x89PNG\r\n\x1a\n logo", maintype="image", subtype="png", cid="<logo@x>"
    )
    msg.add_attachment(b"%PDF order", maintype="application", subtype="pdf", filename="o.pdf")
    company = make_record("Companies", org.alice, name="Customer Ltd")
    client = api(org.alice)
    links = [{"module": "Companies", "id": company.pk}]
    first = _post(client, bytes(msg), links, MESSAGE_ID)
    again = _post(client, bytes(msg), links, MESSAGE_ID)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["attachments_saved"] == again.json()["attachments_saved"] == 1
    assert Message.objects.get().attachments.count() == 2  # the inline logo is kept too


def test_an_idempotency_key_that_is_not_the_message_id_is_a_conflict(org: Org, api: Api) -> None:
    company = make_record("Companies", org.alice, name="Customer Ltd")
    response = _post(
        api(org.alice),
        _eml(),
        [{"module": "Companies", "id": company.pk}],
        "<another@customer.example>",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"
    assert response["Content-Type"] == "application/problem+json"
    assert not Message.objects.exists()


def test_an_invisible_record_is_404_and_a_read_only_one_403_and_nothing_is_stored(
    org: Org, api: Api
) -> None:
    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = Sharing.PRIVATE
    contacts.save()
    companies = Module.objects.get(name="Companies")
    companies.default_sharing = Sharing.PUBLIC_READ
    companies.save()
    hidden = make_record(contacts, org.charlie, last_name="Secret")
    read_only = make_record(companies, org.charlie, name="Readable")
    client = api(org.alice)
    missing = _post(client, _eml(), [{"module": "Contacts", "id": hidden.pk}])
    nonexistent = _post(client, _eml(), [{"module": "Contacts", "id": 999999}])
    assert missing.status_code == nonexistent.status_code == 404
    assert missing.json() == nonexistent.json()
    forbidden = _post(client, _eml(), [{"module": "Companies", "id": read_only.pk}])
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "record_not_editable"
    assert not Message.objects.exists()


def test_bad_input_names_the_field(org: Org, api: Api) -> None:
    client = api(org.alice)
    response = client.post("/api/addin/v1/emails", {"links": "not json"}, format="multipart")
    assert response.status_code == 400
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert "links" in problem["fields"]
    no_message = client.post(
        "/api/addin/v1/emails",
        {"links": json.dumps([{"module": "Contacts", "id": 1}])},
        format="multipart",
    )
    assert set(no_message.json()["fields"]) == {"message_id", "sender"}


def test_json_instead_of_multipart_is_unsupported_media_type(org: Org, api: Api) -> None:
    response = api(org.alice).post("/api/addin/v1/emails", {"links": []}, format="json")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_an_email_at_the_cap_is_accepted_and_one_byte_more_is_413(
    org: Org, api: Api, settings: Any
) -> None:
    company = make_record("Companies", org.alice, name="Customer Ltd")
    raw = _eml(files=0)
    settings.ADDIN_MAX_EMAIL_BYTES = len(raw)
    client = api(org.alice)
    assert _post(client, raw, [{"module": "Companies", "id": company.pk}]).status_code == 201
    bigger = _eml("Order!", "<deal-43@customer.example>", files=0)
    assert len(bigger) == len(raw) + 1
    refused = _post(client, bigger, [{"module": "Companies", "id": company.pk}])
    assert refused.status_code == 413
    assert refused.json()["max_bytes"] == len(raw)
    assert Message.objects.count() == 1


def test_a_huge_upload_is_refused_from_its_length_before_the_body_is_read(
    org: Org, api: Api, settings: Any
) -> None:
    settings.ADDIN_MAX_EMAIL_BYTES = 1000
    response = api(org.alice).generic(
        "POST",
        "/api/addin/v1/emails",
        b"x" * 10,
        content_type="multipart/form-data; boundary=b",
        CONTENT_LENGTH=str(10_000_000),
    )
    assert response.status_code == 413
    assert json.loads(response.content)["code"] == "email_too_large"


def test_a_partial_capture_is_stored_then_completed_by_the_whole_email(org: Org, api: Api) -> None:
    company = make_record("Companies", org.alice, name="Customer Ltd")
    client = api(org.alice)
    partial = client.post(
        "/api/addin/v1/emails",
        {
            "links": json.dumps([{"module": "Companies", "id": company.pk}]),
            "message_id": MESSAGE_ID,
            "sender": "Jane Doe <jane@customer.example>",
            "subject": "Order",
            "to": ["alice@crm.example"],
            "text_body": "Please find the order.",
            "attachments_pending": ["order-0.pdf", "order-1.pdf"],
        },
        format="multipart",
        HTTP_IDEMPOTENCY_KEY=MESSAGE_ID,
    )
    assert partial.status_code == 201, partial.content
    assert partial.json()["completeness"] == "partial"
    raw = _eml()
    whole = _post(client, raw, [{"module": "Companies", "id": company.pk}], MESSAGE_ID)
    assert whole.status_code == 200
    assert whole.json()["completed"] is True
    message = Message.objects.get()
    assert message.completeness == "full"
    assert blobs.read(message.raw.name) == raw
    assert DocumentLink.objects.filter(record=company).count() == 2


def test_lookup_answers_only_the_records_the_user_may_see(org: Org, api: Api) -> None:
    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = Sharing.PRIVATE
    contacts.save()
    mine = make_record(contacts, org.alice, last_name="Mine")
    theirs = make_record(contacts, org.charlie, last_name="Theirs")
    _post(api(org.alice), _eml(), [{"module": "Contacts", "id": mine.pk}])
    _post(api(org.charlie), _eml(), [{"module": "Contacts", "id": theirs.pk}])
    seen = api(org.alice).get("/api/addin/v1/emails/lookup", {"message_id": MESSAGE_ID}).json()
    assert [r["id"] for r in seen["records"]] == [mine.pk]
    assert (
        api(org.bob)
        .get("/api/addin/v1/emails/lookup", {"message_id": "<DEAL-42@Customer.Example>"})
        .json()["records"]
        == []
    )


def test_unlinking_takes_the_email_off_the_record(org: Org, api: Api) -> None:
    companies = Module.objects.get(name="Companies")
    companies.default_sharing = Sharing.PUBLIC_READ
    companies.save()
    company = make_record("Companies", org.alice, name="Customer Ltd")
    client = api(org.alice)
    message = _post(client, _eml(), [{"module": "Companies", "id": company.pk}]).json()["message"]
    url = f"/api/addin/v1/emails/{message}/links/Companies/{company.pk}"
    assert api(org.charlie).delete(url).status_code == 403  # he reads it, may not change it
    assert client.delete(url).status_code == 204
    assert not MessageLink.objects.exists()
    assert client.delete(url).status_code == 404


def test_an_email_uploaded_through_gunicorn_is_stored_byte_for_byte(org: Org, api: Api) -> None:
    from gunicorn.http.body import Body, LengthReader
    from gunicorn.http.unreader import IterUnreader

    company = make_record("Companies", org.alice, name="Customer Ltd")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "jane@customer.example", "alice@crm.example", "Quote"
    msg["Message-ID"] = MESSAGE_ID
    msg.set_content("The quote, attached.")
    pdf = bytes(range(256)) * 2000
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="quote.pdf")
    raw = bytes(msg)
    links = json.dumps([{"module": "Companies", "id": company.pk}])
    body = (
        b'--b\r\nContent-Disposition: form-data; name="links"\r\n\r\n'
        + links.encode()
        + b'\r\n--b\r\nContent-Disposition: form-data; name="eml"; filename="m.eml"\r\n'
        b"Content-Type: message/rfc822\r\n\r\n" + raw + b"\r\n--b--\r\n"
    )
    # gunicorn's request body, fed in socket-sized chunks: read in one go by the API.
    chunks = iter([body[i : i + 8192] for i in range(0, len(body), 8192)])
    response = api(org.alice).generic(
        "POST",
        "/api/addin/v1/emails",
        content_type="multipart/form-data; boundary=b",
        CONTENT_LENGTH=str(len(body)),
        **{"wsgi.input": Body(LengthReader(IterUnreader(chunks), len(body)))},
    )
    assert response.status_code == 201, response.content
    message = Message.objects.get()
    assert blobs.read(message.raw.name) == raw
    assert blobs.read(Document.objects.get().file.name) == pdf
