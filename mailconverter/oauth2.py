"""OAuth2 access tokens for XOAUTH2 mailboxes (Microsoft 365, Gmail), refreshed before they expire.

An administrator connects a mailbox once, with "Connect with Microsoft / Google" (the consent
below; `services.finish_oauth2_consent` stores the tokens) or by pasting a refresh token
(`services.set_oauth2`), with the app registration (token endpoint, client id and secret,
scope). From then on every scan and every "Test connection" asks `access_token()`: the
stored access token while it has more than `REFRESH_MARGIN` to live, else a new one from the
token endpoint (RFC 6749 §6, `grant_type=refresh_token`).

Providers may rotate refresh tokens (Microsoft's may change on every refresh); the new one
replaces the old in the same transaction as the access token, because the old one can stop
working at once.

The refresh runs under the mailbox row's lock (SELECT … FOR UPDATE): a second worker waits,
then finds the fresh token and does not refresh again. With a rotating provider a second
refresh would be worse than wasteful: it would present the refresh token the first one had
just used up, and the mailbox would look revoked.

Every failure is an `OAuth2Error`, an `ImapError`, so scans and "Test connection" report it in
the same words an administrator can act on.

**Consent** ("Connect with Microsoft / Google" on the mailbox's settings page): the
authorization code grant (RFC 6749 §4.1) with PKCE (RFC 7636, S256). `begin` makes a `Consent`
(a random `state`, the code verifier, the mailbox, the administrator, the app registration);
the page keeps it in the administrator's session and sends the browser to `authorization_url`.
The provider sends the browser back to the callback with `code` and `state`; only a state this
session holds for this administrator is accepted, once, within `CONSENT_LIFETIME`, and
`exchange_code` trades the code and the verifier for the tokens at the token endpoint. The
endpoints and scopes are settings (`CONVERTER_OAUTH2_MICROSOFT_*`, `CONVERTER_OAUTH2_GOOGLE_*`).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import secrets as random
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mailconverter import secrets
from mailconverter.imap import ImapError
from mailconverter.models import Mailbox

__all__ = [
    "CONSENT_LIFETIME",
    "REFRESH_MARGIN",
    "Consent",
    "OAuth2Error",
    "Provider",
    "access_token",
    "authorization_url",
    "begin",
    "check_token_url",
    "denied",
    "exchange_code",
    "provider",
    "providers",
]

# A token about to expire is refreshed first: a scan may take minutes after its login.
REFRESH_MARGIN = timedelta(minutes=5)
# RFC 6749 §5.1 makes `expires_in` only RECOMMENDED; Google and Microsoft give an hour.
DEFAULT_LIFETIME = timedelta(hours=1)
TIMEOUT = 30.0  # seconds for the token endpoint's answer
_MAX_ANSWER = 1 << 20
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


class OAuth2Error(ImapError):
    """No access token could be had; the message says why and what to do."""


@dataclass(frozen=True)
class _Grant:
    access_token: str
    expires_at: datetime
    refresh_token: str  # "" when the provider keeps the old one


def access_token(mailbox: Mailbox) -> str:
    """A valid access token for the mailbox, refreshed (and stored) when it is about to expire.

    The caller's `mailbox` gets the stored tokens too, so it does not refresh again.
    """
    if not _fresh(mailbox):
        with transaction.atomic():
            locked = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
            # Another worker may have refreshed while this one waited for the lock.
            if not _fresh(locked):
                _store(locked, _refresh(locked))
        mailbox.oauth2_access_token = locked.oauth2_access_token
        mailbox.oauth2_expires_at = locked.oauth2_expires_at
        mailbox.oauth2_refresh_token = locked.oauth2_refresh_token
    return _decrypt(mailbox.oauth2_access_token)


def check_token_url(url: str) -> None:
    """Refresh tokens and client secrets travel only over HTTPS (plain HTTP on loopback)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise OAuth2Error(
        f"The OAuth2 token endpoint must be an https:// address (got {url or 'nothing'})."
    )


# --- the refresh -------------------------------------------------------------------------------


def _fresh(mailbox: Mailbox) -> bool:
    expires_at = mailbox.oauth2_expires_at
    return bool(mailbox.oauth2_access_token) and (
        expires_at is not None and expires_at - REFRESH_MARGIN > timezone.now()
    )


def _refresh(mailbox: Mailbox) -> _Grant:
    refresh_token = _decrypt(mailbox.oauth2_refresh_token)
    if not refresh_token:
        raise OAuth2Error(
            f"The mailbox {mailbox.name} has no OAuth2 refresh token: connect it again."
        )
    url = mailbox.oauth2_token_url
    check_token_url(url)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": mailbox.oauth2_client_id,
    }
    client_secret = _decrypt(mailbox.oauth2_client_secret)
    if client_secret:  # RFC 6749 §2.3.1: credentials in the body, as Google and Microsoft take
        form["client_secret"] = client_secret
    if mailbox.oauth2_scope:
        form["scope"] = mailbox.oauth2_scope
    status, answer = _post(url, form)
    if status != 200:
        raise OAuth2Error(_refused(url, status, answer))
    return _grant(url, answer)


