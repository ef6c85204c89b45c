"""Shapes of the add-in's login and session endpoints (`/api/addin/v1/auth/...`)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from mailconnector import auth
from mailconnector.models import AddinSession

# Django hashes whatever it is given; an unbounded password would be a cheap way to burn CPU.
PASSWORD_MAX = 1024
TOKEN_MAX = 128


class SessionLoginInput(serializers.Serializer):
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(max_length=PASSWORD_MAX, trim_whitespace=False)


class SessionMfaInput(serializers.Serializer):
    mfa_token = serializers.CharField(max_length=TOKEN_MAX)
    code = serializers.RegexField(
        r"^\s*[0-9]{3}\s?[0-9]{3}([0-9]{2})?\s*$",
        max_length=16,
        help_text="The six-digit code from the authenticator app (RFC 6238).",
        error_messages={"invalid": "Enter the six digits shown by your authenticator app."},
    )


class SessionRefreshInput(serializers.Serializer):
    refresh_token = serializers.CharField(max_length=TOKEN_MAX)


class SessionLogoutInput(serializers.Serializer):
    refresh_token = serializers.CharField(
        max_length=TOKEN_MAX,
        required=False,
        help_text="Only without an Authorization header: ends the session of this token.",
    )


class SessionUserOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    name = serializers.CharField()
    email = serializers.EmailField(allow_blank=True)


class SessionTokensOutput(serializers.Serializer):
    access_token = serializers.CharField(help_text="Send as 'Authorization: Bearer <token>'.")
    refresh_token = serializers.CharField(help_text="Single use: `auth/refresh` returns a new one.")
    token_type = serializers.ChoiceField(choices=["Bearer"])
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")
    session_id = serializers.IntegerField()
    user = SessionUserOutput()


class SessionMfaRequiredOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["mfa_required"])
    mfa_token = serializers.CharField(help_text="Send it with the code to `auth/mfa`.")
    methods = serializers.ListField(child=serializers.ChoiceField(choices=["totp"]))
    expires_in = serializers.IntegerField(help_text="Seconds the mfa_token stays usable.")


SessionLoginOutput = PolymorphicProxySerializer(
    component_name="SessionLoginOutput",
    serializers=[SessionTokensOutput, SessionMfaRequiredOutput],
    resource_type_field_name=None,
)


class SessionOutput(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    client = serializers.CharField()
    ip = serializers.IPAddressField(allow_null=True)
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField()
    ends_at = serializers.SerializerMethodField(
        help_text="When it ends at the latest: the idle timeout or the absolute lifetime."
    )
    current = serializers.SerializerMethodField(
        help_text="Whether this is the session of the token that asked."
    )

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_ends_at(self, session: AddinSession) -> str:
        return serializers.DateTimeField().to_representation(auth.session_ends_at(session))

    def get_current(self, session: AddinSession) -> bool:
        return bool(session.pk == self.context.get("current_session_id"))
