"""The "Mail Converter" settings pages, through the Django test client, on PostgreSQL.

Administrators only; every other persona gets the CRM's 403 page on every URL. The mailbox's
password is write-only; "Test a rule" decides without doing; the quarantine hands back the
exact bytes it holds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from lxml import html as lxml_html
from lxml.html import HtmlElement

from crm.models import Message, Record
from mailconverter import actions, scanner, secrets
from mailconverter.models import (
    BlockedSender,
    Folder,
    LedgerEntry,
    Mailbox,
    Outcome,
    QuarantinedMail,
    Rule,
    ScanRun,
)
from tests.conftest import Org
from tests.factories import make_record
from tests.mailconverter.conftest import PASSWORD as IMAP_PASSWORD
from tests.mailconverter.conftest import Account
from tests.mailconverter.helpers import mail

pytestmark = pytest.mark.django_db

BASE = "/settings/mail-converter/"
SECRET = "Zebra-Päss-7731-never-shown"
_uids = itertools.count(1)


def _doc(response: Any) -> HtmlElement:
    return lxml_html.fromstring(response.content.decode())


def _text(response: Any) -> str:
    return " ".join(_doc(response).text_content().split())


@pytest.fixture
def admin_client(client: Client, org: Org) -> Client:
    client.force_login(org.admin)
    return client


@pytest.fixture
def mailbox(org: Org) -> Mailbox:
    box = Mailbox(
        name="support",
        host="imap.example.com",
        port=993,
        username="support@crm.test",
        address="support@crm.test",
        owner=org.admin,
    )
    box.set_password(SECRET)
    box.save()
    Folder.objects.create(mailbox=box, name="INBOX", selected=True, message_count=3, unseen_count=1)
    return box


def add_rule(mailbox: Mailbox, name: str, actions_: list[dict[str, Any]], **fields: Any) -> Rule:
    position = Rule.objects.filter(mailbox=mailbox).count()
    return Rule.objects.create(
        mailbox=mailbox, name=name, position=position, actions=actions_, **fields
    )


def process(mailbox: Mailbox, raw: bytes) -> LedgerEntry:
    """One message through the scanner's own per-message path (no IMAP needed)."""
    folder = Folder.objects.get(mailbox=mailbox, name="INBOX")
    return scanner.process(mailbox, folder, 1, next(_uids), raw)


def mailbox_form(mailbox: Mailbox, **changes: Any) -> dict[str, Any]:
    """The edit form as the page would post it, untouched password field included."""
    data = {
        "name": mailbox.name,
        "host": mailbox.host,
        "port": mailbox.port,
        "security": mailbox.security,
        "verify_certificate": "on" if mailbox.verify_certificate else "",
        "username": mailbox.username,
        "password": "",
        "auth": mailbox.auth,
        "address": mailbox.address,
        "connection_options": "{}",
        "enabled": "on",
        "look_for": mailbox.look_for,
        "after_scan": mailbox.after_scan,
        "processed_folder": "",
        "unmatched_folder": "",
        "spam_folder": "",
        "interval_minutes": mailbox.interval_minutes,
        "owner": mailbox.owner_id,
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v != "" or k == "password"}


# --- who may see the pages ---------------------------------------------------------------------


