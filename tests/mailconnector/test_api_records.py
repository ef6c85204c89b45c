"""meta, modules, suggestions, search; the version handshake, the license gate, CORS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from crm.models import Module
from crm.models.modules import Sharing
from crm.services import ingest
from crm.version import CRM_VERSION
from licensing import services as licenses
from tests.conftest import Org
from tests.factories import grant, make_record

pytestmark = pytest.mark.django_db
# The suggestions statement is PostgreSQL's; the embedded default (SQLite) runs the same steps
# as portable queries, which the other suggestion tests cover there.
ON_POSTGRESQL = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the one-statement suggestions are PostgreSQL's"
)
Api = Callable[[Any], APIClient]


def _private(name: str) -> Module:
    module = Module.objects.get(name=name)
    module.default_sharing = Sharing.PRIVATE
    module.save()
    return module


def test_meta_needs_no_login_and_tells_versions_limits_and_license(
    org: Org, api: Api, settings: Any
) -> None:
    settings.ADDIN_MIN_VERSION = "1.2.0"
    body = APIClient().get("/api/addin/v1/meta").json()
    assert body["crm_version"] == CRM_VERSION
    assert body["min_addin_version"] == "1.2.0"
    assert body["limits"]["max_email_bytes"] == settings.ADDIN_MAX_EMAIL_BYTES
    assert body["login_methods"]["password"] is True
    assert body["license"]["active"] is True


def test_an_old_add_in_gets_426_with_the_minimum(org: Org, api: Api, settings: Any) -> None:
    settings.ADDIN_MIN_VERSION = "2.0.0"
    response = api(org.alice).get("/api/addin/v1/modules", HTTP_X_ADDIN_VERSION="1.9.9")
    assert response.status_code == 426
    assert response.json()["code"] == "addin_outdated"
    assert response.json()["min_addin_version"] == "2.0.0"
    ok = api(org.alice).get("/api/addin/v1/modules", HTTP_X_ADDIN_VERSION="2.0.0")
    assert ok.status_code == 200


def test_not_logged_in_is_401_problem_json(org: Org, api: Api) -> None:
    response = api(None).get("/api/addin/v1/modules")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "not_authenticated"


def test_without_an_active_license_every_call_is_refused_with_its_reason(
    org: Org, api: Api, settings: Any
) -> None:
    client = api(org.alice)
    assert client.get("/api/addin/v1/modules").status_code == 200
    settings.CRM_BASE_URL = "https://crm.moved.example"
    licenses.invalidate()
    response = client.get("/api/addin/v1/modules")
    assert response.status_code == 403
    assert response.json()["code"] == "license_inactive"
    assert APIClient().get("/api/addin/v1/meta").json()["license"]["active"] is False


def test_a_user_not_enabled_for_the_connector_is_refused(org: Org, api: Api) -> None:
    licenses.disable_user(actor=org.admin, user=org.charlie)
    response = api(org.charlie).get("/api/addin/v1/modules")
    assert response.status_code == 403
    assert response.json()["code"] == "user_not_licensed"


def test_an_unknown_api_path_is_a_problem_not_a_page(org: Org, api: Api) -> None:
    response = api(org.alice).get("/api/addin/v1/nothing-here")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_modules_are_those_the_user_sees_that_take_emails(org: Org, api: Api) -> None:
    projects = Module.objects.create(
        name="Projects", singular="Project", plural="Projects", number_prefix="PRJ"
    )
    grant(org.standard, projects)
    names = {m["name"] for m in api(org.alice).get("/api/addin/v1/modules").json()}
    assert "Projects" in names
    assert "Documents" not in names  # takes no emails
    grant(org.standard, "Leads", "")
    names = {m["name"] for m in api(org.alice).get("/api/addin/v1/modules").json()}
    assert "Leads" not in names


def _suggest(client: APIClient, *addresses: tuple[str, str], **extra: Any) -> list[dict[str, Any]]:
    body = {"addresses": [{"email": e, "role": r} for e, r in addresses], **extra}
    response = client.post("/api/addin/v1/suggestions", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_suggestions_rank_exact_address_then_company_domain_then_relations(
    org: Org, api: Api
) -> None:
    acme = make_record("Companies", org.alice, name="Acme", email="info@acme.example")
    other = make_record("Companies", org.alice, name="Acme Labs", email="labs@acme.example")
    jane = make_record(
        "Contacts", org.alice, last_name="Doe", email="jane@acme.example", company=acme.pk
    )
    colleague = make_record("Contacts", org.alice, last_name="Roe", company=acme.pk)
    lead = make_record("Leads", org.alice, last_name="Cc person", email="cc@else.example")
    results = _suggest(api(org.alice), ("Jane@ACME.example", "from"), ("cc@else.example", "cc"))
    order = [(r["id"], r["reason"]) for r in results]
    assert order[0] == (jane.pk, "from address")
    assert order[1] == (lead.pk, "cc address")
    assert {i for i, reason in order[2:4]} == {acme.pk, other.pk}
    assert all(reason == "sender's company domain" for _, reason in order[2:4])
    assert (colleague.pk, "company's contact") in order


def test_free_mail_domains_and_the_mailbox_owner_are_ignored(org: Org, api: Api) -> None:
    make_record("Companies", org.alice, name="Gmail user co", email="someone@gmail.com")
    make_record("Contacts", org.alice, last_name="Me", email="alice@crm.example")
    results = _suggest(
        api(org.alice),
        ("stranger@gmail.com", "from"),
        ("alice@crm.example", "to"),
        mailbox_owner="alice@crm.example",
    )
    assert results == []


def test_suggestions_never_include_records_the_user_cannot_see(org: Org, api: Api) -> None:
    contacts = _private("Contacts")
    _private("Companies")
    make_record(contacts, org.charlie, last_name="Hidden", email="jane@acme.example")
    make_record("Companies", org.charlie, name="Hidden Co", email="x@acme.example")
    assert _suggest(api(org.alice), ("jane@acme.example", "from")) == []


def test_a_suggestion_says_when_the_email_is_already_linked(org: Org, api: Api) -> None:
    from email.message import EmailMessage

    jane = make_record("Contacts", org.alice, last_name="Doe", email="jane@acme.example")
    msg = EmailMessage()
    msg["From"], msg["Subject"], msg["Message-ID"] = "jane@acme.example", "Hi", "<hi@acme>"
    msg.set_content("x")
    message = ingest.store(bytes(msg), source="addin").message
    ingest.link(message=message, record=jane, actor=org.alice, via="addin")
    results = _suggest(api(org.alice), ("jane@acme.example", "from"), message_id="<hi@acme>")
    assert results[0]["already_linked"] is True


def test_search_finds_visible_records_by_label_and_pages_with_a_cursor(org: Org, api: Api) -> None:
    contacts = _private("Contacts")
    for n in range(30):
        make_record(contacts, org.alice, last_name=f"Smith {n:02}")
    make_record(contacts, org.charlie, last_name="Smith hidden")
    client = api(org.alice)
    first = client.get("/api/addin/v1/modules/Contacts/records", {"q": "smith"}).json()
    assert len(first["results"]) == 25
    rest = client.get(
        "/api/addin/v1/modules/Contacts/records", {"q": "smith", "cursor": first["next_cursor"]}
    ).json()
    assert rest["next_cursor"] is None
    labels = {r["label"] for r in first["results"] + rest["results"]}
    assert len(labels) == 30
    assert "Smith hidden" not in labels


def test_search_in_an_invisible_module_is_404_and_a_bad_cursor_400(org: Org, api: Api) -> None:
    grant(org.standard, "Leads", "")
    client = api(org.alice)
    assert client.get("/api/addin/v1/modules/Leads/records").status_code == 404
    bad = client.get("/api/addin/v1/modules/Contacts/records", {"cursor": "%%%"})
    assert bad.status_code == 400
    assert "cursor" in bad.json()["fields"]


def test_the_openapi_schema_is_served_and_names_the_endpoints(org: Org) -> None:
    response = APIClient().get("/api/addin/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/addin/v1/meta", "/api/addin/v1/emails", "/api/addin/v1/suggestions"):
        assert path in paths


def test_cors_answers_only_the_add_in_origin_and_only_on_the_api(org: Org, settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://addin.example.com"]
    client = APIClient()
    preflight = client.options(
        "/api/addin/v1/modules",
        HTTP_ORIGIN="https://addin.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,x-addin-version",
    )
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "https://addin.example.com"
    assert "authorization" in preflight["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in preflight
    assert int(preflight["Access-Control-Max-Age"]) > 0
    other = client.options(
        "/api/addin/v1/modules",
        HTTP_ORIGIN="https://evil.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
    )
    assert "Access-Control-Allow-Origin" not in other
    page = client.get("/login/", HTTP_ORIGIN="https://addin.example.com")
    assert "Access-Control-Allow-Origin" not in page


def test_a_sharing_change_applies_to_the_very_next_suggestion(org: Org, api: Api) -> None:
    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = Sharing.PUBLIC_READ
    contacts.save()
    jane = make_record(contacts, org.charlie, last_name="Doe", email="jane@acme.example")
    client = api(org.alice)
    assert [r["id"] for r in _suggest(client, ("jane@acme.example", "from"))] == [jane.pk]
    _private("Contacts")
    assert _suggest(client, ("jane@acme.example", "from")) == []


@ON_POSTGRESQL
def test_the_suggestions_statement_reads_the_same_for_every_user(org: Org, api: Api) -> None:
    _private("Contacts")
    make_record("Contacts", org.alice, last_name="Doe", email="jane@acme.example")
    statements: list[str] = []

    def keep(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "wanted(address" in sql:
            statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(keep):
        for user in (org.alice, org.bob, org.charlie):  # his own, his report's, another branch
            _suggest(api(user), ("jane@acme.example", "from"))
    # One text for all: PostgreSQL prepares it once per connection instead of planning each.
    assert len(statements) == 3
    assert len(set(statements)) == 1


def test_a_change_made_by_another_process_applies_to_the_next_request(org: Org, api: Api) -> None:
    from django.core.cache import cache

    from crm import access

    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = Sharing.PUBLIC_READ
    contacts.save()
    jane = make_record(contacts, org.charlie, last_name="Doe", email="jane@acme.example")
    client = api(org.alice)
    assert [r["id"] for r in _suggest(client, ("jane@acme.example", "from"))] == [jane.pk]
    # Another process writes its rows (no signal reaches this one) and bumps the shared
    # generation, as `access.invalidate()` does there.
    Module.objects.filter(pk=contacts.pk).update(default_sharing=Sharing.PRIVATE)
    cache.incr(access._GENERATION_KEY)
    assert _suggest(client, ("jane@acme.example", "from")) == []


@ON_POSTGRESQL
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_suggestions_on_one_prepared_plan_keep_visibility_and_leave_no_settings(
    org: Org, api: Api
) -> None:
    _private("Contacts")
    acme = make_record("Companies", org.alice, name="Acme", email="info@acme.example")
    jane = make_record(
        "Contacts", org.alice, last_name="Doe", email="jane@acme.example", company=acme.pk
    )
    hidden = make_record("Contacts", org.charlie, last_name="Roe", email="roe@acme.example")
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_parallel_workers_per_gather")
        workers = cursor.fetchone()
    # Outside a transaction, as a request runs; past the prepare threshold, so most calls run
    # the one prepared statement, whoever asks.
    for _ in range(4):
        alice = _suggest(api(org.alice), ("jane@acme.example", "from"), ("roe@acme.example", "cc"))
        assert [(r["id"], r["reason"]) for r in alice] == [
            (jane.pk, "from address"),
            (acme.pk, "sender's company domain"),
        ]
        charlie = _suggest(api(org.charlie), ("roe@acme.example", "from"))
        assert [(r["id"], r["reason"]) for r in charlie] == [
            (hidden.pk, "from address"),
            (acme.pk, "sender's company domain"),
        ]
    with connection.cursor() as cursor:
        # The plan settings the statement asks for ended with it.
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone() == ("auto",)
        cursor.execute("SHOW max_parallel_workers_per_gather")
        assert cursor.fetchone() == workers
