"""What DRF permission classes check: login, license, add-in version. Nothing about records."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from mailconnector.api.errors import ApiError
from mailconnector.versions import older_than


class AddinVersion(BasePermission):
    """An add-in older than the CRM supports gets 426 with the minimum (and nothing else)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        version = request.headers.get("X-Addin-Version")
        if version and older_than(version, settings.ADDIN_MIN_VERSION):
            raise ApiError(
                426,
                "addin_outdated",
                f"This add-in ({version}) is older than the CRM supports "
                f"({settings.ADDIN_MIN_VERSION}); update it.",
                min_addin_version=settings.ADDIN_MIN_VERSION,
            )
        return True


class Licensed(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        from licensing.services import status

        state = status(request.user)
        if not state.active:
            raise ApiError(403, state.code, state.reason)
        return True


class LoggedIn(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            raise ApiError(401, "not_authenticated", "Log in first.")
        return True


class ConnectorUser(BasePermission):
    """The default for every endpoint but `meta` and the login calls."""

    checks = (AddinVersion(), LoggedIn(), Licensed())

    def has_permission(self, request: Request, view: Any) -> bool:
        return all(check.has_permission(request, view) for check in self.checks)
