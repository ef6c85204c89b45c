"""licensing.services: activation, seats, and the gate the connector asks on every call."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.db import connection, connections
from django.utils import timezone

from crm.exceptions import Conflict, Forbidden, Invalid, NotFound
from crm.models import User
from licensing import services
from licensing.models import License, LicensedUser
from tests.conftest import Org
from tests.factories import UserFactory
from tests.licensing.vendor import CRM_URL, Vendor

pytestmark = pytest.mark.django_db


def _snapshot() -> list[tuple[object, ...]]:
    """Everything licensing stores, to show that a refusal changed nothing."""
    licenses = list(License.objects.order_by("pk").values_list())
    seats = list(LicensedUser.objects.order_by("pk").values_list())
    return [*licenses, *seats]


@pytest.fixture
def clock() -> Iterator[mock.MagicMock]:
    """The services' clock, to be moved by tests (expiry without a restart)."""
    with mock.patch("licensing.services.timezone.now", wraps=timezone.now) as now:
        yield now


def _set_clock(clock: mock.MagicMock, moment: datetime) -> None:
    clock.side_effect = None
    clock.return_value = moment


# --- Activation ------------------------------------------------------------------------------


def test_a_valid_key_activates_and_is_stored_with_who_and_when(org: Org, vendor: Vendor) -> None:
    key = vendor.key(installation="Acme Ltd", users=5)
    license_ = services.activate(actor=org.admin, key=key)
    license_.refresh_from_db()
    assert license_.is_current
    assert license_.key == key
    assert (license_.installation, license_.crm_url, license_.users) == ("Acme Ltd", CRM_URL, 5)
    assert license_.features == ["mailconnector"]
    assert license_.activated_by == org.admin
    assert abs(license_.activated_at - timezone.now()) < timedelta(seconds=5)
    assert services.license_status() == services.ACTIVE


def test_a_pasted_key_with_line_breaks_is_stored_as_one_line(org: Org, vendor: Vendor) -> None:
    key = vendor.key()
    services.activate(actor=org.admin, key=f"\n{key[:50]}\n{key[50:]}\n")
    assert License.objects.get().key == key


def test_a_key_for_an_equivalent_spelling_of_the_crm_url_activates(
    org: Org, vendor: Vendor, settings: object
) -> None:
    settings.CRM_BASE_URL = "HTTPS://CRM.Example.com:443/"  # type: ignore[attr-defined]
    services.activate(actor=org.admin, key=vendor.key(crm_url="https://crm.example.com"))
    assert services.license_status().active


@pytest.fixture
def active(org: Org, vendor: Vendor) -> License:
    """A 3-user key, activated, with alice enabled: the state every refusal must leave alone."""
    license_ = services.activate(actor=org.admin, key=vendor.key(users=3))
    services.enable_users(actor=org.admin, users=[org.alice])
    return license_


REFUSALS = [
    "wrong URL",
    "look-alike URL",
    "http instead of https",
    "expired",
    "feature missing",
    "other vendor",
    "tampered payload",
    "tampered signature",
    "truncated",
    "empty",
    "random",
    "huge",
]


def _tampered(part: str, count: int) -> str:
    """The base64url part with its last `count` characters changed (to "A"s, which keep the
    text canonical; once in 16,384 keys a signature already ends in "AAA")."""
    tail = "A" * count if not part.endswith("A" * count) else "B" + "A" * (count - 1)
    return part[:-count] + tail


