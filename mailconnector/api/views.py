"""The add-in API's data endpoints: parse, call one selector or service, render."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crm.version import CRM_VERSION
from mailconnector import meta, selectors, services
from mailconnector.api import serializers as s
from mailconnector.api.errors import CONTENT_TYPE as PROBLEM_CONTENT_TYPE
from mailconnector.api.errors import ApiError

PROBLEMS = {
    code: OpenApiResponse(s.ProblemOutput, description=text)
    for code, text in {
        400: "validation_error",
        401: "not_authenticated, token_invalid, token_expired, session_expired",
        403: "forbidden, record_not_editable, license_inactive, user_not_licensed",
        404: "not_found",
        409: "idempotency_conflict",
        413: "email_too_large",
        415: "unsupported_media_type",
        426: "addin_outdated",
        429: "rate_limited",
    }.items()
}


def _problems(*codes: int) -> dict[Any, OpenApiResponse]:
    """Problem documents, under the media type they are sent with (RFC 9457)."""
    return {(c, PROBLEM_CONTENT_TYPE): PROBLEMS[c] for c in (401, 403, 426, *codes)}


class MetaApi(APIView):
    """What the add-in asks first: versions, login methods, limits, session policy."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: s.MetaOutput}, auth=[])
    def get(self, request: Request) -> Response:
        return Response(s.MetaOutput(meta.describe(CRM_VERSION)).data)


class ModuleListApi(APIView):
    @extend_schema(responses={200: s.ModuleOutput(many=True), **_problems()})
    def get(self, request: Request) -> Response:
        return Response(s.ModuleOutput(selectors.modules_for(request.user), many=True).data)


class SuggestionListApi(APIView):
    @extend_schema(
        request=s.SuggestionsInput, responses={200: s.SuggestionsOutput, **_problems(400, 413, 415)}
    )
    def post(self, request: Request) -> Response:
        data = s.plain_suggestions_input(request.data) or _valid(s.SuggestionsInput, request.data)
        found = selectors.suggestions(
            request.user,
            [(a["email"], a["role"]) for a in data["addresses"]],
            ignore=[data.get("mailbox_owner") or ""],
            message_id=data.get("message_id") or None,
        )
        return Response({"results": s.suggestions_data(found, request)})


class RecordSearchApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("q", str), OpenApiParameter("cursor", str)],
        responses={200: s.RecordPageOutput, **_problems(400, 404)},
    )
    def get(self, request: Request, name: str) -> Response:
        module = selectors.linkable_module(request.user, name)
        page = selectors.search(
            request.user,
            module,
            request.query_params.get("q", ""),
            cursor=request.query_params.get("cursor"),
        )
        results = s.RecordOutput(page.records, many=True, context={"request": request}).data
        return Response({"results": results, "next_cursor": page.next_cursor})


class EmailLookupApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("message_id", str, required=True)],
        responses={200: s.LookupOutput, **_problems(400)},
    )
    def get(self, request: Request) -> Response:
        message_id = request.query_params.get("message_id", "")
        records = selectors.lookup(request.user, message_id)
        output = s.RecordOutput(records, many=True, context={"request": request}).data
        return Response({"message_id": message_id, "records": output})


class EmailLinkApi(APIView):
    """Store the email once (whole, or a partial capture) and link it to records."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": s.EmailLinkInput},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="The email's Message-ID",
            )
        ],
        responses={
            201: s.EmailLinkOutput,
            200: s.EmailLinkOutput,
            **_problems(400, 404, 409, 413, 415),
        },
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.EmailLinkInput, request.data)
        targets = [services.LinkTarget(t["module"], t["id"]) for t in data["links"]]
        key = request.headers.get("Idempotency-Key")
        if "eml" in data:
            result = services.link_email(
                actor=request.user,
                raw=_read_capped(data["eml"]),
                targets=targets,
                idempotency_key=key,
                client=request.headers.get("X-Addin-Version", ""),
            )
        else:
            result = services.link_capture(
                actor=request.user, capture=_capture(data), targets=targets, idempotency_key=key
            )
        output = s.email_link_data(result, request)
        return Response(output, status=201 if result.created else 200)


class EmailUnlinkApi(APIView):
    @extend_schema(responses={204: None, **_problems(404)})
    def delete(self, request: Request, message: int, module: str, record: int) -> Response:
        services.unlink_email(
            actor=request.user, message_id=message, module=module, record_id=record
        )
        return Response(status=204)


def _valid(serializer_class: type[Any], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data  # type: ignore[no-any-return]


def _read_capped(upload: Any) -> bytes:
    cap = settings.ADDIN_MAX_EMAIL_BYTES
    if upload.size > cap:
        raise ApiError(
            413, "email_too_large", f"The CRM accepts emails up to {cap} bytes.", max_bytes=cap
        )
    return upload.read()  # type: ignore[no-any-return]


def _capture(data: dict[str, Any]) -> services.Capture:
    files = [(f.name, f.content_type, _read_capped(f)) for f in data.get("attachments", [])]
    return services.Capture(
        subject=data.get("subject", ""),
        message_id=data["message_id"],
        sender=data["sender"],
        to=data.get("to", []),
        cc=data.get("cc", []),
        date=data.get("date"),
        text_body=data.get("text_body", ""),
        html_body=data.get("html_body", ""),
        attachments=files,
        attachments_pending=data.get("attachments_pending", []),
    )
