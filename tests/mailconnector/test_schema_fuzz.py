"""schemathesis against the add-in API's own OpenAPI schema: no 5xx, no answer outside it.

The schema is loaded from the running app (`/api/addin/v1/schema/` through Django's WSGI
handler) and every operation gets a bounded, derandomized set of generated requests (valid
and invalid), sent once with a real bearer token of a licensed user and once anonymously.
Each answer must not be a server error, and its status code, content type and body must be
ones the schema documents for that operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crm.models import User
from mailconnector import auth
from tests.conftest import Org
from tests.factories import make_record
from tests.licensing.vendor import Vendor

pytestmark = pytest.mark.django_db

SCHEMA = schemathesis.openapi.from_wsgi("/api/addin/v1/schema/", get_wsgi_application())
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
BOUNDED = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture(autouse=True)
def _keep_the_test_transaction() -> Iterator[None]:
    """The WSGI handler closes "old" connections around each request, and inside the test's
    transaction the connection looks old: keep it open, as Django's own test client does."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def fast_hashing(settings: Any) -> None:
    # Every generated login hashes its password once; the default PBKDF2 cost would make the
    # run slow without testing anything more.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        *settings.PASSWORD_HASHERS,
    ]


@pytest.fixture
def alice(org: Org, licensed: Vendor, fast_hashing: None) -> User:
    """A licensed user with a few records, so that search and suggestions find something."""
    company = make_record("Companies", org.alice, name="Example Ltd", email="info@example.com")
    make_record(
        "Contacts", org.alice, last_name="Doe", email="jane@example.com", company=company.pk
    )
    return org.alice


@SCHEMA.parametrize()
@BOUNDED
def test_every_operation_answers_within_its_schema_for_a_logged_in_user(
    case: schemathesis.Case, alice: User
) -> None:
    # A fresh session per request: logout and "end a session" must not starve the rest.
    token = auth.issue_tokens(user=alice, client="schemathesis", ip="127.0.0.1")["access_token"]
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


@SCHEMA.parametrize()
@BOUNDED
def test_every_operation_answers_within_its_schema_for_an_anonymous_caller(
    case: schemathesis.Case, org: Org, licensed: Vendor, fast_hashing: None
) -> None:
    case.call_and_validate(checks=CHECKS)