def _refusal(vendor: Vendor, name: str) -> tuple[str, str]:
    """The key for a refusal case, and the words the refusal must contain."""
    good = vendor.key(users=30, license_id="lic-later")
    body, signature = good.split(".")
    past = datetime.now(UTC) - timedelta(days=400)
    cases = {
        "wrong URL": (
            vendor.key(crm_url="https://crm.other.com"),
            "This key is for https://crm.other.com, but this CRM's address is "
            "https://crm.example.com",
        ),
        "look-alike URL": (
            vendor.key(crm_url="https://crm.example.com.evil.net"),
            "This key is for https://crm.example.com.evil.net",
        ),
        "http instead of https": (vendor.key(crm_url="http://crm.example.com"), "is for http://"),
        "expired": (
            vendor.key(issued_at=past, expires_at=past + timedelta(days=30)),
            "This key expired on",
        ),
        "feature missing": (vendor.key(features=("sync",)), "does not include the Outlook"),
        "other vendor": (Vendor().key(), "not issued by this CRM's license vendor"),
        "tampered payload": (f"{_tampered(body, 4)}.{signature}", "signature does not match"),
        "tampered signature": (f"{body}.{_tampered(signature, 3)}", "signature does not match"),
        "truncated": (good[:-10], "signature has the wrong length"),
        "empty": ("", "No license key was given"),
        "random": ("hello world", "two parts separated by one dot"),
        "huge": ("A" * 100_000, "too long to be a license key"),
    }
    return cases[name]


@pytest.mark.parametrize("name", REFUSALS)
def test_each_refused_key_says_why_and_changes_nothing(
    org: Org, vendor: Vendor, active: License, name: str
) -> None:
    key, reason = _refusal(vendor, name)
    before = _snapshot()
    with pytest.raises(Invalid) as caught:
        services.activate(actor=org.admin, key=key)
    assert reason in caught.value.detail
    assert caught.value.fields.get("key")
    assert _snapshot() == before
    assert services.status(org.alice) == services.ACTIVE


def test_no_key_can_be_activated_without_a_configured_public_key(
    org: Org, vendor: Vendor, settings: object
) -> None:
    settings.LICENSE_PUBLIC_KEY = ""  # type: ignore[attr-defined]
    with pytest.raises(Invalid, match="no license vendor key configured"):
        services.activate(actor=org.admin, key=vendor.key())
    settings.LICENSE_PUBLIC_KEY = "not-a-key"  # type: ignore[attr-defined]
    with pytest.raises(Invalid, match="LICENSE_PUBLIC_KEY is malformed"):
        services.activate(actor=org.admin, key=vendor.key())
    assert not License.objects.exists()


@pytest.mark.parametrize("who", ["alice", "bob", "inactive_admin", "anonymous"])
def test_only_active_administrators_activate(org: Org, vendor: Vendor, who: str) -> None:
    from django.contrib.auth.models import AnonymousUser

    actor: object
    if who == "inactive_admin":
        actor = UserFactory(is_superuser=True, is_active=False)
    elif who == "anonymous":
        actor = AnonymousUser()
    else:
        actor = getattr(org, who)
    with pytest.raises(Forbidden):
        services.activate(actor=actor, key=vendor.key())  # type: ignore[arg-type]
    assert not License.objects.exists()


def test_the_same_key_twice_is_a_conflict_not_a_new_row(org: Org, vendor: Vendor) -> None:
    key = vendor.key()
    services.activate(actor=org.admin, key=key)
    with pytest.raises(Conflict, match="already the active license"):
        services.activate(actor=org.admin, key=key)
    assert License.objects.count() == 1


def test_an_older_key_cannot_replace_a_newer_one(org: Org, vendor: Vendor) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    old = vendor.key(license_id="old", users=50, issued_at=now - timedelta(days=100))
    new = vendor.key(license_id="new", users=2, issued_at=now)
    services.activate(actor=org.admin, key=new)
    with pytest.raises(Invalid, match="an older key cannot replace a newer one"):
        services.activate(actor=org.admin, key=old)
    assert License.objects.get(is_current=True).license_id == "new"


# --- Renewal ---------------------------------------------------------------------------------


def _enable_in_order(admin: User, users: list[User]) -> None:
    for user in users:
        services.enable_users(actor=admin, users=[user])


def test_a_renewal_replaces_the_key_and_keeps_the_history(org: Org, vendor: Vendor) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    first = services.activate(
        actor=org.admin, key=vendor.key(license_id="first", issued_at=now - timedelta(days=1))
    )
    second = services.activate(actor=org.admin, key=vendor.key(license_id="second", users=10))
    first.refresh_from_db()
    assert not first.is_current
    assert first.replaced_at is not None
    assert second.is_current
    assert second.replaced_at is None
    assert [lic.license_id for lic in services.history()] == ["second", "first"]
    assert services.summary().users_allowed == 10  # type: ignore[union-attr]


