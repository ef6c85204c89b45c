"""Shapes of the add-in API: `<Entity><Action>Input` parses, `<Entity><Action>Output` renders."""

from __future__ import annotations

import functools
import json
from typing import Any

from django.urls import get_script_prefix, reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crm.models import Module, Record


class ProblemOutput(serializers.Serializer):
    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField()
    fields = serializers.DictField(child=serializers.CharField(), required=False)


class MetaOutput(serializers.Serializer):
    product = serializers.CharField()
    crm_version = serializers.CharField()
    api_versions = serializers.ListField(child=serializers.CharField())
    min_addin_version = serializers.CharField()
    login_methods = serializers.DictField()
    limits = serializers.DictField()
    session_policy = serializers.DictField()
    license = serializers.DictField()


class ModuleOutput(serializers.ModelSerializer):
    class Meta:
        model = Module
        fields = ["name", "singular", "plural", "icon", "is_custom"]


class RecordOutput(serializers.Serializer):
    module = serializers.CharField(source="module.name")
    id = serializers.IntegerField(source="pk")
    number = serializers.CharField()
    label = serializers.CharField()
    url = serializers.SerializerMethodField()

    def get_url(self, record: Record) -> str:
        path = reverse("crm:record_detail", args=[record.module.name, record.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class RecordPageOutput(serializers.Serializer):
    results = RecordOutput(many=True)
    next_cursor = serializers.CharField(allow_null=True)


ROLES = ("from", "sender", "reply_to", "to", "cc")
MAX_ADDRESSES = 200
_LIMITS = {"email": 320, "mailbox_owner": 320, "message_id": 998}


class AddressInput(serializers.Serializer):
    email = serializers.CharField(max_length=_LIMITS["email"])
    role = serializers.ChoiceField(choices=ROLES)


class SuggestionsInput(serializers.Serializer):
    addresses = AddressInput(many=True, allow_empty=True, max_length=MAX_ADDRESSES)
    mailbox_owner = serializers.CharField(
        max_length=_LIMITS["mailbox_owner"], required=False, allow_blank=True
    )
    message_id = serializers.CharField(
        max_length=_LIMITS["message_id"], required=False, allow_blank=True
    )


def plain_suggestions_input(data: Any) -> dict[str, Any] | None:
    """`SuggestionsInput(data=data).validated_data` for input that is plainly valid, else None,
    and the serializer answers (with its errors).

    The add-in asks for suggestions at every email opened, and instantiating the serializer
    (its fields deep-copied, and an address serializer's per address) cost more than the rest
    of reading the request. Plainly valid: JSON strings only, ASCII (no lone surrogates) without
    NUL, within their lengths once stripped, a known role, at most 200 addresses.
    """
    if type(data) is not dict or type(data.get("addresses")) is not list:
        return None
    if len(data["addresses"]) > MAX_ADDRESSES:
        return None
    addresses = []
    for item in data["addresses"]:
        if type(item) is not dict or type(item.get("role")) is not str:
            return None
        if item["role"] not in ROLES:
            return None
        email = _plain_text(item.get("email"), _LIMITS["email"])
        if not email:
            return None
        addresses.append({"email": email, "role": item["role"]})
    plain: dict[str, Any] = {"addresses": addresses}
    for name in ("mailbox_owner", "message_id"):
        if name in data:
            if (value := _plain_text(data[name], _LIMITS[name])) is None:
                return None
            plain[name] = value
    return plain


def _plain_text(value: Any, limit: int) -> str | None:
    """What a CharField (trimmed, `max_length=limit`) makes of a plain string, else None."""
    if type(value) is not str or not value.isascii() or "\x00" in value:
        return None
    text = value.strip()
    return text if len(text) <= limit else None


class _AboutRecord(serializers.Serializer):
    """A record as the `record` member of something said about it."""

    module = serializers.CharField(source="record.module.name")
    id = serializers.IntegerField(source="record.pk")
    number = serializers.CharField(source="record.number")
    label = serializers.CharField(source="record.label")
    url = serializers.SerializerMethodField()

    def get_url(self, item: Any) -> str:
        return RecordOutput(context=self.context).get_url(item.record)


class SuggestionOutput(_AboutRecord):
    reason = serializers.CharField()
    already_linked = serializers.BooleanField()


def suggestions_data(found: list[Any], request: Any) -> list[dict[str, Any]]:
    """`SuggestionOutput(found, many=True).data`, written out: the same keys, values and
    order, without a serializer and a URL reversal per suggestion (the add-in asks at every
    email opened)."""
    site = _site(request)
    return [
        {
            **_about_record(s.record, site),
            "reason": _text(s.reason),
            "already_linked": bool(s.already_linked),
        }
        for s in found
    ]


def _site(request: Any) -> str:
    """`request.build_absolute_uri(path)` is this + path for the paths `reverse` gives (an
    absolute path, already URI-encoded): worked out once per answer, not once per record."""
    return str(request.build_absolute_uri("/"))[:-1]


def _about_record(record: Record, site: str) -> dict[str, Any]:
    """`_AboutRecord`'s fields of one record."""
    return {
        "module": record.module.name,
        "id": record.pk,
        "number": _text(record.number),
        "label": _text(record.label),
        "url": site + record_path(record.module.name, record.pk),
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def record_path(module: str, pk: int) -> str:
    """`reverse("crm:record_detail", args=[module, pk])`, the module's part reversed once."""
    head = _record_path_head(module, get_script_prefix())
    return f"{head}{int(pk)}/" if head is not None else reverse(_DETAIL, args=[module, pk])


_DETAIL = "crm:record_detail"


@functools.lru_cache(maxsize=256)
def _record_path_head(module: str, script_prefix: str) -> str | None:
    path = reverse(_DETAIL, args=[module, 0])  # under the current script prefix
    return path[:-2] if path.endswith("/0/") else None


class SuggestionsOutput(serializers.Serializer):
    results = SuggestionOutput(many=True)


class LookupOutput(serializers.Serializer):
    message_id = serializers.CharField()
    records = RecordOutput(many=True)


class LinkTargetInput(serializers.Serializer):
    module = serializers.CharField(max_length=63)
    id = serializers.IntegerField(min_value=1)


@extend_schema_field(
    {
        "type": "string",
        "description": 'A JSON array of the records to link: [{"module": "Contacts", "id": 42}].',
        "example": '[{"module": "Contacts", "id": 42}]',
    }
)
class LinksField(serializers.Field):
    """`links` arrives as a JSON text part of the multipart upload."""

    def to_internal_value(self, data: Any) -> list[dict[str, Any]]:
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise serializers.ValidationError("Send links as JSON.") from exc
        items = LinkTargetInput(data=data, many=True)
        items.is_valid(raise_exception=True)
        if not items.validated_data:
            raise serializers.ValidationError("Choose at least one record.")
        return list(items.validated_data)


class EmailLinkInput(serializers.Serializer):
    """Either `eml` (the whole message), or the fields and attachments of a partial capture."""

    links = LinksField()
    eml = serializers.FileField(required=False)
    subject = serializers.CharField(required=False, allow_blank=True, max_length=998)
    message_id = serializers.CharField(required=False, max_length=998)
    sender = serializers.CharField(required=False, max_length=998)
    to = serializers.ListField(child=serializers.CharField(max_length=998), required=False)
    cc = serializers.ListField(child=serializers.CharField(max_length=998), required=False)
    date = serializers.DateTimeField(required=False)
    text_body = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    html_body = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    attachments = serializers.ListField(child=serializers.FileField(), required=False)
    attachments_pending = serializers.ListField(
        child=serializers.CharField(max_length=255), required=False
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if "eml" not in data:
            missing = [f for f in ("message_id", "sender") if not data.get(f)]
            if missing:
                raise serializers.ValidationError(
                    {f: "Required without an eml part." for f in missing}
                )
        return data


class LinkedRecordOutput(_AboutRecord):
    newly_linked = serializers.BooleanField()


def email_link_data(result: Any, request: Any) -> dict[str, Any]:
    """`EmailLinkOutput(result).data`, written out as `suggestions_data` is: instantiating the
    serializer (its fields deep-copied, and its records' too) cost more than a link's SQL."""
    message = result.message
    site = _site(request)
    return {
        "message": message.pk,
        "subject": _text(message.subject),
        "completeness": _text(message.completeness),
        "created": bool(result.created),
        "completed": bool(result.completed),
        "attachments_saved": int(result.attachments_saved),
        "records": [
            {**_about_record(r.record, site), "newly_linked": bool(r.newly_linked)}
            for r in result.records
        ],
    }


class EmailLinkOutput(serializers.Serializer):
    message = serializers.IntegerField(source="message.pk")
    subject = serializers.CharField(source="message.subject")
    completeness = serializers.CharField(source="message.completeness")
    created = serializers.BooleanField()
    completed = serializers.BooleanField()
    attachments_saved = serializers.IntegerField()
    records = LinkedRecordOutput(many=True)