def _post(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 (check_token_url allows http(s) only)
        url,
        data=urlencode(form).encode("ascii"),
        headers={
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        method="POST",
    )
    host = urlsplit(url).netloc
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            return int(response.status), _json(response.read(_MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _json(exc.read(_MAX_ANSWER))
    except urllib.error.URLError as exc:
        raise OAuth2Error(
            f"The OAuth2 token endpoint {host} could not be reached: {exc.reason}."
        ) from exc
    except TimeoutError as exc:
        raise OAuth2Error(
            f"The OAuth2 token endpoint {host} did not answer within {TIMEOUT:g} seconds."
        ) from exc
    except OSError as exc:
        raise OAuth2Error(
            f"The OAuth2 token endpoint {host} could not be reached: {exc.strerror or exc}."
        ) from exc


def _grant(url: str, answer: dict[str, Any]) -> _Grant:
    token = answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuth2Error(f"The OAuth2 token endpoint {url} answered without an access token.")
    try:
        lifetime = timedelta(seconds=int(answer["expires_in"]))  # Azure v1 sends a string
    except (KeyError, TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    rotated = answer.get("refresh_token")
    return _Grant(
        access_token=token,
        expires_at=timezone.now() + lifetime,
        refresh_token=rotated if isinstance(rotated, str) else "",
    )


def _store(mailbox: Mailbox, grant: _Grant) -> None:
    mailbox.oauth2_access_token = secrets.encrypt(grant.access_token)
    mailbox.oauth2_expires_at = grant.expires_at
    fields = ["oauth2_access_token", "oauth2_expires_at"]
    if grant.refresh_token:
        mailbox.oauth2_refresh_token = secrets.encrypt(grant.refresh_token)
        fields.append("oauth2_refresh_token")
    mailbox.save(update_fields=fields)


def _refused(url: str, status: int, answer: dict[str, Any]) -> str:
    """RFC 6749 §5.2 error answers, in words that say what the administrator should do."""
    error, detail = _error_of(answer)
    if error == "invalid_grant":
        return (
            f"The token endpoint refused the refresh token: {detail} — reconnect the mailbox "
            "(sign in with the mailbox's account again to get a new one)."
        )
    if error in ("invalid_client", "unauthorized_client"):
        return (
            f"The token endpoint refused the client id or secret: {detail} — check the app "
            "registration's client id and secret."
        )
    if error:
        return f"The token endpoint refused the refresh: {detail}."
    return f"The OAuth2 token endpoint {url} answered HTTP {status} without an OAuth2 error."


# --- consent: authorization code with PKCE ------------------------------------------------------

# The browser comes back within minutes; a consent left longer is started again.
CONSENT_LIFETIME = timedelta(minutes=15)


@dataclass(frozen=True)
class Provider:
    key: str
    label: str
    authorize_url: str
    token_url: str
    scope: str
    # Authorize parameters of this provider. Google hands out a refresh token only with
    # offline access, and again only when asked to show the consent screen.
    extra: tuple[tuple[str, str], ...] = ()


def providers() -> list[Provider]:
    """The providers offered on the settings page, from the settings (read at call time)."""
    return [
        Provider(
            "microsoft",
            "Microsoft",
            settings.CONVERTER_OAUTH2_MICROSOFT_AUTHORIZE_URL,
            settings.CONVERTER_OAUTH2_MICROSOFT_TOKEN_URL,
            settings.CONVERTER_OAUTH2_MICROSOFT_SCOPE,
            (("response_mode", "query"), ("prompt", "select_account")),
        ),
        Provider(
            "google",
            "Google",
            settings.CONVERTER_OAUTH2_GOOGLE_AUTHORIZE_URL,
            settings.CONVERTER_OAUTH2_GOOGLE_TOKEN_URL,
            settings.CONVERTER_OAUTH2_GOOGLE_SCOPE,
            (("access_type", "offline"), ("prompt", "consent")),
        ),
    ]


def provider(key: str) -> Provider:
    for found in providers():
        if found.key == key:
            return found
    raise OAuth2Error(f"There is no OAuth2 provider {key!r}: choose Microsoft or Google.")


@dataclass(frozen=True)
class Consent:
    """A consent under way, kept in the administrator's session until the provider answers.

    `client_secret` is encrypted (crm.secrets), as on the mailbox; "" for an app without one.
    """

    state: str
    mailbox_id: int
    user_id: int
    provider: str
    client_id: str
    client_secret: str
    verifier: str
    redirect_uri: str
    started_at: float  # time.time()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Consent | None:
        try:
            return cls(**data)
        except TypeError:
            return None  # a session written by another version: start again

    @property
    def expired(self) -> bool:
        return time.time() - self.started_at > CONSENT_LIFETIME.total_seconds()


def begin(
    *,
    mailbox_id: int,
    user_id: int,
    provider_key: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
) -> Consent:
    """A new consent; raises OAuth2Error when the provider's endpoints are not https://."""
    chosen = provider(provider_key)
    check_token_url(chosen.token_url)
    _check_https(chosen.authorize_url, "authorization")
    return Consent(
        state=random.token_urlsafe(32),
        mailbox_id=mailbox_id,
        user_id=user_id,
        provider=chosen.key,
        client_id=client_id,
        client_secret=client_secret,
        verifier=random.token_urlsafe(64),  # RFC 7636 §4.1: 43 to 128 characters
        redirect_uri=redirect_uri,
        started_at=time.time(),
    )


def authorization_url(consent: Consent, *, login_hint: str = "") -> str:
    """Where the administrator's browser signs in and consents (RFC 6749 §4.1.1)."""
    chosen = provider(consent.provider)
    params = {
        "response_type": "code",
        "client_id": consent.client_id,
        "redirect_uri": consent.redirect_uri,
        "scope": chosen.scope,
        "state": consent.state,
        "code_challenge": _challenge(consent.verifier),
        "code_challenge_method": "S256",
        **dict(chosen.extra),
    }
    if "@" in login_hint:  # the mailbox's account, preselected on the sign-in page
        params["login_hint"] = login_hint
    joiner = "&" if urlsplit(chosen.authorize_url).query else "?"
    return f"{chosen.authorize_url}{joiner}{urlencode(params)}"


def exchange_code(consent: Consent, code: str) -> _Grant:
    """The tokens for the code the provider sent back (RFC 6749 §4.1.3, RFC 7636 §4.5)."""
    chosen = provider(consent.provider)
    if not code:
        raise OAuth2Error(f"{chosen.label} sent the browser back without a code: connect again.")
    check_token_url(chosen.token_url)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": consent.redirect_uri,
        "client_id": consent.client_id,
        "code_verifier": consent.verifier,
    }
    client_secret = _decrypt(consent.client_secret)
    if client_secret:
        form["client_secret"] = client_secret
    status, answer = _post(chosen.token_url, form)
    if status != 200:
        raise OAuth2Error(_code_refused(chosen, status, answer))
    grant = _grant(chosen.token_url, answer)
    if not grant.refresh_token:
        raise OAuth2Error(
            f"{chosen.label} granted access without a refresh token, so scans could not sign in "
            f"for long: the scope must allow offline access ({chosen.scope})."
        )
    return grant


def denied(consent: Consent, error: str, description: str) -> str:
    """The provider's error answer to the browser (RFC 6749 §4.1.2.1), in words."""
    label = provider(consent.provider).label
    detail = _first_line(description)
    detail = f"{error[:100]} ({detail})" if detail else error[:100]
    if error == "access_denied":
        return (
            f"Access was not granted at {label}: {detail}. Sign in as the mailbox's account and "
            "accept, or ask the organisation's administrator to consent to the app. "
            "Nothing was changed."
        )
    return f"{label} refused the sign-in: {detail}. Nothing was changed."


def _code_refused(chosen: Provider, status: int, answer: dict[str, Any]) -> str:
    error, detail = _error_of(answer)
    if error == "invalid_grant":
        return (
            f"{chosen.label}'s token endpoint refused the sign-in code: {detail} — it expired "
            "or was used already: connect again. Nothing was changed."
        )
    if error in ("invalid_client", "unauthorized_client"):
        return (
            f"{chosen.label}'s token endpoint refused the client id or secret: {detail} — check "
            "the app registration's client id and secret. Nothing was changed."
        )
    if error:
        return (
            f"{chosen.label}'s token endpoint refused the sign-in: {detail}. Nothing was changed."
        )
    return (
        f"{chosen.label}'s token endpoint {chosen.token_url} answered HTTP {status} without an "
        "OAuth2 error. Nothing was changed."
    )


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _check_https(url: str, what: str) -> None:
    parts = urlsplit(url)
    secure = parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname))
    if not (secure and parts.hostname):
        raise OAuth2Error(f"The OAuth2 {what} endpoint must be an https:// address (got {url}).")


# --- helpers -----------------------------------------------------------------------------------


def _decrypt(token: str) -> str:
    try:
        return secrets.decrypt(token)
    except secrets.SecretError as exc:
        raise OAuth2Error(str(exc)) from exc


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _error_of(answer: dict[str, Any]) -> tuple[str, str]:
    """An RFC 6749 error answer's code, and the code with the first line of its description."""
    error = str(answer.get("error") or "")
    description = _first_line(str(answer.get("error_description") or ""))
    return error, f"{error} ({description})" if description else error


def _first_line(text: str) -> str:
    # Microsoft's descriptions run on with trace and correlation ids after the first line.
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:200]


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