def test_a_renewal_with_fewer_users_keeps_the_earliest_enabled(org: Org, vendor: Vendor) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    services.activate(actor=org.admin, key=vendor.key(users=3, issued_at=now - timedelta(days=1)))
    _enable_in_order(org.admin, [org.charlie, org.alice, org.bob])
    renewal = services.activate(actor=org.admin, key=vendor.key(users=2, license_id="smaller"))
    assert renewal.users_disabled == ["bob"]
    assert set(LicensedUser.objects.values_list("user__username", flat=True)) == {
        "charlie",
        "alice",
    }
    assert services.status(org.charlie).active
    assert services.status(org.alice).active
    assert services.status(org.bob).code == "user_not_licensed"


def test_a_renewal_with_more_users_keeps_everyone(org: Org, vendor: Vendor) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    services.activate(actor=org.admin, key=vendor.key(users=2, issued_at=now - timedelta(days=1)))
    _enable_in_order(org.admin, [org.alice, org.bob])
    renewal = services.activate(actor=org.admin, key=vendor.key(users=5, license_id="bigger"))
    assert renewal.users_disabled == []
    assert LicensedUser.objects.count() == 2
    services.enable_users(actor=org.admin, users=[org.charlie, org.admin])
    assert services.summary().users_used == 4  # type: ignore[union-attr]


# --- Seats -----------------------------------------------------------------------------------


def test_users_can_be_enabled_up_to_the_limit_and_no_further(org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=3))
    added = services.enable_users(actor=org.admin, users=[org.alice, org.bob])
    assert {u.username for u in added} == {"alice", "bob"}
    services.enable_users(actor=org.admin, users=[org.alice, org.charlie])  # alice: no-op
    before = _snapshot()
    with pytest.raises(Invalid) as caught:
        services.enable_users(actor=org.admin, users=[org.admin])
    assert caught.value.detail.startswith(
        "The license allows 3 users and 3 already hold a seat, so 1 user more cannot be enabled "
        "(0 seats left)."
    )
    assert _snapshot() == before


def test_enabling_several_is_all_or_nothing(org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=2))
    with pytest.raises(Invalid, match="allows 2 users and 0 already hold a seat, so 3 users"):
        services.enable_users(actor=org.admin, users=[org.alice, org.bob, org.charlie])
    assert not LicensedUser.objects.exists()


def test_the_ticked_set_replaces_the_enabled_users(org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=3))
    services.set_enabled_users(actor=org.admin, users=[org.alice, org.bob])
    change = services.set_enabled_users(actor=org.admin, users=[org.bob, org.charlie])
    assert change == services.SeatChange(enabled=["charlie"], disabled=["alice"])
    assert set(LicensedUser.objects.values_list("user__username", flat=True)) == {"bob", "charlie"}


def test_ticking_more_users_than_allowed_is_refused_with_the_count(
    org: Org, vendor: Vendor
) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=3))
    services.set_enabled_users(actor=org.admin, users=[org.alice])
    before = _snapshot()
    with pytest.raises(Invalid) as caught:
        services.set_enabled_users(
            actor=org.admin, users=[org.alice, org.bob, org.charlie, org.admin]
        )
    assert caught.value.detail.startswith(
        "You selected 4 users, but the license allows 3 users. Untick 1"
    )
    assert _snapshot() == before


def test_no_user_can_be_enabled_before_a_key_is_activated(org: Org, vendor: Vendor) -> None:
    with pytest.raises(Invalid, match="Activate a license key first"):
        services.enable_users(actor=org.admin, users=[org.alice])
    with pytest.raises(Invalid, match="Activate a license key first"):
        services.set_enabled_users(actor=org.admin, users=[org.alice])


