"""Every error the add-in sees is application/problem+json (RFC 9457) with a stable `code`.

`{type, title, status, detail, code}`, plus `fields` for validation errors and the cap for
`email_too_large`. No HTML error page ever reaches the add-in: the project's 404/500 handlers
answer this way under /api/ too.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from crm import exceptions as crm

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://docs.crm-mail-connector.invalid/problems/"

TITLES = {
    "invalid_credentials": "Wrong username or password",
    "mfa_required": "A second factor is required",
    "mfa_invalid": "Wrong or expired code",
    "sso_invalid": "The single sign-on code is not valid",
    "not_authenticated": "Not logged in",
    "token_invalid": "Unknown token",
    "token_expired": "The access token expired",
    "session_expired": "The session ended",
    "forbidden": "Not allowed",
    "not_found": "Not found",
    "record_not_editable": "The record is read-only for you",
    "email_too_large": "The email is too large",
    "validation_error": "Invalid input",
    "rate_limited": "Too many attempts",
    "locked_out": "Too many failed logins",
    "addin_outdated": "The add-in must be updated",
    "unsupported_media_type": "Unsupported media type",
    "idempotency_conflict": "Idempotency-Key does not match the email",
    "email_conflict": "A different email with this identity is already stored",
    "license_inactive": "The connector's license is not active",
    "user_not_licensed": "You are not enabled for the connector",
    "method_not_allowed": "Method not allowed",
    "conflict": "Conflict",
    "server_error": "Something went wrong on the CRM",
}


class ApiError(drf.APIException):
    """An error with a problem code; `extra` members are added to the problem document."""

    def __init__(self, status: int, code: str, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or TITLES.get(code, code), code)
        self.status_code = status
        self.problem_code = code
        self.extra = extra
        self.headers: dict[str, str] = {}


def problem(status: int, code: str, detail: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "type": TYPE_BASE + code,
        "title": TITLES.get(code, code.replace("_", " ").capitalize()),
        "status": status,
        "detail": detail or TITLES.get(code, ""),
        "code": code,
        **extra,
    }


def problem_response(status: int, code: str, detail: str = "", **extra: Any) -> JsonResponse:
    return JsonResponse(
        problem(status, code, detail, **extra), status=status, content_type=CONTENT_TYPE
    )


def problem_handler(exc: Exception, context: dict[str, Any]) -> Response:
    status, code, detail, extra, headers = _describe(exc)
    if status >= 500:
        log.exception("add-in API error", exc_info=exc)
    response = Response(problem(status, code, detail, **extra), status=status, headers=headers)
    response.content_type = CONTENT_TYPE
    return response


def _describe(exc: Exception) -> tuple[int, str, str, dict[str, Any], dict[str, str]]:
    if isinstance(exc, ApiError):
        return exc.status_code, exc.problem_code, str(exc.detail), exc.extra, exc.headers
    if isinstance(exc, crm.ServiceError):
        return _service_error(exc)
    if isinstance(exc, drf.APIException):
        return _drf_error(exc)
    return 500, "server_error", "The CRM could not answer; the error was logged.", {}, {}


def _service_error(exc: crm.ServiceError) -> tuple[int, str, str, dict[str, Any], dict[str, str]]:
    if isinstance(exc, crm.NotFound):
        return 404, "not_found", exc.detail, {}, {}
    if isinstance(exc, crm.Forbidden):
        code = "record_not_editable" if exc.code == "record_not_editable" else "forbidden"
        return 403, code, exc.detail, {}, {}
    if isinstance(exc, crm.Invalid):
        return 400, "validation_error", exc.detail, {"fields": exc.fields}, {}
    if isinstance(exc, crm.Conflict):
        return 409, exc.code, exc.detail, {}, {}
    return 400, exc.code, exc.detail, {}, {}


def _drf_error(exc: drf.APIException) -> tuple[int, str, str, dict[str, Any], dict[str, str]]:
    status = exc.status_code
    headers: dict[str, str] = {}
    if isinstance(exc, drf.ValidationError):
        return (
            400,
            "validation_error",
            "Some fields are invalid.",
            {"fields": _fields(exc.detail)},
            {},
        )
    if isinstance(exc, drf.Throttled):
        wait = int(exc.wait or 1)
        headers["Retry-After"] = str(wait)
        return 429, "rate_limited", f"Try again in {wait} seconds.", {"retry_after": wait}, headers
    codes = {
        drf.NotAuthenticated: "not_authenticated",
        drf.AuthenticationFailed: "token_invalid",
        drf.PermissionDenied: "forbidden",
        drf.NotFound: "not_found",
        drf.MethodNotAllowed: "method_not_allowed",
        drf.UnsupportedMediaType: "unsupported_media_type",
        drf.ParseError: "validation_error",
    }
    code = next((c for kind, c in codes.items() if isinstance(exc, kind)), "server_error")
    auth_code = getattr(exc, "auth_code", None)  # token_expired / session_expired
    if auth_code:
        code = auth_code
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="crm"'
    return status, code, str(exc.detail), {}, headers


def _fields(detail: Any) -> dict[str, str]:
    if isinstance(detail, dict):
        return {
            k: " ".join(str(m) for m in (v if isinstance(v, list) else [v]))
            for k, v in detail.items()
        }
    return {"non_field_errors": " ".join(str(m) for m in detail)}


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> Any:
    """The project's 404 handler: problem+json under /api/, the CRM's page elsewhere."""
    if request.path.startswith("/api/"):
        return problem_response(404, "not_found", "No such API endpoint.")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)  # type: ignore[arg-type]


def server_error_view(request: HttpRequest) -> Any:
    if request.path.startswith("/api/"):
        return problem_response(500, "server_error", "The CRM could not answer; it was logged.")
    from django.views.defaults import server_error

    return server_error(request)
