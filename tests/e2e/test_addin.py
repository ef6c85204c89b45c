"""The Outlook add-in's task pane in a real Chromium, against the live CRM.

Outlook is played by tests/e2e/addin_stub/office.js: the request for Microsoft's office.js is
answered with it, and each test tells it which email is open (a fixture .eml, read here the
way Outlook would hand it over), which Mailbox requirement sets the host has, and what the
roaming settings hold. The pane is shown 320 px wide, the narrowest Outlook task pane.

Screenshots of the main states go to test-artifacts/addin-*.png.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyotp
import pytest
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import BrowserContext, Page, Route, expect

from crm.models import Document, DocumentLink, Message, Module, Record
from crm.models.modules import Sharing
from crm.services import blobs
from licensing import services as licenses
from mailconnector import services as connector
from mailconnector.models import AddinSession, AddinToken
from tests.conftest import Org
from tests.e2e.conftest import ARTIFACTS, Browsing
from tests.factories import PASSWORD, ProfileFactory, UserFactory, grant, make_record
from tests.licensing.vendor import Vendor
from tests.mailconnector.oidc_provider import OidcProvider

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

HERE = Path(__file__).resolve().parent
ADDIN_DIR = HERE.parents[1] / "mailconnector" / "addin"
OFFICE_JS = "https://appsforoffice.microsoft.com/lib/1/hosted/office.js"
STUB = (HERE / "addin_stub" / "office.js").read_text(encoding="utf-8")
ORDER_EML = HERE / "addin_stub" / "order-4711-two-pdfs-and-inline-logo.eml"
# Facts of the fixture, written from how it was made (not computed by the code under test).
ORDER_MESSAGE_ID = "<order-4711.20261123091500@mail.acme.test>"
ORDER_SUBJECT = "Order 4711 – signed order and terms"
ORDER_FILES = {"Order 4711.pdf", "Terms & conditions.pdf"}
DESKTOP = {"Mailbox": "1.14"}
OLDER_DESKTOP = {"Mailbox": "1.8"}
PHONE = {"Mailbox": "1.5"}


# --- Outlook, as the stub plays it --------------------------------------------------------


def outlook_item(raw: bytes, item_id: str = "AAMkAD-order-4711") -> dict[str, Any]:
    """The email as Outlook's item object shows it (what the stub hands to the pane)."""
    msg = BytesParser(policy=default_policy).parsebytes(raw)

    def people(header: str) -> list[dict[str, str]]:
        value = msg[header]
        if value is None:
            return []
        return [
            {"displayName": a.display_name, "emailAddress": a.addr_spec} for a in value.addresses
        ]

    attachments = []
    for n, part in enumerate(msg.walk()):
        if part.is_multipart() or part.get_content_disposition() not in ("attachment", "inline"):
            continue
        data = part.get_payload(decode=True) or b""
        attachments.append(
            {
                "id": f"AAMkAD-att-{n}",
                "name": part.get_filename() or f"part-{n}",
                "contentType": part.get_content_type(),
                "size": len(data),
                # Outlook calls a part that the HTML shows by its Content-ID inline.
                "isInline": part["Content-ID"] is not None,
                "format": "base64",
                "content": base64.b64encode(data).decode(),
            }
        )
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    return {
        "itemId": item_id,
        "internetMessageId": str(msg["Message-ID"]),
        "subject": str(msg["Subject"]),
        "from": people("From")[0],
        "to": people("To"),
        "cc": people("Cc"),
        "dateTimeCreated": msg["Date"].datetime.isoformat(),
        "bodyText": text.get_content() if text else "",
        "bodyHtml": html.get_content() if html else "",
        "attachments": attachments,
        "emlBase64": base64.b64encode(raw).decode(),
    }


def other_email() -> bytes:
    msg = EmailMessage()
    msg["From"] = Address("Nobody Known", "nobody", "elsewhere.test")
    msg["To"] = "alice@crm.test"
    msg["Subject"] = "A newsletter"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<newsletter-1@elsewhere.test>"
    msg.set_content("Nothing for the CRM.")
    return bytes(msg)


def _serve_stub(route: Route) -> None:
    route.fulfill(status=200, content_type="text/javascript", body=STUB)