def test_deactivated_users_cannot_be_enabled(org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=3))
    gone = UserFactory(username="gone", is_active=False)
    with pytest.raises(Invalid, match="Deactivated users cannot be enabled: gone"):
        services.enable_users(actor=org.admin, users=[gone])


def test_only_administrators_change_seats(org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=3))
    with pytest.raises(Forbidden):
        services.enable_users(actor=org.bob, users=[org.alice])
    with pytest.raises(Forbidden):
        services.set_enabled_users(actor=org.bob, users=[org.alice])
    with pytest.raises(Forbidden):
        services.disable_user(actor=org.bob, user=org.alice)


def test_disabling_frees_the_seat(org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=1))
    services.enable_users(actor=org.admin, users=[org.alice])
    assert services.disable_user(actor=org.admin, user=org.alice) is True
    assert services.disable_user(actor=org.admin, user=org.alice) is False
    services.enable_users(actor=org.admin, users=[org.bob])
    assert services.status(org.bob).active
    assert services.status(org.alice).code == "user_not_licensed"


def test_a_deactivated_user_frees_his_seat(org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=2))
    _enable_in_order(org.admin, [org.alice, org.bob])
    org.bob.is_active = False
    org.bob.save()
    assert services.summary().users_used == 1  # type: ignore[union-attr]
    services.enable_users(actor=org.admin, users=[org.charlie])
    assert services.status(org.charlie).active


def test_a_returning_user_never_pushes_the_seats_over_the_limit(org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=2))
    _enable_in_order(org.admin, [org.alice, org.bob])
    org.bob.is_active = False
    org.bob.save()
    services.enable_users(actor=org.admin, users=[org.charlie])
    org.bob.is_active = True
    org.bob.save()
    # Three ticked, two allowed: the two earliest enabled hold the seats.
    working = [u.username for u in (org.alice, org.bob, org.charlie) if services.status(u).active]
    assert working == ["alice", "bob"]
    refused = services.status(org.charlie)
    assert refused.code == "user_not_licensed"
    assert "More users are enabled than the license allows (2 users)" in refused.reason
    info = services.summary()
    assert info is not None
    assert (info.users_used, info.users_allowed) == (3, 2)
    assert info.over_limit.startswith("3 users are enabled but the license allows 2: only the 2")


def test_deleting_a_user_frees_his_seat(org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(users=1))
    services.enable_users(actor=org.admin, users=[org.alice])
    org.alice.delete()
    services.enable_users(actor=org.admin, users=[org.bob])
    assert services.status(org.bob).active


