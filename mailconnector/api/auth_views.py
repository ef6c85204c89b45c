"""The add-in's login and session endpoints: parse, call one function of `mailconnector.auth`.

Login, TOTP and refresh take no bearer token and are open to any add-in version check
passes; logout and the session list need a token but no license, so that a user can always
end his sessions. Token answers are never cached (RFC 6749 section 5.1).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailconnector import auth
from mailconnector.api import auth_serializers as s
from mailconnector.api.errors import CONTENT_TYPE, ApiError, problem
from mailconnector.api.permissions import AddinVersion, LoggedIn
from mailconnector.api.serializers import ProblemOutput
from mailconnector.models import AddinSession

TAG = "auth"


def _problems(*pairs: tuple[int, str]) -> dict[Any, OpenApiResponse]:
    """OpenAPI responses for the problem documents an endpoint may answer, with examples."""
    by_status: dict[int, list[str]] = {}
    for status, code in (*pairs, (426, "addin_outdated")):
        by_status.setdefault(status, []).append(code)
    return {
        (status, CONTENT_TYPE): OpenApiResponse(
            ProblemOutput,
            description="application/problem+json; code: " + ", ".join(codes),
            examples=[
                OpenApiExample(
                    code, value=problem(status, code), status_codes=[status], response_only=True
                )
                for code in codes
            ],
        )
        for status, codes in by_status.items()
    }


_BAD_INPUT = (400, "validation_error")
# What any request body can be refused with: a body over the upload cap (UploadLimitMiddleware
# answers every POST under /api/addin/ from its Content-Length), or one no parser reads.
_BAD_BODY = [(413, "email_too_large"), (415, "unsupported_media_type")]
_NOT_LOGGED_IN = [
    (401, "not_authenticated"),
    (401, "token_invalid"),
    (401, "token_expired"),
    (401, "session_expired"),
]


def _valid(serializer: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    parsed = serializer(data=data)
    parsed.is_valid(raise_exception=True)
    return dict(parsed.validated_data)


def _secret(answer: dict[str, Any]) -> Response:
    response = Response(answer)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


class SessionLoginApi(APIView):
    """Log in with username and password: tokens, or `mfa_required` when TOTP is on."""

    authentication_classes: list[Any] = []
    permission_classes = [AddinVersion]

    @extend_schema(
        tags=[TAG],
        auth=[],
        request=s.SessionLoginInput,
        responses={
            200: s.SessionLoginOutput,
            **_problems(
                _BAD_INPUT, *_BAD_BODY, (401, "invalid_credentials"), (429, "rate_limited")
            ),
        },
        description=(
            "An unknown user and a wrong password answer alike. Failed logins count per "
            "username and address: past the limit, 429 with Retry-After, whatever the password."
        ),
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.SessionLoginInput, request.data)
        return _secret(
            auth.login(username=data["username"], password=data["password"], request=request)
        )


class SessionMfaApi(APIView):
    """Finish a login with the code of the user's authenticator app."""

    authentication_classes: list[Any] = []
    permission_classes = [AddinVersion]

    @extend_schema(
        tags=[TAG],
        auth=[],
        request=s.SessionMfaInput,
        responses={
            200: s.SessionTokensOutput,
            **_problems(_BAD_INPUT, *_BAD_BODY, (401, "mfa_invalid"), (429, "rate_limited")),
        },
        description=(
            "A code works once. A wrong code answers `mfa_invalid` with `attempts_left`; at 0 "
            "(too many wrong codes, or the mfa_token expired) log in with the password again."
        ),
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.SessionMfaInput, request.data)
        return _secret(
            auth.verify_mfa(mfa_token=data["mfa_token"], code=data["code"], request=request)
        )


class SessionRefreshApi(APIView):
    """Trade the refresh token for a new pair; the old refresh token is spent."""

    authentication_classes: list[Any] = []
    permission_classes = [AddinVersion]

    @extend_schema(
        tags=[TAG],
        auth=[],
        request=s.SessionRefreshInput,
        responses={
            200: s.SessionTokensOutput,
            **_problems(_BAD_INPUT, *_BAD_BODY, (401, "token_invalid"), (401, "session_expired")),
        },
        description=(
            "Sending a refresh token a second time ends its whole session (`session_expired`): "
            "it means someone else holds a copy."
        ),
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.SessionRefreshInput, request.data)
        return _secret(auth.refresh(refresh_token=data["refresh_token"], request=request))


class SessionLogoutApi(APIView):
    """End this session: with its access token, or (expired) with its refresh token."""

    permission_classes = [AddinVersion]

    @extend_schema(
        tags=[TAG],
        request=s.SessionLogoutInput,
        responses={204: None, **_problems(_BAD_INPUT, *_BAD_BODY, *_NOT_LOGGED_IN)},
    )
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, AddinSession):
            auth.logout(session=request.auth)
            return Response(status=204)
        data = _valid(s.SessionLogoutInput, request.data)
        if not data.get("refresh_token"):
            raise ApiError(401, "not_authenticated", "Send the access token or a refresh token.")
        auth.logout_with_refresh_token(refresh_token=data["refresh_token"])
        return Response(status=204)


class SessionListApi(APIView):
    """The user's add-in sessions that still work."""

    permission_classes = [AddinVersion, LoggedIn]

    @extend_schema(
        tags=[TAG],
        responses={200: s.SessionOutput(many=True), **_problems(*_NOT_LOGGED_IN)},
    )
    def get(self, request: Request) -> Response:
        current = request.auth.pk if isinstance(request.auth, AddinSession) else None
        sessions = auth.user_sessions(request.user)
        return Response(
            s.SessionOutput(sessions, many=True, context={"current_session_id": current}).data
        )


class SessionEndApi(APIView):
    """End one of the user's sessions (another device, or this one)."""

    permission_classes = [AddinVersion, LoggedIn]

    @extend_schema(
        tags=[TAG],
        responses={204: None, **_problems(*_NOT_LOGGED_IN, (404, "not_found"))},
    )
    def delete(self, request: Request, session_id: int) -> Response:
        auth.end_session(user=request.user, session_id=session_id)  # type: ignore[arg-type]
        return Response(status=204)
