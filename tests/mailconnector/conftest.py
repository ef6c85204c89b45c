"""The add-in API's test setting: an active license with the personas enabled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from crm.models import User
from licensing import services as licenses
from tests.conftest import Org
from tests.licensing.vendor import Vendor


class Clock:
    """Moves `timezone.now()` forward for the code under test (and for django-axes)."""

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
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def licensed(org: Org, settings: Any) -> Vendor:
    vendor = Vendor()
    settings.LICENSE_PUBLIC_KEY = vendor.public_key
    settings.CRM_BASE_URL = "https://crm.example.com"
    licenses.activate(actor=org.admin, key=vendor.key(users=10))
    licenses.enable_users(actor=org.admin, users=[org.alice, org.bob, org.charlie])
    return vendor


@pytest.fixture
def api(licensed: Vendor) -> Callable[[User | None], APIClient]:
    """An API client acting as a user (authentication itself is tested in test_auth*)."""

    def client(user: User | None) -> APIClient:
        c = APIClient()
        if user is not None:
            c.force_authenticate(user)
        return c

    return client