def open_pane(
    page: Page,
    *,
    item: dict[str, Any] | None,
    sets: dict[str, str] | None = None,
    roaming: dict[str, Any] | None = None,
    platform: str = "PC",
    message_id_after_reads: int | None = None,
) -> Page:
    page.context.route(OFFICE_JS, _serve_stub)
    config = {
        "platform": platform,
        "sets": sets or DESKTOP,
        "item": item,
        "roaming": roaming or {},
        "messageIdAfterReads": message_id_after_reads,
    }
    page.add_init_script(f"window.__officeStubConfig = {json.dumps(config)};")
    page.set_viewport_size({"width": 320, "height": 900})
    page.goto("/addin/")
    return page


def log_in(page: Page, username: str = "alice", password: str = PASSWORD) -> None:
    expect(page.get_by_role("heading", name="Log in to your CRM")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"addin-{name}.png", full_page=True)


def link_button(page: Page, label: str, module: str) -> Any:
    return page.get_by_role("button", name=f"Link this email to {label} ({module})")


def suggestions(page: Page) -> Any:
    return page.locator("#suggestion-list")


def stub_calls(page: Page) -> list[str]:
    return page.evaluate("window.__officeStub.calls.slice()")


# --- the CRM's side ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def licensed(org: Org, settings: Any, live_server: Any) -> Vendor:
    """An active license for the live server's address, alice, bob and charlie enabled."""
    vendor = Vendor()
    settings.LICENSE_PUBLIC_KEY = vendor.public_key
    settings.CRM_BASE_URL = live_server.url
    licenses.activate(actor=org.admin, key=vendor.key(users=10, crm_url=live_server.url))
    licenses.enable_users(actor=org.admin, users=[org.alice, org.bob, org.charlie])
    return vendor


@dataclass
class Customer:
    """ACME Ltd (by its domain) and Jane Doe, its contact, who sent the order."""

    org: Org
    acme: Record
    jane: Record


@pytest.fixture
def customer(org: Org, licensed: Vendor) -> Customer:
    acme = make_record("Companies", org.alice, name="ACME Ltd", email="info@acme.test")
    jane = make_record(
        "Contacts",
        org.alice,
        first_name="Jane",
        last_name="Doe",
        email="jane@acme.test",
        company=acme.pk,
    )
    return Customer(org=org, acme=acme, jane=jane)


@pytest.fixture
def order() -> bytes:
    return ORDER_EML.read_bytes()


@pytest.fixture
def already_linked(customer: Customer, order: bytes) -> Customer:
    connector.link_email(
        actor=customer.org.bob,
        raw=order,
        targets=[connector.LinkTarget("Companies", customer.acme.pk)],
        idempotency_key=ORDER_MESSAGE_ID,
    )
    return customer


@pytest.fixture
def phone(customer: Customer) -> pyotp.TOTP:
    device = TOTPDevice.objects.create(user=customer.org.alice, name="phone", confirmed=True)
    return pyotp.TOTP(base64.b32encode(device.bin_key).decode())


@pytest.fixture
def idp(live_server: Any, settings: Any, customer: Customer) -> Iterator[OidcProvider]:
    provider = OidcProvider(redirect_uris=[f"{live_server.url}/api/addin/v1/auth/sso/callback"])
    settings.ADDIN_SSO_PROVIDERS = [provider.settings_entry()]
    yield provider
    provider.stop()


@dataclass
class SalesDesk:
    """Alice may see Contacts only; a colleague's private contact is on the email too."""

    customer: Customer
    hidden: Record


@pytest.fixture
def sales_desk(customer: Customer) -> SalesDesk:
    org = customer.org
    desk = ProfileFactory(name="Sales desk")
    grant(desk, "Contacts")
    org.sales_rep.profiles.set([desk])
    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = Sharing.PRIVATE
    contacts.save()
    dave = UserFactory(username="dave", role=org.sales_rep)
    hidden = make_record(
        "Contacts", dave, first_name="Private", last_name="Prospect", email="purchasing@acme.test"
    )
    return SalesDesk(customer=customer, hidden=hidden)


def stored(message_id: str = ORDER_MESSAGE_ID) -> Message:
    return Message.objects.get(message_id=message_id.strip("<>"))


def linked_files(record: Record) -> set[str]:
    return set(DocumentLink.objects.filter(record=record).values_list("document__title", flat=True))


# --- logging in ----------------------------------------------------------------------------


