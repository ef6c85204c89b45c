"""Personas and shared fixtures.

The organisation: CEO > Sales manager (bob) > Sales rep (alice); CEO > Support manager >
Support agent (charlie, "another branch"); admin is a superuser. The "Standard" profile allows
every action on every module; each test narrows what it needs.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from django.core.cache import cache
from django.utils import timezone

from crm.models import Profile, Role, User
from tests.factories import ProfileFactory, RoleFactory, UserFactory, grant_all


@dataclass
class Org:
    ceo: Role
    sales_manager: Role
    sales_rep: Role
    support_manager: Role
    support_agent: Role
    standard: Profile
    alice: User
    bob: User
    charlie: User
    admin: User


class Clock:
    """Moves `timezone.now()` forward for the code under test (and for django-axes): expiry,
    backoff and throttling windows without sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self._real = timezone.now

    def now(self) -> datetime:
        return self._real() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock()
    with (
        mock.patch("django.utils.timezone.now", side_effect=c.now),
        mock.patch("axes.handlers.proxy.now", side_effect=c.now),
    ):
        yield c


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()


@pytest.fixture(autouse=True)
def _plain_static_files(settings: Any) -> None:
    # Production serves hashed names from collectstatic's manifest; tests run without one.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def org(db: None) -> Org:
    standard = ProfileFactory(name="Standard")
    grant_all(standard)
    ceo = RoleFactory(name="CEO")
    sales_manager = RoleFactory(name="Sales manager", parent=ceo)
    sales_rep = RoleFactory(name="Sales rep", parent=sales_manager)
    support_manager = RoleFactory(name="Support manager", parent=ceo)
    support_agent = RoleFactory(name="Support agent", parent=support_manager)
    for role in (ceo, sales_manager, sales_rep, support_manager, support_agent):
        role.profiles.add(standard)
    return Org(
        ceo=ceo,
        sales_manager=sales_manager,
        sales_rep=sales_rep,
        support_manager=support_manager,
        support_agent=support_agent,
        standard=standard,
        alice=UserFactory(username="alice", role=sales_rep),
        bob=UserFactory(username="bob", role=sales_manager),
        charlie=UserFactory(username="charlie", role=support_agent),
        admin=UserFactory(username="admin", is_superuser=True, is_staff=True),
    )


SERVICE_MARKERS = {"e2e", "imap", "smtp", "celery"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None]:
    """In CI a test that needs a real service may not be skipped: that would hide a gap."""
    outcome = yield
    report = outcome.get_result()
    markers = {m.name for m in item.iter_markers()} & SERVICE_MARKERS
    if report.skipped and markers and os.environ.get("CI"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI although marked {sorted(markers)}: {report.longrepr}"
