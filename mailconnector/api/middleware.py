"""Refuse an oversized upload from its Content-Length, before a byte of the body is read."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from mailconnector.api.errors import problem_response

# Room for the multipart framing and the form fields around the email itself.
MULTIPART_SLACK = 256 * 1024


class UploadLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path.startswith("/api/addin/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            cap = settings.ADDIN_MAX_EMAIL_BYTES
            if length > cap + MULTIPART_SLACK:
                return too_large(cap)
        return self.get_response(request)


def too_large(cap: int) -> HttpResponse:
    response = problem_response(
        413, "email_too_large", f"The CRM accepts emails up to {cap} bytes.", max_bytes=cap
    )
    response["Connection"] = "close"
    return response
