from __future__ import annotations

from typing import Any

import pytest

from tests.licensing.vendor import CRM_URL, Vendor


@pytest.fixture
def vendor(settings: Any) -> Vendor:
    """A vendor whose public key this CRM trusts, and the CRM's address its keys are for."""
    v = Vendor()
    settings.LICENSE_PUBLIC_KEY = v.public_key
    settings.CRM_BASE_URL = CRM_URL
    return v
