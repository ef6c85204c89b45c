"""Single sign-on in the Office dialog: `authorize` and `callback` are pages, `token` is JSON.

The work is in `mailconnector.sso`; these views parse, call it, and render. Every answer,
errors included, carries `Cross-Origin-Opener-Policy: unsafe-none`: in Office on the web and
the new Outlook, a dialog page with `same-origin` cuts the task pane off from its messages
(error 12006). Answers are never cached and send no Referer (codes travel in these URLs).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import render
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer, TemplateHTMLRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailconnector import sso
from mailconnector.api.auth_serializers import SessionTokensOutput
from mailconnector.api.errors import CONTENT_TYPE as PROBLEM
from mailconnector.api.permissions import AddinVersion
from mailconnector.api.serializers import ProblemOutput

# The dialog's last page loads office.js (and what it loads) from Microsoft's CDN; nothing else
# from outside, no inline script, no framing.
DONE_PAGE_POLICY = (
    "default-src 'self'; "
    "script-src 'self' https://appsforoffice.microsoft.com https://ajax.aspnetcdn.com; "
    "style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
COOKIE_PATH = "/api/addin/v1/auth/sso/"
PAGE_TITLES = {
    "sso_invalid": "Sign-in failed",
    "sso_unknown_provider": "Unknown sign-in provider",
    "sso_denied": "Sign-in cancelled",
    "sso_unknown_user": "No CRM account",
    "sso_inactive_user": "Account deactivated",
    "sso_unavailable": "Sign-in provider unavailable",
}


class _PageNegotiation(BaseContentNegotiation):
    """The dialog's pages are HTML whatever the Accept header asks."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type or "text/html"