@pytest.fixture
def everything(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """One of each thing a URL can name: a rule, a run, a quarantined message, a blocked sender."""
    rule = add_rule(mailbox, "tickets", [{"type": "create_ticket"}])
    run = ScanRun.objects.create(mailbox=mailbox, started_at=timezone.now(), status="ok")
    with monkeypatch.context() as patched:
        patched.setitem(actions._HANDLERS, "create_ticket", _explode)
        entry = process(mailbox, mail("customer_question.eml"))
    blocked = BlockedSender.objects.create(
        mailbox=mailbox, address="spam@spam.example", created_at=timezone.now()
    )
    return {"box": mailbox.pk, "rule": rule.pk, "run": run.pk, "entry": entry.pk, "b": blocked.pk}


def _explode(action: Any, ctx: Any) -> Any:
    raise RuntimeError("the CRM was down")


def _urls(ids: dict[str, int]) -> list[tuple[str, str]]:
    box = f"{BASE}{ids['box']}/"
    return [
        ("get", BASE),
        ("get", f"{BASE}new/"),
        ("post", f"{BASE}new/"),
        ("get", box),
        ("post", box),
        ("post", f"{box}delete/"),
        ("post", f"{box}test-connection/"),
        ("get", f"{box}folders/"),
        ("post", f"{box}folders/"),
        ("post", f"{box}folders/refresh/"),
        ("get", f"{box}rules/"),
        ("get", f"{box}rules/new/"),
        ("post", f"{box}rules/new/"),
        ("get", f"{box}rules/{ids['rule']}/"),
        ("post", f"{box}rules/{ids['rule']}/"),
        ("post", f"{box}rules/{ids['rule']}/delete/"),
        ("post", f"{box}rules/{ids['rule']}/move/"),
        ("get", f"{box}test-rule/"),
        ("post", f"{box}test-rule/"),
        ("get", f"{box}activity/"),
        ("post", f"{box}scan/"),
        ("get", f"{box}scan/{ids['run']}/"),
        ("post", f"{box}quarantine/{ids['entry']}/retry/"),
        ("get", f"{box}quarantine/{ids['entry']}/raw/"),
        ("post", f"{box}blocked/"),
        ("post", f"{box}blocked/{ids['b']}/remove/"),
    ]


@pytest.mark.parametrize("who", ["alice", "bob", "charlie"])
def test_every_page_is_refused_to_anyone_but_an_administrator(
    client: Client, org: Org, everything: dict[str, int], who: str
) -> None:
    client.force_login(getattr(org, who))
    before = (Mailbox.objects.count(), Rule.objects.count(), BlockedSender.objects.count())
    for method, url in _urls(everything):
        response = getattr(client, method)(url, {"direction": "up", "address": "x@y.example"})
        assert response.status_code == 403, (method, url)
        assert "Not allowed" in _text(response), (method, url)
    after = (Mailbox.objects.count(), Rule.objects.count(), BlockedSender.objects.count())
    assert after == before
    assert ScanRun.objects.count() == 1


def test_a_visitor_who_is_not_logged_in_is_sent_to_the_login_page(
    client: Client, everything: dict[str, int]
) -> None:
    for method, url in _urls(everything):
        response = getattr(client, method)(url)
        assert response.status_code == 302, (method, url)
        assert response["Location"].startswith("/login/"), (method, url)


def test_the_settings_menu_links_the_page_for_administrators_only(client: Client, org: Org) -> None:
    client.force_login(org.admin)
    assert _doc(client.get("/")).xpath(f"//nav[@aria-label='Main']//a[@href='{BASE}']")
    client.force_login(org.alice)
    assert not _doc(client.get("/")).xpath(f"//nav[@aria-label='Main']//a[@href='{BASE}']")


# --- mailboxes ---------------------------------------------------------------------------------


def test_the_password_never_appears_in_any_page(
    admin_client: Client, everything: dict[str, int]
) -> None:
    mailbox = Mailbox.objects.get()
    for method, url in _urls(everything):
        if method == "get" and not url.endswith("/raw/"):
            response = admin_client.get(url)
            assert response.status_code == 200, url
            assert SECRET not in response.content.decode(), url
            assert mailbox.secret not in response.content.decode(), url
    # Nor after a refused save, which re-renders the form with what was posted.
    response = admin_client.post(
        f"{BASE}{mailbox.pk}/", mailbox_form(mailbox, password="typed-now-123", port="x")
    )
    assert response.status_code == 200
    assert "typed-now-123" not in response.content.decode()
    assert _doc(response).xpath("//input[@name='password']/@value") in ([], [""])


def test_the_mailbox_list_shows_server_state_and_the_last_run(
    admin_client: Client, mailbox: Mailbox
) -> None:
    ScanRun.objects.create(
        mailbox=mailbox,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        status="ok",
        counts={"created": 2, "unmatched": 1},
    )
    text = _text(admin_client.get(BASE))
    assert "support imap.example.com:993 Yes Finished" in text
    assert "Ticket created: 2, No rule applied: 1" in text


def test_an_administrator_creates_a_mailbox_and_the_password_is_stored_encrypted(
    admin_client: Client, org: Org
) -> None:
    data = mailbox_form(
        Mailbox(name="sales", host="mail.example.com", username="sales@crm.test", owner=org.bob),
        password="first-secret",
        address="sales@crm.test",
        connection_options='{"timeout": 20}',
    )
    response = admin_client.post(f"{BASE}new/", data)
    created = Mailbox.objects.get(name="sales")
    assert response.status_code == 302
    assert response["Location"] == f"{BASE}{created.pk}/folders/"
    assert created.password == "first-secret"
    assert "first-secret" not in created.secret
    assert created.connection_options == {"timeout": 20}
    assert created.owner == org.bob


def test_a_new_mailbox_needs_a_password(admin_client: Client, org: Org) -> None:
    data = mailbox_form(
        Mailbox(name="sales", host="mail.example.com", username="s@crm.test", owner=org.bob)
    )
    response = admin_client.post(f"{BASE}new/", data)
    assert response.status_code == 200
    assert "Enter the mailbox's password." in _text(response)
    assert not Mailbox.objects.filter(name="sales").exists()


def test_saving_with_a_blank_password_keeps_the_stored_secret(
    admin_client: Client, mailbox: Mailbox
) -> None:
    response = admin_client.post(
        f"{BASE}{mailbox.pk}/", mailbox_form(mailbox, host="imap2.example.com")
    )
    assert response.status_code == 302
    mailbox.refresh_from_db()
    assert mailbox.host == "imap2.example.com"
    assert mailbox.password == SECRET
    # A new password replaces it.
    admin_client.post(f"{BASE}{mailbox.pk}/", mailbox_form(mailbox, password="rotated-1"))
    mailbox.refresh_from_db()
    assert mailbox.password == "rotated-1"


def test_a_mailbox_signing_in_with_oauth2_keeps_its_tokens_encrypted_and_unshown(
    admin_client: Client, org: Org
) -> None:
    refresh = "refresh-Quokka-5521"
    data = mailbox_form(
        Mailbox(name="m365", host="outlook.example.com", username="m365@crm.test", owner=org.bob),
        auth="xoauth2",
        oauth2_token_url="https://login.example.com/tenant/oauth2/v2.0/token",
        oauth2_client_id="app-1234",
        oauth2_client_secret="client-Walrus-99",
        oauth2_refresh_token=refresh,
        oauth2_scope="https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
    )
    response = admin_client.post(f"{BASE}new/", data)
    assert response.status_code == 302
    created = Mailbox.objects.get(name="m365")
    assert created.auth == Mailbox.Auth.XOAUTH2
    assert created.oauth2_client_id == "app-1234"
    assert refresh not in created.oauth2_refresh_token
    assert "client-Walrus-99" not in created.oauth2_client_secret
    page = admin_client.get(f"{BASE}{created.pk}/").content.decode()
    assert refresh not in page
    assert "client-Walrus-99" not in page
    # Saving again with the secrets left blank keeps them.
    again = mailbox_form(
        created,
        auth="xoauth2",
        oauth2_token_url=created.oauth2_token_url,
        oauth2_client_id="app-5678",
    )
    assert admin_client.post(f"{BASE}{created.pk}/", again).status_code == 302
    created.refresh_from_db()
    assert created.oauth2_client_id == "app-5678"
    assert secrets.decrypt(created.oauth2_refresh_token) == refresh


def test_an_oauth2_mailbox_without_a_client_id_or_token_is_refused_next_to_the_fields(
    admin_client: Client, org: Org
) -> None:
    data = mailbox_form(
        Mailbox(name="gmail", host="imap.example.com", username="g@crm.test", owner=org.bob),
        auth="xoauth2",
        oauth2_token_url="http://token.example.com/token",
    )
    response = admin_client.post(f"{BASE}new/", data)
    assert response.status_code == 200
    doc = _doc(response)
    errors = {
        e.get("id"): " ".join(e.text_content().split())
        for e in doc.xpath("//p[@class='field-error']")
    }
    assert "client id is required" in errors["id_oauth2_client_id_error"]
    assert "refresh token is required" in errors["id_oauth2_refresh_token_error"]
    assert "https" in errors["id_oauth2_token_url_error"]
    assert not Mailbox.objects.filter(name="gmail").exists()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ("[1, 2]", 'Enter a JSON object, like {"timeout": 30}.'),
        ("{not json", "Enter a valid JSON."),
        ('{"colour": "red"}', "Unknown parameter “colour”; known: timeout, ca_file."),
        ('{"timeout": "soon"}', "“timeout” has the wrong type."),
        ('{"timeout": 0}', "“timeout” is in seconds, from 1 to 600."),
    ],
)
def test_advanced_connection_parameters_must_be_a_known_json_object(
    admin_client: Client, mailbox: Mailbox, options: str, error: str
) -> None:
    response = admin_client.post(
        f"{BASE}{mailbox.pk}/", mailbox_form(mailbox, connection_options=options)
    )
    assert response.status_code == 200
    errors = _doc(response).xpath("//*[@id='id_connection_options_error']")
    assert [e.text_content() for e in errors] == [error]
    mailbox.refresh_from_db()
    assert mailbox.connection_options == {}