def test_password_login_shows_the_email_and_suggestions_and_remembers_the_username(
    customer: Customer, order: bytes, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order))
    # Served by the CRM: its address is given, not asked.
    expect(page.locator("#crm-fixed")).to_contain_text(browsing.base_url)
    expect(page.get_by_label("CRM address")).to_be_hidden()
    shot(page, "01-login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page.locator("#email-subject")).to_have_text(ORDER_SUBJECT)
    expect(page.locator("#email-from")).to_have_text("Jane Doe <jane@acme.test>")
    expect(page.locator("#email-attachments")).to_have_text("2 attachments")
    rows = suggestions(page).locator("li")
    expect(rows.first).to_contain_text("Jane Doe")
    expect(rows.first).to_contain_text("Contact · CON")
    expect(rows.first).to_contain_text("Sender")
    expect(suggestions(page)).to_contain_text("ACME Ltd")
    expect(page.get_by_label("Module")).to_contain_text("Companies")
    shot(page, "02-email")
    stored_prefs = page.evaluate("localStorage.getItem('crm-addin:prefs')")
    assert json.loads(stored_prefs)["username"] == "alice"
    everything = page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert PASSWORD not in everything
    assert page.evaluate("window.__officeStub.roaming().username") == "alice"

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("alert")).to_have_text("You are logged out.")
    expect(page.get_by_label("Username")).to_have_value("alice")
    assert not AddinSession.objects.filter(revoked_at__isnull=True).exists()
    assert browsing.console.csp_violations == []
    assert browsing.console.page_errors == []


def test_a_user_with_totp_enters_the_code_from_his_app(
    customer: Customer, phone: pyotp.TOTP, order: bytes, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order))
    log_in(page)
    code_field = page.get_by_label("Code from your authenticator app")
    expect(code_field).to_be_focused()
    code_field.fill("000000" if phone.now() != "000000" else "111111")
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("That code is wrong or expired")
    shot(page, "03-totp")
    page.wait_for_timeout(1500)  # django-otp waits a second after a wrong code
    code_field.fill(phone.now())
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("#email-subject")).to_have_text(ORDER_SUBJECT)
    assert browsing.console.page_errors == []


def test_sso_signs_in_through_the_office_dialog(
    idp: OidcProvider, order: bytes, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order))
    button = page.get_by_role("button", name="Sign in with Test IdP")
    with page.context.expect_page() as dialog_page:
        button.click()
    dialog = dialog_page.value
    # The pane is signed in by the dialog's message, and closes the dialog.
    expect(page.locator("#email-subject")).to_have_text(ORDER_SUBJECT, timeout=15_000)
    expect(page.locator("#user-name")).not_to_be_empty()
    if not dialog.is_closed():
        dialog.wait_for_event("close")
    # The dialog went through the provider's real redirects to the CRM's last page.
    assert len(idp.token_requests) == 1
    (opened,) = [c for c in stub_calls(page) if c.startswith("displayDialogAsync:")]
    authorize = f"displayDialogAsync:{browsing.base_url}/api/addin/v1/auth/sso/authorize?"
    assert opened.startswith(authorize)
    assert "provider=testidp" in opened
    assert "code_challenge_method=S256" in opened
    session = AddinSession.objects.get()
    assert session.user.username == "alice"
    assert browsing.console.page_errors == []


# --- linking -------------------------------------------------------------------------------


def test_desktop_links_the_whole_message_byte_for_byte(
    customer: Customer, order: bytes, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order), sets=DESKTOP)
    log_in(page)
    link_button(page, "ACME Ltd", "Company").click()

    result = page.locator("#result")
    expect(result).to_contain_text(
        "Linked to ACME Ltd — 2 attachments saved to Documents.", timeout=15_000
    )
    expect(result.get_by_role("link", name="Open ACME Ltd in the CRM")).to_have_attribute(
        "href", re.compile(rf"/Companies/{customer.acme.pk}")
    )
    expect(page.locator("#linked-list")).to_contain_text("ACME Ltd")
    expect(
        suggestions(page).locator(f'li[data-key="Companies:{customer.acme.pk}"]')
    ).to_contain_text("Linked")
    shot(page, "04-linked")
    message = stored()
    assert blobs.read(message.raw.name) == order
    assert message.completeness == "full"
    # The whole message: its inline logo is stored with it (as the CRM stores any email).
    assert linked_files(customer.acme) >= ORDER_FILES
    calls = stub_calls(page)
    assert "getAsFileAsync" in calls
    assert not any(c.startswith("getAttachmentContentAsync") for c in calls)

    # Pinned, the pane follows the selection to the next email.
    page.evaluate(
        "item => window.__officeStub.selectItem(item)", outlook_item(other_email(), "AAMkAD-2")
    )
    expect(page.locator("#email-subject")).to_have_text("A newsletter")
    expect(result).to_be_hidden()
    expect(page.locator("#suggestion-empty")).to_be_visible()
    expect(page.locator("#linked-section")).to_be_hidden()
    assert browsing.console.page_errors == []
    assert browsing.console.csp_violations == []


