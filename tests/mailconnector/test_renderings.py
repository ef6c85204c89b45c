"""The add-in's hot answers are written out by hand; the serializers document them in the
OpenAPI schema. Both must say the same, or the add-in would read what the schema does not."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest
from django.test import RequestFactory
from django.urls import set_script_prefix

from crm.services import ingest
from mailconnector import selectors, services
from mailconnector.api import serializers as s
from tests.conftest import Org
from tests.factories import make_eml, make_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def request_(settings: Any) -> HttpRequest:
    settings.ALLOWED_HOSTS = ["crm.example"]
    return RequestFactory(HTTP_HOST="crm.example").post("/api/addin/v1/emails")


def test_a_link_answer_is_what_its_serializer_says(org: Org, request_: HttpRequest) -> None:
    company = make_record("Companies", org.alice, name="Customer Ltd")
    contact = make_record("Contacts", org.alice, last_name="Doe", email="jane@customer.example")
    first = services.LinkTarget("Companies", company.pk)
    services.link_email(
        actor=org.alice, raw=make_eml("<o@x>"), targets=[first], idempotency_key=None
    )
    result = services.link_email(
        actor=org.alice,
        raw=make_eml("<o@x>"),
        targets=[first, services.LinkTarget("Contacts", contact.pk)],
        idempotency_key="<o@x>",
    )
    documented = s.EmailLinkOutput(
        {
            "message": result.message,
            "created": result.created,
            "completed": result.completed,
            "attachments_saved": result.attachments_saved,
            "records": result.records,
        },
        context={"request": request_},
    ).data
    written = s.email_link_data(result, request_)
    assert written == documented
    assert [r["newly_linked"] for r in written["records"]] == [False, True]
    assert written["records"][1]["url"].startswith("http://crm.example/")


def test_a_suggestion_is_what_its_serializer_says(org: Org, request_: HttpRequest) -> None:
    company = make_record(
        "Companies", org.alice, name="Customer Ltd", email="info@customer.example"
    )
    make_record("Contacts", org.alice, last_name="Doe", email="jane@customer.example")
    stored = ingest.store(make_eml("<s@x>", files=1), source="addin", actor=org.alice)
    ingest.link(message=stored.message, record=company, actor=org.alice, via="addin")
    found = selectors.suggestions(org.alice, [("jane@customer.example", "from")], message_id="s@x")
    assert len(found) >= 2
    documented = s.SuggestionOutput(found, many=True, context={"request": request_}).data
    assert s.suggestions_data(found, request_) == documented
    assert any(item["already_linked"] for item in documented)


def test_record_urls_are_the_serializers_under_a_script_prefix_too(
    org: Org, request_: HttpRequest
) -> None:
    # A CRM served under a path (SCRIPT_NAME=/crm): each URL keeps the prefix once.
    contact = make_record("Contacts", org.alice, last_name="Doe", email="jane@customer.example")
    set_script_prefix("/crm/")
    try:
        found = selectors.suggestions(org.alice, [("jane@customer.example", "from")])
        documented = s.SuggestionOutput(found, many=True, context={"request": request_}).data
        written = s.suggestions_data(found, request_)
    finally:
        set_script_prefix("/")
    assert written == documented
    assert written[0]["url"] == f"http://crm.example/crm/m/Contacts/{contact.pk}/"