def test_deleting_a_mailbox_keeps_the_tickets_it_created(
    admin_client: Client, mailbox: Mailbox
) -> None:
    add_rule(mailbox, "tickets", [{"type": "create_ticket"}])
    assert process(mailbox, mail("customer_question.eml")).outcome == Outcome.CREATED
    # Without typing its name, nothing is deleted.
    admin_client.post(f"{BASE}{mailbox.pk}/delete/", {"confirm": "suport"})
    assert Mailbox.objects.filter(pk=mailbox.pk).exists()
    response = admin_client.post(f"{BASE}{mailbox.pk}/delete/", {"confirm": mailbox.name})
    assert response.status_code == 302
    assert not Mailbox.objects.exists()
    assert Record.objects.filter(module__name="Tickets", data__title="Printer on fire").exists()


# --- folders -----------------------------------------------------------------------------------


@pytest.fixture
def folders(mailbox: Mailbox) -> Mailbox:
    Folder.objects.create(mailbox=mailbox, name="Archive", special_use="\\Archive")
    Folder.objects.create(mailbox=mailbox, name="Trash", special_use="\\Trash")
    Folder.objects.create(mailbox=mailbox, name="CRM/Leads")
    return mailbox


def _selected(mailbox: Mailbox) -> set[str]:
    return set(mailbox.folders.filter(selected=True).values_list("name", flat=True))


