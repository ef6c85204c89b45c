"""Page security headers, and the one mapping of service errors to pages."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from crm.exceptions import Forbidden, NotFound

# Pages load only the CRM's own scripts, styles and images. Email HTML is never put in a page
# directly; the message view serves it in a sandboxed frame under its own, stricter policy.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
        response.headers.setdefault(
            "Permissions-Policy", "camera=(), microphone=(), geolocation=()"
        )
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if isinstance(exc, NotFound):
            return render(
                request, "crm/error.html", {"title": "Not found", "detail": exc.detail}, status=404
            )
        if isinstance(exc, Forbidden):
            return render(
                request,
                "crm/error.html",
                {"title": "Not allowed", "detail": exc.detail},
                status=403,
            )
        return None