class _SsoApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    def finalize_response(
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        response = super().finalize_response(request, response, *args, **kwargs)
        response.headers["Cross-Origin-Opener-Policy"] = "unsafe-none"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


class _SsoPageApi(_SsoApi):
    renderer_classes = [TemplateHTMLRenderer]
    content_negotiation_class = _PageNegotiation
    metadata_class = None  # no OPTIONS self-description for pages: 405

    def handle_exception(self, exc: Exception) -> Response:
        # What DRF itself refuses (a POST, say) is answered as problem+json like the rest of
        # the API; only the dialog's own outcomes are pages.
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


PAGE = OpenApiResponse(
    OpenApiTypes.STR,
    description=(
        'The dialog\'s last page (HTML). It hands `{type: "crm-sso", status, state, code | '
        "error, detail}` to the task pane with `Office.context.ui.messageParent` (a JSON "
        "string), and says so to a user outside Office."
    ),
)


def _page_error(text: str) -> OpenApiResponse:
    return OpenApiResponse(OpenApiTypes.STR, description=f"HTML page and message: {text}")


class SsoAuthorizeApi(_SsoPageApi):
    """Where the add-in opens the Office dialog to sign in with an identity provider."""

    @extend_schema(
        summary="Start single sign-on (opened in the Office dialog)",
        description=(
            "Opens a sign-in attempt (10 minutes, single use) and redirects to the identity "
            "provider (OpenID Connect, authorization code with PKCE). The provider comes back "
            "to `auth/sso/callback`, whose page hands a one-time code to the task pane; trade "
            "it at `auth/sso/token` with the `code_verifier` behind `code_challenge`."
        ),
        parameters=[
            OpenApiParameter("provider", str, required=True, description="An id from `meta`."),
            OpenApiParameter(
                "code_challenge",
                str,
                required=True,
                description="BASE64URL(SHA-256(code_verifier)), 43 characters (RFC 7636).",
            ),
            OpenApiParameter("code_challenge_method", str, required=True, enum=["S256"]),
            OpenApiParameter(
                "state",
                str,
                required=True,
                description="The add-in's own value (1-512 visible ASCII), returned with the code.",
            ),
            OpenApiParameter(
                "origin",
                str,
                description=(
                    "The task pane's origin when it is not the CRM's (one of the allowed add-in "
                    "origins): used as messageParent's targetOrigin."
                ),
            ),
            OpenApiParameter("login_hint", str, description="Passed on to the provider."),
        ],
        responses={
            302: OpenApiResponse(description="To the provider's authorization endpoint."),
            400: _page_error("sso_invalid, sso_unknown_provider"),
            502: _page_error("sso_unavailable (the provider's discovery document failed)"),
        },
        auth=[],
    )
    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        try:
            redirect = sso.start(
                provider_id=q.get("provider", ""),
                code_challenge=q.get("code_challenge", ""),
                code_challenge_method=q.get("code_challenge_method", ""),
                state=q.get("state", ""),
                origin=q.get("origin", ""),
                login_hint=q.get("login_hint", ""),
            )
        except sso.SsoRefused as refused:
            return _refusal_page(request, refused)
        response = HttpResponseRedirect(redirect.url)
        response.set_cookie(
            sso.BROWSER_COOKIE,
            redirect.browser_key,
            max_age=int(sso.ATTEMPT_LIFETIME.total_seconds()),
            path=COOKIE_PATH,
            secure=settings.SECURE,
            httponly=True,
            # Lax: sent on the provider's top-level redirect back to the callback.
            samesite="Lax",
        )
        return response


class SsoCallbackApi(_SsoPageApi):
    """The redirect URI registered at the identity provider (not called by the add-in)."""

    @extend_schema(
        summary="Single sign-on callback (the provider's redirect URI)",
        description=(
            "Exchanges the provider's code server-side, verifies the ID token, finds the active "
            "CRM user (never creates one) and renders the add-in's last dialog page with a "
            "one-time code valid for 2 minutes."
        ),
        parameters=[
            OpenApiParameter("code", str),
            OpenApiParameter("state", str, required=True),
            OpenApiParameter("error", str, description="RFC 6749 section 4.1.2.1."),
            OpenApiParameter("error_description", str),
        ],
        responses={
            200: PAGE,
            400: _page_error("sso_invalid (unknown state, other browser, bad ID token)"),
            403: _page_error("sso_denied, sso_unknown_user, sso_inactive_user"),
            502: _page_error("sso_unavailable"),
        },
        auth=[],
    )
    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        try:
            done = sso.finish(
                state=q.get("state", ""),
                code=q.get("code", ""),
                error=q.get("error", ""),
                error_description=q.get("error_description", ""),
                browser_key=request.COOKIES.get(sso.BROWSER_COOKIE, ""),
            )
        except sso.SsoRefused as refused:
            response = _refusal_page(request, refused)
        else:
            response = _page(
                request,
                status=200,
                title="Signed in",
                detail=f"You are signed in to the CRM as {done.user}.",
                message={
                    "type": "crm-sso",
                    "status": "ok",
                    "code": done.code,
                    "state": done.addin_state,
                    "provider": done.provider.id,
                    "expires_in": int(sso.CODE_LIFETIME.total_seconds()),
                },
                origin=done.origin,
            )
        response.delete_cookie(sso.BROWSER_COOKIE, path=COOKIE_PATH, samesite="Lax")
        return response


def _refusal_page(request: Request, refused: sso.SsoRefused) -> HttpResponse:
    return _page(
        request,
        status=refused.status,
        title=PAGE_TITLES.get(refused.code, "Sign-in failed"),
        detail=refused.detail,
        message={
            "type": "crm-sso",
            "status": "error",
            "error": refused.code,
            "detail": refused.detail,
            "state": refused.addin_state,
        },
        origin=refused.origin,
    )


def _page(
    request: Request,
    *,
    status: int,
    title: str,
    detail: str,
    message: dict[str, Any],
    origin: str | None,
) -> HttpResponse:
    context = {
        "title": title,
        "detail": detail,
        "ok": message["status"] == "ok",
        "result": {"message": message, "target_origin": origin},
    }
    response = render(request._request, "mailconnector/sso_done.html", context, status=status)
    response.headers["Content-Security-Policy"] = DONE_PAGE_POLICY
    return response


class SsoTokenInput(serializers.Serializer):
    code = serializers.CharField(max_length=128, help_text="The code the dialog's page sent.")
    code_verifier = serializers.RegexField(
        sso.VERIFIER_PATTERN,
        help_text="The verifier behind `code_challenge` (RFC 7636: 43-128 unreserved characters).",
        error_messages={"invalid": "A code_verifier is 43-128 of A-Z a-z 0-9 - . _ ~."},
    )


class SsoTokenApi(_SsoApi):
    """The add-in trades the dialog's one-time code, with its PKCE verifier, for tokens."""

    permission_classes = [AddinVersion]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    @extend_schema(
        summary="Finish single sign-on",
        description=(
            "The code works once, for 2 minutes, and only with the `code_verifier` whose S256 "
            "challenge opened the dialog. Failed attempts count towards the login lockout "
            "(django-axes, by client IP)."
        ),
        request=SsoTokenInput,
        responses={
            200: OpenApiResponse(SessionTokensOutput, description="Tokens, as auth/login."),
            (400, PROBLEM): OpenApiResponse(
                ProblemOutput,
                description="validation_error; sso_invalid (unknown, used, expired, wrong "
                "verifier)",
            ),
            (413, PROBLEM): OpenApiResponse(ProblemOutput, description="email_too_large"),
            (415, PROBLEM): OpenApiResponse(ProblemOutput, description="unsupported_media_type"),
            (426, PROBLEM): OpenApiResponse(ProblemOutput, description="addin_outdated"),
            (429, PROBLEM): OpenApiResponse(
                ProblemOutput, description="rate_limited (Retry-After)"
            ),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = SsoTokenInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(sso.redeem(request=request, **serializer.validated_data))