def test_folders_show_counts_and_trash_cannot_be_ticked(
    admin_client: Client, folders: Mailbox
) -> None:
    doc = _doc(admin_client.get(f"{BASE}{folders.pk}/folders/"))
    boxes = {b.get("value"): b for b in doc.xpath("//input[@name='folders']")}
    assert set(boxes) == {"Archive", "CRM/Leads", "INBOX", "Trash"}
    assert boxes["Trash"].get("disabled") is not None
    assert boxes["INBOX"].get("checked") is not None
    assert boxes["Archive"].get("checked") is None
    row = " ".join(doc.xpath("//tr[.//input[@value='INBOX']]")[0].text_content().split())
    assert row.startswith("INBOX 3 1")


def test_ticking_folders_saves_exactly_the_ticked_ones(
    admin_client: Client, folders: Mailbox
) -> None:
    response = admin_client.post(
        f"{BASE}{folders.pk}/folders/", {"folders": ["Archive", "CRM/Leads"]}
    )
    assert response.status_code == 302
    assert _selected(folders) == {"Archive", "CRM/Leads"}


def test_ticking_trash_is_refused_and_changes_nothing(
    admin_client: Client, folders: Mailbox
) -> None:
    response = admin_client.post(f"{BASE}{folders.pk}/folders/", {"folders": ["Trash", "Archive"]})
    assert response.status_code == 200
    assert "Trash is never scanned" in _text(response)
    assert _selected(folders) == {"INBOX"}


# --- rules -------------------------------------------------------------------------------------


def _rule_names(response: Any) -> list[str]:
    return [a.text_content() for a in _doc(response).xpath("//table[@id='rules']//td[2]/a")]


def test_rules_are_listed_in_order_and_one_without_conditions_is_every_message(
    admin_client: Client, mailbox: Mailbox
) -> None:
    add_rule(
        mailbox,
        "replies",
        [{"type": "update_ticket"}],
        conditions=[{"field": "subject", "operator": "has_ticket_number", "value": ""}],
    )
    add_rule(mailbox, "the rest", [{"type": "create_ticket", "create_lead": True}])
    response = admin_client.get(f"{BASE}{mailbox.pk}/rules/")
    assert _rule_names(response) == ["replies", "the rest"]
    rows = [" ".join(r.text_content().split()) for r in _doc(response).xpath("//tbody/tr")]
    assert "subject has ticket number" in rows[0]
    assert "every message create a ticket (a Lead when nobody is known)" in rows[1]


def test_the_arrows_reorder_rules(admin_client: Client, mailbox: Mailbox) -> None:
    first = add_rule(mailbox, "first", [{"type": "nothing"}])
    add_rule(mailbox, "second", [{"type": "nothing"}])
    third = add_rule(mailbox, "third", [{"type": "nothing"}])
    url = f"{BASE}{mailbox.pk}/rules/"
    admin_client.post(f"{url}{third.pk}/move/", {"direction": "up"})
    assert _rule_names(admin_client.get(url)) == ["first", "third", "second"]
    admin_client.post(f"{url}{first.pk}/move/", {"direction": "down"})
    assert _rule_names(admin_client.get(url)) == ["third", "first", "second"]
    admin_client.post(f"{url}{third.pk}/move/", {"direction": "up"})  # already first
    assert _rule_names(admin_client.get(url)) == ["third", "first", "second"]
    # The scan tries them in the same order.
    ordered = Rule.objects.filter(mailbox=mailbox).order_by("position", "id")
    assert [r.name for r in ordered] == ["third", "first", "second"]


def _rule_post(**extra: str) -> dict[str, str]:
    data = {
        "name": "invoices",
        "enabled": "on",
        "match": "all",
        "stop_after_match": "on",
        "conditions": "1",
        "condition-0-field": "subject",
        "condition-0-operator": "contains",
        "condition-0-value": "invoice",
        "actions": "1",
        "action-0-type": "link",
        "action-0-module": "Companies",
        "action-0-by": "sender",
        "command": "save",
    }
    data.update(extra)
    return data


def test_an_administrator_adds_a_rule(admin_client: Client, mailbox: Mailbox) -> None:
    response = admin_client.post(f"{BASE}{mailbox.pk}/rules/new/", _rule_post())
    assert response.status_code == 302
    rule = Rule.objects.get(mailbox=mailbox)
    assert rule.conditions == [{"field": "subject", "operator": "contains", "value": "invoice"}]
    assert rule.actions == [{"type": "link", "module": "Companies", "by": "sender"}]
    assert (rule.name, rule.enabled, rule.match, rule.stop_after_match) == (
        "invoices",
        True,
        "all",
        True,
    )