@pytest.mark.postgres
# serialized_rollback: the flush after a transactional test would drop the built-in modules.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_parallel_enabling_never_exceeds_the_limit(org: Org, vendor: Vendor) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL; SQLite serialises writers anyway")
    services.activate(actor=org.admin, key=vendor.key(users=3))
    people = [UserFactory(username=f"rep{i}") for i in range(10)]
    start = threading.Barrier(len(people))
    outcomes: dict[str, str] = {}

    def enable(user: User) -> None:
        try:
            start.wait()
            services.enable_users(actor=org.admin, users=[user])
            outcomes[user.username] = "enabled"
        except Invalid:
            outcomes[user.username] = "refused"
        finally:
            connections.close_all()

    threads = [threading.Thread(target=enable, args=(u,)) for u in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["enabled"] * 3 + ["refused"] * 7
    assert LicensedUser.objects.count() == 3
    assert sum(services.status(u).active for u in people) == 3


@pytest.mark.postgres
# serialized_rollback: the flush after a transactional test would drop the built-in modules.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_parallel_ticking_by_two_administrators_never_exceeds_the_limit(
    org: Org, vendor: Vendor
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL; SQLite serialises writers anyway")
    services.activate(actor=org.admin, key=vendor.key(users=3))
    people = [UserFactory(username=f"rep{i}") for i in range(12)]
    groups = [people[i : i + 3] for i in range(0, 12, 3)]
    start = threading.Barrier(len(groups) + 1)

    def tick(users: list[User]) -> None:
        try:
            start.wait()
            services.enable_users(actor=org.admin, users=users)
        except Invalid:
            pass
        finally:
            connections.close_all()

    def renew() -> None:
        try:
            start.wait()
            services.activate(actor=org.admin, key=vendor.key(users=4, license_id="renewal"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=tick, args=(g,)) for g in groups]
    threads.append(threading.Thread(target=renew))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert License.objects.get(is_current=True).license_id == "renewal"
    # Each group fits alone, two never do: exactly one group holds seats, renewal or not.
    assert LicensedUser.objects.count() == 3


# --- Expiry ----------------------------------------------------------------------------------


def test_expiry_makes_the_connector_inactive_without_a_restart(
    org: Org, vendor: Vendor, clock: mock.MagicMock
) -> None:
    issued = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    expires = issued + timedelta(days=40)
    services.activate(actor=org.admin, key=vendor.key(issued_at=issued, expires_at=expires))
    services.enable_users(actor=org.admin, users=[org.alice])
    assert services.status(org.alice).active  # the state is now cached
    _set_clock(clock, expires - timedelta(seconds=1))
    assert services.status(org.alice).active
    _set_clock(clock, expires)
    state = services.status(org.alice)
    assert state.code == "license_inactive"
    assert "The license expired on" in state.reason
    assert services.license_status().code == "license_inactive"


def test_the_page_warns_thirty_days_before_expiry(
    org: Org, vendor: Vendor, clock: mock.MagicMock
) -> None:
    issued = datetime.now(UTC).replace(microsecond=0)
    expires = issued + timedelta(days=100)
    services.activate(actor=org.admin, key=vendor.key(issued_at=issued, expires_at=expires))
    _set_clock(clock, expires - timedelta(days=31))
    assert services.summary().warning == ""  # type: ignore[union-attr]
    _set_clock(clock, expires - timedelta(days=30))
    info = services.summary()
    assert info is not None
    assert info.days_left == 30
    assert info.warning.startswith("The license expires in 30 days (on ")
    _set_clock(clock, expires - timedelta(hours=3))
    assert services.summary().warning.startswith("The license expires today")  # type: ignore[union-attr]
    _set_clock(clock, expires + timedelta(hours=3))
    info = services.summary()
    assert info is not None
    assert info.warning == ""
    assert not info.status.active


def test_a_key_without_expiry_never_warns(org: Org, vendor: Vendor) -> None:
    services.activate(actor=org.admin, key=vendor.key(expires_at=None))
    info = services.summary()
    assert info is not None
    assert (info.expires_at, info.days_left, info.warning) == (None, None, "")


# --- Status: each state and its code --------------------------------------------------------


def test_without_any_key_the_license_is_inactive(org: Org, vendor: Vendor) -> None:
    state = services.status(org.alice)
    assert state.code == "license_inactive"
    assert "No license is activated" in state.reason
    assert services.summary() is None


def test_an_enabled_user_is_active_and_others_are_not_licensed(
    org: Org, vendor: Vendor, active: License
) -> None:
    assert services.status(org.alice) == services.LicenseStatus(True, "active", "")
    bob = services.status(org.bob)
    assert bob.code == "user_not_licensed"
    assert not bob.active
    assert "not enabled for the Outlook Mail Connector" in bob.reason


def test_administrators_need_a_seat_too(org: Org, vendor: Vendor, active: License) -> None:
    assert services.status(org.admin).code == "user_not_licensed"


def test_anonymous_and_deactivated_users_are_not_licensed(
    org: Org, vendor: Vendor, active: License
) -> None:
    from django.contrib.auth.models import AnonymousUser

    assert services.status(AnonymousUser()).code == "user_not_licensed"
    assert services.status(None).code == "user_not_licensed"
    org.alice.is_active = False
    org.alice.save()
    state = services.status(org.alice)
    assert (state.code, state.reason) == ("user_not_licensed", "This account is deactivated.")


def test_a_changed_crm_url_deactivates_the_license(
    org: Org, vendor: Vendor, active: License, settings: object
) -> None:
    assert services.status(org.alice).active
    settings.CRM_BASE_URL = "https://crm.moved.example"  # type: ignore[attr-defined]
    state = services.status(org.alice)
    assert state.code == "license_inactive"
    assert "This key is for https://crm.example.com" in state.reason
    assert "https://crm.moved.example" in state.reason


def test_a_changed_vendor_key_deactivates_the_license(
    org: Org, vendor: Vendor, active: License, settings: object
) -> None:
    assert services.status(org.alice).active
    settings.LICENSE_PUBLIC_KEY = Vendor().public_key  # type: ignore[attr-defined]
    state = services.status(org.alice)
    assert state.code == "license_inactive"
    assert "signature does not match" in state.reason
    settings.LICENSE_PUBLIC_KEY = ""  # type: ignore[attr-defined]
    assert "no license vendor key configured" in services.status(org.alice).reason


def test_a_key_edited_in_the_database_deactivates_the_license(
    org: Org, vendor: Vendor, active: License
) -> None:
    forged = vendor.key(users=300).split(".")[0] + "." + active.key.split(".")[1]
    License.objects.filter(pk=active.pk).update(key=forged)
    services.invalidate()
    assert "signature does not match" in services.status(org.alice).reason


def test_seat_counts_come_from_the_signed_key_not_the_columns(
    org: Org, vendor: Vendor, active: License
) -> None:
    License.objects.filter(pk=active.pk).update(users=100)
    services.invalidate()
    UserFactory.create_batch(5)
    for user in User.objects.exclude(pk=org.alice.pk):
        LicensedUser.objects.create(user=user, enabled_at=timezone.now())
    assert sum(services.status(u).active for u in User.objects.all()) == 3


# --- Status is cheap -------------------------------------------------------------------------


def test_status_is_answered_from_the_cache_without_queries(
    org: Org, vendor: Vendor, active: License, django_assert_num_queries: object
) -> None:
    services.status(org.alice)
    with django_assert_num_queries(0):  # type: ignore[operator]
        assert services.status(org.alice).active
        assert services.status(org.bob).code == "user_not_licensed"
        assert services.license_status().active


@pytest.mark.parametrize(
    "change",
    ["enable", "disable", "deactivate", "renew", "settings"],
)
def test_a_change_retires_the_cached_status_at_once(
    org: Org, vendor: Vendor, active: License, change: str, settings: object
) -> None:
    assert services.status(org.alice).active
    assert not services.status(org.bob).active
    if change == "enable":
        services.enable_users(actor=org.admin, users=[org.bob])
        assert services.status(org.bob).active
        return
    if change == "disable":
        services.disable_user(actor=org.admin, user=org.alice)
    elif change == "deactivate":
        alice = User.objects.get(pk=org.alice.pk)
        alice.is_active = False
        alice.save()
    elif change == "renew":
        # Alice was enabled first; a one-user renewal keeps her and drops bob, enabled since.
        services.enable_users(actor=org.admin, users=[org.bob])
        assert services.status(org.bob).active
        services.activate(actor=org.admin, key=vendor.key(users=1, license_id="smaller"))
        assert services.status(org.alice).active
        assert not services.status(org.bob).active
        return
    elif change == "settings":
        settings.CRM_BASE_URL = "https://elsewhere.example"  # type: ignore[attr-defined]
    # org.alice is the object loaded before the change: the state, not the object, decides.
    assert not services.status(org.alice).active


def test_a_login_does_not_retire_the_cached_status(
    org: Org, vendor: Vendor, active: License, django_assert_num_queries: object
) -> None:
    services.status(org.alice)
    org.bob.last_login = timezone.now()
    org.bob.save(update_fields=["last_login"])
    with django_assert_num_queries(0):  # type: ignore[operator]
        services.status(org.alice)


def test_the_page_is_not_found_for_anyone_but_administrators(org: Org) -> None:
    services.require_administrator(org.admin)
    for user in (org.alice, org.bob):
        with pytest.raises(NotFound):
            services.require_administrator(user)
