"""The "Outlook Mail Connector" settings page, through the Django test client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from lxml import html as lxml_html
from lxml.html import HtmlElement

from crm.models import User
from licensing import services
from licensing.models import License, LicensedUser
from tests.conftest import Org
from tests.factories import UserFactory
from tests.licensing.vendor import Vendor

pytestmark = pytest.mark.django_db

PAGE = "/settings/mail-connector/"
ACTIVATE = "/settings/mail-connector/activate/"
USERS = "/settings/mail-connector/users/"


def _doc(response: Any) -> HtmlElement:
    return lxml_html.fromstring(response.content.decode())


def _text(response: Any) -> str:
    return " ".join(_doc(response).text_content().split())


def _ticked(response: Any) -> set[str]:
    doc = _doc(response)
    ids = {box.get("value") for box in doc.xpath("//input[@name='users'][@checked]")}
    return set(User.objects.filter(pk__in=ids).values_list("username", flat=True))


@pytest.fixture
def admin_client(client: Client, org: Org) -> Client:
    client.force_login(org.admin)
    return client


def test_the_urls_are_where_the_settings_menu_expects_them() -> None:
    assert reverse("licensing:mail_connector") == PAGE
    assert reverse("licensing:activate") == ACTIVATE
    assert reverse("licensing:users") == USERS


def test_an_administrator_sees_the_page_before_any_key(
    admin_client: Client, vendor: Vendor
) -> None:
    response = admin_client.get(PAGE)
    assert response.status_code == 200
    text = _text(response)
    assert "Outlook Mail Connector" in text
    assert "Inactive No license is activated" in text
    assert "Users can be enabled once a license is activated." in text
    assert "this CRM's address (https://crm.example.com)" in text
    assert _doc(response).xpath("//textarea[@name='key']")


@pytest.mark.parametrize("who", ["alice", "bob", "charlie"])
@pytest.mark.parametrize(("method", "url"), [("get", PAGE), ("post", ACTIVATE), ("post", USERS)])
def test_the_page_does_not_exist_for_other_users(
    client: Client, org: Org, vendor: Vendor, who: str, method: str, url: str
) -> None:
    client.force_login(getattr(org, who))
    response = getattr(client, method)(url, {"key": vendor.key()} if method == "post" else None)
    assert response.status_code == 404
    assert not License.objects.exists()


def test_a_visitor_who_is_not_logged_in_is_sent_to_the_login_page(client: Client) -> None:
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_pasting_a_key_activates_it_and_shows_the_license(
    admin_client: Client, vendor: Vendor
) -> None:
    expires = datetime(2099, 6, 30, 23, 59, 59, tzinfo=UTC)
    key = vendor.key(installation="Acme Ltd", users=3, expires_at=expires)
    response = admin_client.post(ACTIVATE, {"key": f"  {key[:40]}\n{key[40:]}  "}, follow=True)
    assert response.redirect_chain == [(PAGE, 302)]
    text = _text(response)
    assert "License activated for Acme Ltd: up to 3 users may use the connector." in text
    assert "Active" in text
    assert "Installation Acme Ltd" in text
    assert "CRM URL https://crm.example.com" in text
    assert "Users 0 of 3 users enabled" in text
    assert "Expires 30 Jun 2099, 23:59 UTC" in text
    assert "License ID lic-0001" in text
    assert License.objects.get().activated_by.username == "admin"  # type: ignore[union-attr]


def test_a_refused_key_is_shown_with_its_reason_and_kept_in_the_box(
    admin_client: Client, vendor: Vendor
) -> None:
    key = vendor.key(crm_url="https://crm.other.com")
    response = admin_client.post(ACTIVATE, {"key": key})
    assert response.status_code == 200
    error = _doc(response).xpath("//p[@class='field-error']")[0].text_content()
    assert error.startswith("This key is for https://crm.other.com, but this CRM's address is")
    assert _doc(response).xpath("//textarea[@name='key']")[0].text_content().strip() == key
    assert not License.objects.exists()


def test_an_empty_submission_asks_for_the_key(admin_client: Client, vendor: Vendor) -> None:
    response = admin_client.post(ACTIVATE, {"key": "   "})
    assert "This field is required." in _text(response)


def test_enabling_users_shows_the_count(admin_client: Client, org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=3))
    response = admin_client.post(USERS, {"users": [org.alice.pk, org.bob.pk]}, follow=True)
    text = _text(response)
    assert "Saved: enabled alice, bob." in text
    assert "2 of 3 users enabled" in text
    assert _ticked(response) == {"alice", "bob"}
    response = admin_client.post(USERS, {"users": [org.bob.pk]}, follow=True)
    assert "Saved: disabled alice." in _text(response)
    assert _ticked(response) == {"bob"}


def test_ticking_over_the_limit_is_refused_with_the_count(
    admin_client: Client, org: Org, vendor: Vendor
) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=3))
    services.set_enabled_users(actor=org.admin, users=[org.alice, org.bob])
    four = [org.alice.pk, org.bob.pk, org.charlie.pk, org.admin.pk]
    response = admin_client.post(USERS, {"users": four})
    assert response.status_code == 200
    alert = _doc(response).xpath("//*[@id='seats-error']")[0].text_content().strip()
    assert alert == (
        "You selected 4 users, but the license allows 3 users. Untick 1 or ask your vendor for "
        "a key with more users."
    )
    # What was ticked stays ticked, so the administrator sees what to untick; nothing saved.
    assert _ticked(response) == {"alice", "bob", "charlie", "admin"}
    assert "2 of 3 users enabled" in _text(response)
    assert set(LicensedUser.objects.values_list("user__username", flat=True)) == {"alice", "bob"}


def test_deactivated_users_are_listed_without_a_seat(
    admin_client: Client, org: Org, vendor: Vendor
) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=3))
    services.set_enabled_users(actor=org.admin, users=[org.alice, org.bob])
    org.bob.is_active = False
    org.bob.save()
    response = admin_client.get(PAGE)
    text = _text(response)
    assert "1 of 3 users enabled" in text
    assert "deactivated: uses no seat" in text
    box = _doc(response).xpath(f"//input[@value='{org.bob.pk}']")[0]
    assert box.get("disabled") is not None
    # Saving the page (bob's box is disabled, so not sent) leaves his tick alone.
    admin_client.post(USERS, {"users": [org.alice.pk, org.charlie.pk, org.admin.pk]})
    assert LicensedUser.objects.filter(user=org.bob).exists()
    # Bob comes back to a full house: the page says who is over the limit.
    org.bob.is_active = True
    org.bob.save()
    over = _doc(admin_client.get(PAGE)).xpath("//*[@id='over-limit']")[0].text_content()
    assert over.startswith("4 users are enabled but the license allows 3")


def test_the_page_warns_thirty_days_before_expiry(
    admin_client: Client, org: Org, vendor: Vendor
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    expires = now + timedelta(days=20, hours=1)
    services.activate(actor=org.admin, key=vendor.key(expires_at=expires))
    warning = _doc(admin_client.get(PAGE)).xpath("//*[@id='expiry-warning']")
    assert warning[0].text_content().startswith("The license expires in 20 days (on ")


def test_no_warning_further_out(admin_client: Client, org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(expires_at=timezone.now() + timedelta(40)))
    assert not _doc(admin_client.get(PAGE)).xpath("//*[@id='expiry-warning']")


def test_an_expired_license_says_so(admin_client: Client, org: Org, vendor: Vendor) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
    services.activate(actor=org.admin, key=vendor.key(expires_at=expires))
    # Only licensing's clock moves: the session's own clock would log the administrator out.
    later = mock.Mock(now=mock.Mock(return_value=expires + timedelta(days=1)))
    with mock.patch("licensing.services.timezone", later):
        text = _text(admin_client.get(PAGE))
    assert "Inactive The activated license" not in text
    assert "Inactive The license expired on" in text


def test_a_renewal_is_listed_in_the_history_and_reports_disabled_users(
    admin_client: Client, org: Org, vendor: Vendor
) -> None:
    earlier = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    services.activate(actor=org.admin, key=vendor.key(users=2, issued_at=earlier))
    services.enable_users(actor=org.admin, users=[org.alice])
    services.enable_users(actor=org.admin, users=[org.bob])
    response = admin_client.post(
        ACTIVATE, {"key": vendor.key(users=1, license_id="lic-0002")}, follow=True
    )
    text = _text(response)
    assert "The new key allows 1 user, so these were disabled: bob." in text
    rows = _doc(response).xpath("//section[@id='history']//tbody/tr")
    assert [row.xpath("string(td[last()])").strip() for row in rows] == ["lic-0002", "lic-0001"]
    assert "current" in rows[0].text_content()


def test_the_page_keeps_the_content_security_policy(admin_client: Client, vendor: Vendor) -> None:
    UserFactory.create_batch(2)
    response = admin_client.get(PAGE)
    doc = _doc(response)
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert not [s for s in doc.xpath("//script") if not s.get("src")]
    assert not doc.xpath("//style | //*[@style]")
    assert not [a for el in doc.iter() for a in el.attrib if a.startswith("on")]