def test_editing_a_rule_shows_its_rows_and_saves_changes(
    admin_client: Client, mailbox: Mailbox
) -> None:
    rule = add_rule(
        mailbox,
        "invoices",
        [{"type": "create_ticket", "create_lead": True}],
        conditions=[{"field": "from", "operator": "ends_with", "value": "@acme.example"}],
    )
    url = f"{BASE}{mailbox.pk}/rules/{rule.pk}/"
    doc = _doc(admin_client.get(url))
    assert doc.xpath("//input[@name='condition-0-value']/@value") == ["@acme.example"]
    assert doc.xpath("//select[@name='condition-0-operator']/option[@selected]/@value") == [
        "ends_with"
    ]
    assert doc.xpath("//input[@name='action-0-create_lead']/@checked")
    admin_client.post(url, _rule_post(**{"condition-0-value": "bill", "stop_after_match": ""}))
    rule.refresh_from_db()
    assert rule.conditions[0]["value"] == "bill"
    assert rule.stop_after_match is False


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        (
            {"condition-0-operator": "matches", "condition-0-value": "(unclosed"},
            "Condition 1: This is not a valid regular expression",
        ),
        ({"condition-0-value": " "}, "Condition 1: Enter a value to compare with."),
        ({"action-0-type": ""}, "Action 1: Choose an action."),
        ({"actions": "0"}, "Add at least one action."),
    ],
)
def test_a_rule_with_mistakes_is_refused_with_the_reason_next_to_the_row(
    admin_client: Client, mailbox: Mailbox, changes: dict[str, str], shown: str
) -> None:
    response = admin_client.post(f"{BASE}{mailbox.pk}/rules/new/", _rule_post(**changes))
    assert response.status_code == 200
    assert shown in _text(response)
    assert not Rule.objects.exists()
    # What was typed is kept.
    assert _doc(response).xpath("//input[@name='name']/@value") == ["invoices"]


def test_add_and_remove_buttons_change_rows_and_keep_what_was_typed(
    admin_client: Client, mailbox: Mailbox
) -> None:
    url = f"{BASE}{mailbox.pk}/rules/new/"
    response = admin_client.post(url, _rule_post(command="add-condition"))
    doc = _doc(response)
    assert doc.xpath("//input[@name='conditions']/@value") == ["2"]
    assert doc.xpath("//input[@name='condition-0-value']/@value") == ["invoice"]
    response = admin_client.post(url, _rule_post(command="remove-condition:0"))
    assert _doc(response).xpath("//input[@name='conditions']/@value") == ["0"]
    assert "the rule applies to every message" in _text(response)
    assert not Rule.objects.exists()


def test_deleting_a_rule_closes_the_gap_in_the_order(
    admin_client: Client, mailbox: Mailbox
) -> None:
    add_rule(mailbox, "a", [{"type": "nothing"}])
    b = add_rule(mailbox, "b", [{"type": "nothing"}])
    add_rule(mailbox, "c", [{"type": "nothing"}])
    admin_client.post(f"{BASE}{mailbox.pk}/rules/{b.pk}/delete/")
    ordered = Rule.objects.filter(mailbox=mailbox).order_by("position")
    assert [(r.name, r.position) for r in ordered] == [("a", 0), ("c", 1)]


# --- test a rule -------------------------------------------------------------------------------


