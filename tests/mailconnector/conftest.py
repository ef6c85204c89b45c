"""The add-in API's test setting: an active license with the personas enabled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from crm.models import User
from licensing import services as licenses
from tests.conftest import Org
from tests.licensing.vendor import Vendor


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