def test_outlook_with_mailbox_1_8_sends_fields_and_attachments(
    customer: Customer, order: bytes, browsing: Browsing
) -> None:
    item = outlook_item(order)
    page = open_pane(browsing.page, item=item, sets=OLDER_DESKTOP)
    log_in(page)
    link_button(page, "Jane Doe", "Contact").click()
    expect(page.locator("#result")).to_contain_text(
        "Linked to Jane Doe — 2 attachments saved to Documents.", timeout=15_000
    )
    message = stored()
    assert message.subject == ORDER_SUBJECT
    assert linked_files(customer.jane) == ORDER_FILES
    # The files arrived whole; the inline logo stayed out.
    for attachment in item["attachments"]:
        if attachment["isInline"]:
            continue
        document = Document.objects.get(title=attachment["name"])
        assert blobs.read(document.file.name) == base64.b64decode(attachment["content"])
    calls = stub_calls(page)
    assert "getAsFileAsync" not in calls
    fetched = [c for c in calls if c.startswith("getAttachmentContentAsync")]
    assert len(fetched) == 2


def test_a_phone_links_without_attachments_and_a_computer_adds_them(
    customer: Customer, order: bytes, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order), sets=PHONE, platform="Android")
    log_in(page)
    expect(page.locator("#email-notice")).to_contain_text("cannot hand over attachments")
    link_button(page, "ACME Ltd", "Company").click()
    expect(page.locator("#result")).to_contain_text(
        "Linked to ACME Ltd — 2 attachments follow when you open this email in Outlook on a "
        "computer and add them.",
        timeout=15_000,
    )
    shot(page, "05-phone-partial")
    message = stored()
    assert message.completeness == "partial"
    assert not DocumentLink.objects.exists()
    roaming = page.evaluate("window.__officeStub.roaming()")

    # Later, on a computer: the same mailbox, so the same roaming settings; another login.
    desktop = _second_device(browsing)
    try:
        pane = open_pane(
            desktop.new_page(), item=outlook_item(order), sets=DESKTOP, roaming=roaming
        )
        log_in(pane)
        expect(pane.locator("#linked-list")).to_contain_text("ACME Ltd")
        expect(pane.get_by_role("heading", name="Attachments missing")).to_be_visible()
        pane.get_by_role("button", name="Add the attachments").click()
        expect(pane.locator("#result")).to_contain_text(
            "The attachments were added to ACME Ltd — 2 attachments saved to Documents.",
            timeout=15_000,
        )
        expect(pane.get_by_role("heading", name="Attachments missing")).to_be_hidden()
        shot(pane, "06-completed-from-desktop")
    finally:
        desktop.close()
    message.refresh_from_db()
    assert message.completeness == "full"
    assert blobs.read(message.raw.name) == order
    # The whole message: its inline logo is stored with it (as the CRM stores any email).
    assert linked_files(customer.acme) >= ORDER_FILES


def _second_device(browsing: Browsing) -> BrowserContext:
    browser = browsing.page.context.browser
    assert browser is not None
    context = browser.new_context(base_url=browsing.base_url, locale="en-GB")
    context.set_default_timeout(30_000)
    return context


def test_an_email_already_linked_says_where(
    already_linked: Customer, order: bytes, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order))
    log_in(page)
    expect(page.get_by_role("heading", name="Already linked to")).to_be_visible()
    expect(page.locator("#linked-list")).to_contain_text("ACME Ltd")
    acme_row = suggestions(page).locator(f'li[data-key="Companies:{already_linked.acme.pk}"]')
    expect(acme_row).to_contain_text("Linked")
    expect(link_button(page, "ACME Ltd", "Company")).to_have_count(0)
    expect(link_button(page, "Jane Doe", "Contact")).to_be_enabled()
    shot(page, "07-already-linked")