def _stored_files(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def counted(settings: Any) -> Iterator[None]:
    """Asserts that the test leaves records, messages, ledger rows and stored files unchanged."""

    def state() -> tuple[Any, ...]:
        return (
            Record.objects.count(),
            Message.objects.count(),
            LedgerEntry.objects.count(),
            QuarantinedMail.objects.count(),
            _stored_files(settings),
        )

    before = state()
    yield
    assert state() == before


@pytest.fixture
def ruleset(mailbox: Mailbox) -> Mailbox:
    add_rule(
        mailbox,
        "ignore newsletters",
        [{"type": "nothing"}],
        conditions=[{"field": "subject", "operator": "contains", "value": "newsletter"}],
    )
    add_rule(
        mailbox,
        "replies",
        [{"type": "update_ticket"}],
        conditions=[{"field": "subject", "operator": "has_ticket_number", "value": ""}],
    )
    add_rule(mailbox, "everything else", [{"type": "create_ticket", "create_lead": True}])
    return mailbox


def _test_rule(client: Client, mailbox: Mailbox, raw: bytes, **extra: Any) -> Any:
    response = client.post(
        f"{BASE}{mailbox.pk}/test-rule/", {"raw": raw.decode(), "folder": "INBOX", **extra}
    )
    assert response.status_code == 200
    return response


def _verdict(response: Any) -> str:
    return " ".join(_doc(response).xpath("//*[@id='preview-verdict']")[0].text_content().split())


def test_test_a_rule_names_the_rule_and_what_it_would_do_and_does_nothing(
    admin_client: Client, ruleset: Mailbox, counted: None
) -> None:
    response = _test_rule(admin_client, ruleset, mail("customer_question.eml"))
    assert _verdict(response) == (
        "everything else would apply: create a ticket titled “Printer on fire”, and create a "
        "Lead for anna.rossi@acme.example then link."
    )


def test_test_a_rule_finds_the_contact_the_ticket_would_be_for(
    admin_client: Client, ruleset: Mailbox, org: Org
) -> None:
    make_record(
        "Contacts", org.admin, first_name="Anna", last_name="Rossi", email="anna.rossi@acme.example"
    )
    before = Record.objects.count()
    response = _test_rule(admin_client, ruleset, mail("customer_question.eml"))
    assert "create a ticket titled “Printer on fire” for Contact Anna Rossi" in _verdict(response)
    assert Record.objects.count() == before


def test_test_a_rule_says_when_the_ticket_is_missing_and_the_next_rule_is_tried(
    admin_client: Client, ruleset: Mailbox, counted: None
) -> None:
    raw = mail("customer_question.eml").replace(b"Printer on fire", b"Re: Printer [TT999]")
    response = _test_rule(admin_client, ruleset, raw)
    steps = [" ".join(li.text_content().split()) for li in _doc(response).xpath("//ol/li")]
    assert steps[0] == (
        "replies (when subject has ticket number): No ticket TT999: the next rule would be tried."
    )
    assert steps[1].startswith("everything else (when every message): would apply:")
    assert _verdict(response).startswith("everything else would apply: create a ticket")


def test_test_a_rule_finds_the_ticket_a_reply_would_update(
    admin_client: Client, ruleset: Mailbox, org: Org
) -> None:
    ticket = make_record("Tickets", org.admin, title="Printer", status="Closed")
    raw = mail("customer_question.eml").replace(
        b"Printer on fire", f"Re: Printer [{ticket.number}]".encode()
    )
    response = _test_rule(admin_client, ruleset, raw)
    assert _verdict(response) == (
        f"replies would apply: update ticket {ticket.number} “{ticket.label}” (found by the "
        "number the rule's condition found): the email becomes a customer comment, status "
        "“Answered by customer”."
    )
    ticket.refresh_from_db()
    assert ticket.data["status"] == "Closed"


def test_an_uploaded_eml_file_is_tested_like_pasted_text(
    admin_client: Client, ruleset: Mailbox, counted: None
) -> None:
    upload = SimpleUploadedFile(
        "newsletter.eml",
        mail("customer_question.eml").replace(b"Printer on fire", b"Our newsletter"),
        content_type="message/rfc822",
    )
    response = admin_client.post(
        f"{BASE}{ruleset.pk}/test-rule/", {"raw": "", "eml": upload, "folder": "INBOX"}
    )
    assert _verdict(response) == (
        "ignore newsletters would apply: do nothing (the email is recorded as ignored by a rule)."
    )


def test_test_a_rule_reports_the_loop_guard_and_a_blocked_sender(
    admin_client: Client, ruleset: Mailbox, counted: None
) -> None:
    response = _test_rule(admin_client, ruleset, mail("auto_reply_rfc3834.eml"))
    assert _verdict(response).startswith(
        "The scan would skip this email: Automatic mail, never converted: Auto-Submitted"
    )
    BlockedSender.objects.create(
        mailbox=ruleset, address="anna.rossi@acme.example", created_at=timezone.now()
    )
    response = _test_rule(admin_client, ruleset, mail("customer_question.eml"))
    assert _verdict(response) == (
        "The scan would skip this email: anna.rossi@acme.example is blocked on this mailbox."
    )
    BlockedSender.objects.all().delete()


def test_test_a_rule_without_an_email_asks_for_one(admin_client: Client, ruleset: Mailbox) -> None:
    response = _test_rule(admin_client, ruleset, b"")
    assert "Paste an email or choose an .eml file." in _text(response)


# --- activity: runs, ledger, quarantine, blocked senders -----------------------------------------


def test_runs_are_listed_with_a_bar_chart(admin_client: Client, mailbox: Mailbox) -> None:
    now = timezone.now()
    for minutes, counts, status in [
        (30, {"created": 4}, "ok"),
        (20, {}, "failed"),
        (10, {"created": 1, "unmatched": 1}, "ok"),
    ]:
        ScanRun.objects.create(
            mailbox=mailbox,
            started_at=now - timezone.timedelta(minutes=minutes),
            finished_at=now - timezone.timedelta(minutes=minutes - 1),
            status=status,
            counts=counts,
            error="server went away" if status == "failed" else "",
        )
    response = admin_client.get(f"{BASE}{mailbox.pk}/activity/")
    doc = _doc(response)
    heights = [int(r.get("height")) for r in doc.xpath("//svg[@id='runs-chart']/rect")]
    assert heights == [120, 2, 60]  # oldest first, the busiest run full height
    rows = [
        " ".join(r.text_content().split()) for r in doc.xpath("//section[@id='runs']//tbody/tr")
    ]
    assert "Finished Ticket created: 1, No rule applied: 1" in rows[0]
    assert "Failed none server went away" in rows[1]


@pytest.fixture
def ledger(mailbox: Mailbox) -> Mailbox:
    folder = mailbox.folders.get()
    now = timezone.now()
    rows = [
        ("anna.rossi@acme.example", "Printer on fire", Outcome.CREATED),
        ("anna.rossi@acme.example", "Re: Printer on fire", Outcome.UPDATED),
        ("bob@shop.example", "Invoice 12", Outcome.UNMATCHED),
        ("mailer-daemon@shop.example", "Undelivered", Outcome.LOOP),
    ]
    for uid, (sender, subject, outcome) in enumerate(rows, start=1):
        LedgerEntry.objects.create(
            mailbox=mailbox,
            folder=folder,
            uidvalidity=1,
            uid=uid,
            identity=f"id-{uid}",
            outcome=outcome,
            sender=sender,
            subject=subject,
            created_at=now - timezone.timedelta(minutes=uid),
        )
    return mailbox


def _ledger_subjects(response: Any, where: str = "//div[@id='ledger']") -> list[str]:
    return [td.text_content() for td in _doc(response).xpath(f"{where}//tbody/tr/td[4]")]


@pytest.mark.parametrize(
    ("query", "subjects"),
    [
        ({}, ["Printer on fire", "Re: Printer on fire", "Invoice 12", "Undelivered"]),
        ({"sender": "ANNA"}, ["Printer on fire", "Re: Printer on fire"]),
        ({"subject": "invoice"}, ["Invoice 12"]),
        ({"outcome": "loop"}, ["Undelivered"]),
        ({"sender": "anna", "outcome": "updated"}, ["Re: Printer on fire"]),
    ],
)
def test_the_ledger_is_searchable_by_sender_subject_and_outcome(
    admin_client: Client, ledger: Mailbox, query: dict[str, str], subjects: list[str]
) -> None:
    response = admin_client.get(f"{BASE}{ledger.pk}/activity/", query)
    assert _ledger_subjects(response) == subjects
    # htmx asks for the table alone.
    partial = admin_client.get(
        f"{BASE}{ledger.pk}/activity/", query, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="ledger"
    )
    assert _ledger_subjects(partial, where="") == subjects
    assert b"runs-chart" not in partial.content


def test_the_ledger_is_paginated_keeping_the_search(
    admin_client: Client, ledger: Mailbox, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailconverter.web import selectors

    monkeypatch.setattr(selectors, "LEDGER_PAGE_SIZE", 1)
    first = admin_client.get(f"{BASE}{ledger.pk}/activity/", {"sender": "anna"})
    assert _ledger_subjects(first) == ["Printer on fire"]
    following = _doc(first).xpath("//nav[@aria-label='Ledger pages']//a[@rel='next']/@href")
    assert following == ["?sender=anna&page=2#ledger"]
    second = admin_client.get(f"{BASE}{ledger.pk}/activity/{following[0].split('#')[0]}")
    assert _ledger_subjects(second) == ["Re: Printer on fire"]


@pytest.fixture
def quarantined(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> LedgerEntry:
    add_rule(mailbox, "tickets", [{"type": "create_ticket"}])
    with monkeypatch.context() as patched:
        patched.setitem(actions._HANDLERS, "create_ticket", _explode)
        entry = process(mailbox, mail("customer_question_with_attachment.eml"))
    assert entry.outcome == Outcome.FAILED
    return entry


def test_the_quarantine_download_returns_the_exact_bytes_as_an_attachment(
    admin_client: Client, quarantined: LedgerEntry
) -> None:
    box = quarantined.mailbox
    page = admin_client.get(f"{BASE}{box.pk}/activity/")
    assert "RuntimeError: the CRM was down" in _text(page)
    response = admin_client.get(f"{BASE}{box.pk}/quarantine/{quarantined.pk}/raw/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == mail("customer_question_with_attachment.eml")
    assert response["Content-Type"] == "message/rfc822"
    assert response["Content-Disposition"] == (
        f'attachment; filename="support-INBOX-{quarantined.uid}.eml"'
    )
    assert response["X-Content-Type-Options"] == "nosniff"


def test_a_download_name_from_a_hostile_folder_name_is_made_safe(
    admin_client: Client, quarantined: LedgerEntry
) -> None:
    Folder.objects.filter(pk=quarantined.folder_id).update(name='../"evil"\r\nX: y')
    box = quarantined.mailbox
    response = admin_client.get(f"{BASE}{box.pk}/quarantine/{quarantined.pk}/raw/")
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment; filename=")
    assert "\r" not in disposition
    assert "\n" not in disposition
    assert "/" not in disposition


def test_retry_converts_a_quarantined_message_once_the_cause_is_gone(
    admin_client: Client, quarantined: LedgerEntry
) -> None:
    box = quarantined.mailbox
    response = admin_client.post(f"{BASE}{box.pk}/quarantine/{quarantined.pk}/retry/")
    assert response.status_code == 302
    quarantined.refresh_from_db()
    assert quarantined.outcome == Outcome.CREATED
    assert Record.objects.filter(module__name="Tickets").count() == 1
    page = admin_client.get(f"{BASE}{box.pk}/activity/")
    assert "Retried: Ticket created." in _text(page)
    assert "Nothing in quarantine." in _text(page)


def test_senders_are_blocked_and_unblocked(admin_client: Client, mailbox: Mailbox) -> None:
    url = f"{BASE}{mailbox.pk}/blocked/"
    admin_client.post(url, {"address": "Spam@Spam.Example", "reason": "spam"})
    blocked = BlockedSender.objects.get(mailbox=mailbox)
    assert blocked.address == "spam@spam.example"
    page = admin_client.get(f"{BASE}{mailbox.pk}/activity/")
    assert "spam@spam.example (spam)" in _text(page)
    refused = admin_client.post(url, {"address": "not an address"}, follow=True)
    assert "Enter an email address." in _text(refused)
    admin_client.post(f"{url}{blocked.pk}/remove/")
    assert not BlockedSender.objects.exists()


# --- scan progress -----------------------------------------------------------------------------


def test_the_progress_fragment_polls_while_a_scan_runs_and_stops_when_it_ends(
    admin_client: Client, mailbox: Mailbox
) -> None:
    run = ScanRun.objects.create(
        mailbox=mailbox,
        started_at=timezone.now(),
        status="running",
        folder="INBOX",
        done=3,
        total=10,
    )
    url = f"{BASE}{mailbox.pk}/scan/{run.pk}/"
    doc = _doc(admin_client.get(url))
    status = doc.xpath("//*[@id='scan-status']")[0]
    assert status.get("hx-trigger") == "every 1s"
    assert " ".join(status.text_content().split()).startswith(
        "Scan: Running · INBOX: 3 of 10 messages"
    )
    ScanRun.objects.filter(pk=run.pk).update(
        status="ok", finished_at=timezone.now(), counts={"created": 3}
    )
    doc = _doc(admin_client.get(url))
    status = doc.xpath("//*[@id='scan-status']")[0]
    assert status.get("hx-trigger") is None
    assert " ".join(status.text_content().split()) == (
        "Scan: Finished · 3 messages processed Ticket created: 3"
    )


def test_scan_now_on_a_disabled_mailbox_says_why(admin_client: Client, mailbox: Mailbox) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(enabled=False)
    response = admin_client.post(f"{BASE}{mailbox.pk}/scan/", HTTP_HX_REQUEST="true")
    assert "The mailbox is disabled: enable it to scan it." in _text(response)
    assert not ScanRun.objects.exists()


# --- against the real test Dovecot ---------------------------------------------------------------


@pytest.fixture
def imap_mailbox(account: Account, org: Org) -> Mailbox:
    box = Mailbox(
        name="support",
        host="127.0.0.1",
        port=account.server.port,
        security=Mailbox.Security.NONE,
        username=account.user,
        owner=org.admin,
    )
    box.set_password(IMAP_PASSWORD)
    box.save()
    return box


@pytest.mark.imap
def test_test_connection_shows_the_servers_answer_in_words(
    admin_client: Client, imap_mailbox: Mailbox
) -> None:
    url = f"{BASE}{imap_mailbox.pk}/test-connection/"
    ok = admin_client.post(url, HTTP_HX_REQUEST="true")
    result = _doc(ok).xpath("//*[@id='connection-result']")[0]
    assert "success" in result.get("class")
    imap_mailbox.set_password("wrong")
    imap_mailbox.save()
    refused = admin_client.post(url, follow=True)  # without htmx: a message on the page
    errors = _doc(refused).xpath("//li[contains(@class, 'message error')]")
    assert len(errors) == 1
    assert "password" in errors[0].text_content().lower()


@pytest.mark.imap
def test_refresh_folders_lists_the_servers_folders_with_counts(
    admin_client: Client, imap_mailbox: Mailbox, account: Account
) -> None:
    account.create_folder("CRM/Leads")
    account.deliver(mail("customer_question.eml"))
    account.deliver(mail("customer_question_with_attachment.eml"), flags=(b"\\Seen",))
    response = admin_client.post(f"{BASE}{imap_mailbox.pk}/folders/refresh/", follow=True)
    doc = _doc(response)
    rows = {
        r.xpath(".//input/@value")[0]: " ".join(r.text_content().split())
        for r in doc.xpath("//tbody/tr")
    }
    assert set(rows) == {"INBOX", "CRM/Leads", "Drafts", "Junk", "Sent", "Trash"}
    assert rows["INBOX"].startswith("INBOX 2 1")
    disabled = set(doc.xpath("//input[@name='folders'][@disabled]/@value"))
    assert disabled == {"Drafts", "Junk", "Trash"}