def test_a_just_sent_email_without_a_message_id_is_explained(
    customer: Customer, order: bytes, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order), message_id_after_reads=-1)
    log_in(page)
    expect(page.locator("#email-notice")).to_contain_text(
        "Outlook has not given this email its Internet message ID yet", timeout=20_000
    )
    expect(link_button(page, "ACME Ltd", "Company")).to_be_disabled()
    # It asked more than once before giving up.
    assert page.evaluate("window.__officeStub.calls").count("getAllInternetHeadersAsync") >= 3


def test_a_user_sees_only_his_modules_and_records(
    sales_desk: SalesDesk, order: bytes, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order))
    log_in(page)
    expect(suggestions(page)).to_contain_text("Jane Doe")
    expect(suggestions(page)).not_to_contain_text("ACME Ltd")
    expect(suggestions(page)).not_to_contain_text("Prospect")
    options = page.get_by_label("Module").locator("option")
    expect(options).to_have_text(["Contacts"])
    page.get_by_label("Name, number or email").fill("Prospect")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#search-status")).to_have_text("No records found.")
    page.get_by_label("Name, number or email").fill("Doe")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#search-list")).to_contain_text("Jane Doe")
    shot(page, "08-limited-user")


@pytest.fixture
def static_pane(settings: Any) -> Iterator[str]:
    """The pane's files served as they are from another origin (a host of their own)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(ADDIN_DIR))
    )
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    settings.CORS_ALLOWED_ORIGINS = [origin]  # what ADDIN_ALLOWED_ORIGINS sets
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield origin
    server.shutdown()
    server.server_close()


def test_a_pane_hosted_elsewhere_asks_for_the_crm_and_works_across_origins(
    customer: Customer, order: bytes, static_pane: str, browsing: Browsing
) -> None:
    page = browsing.page
    page.context.route(OFFICE_JS, _serve_stub)
    config = {"sets": DESKTOP, "item": outlook_item(order)}
    page.add_init_script(f"window.__officeStubConfig = {json.dumps(config)};")
    page.set_viewport_size({"width": 320, "height": 900})
    page.goto(f"{static_pane}/taskpane.html")
    crm_address = page.get_by_label("CRM address")
    expect(crm_address).to_be_focused()
    crm_address.fill(browsing.base_url)
    log_in(page)
    link_button(page, "ACME Ltd", "Company").click()
    expect(page.locator("#result")).to_contain_text("Linked to ACME Ltd", timeout=15_000)
    assert blobs.read(stored().raw.name) == order
    prefs = json.loads(page.evaluate("localStorage.getItem('crm-addin:prefs')"))
    assert prefs == {"crmUrl": browsing.base_url, "username": "alice"}
    assert browsing.console.page_errors == []


# --- when it cannot work -------------------------------------------------------------------


def test_a_crm_older_than_the_add_in_supports_says_so_and_stops(
    customer: Customer, order: bytes, monkeypatch: pytest.MonkeyPatch, browsing: Browsing
) -> None:
    monkeypatch.setattr("mailconnector.api.views.CRM_VERSION", "26.10.0")
    page = open_pane(browsing.page, item=outlook_item(order))
    expect(page.get_by_role("heading", name="CRM not supported")).to_be_visible()
    expect(page.locator("#blocked-text")).to_have_text(
        "This CRM version (26.10.0) is not supported by the add-in; ask your CRM partner to "
        "update it."
    )
    expect(page.get_by_label("Password")).to_be_hidden()
    shot(page, "09-crm-too-old")


def test_an_add_in_older_than_the_crm_supports_is_told_to_update(
    customer: Customer, order: bytes, settings: Any, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order))
    log_in(page)
    expect(page.locator("#email-subject")).to_have_text(ORDER_SUBJECT)
    # Let the pane's first calls (look-up, suggestions) finish before the CRM changes.
    expect(page.locator("#suggestion-list li").first).to_be_visible()
    # The CRM is upgraded while the pane is open: the next call answers 426.
    settings.ADDIN_MIN_VERSION = "9.0.0"
    page.get_by_label("Name, number or email").fill("ACME")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.get_by_role("heading", name="Update the add-in")).to_be_visible()
    expect(page.locator("#blocked-text")).to_contain_text(
        "This add-in (1.0.0) is older than this CRM supports (9.0.0 or later)."
    )
    shot(page, "10-addin-outdated")
    # Opened again, it knows from meta before anything else.
    page.reload()
    expect(page.get_by_role("heading", name="Update the add-in")).to_be_visible()


def test_an_inactive_license_shows_its_reason(org: Org, order: bytes, browsing: Browsing) -> None:
    page = open_pane(browsing.page, item=outlook_item(order))
    expect(page.get_by_role("heading", name="The connector is not active")).to_be_visible()
    expect(page.locator("#blocked-text")).to_contain_text("No license is activated")
    shot(page, "11-license-inactive")


def test_a_user_not_enabled_for_the_connector_is_told_why_and_may_log_out(
    customer: Customer, order: bytes, browsing: Browsing
) -> None:
    UserFactory(username="erin", role=customer.org.sales_rep)
    page = open_pane(browsing.page, item=outlook_item(order))
    log_in(page, "erin")
    expect(page.get_by_role("heading", name="The connector is not available")).to_be_visible()
    expect(page.locator("#blocked-text")).to_contain_text("You are not enabled for the")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to your CRM")).to_be_visible()


def test_an_expired_session_sends_the_user_back_to_login_with_a_message(
    customer: Customer, order: bytes, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order))
    log_in(page)
    expect(page.locator("#email-subject")).to_have_text(ORDER_SUBJECT)
    AddinSession.objects.update(last_used_at=timezone.now() - timedelta(days=30))
    # The user selects another email in a pinned pane.
    page.evaluate("item => window.__officeStub.selectItem(item)", outlook_item(other_email()))
    expect(page.get_by_role("heading", name="Log in to your CRM")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text(
        "Your CRM session has ended. This session was unused for too long; log in again."
    )
    expect(page.get_by_label("Username")).to_have_value("alice")
    shot(page, "12-session-expired")
    assert browsing.console.page_errors == []


def test_an_expired_access_token_is_refreshed_without_the_user_noticing(
    customer: Customer, order: bytes, browsing: Browsing
) -> None:
    page = open_pane(browsing.page, item=outlook_item(order))
    log_in(page)
    expect(page.locator("#email-subject")).to_have_text(ORDER_SUBJECT)
    AddinToken.objects.filter(kind=AddinToken.Kind.ACCESS).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    link_button(page, "ACME Ltd", "Company").click()
    expect(page.locator("#result")).to_contain_text("Linked to ACME Ltd", timeout=15_000)
    assert AddinSession.objects.count() == 1


def test_an_unreachable_crm_is_said_plainly(
    customer: Customer, order: bytes, browsing: Browsing
) -> None:
    page = browsing.page
    page.route("**/api/addin/v1/**", lambda route: route.abort("connectionrefused"))
    open_pane(page, item=outlook_item(order))
    expect(page.get_by_role("heading", name="CRM unreachable")).to_be_visible()
    expect(page.locator("#blocked-text")).to_have_text(
        f"The CRM at {browsing.base_url} cannot be reached. Check your connection, or ask your "
        "administrator whether the CRM is running. Nothing was saved."
    )
    shot(page, "13-unreachable")
    page.unroute("**/api/addin/v1/**")
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("heading", name="Log in to your CRM")).to_be_visible()


def test_the_pane_page_carries_its_own_policy(customer: Customer, browsing: Browsing) -> None:
    response = browsing.page.request.get("/addin/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self' https://appsforoffice.microsoft.com" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'self' https://*.office.com" in policy
    assert "x-frame-options" not in response.headers
    assert f'data-crm-url="{browsing.base_url}"' in response.text()
    commands = browsing.page.request.get("/addin/commands.html")
    assert commands.status == 200
    assert OFFICE_JS in commands.text()
    module = browsing.page.request.get("/addin/js/main.js")
    assert module.headers["content-type"].startswith("text/javascript")
    for hidden in ("tests/api.test.mjs", "make_icons.py", "taskpane.html", "../manifest.py"):
        assert browsing.page.request.get(f"/addin/{hidden}").status == 404, hidden
