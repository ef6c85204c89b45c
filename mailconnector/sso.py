"""Single sign-on for the add-in: OpenID Connect, authorization code + PKCE, in the Office dialog.

Two legs, each with its own proof key (RFC 7636):

1. add-in -> CRM. The task pane opens the dialog at `auth/sso/authorize` with its own state and
   the S256 challenge of a verifier only it knows (`start`). The CRM keeps a short-lived,
   single-use *attempt* and sends the dialog to the identity provider with a state, a nonce and
   a verifier of its own.
2. CRM -> identity provider. The provider sends the dialog back to `auth/sso/callback`
   (`finish`): the CRM exchanges the code server-side with its client secret and verifier,
   verifies the ID token (OpenID Connect Core 1.0, section 3.1.3.7), finds the active CRM user
   and mints a one-time *CRM code*, bound to the add-in's challenge. The dialog's last page is
   the add-in's own (`sso_done.html`): it hands the code to the task pane with
   `Office.context.ui.messageParent`, and the task pane trades it, with its verifier, for
   tokens at `auth/sso/token` (`redeem`), which is throttled like every login path.

Attempts and CRM codes live in the cache under the SHA-256 of their secret (the state, the
code), expire on their own, and are taken with `cache.delete`, which only one caller wins:
they are single use even under concurrent requests. With more than one process the cache must
be shared (REDIS_URL), as for the rest of the add-in's short-lived state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeGuard, cast
from urllib.parse import quote_plus, urlencode, urlsplit

import josepy
import requests
from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from mozilla_django_oidc.utils import generate_code_challenge
from rest_framework.request import Request

from crm.models import User
from mailconnector import auth
from mailconnector.api.errors import ApiError

log = logging.getLogger(__name__)

# Long enough to type a password and a second factor at the provider.
ATTEMPT_LIFETIME = timedelta(minutes=10)
# The CRM code only travels from the dialog to the task pane, which redeems it at once.
CODE_LIFETIME = timedelta(minutes=2)
# Clock skew allowed between the CRM and the provider on exp and iat.
LEEWAY = timedelta(seconds=60)
# Provider metadata and keys change rarely; an unknown key id refetches the keys at once.
METADATA_SECONDS = 3600
# Binds an attempt to the browser that started it (the dialog): the callback must carry it.
BROWSER_COOKIE = "crm_sso"
# django-axes counts failed code exchanges under this name and the client's IP address: no
# user is known before a code works. Not a valid Django username, so no account shares it.
THROTTLE_USERNAME = "(single sign-on)"

_KEY = "mailconnector:sso:"
# RFC 7636 section 4.2: BASE64URL(SHA256(verifier)) is always 43 characters.
_CHALLENGE_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
# RFC 7636 section 4.1: 43 to 128 unreserved characters.
VERIFIER_PATTERN = r"^[A-Za-z0-9._~-]{43,128}$"
_VERIFIER_SHAPE = re.compile(VERIFIER_PATTERN)
# RFC 6749 appendix A.5: a state is visible ASCII; the add-in's is echoed back into a page.
_STATE_SHAPE = re.compile(r"[\x20-\x7e]{1,512}")
_CODE_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SsoRefused(Exception):
    """The dialog's sign-in stops here; the page tells the user and the add-in why.

    `addin_state` and `origin` are known once the attempt is found, so that the page can hand
    the error back to the right task pane.
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.addin_state: str | None = None
        self.origin: str | None = None


@dataclass(frozen=True)
class Provider:
    id: str
    name: str
    issuer: str
    discovery_url: str
    client_id: str
    client_secret: str
    scopes: str
    claim: str
    match: str
    signing_algs: tuple[str, ...]
    require_verified_email: bool


@dataclass(frozen=True)
class Redirect:
    """Where `authorize` sends the dialog, and the value of the browser-binding cookie."""

    url: str
    browser_key: str


@dataclass(frozen=True)
class Done:
    """A successful callback: the one-time CRM code for the add-in, and whom it stands for."""

    code: str
    addin_state: str
    origin: str | None
    user: User
    provider: Provider


# --- Providers -----------------------------------------------------------------------------


def providers() -> list[Provider]:
    return [
        Provider(
            id=p["id"],
            name=p["name"],
            issuer=p["issuer"],
            discovery_url=p["discovery_url"],
            client_id=p["client_id"],
            client_secret=p["client_secret"],
            scopes=p.get("scopes", "openid email profile"),
            claim=p.get("claim", "email"),
            match=p.get("match", "email"),
            signing_algs=tuple(p.get("signing_algs", ["RS256"])),
            require_verified_email=p.get("require_verified_email", True),
        )
        for p in cast(list[dict[str, Any]], settings.ADDIN_SSO_PROVIDERS)
    ]


def _provider(provider_id: str) -> Provider | None:
    return next((p for p in providers() if p.id == provider_id), None)


def callback_url() -> str:
    """The redirect URI registered at every provider (compared exactly, RFC 6749 3.1.2)."""
    return settings.CRM_BASE_URL.rstrip("/") + reverse("addin-sso-callback")


# --- Leg 1: the dialog arrives -------------------------------------------------------------


def start(
    *,
    provider_id: str,
    code_challenge: str,
    code_challenge_method: str,
    state: str,
    origin: str = "",
    login_hint: str = "",
) -> Redirect:
    """Open an attempt and return the provider's authorization URL for the dialog."""
    if not _STATE_SHAPE.fullmatch(state):
        raise SsoRefused(400, "sso_invalid", "The add-in did not send a valid state.")
    try:
        provider = _provider(provider_id)
        if provider is None:
            raise SsoRefused(
                400, "sso_unknown_provider", "This single sign-on provider is not configured."
            )
        # RFC 7636 section 4.2: only S256; "plain" would put the verifier in the dialog's URL.
        if code_challenge_method != "S256" or not _CHALLENGE_SHAPE.fullmatch(code_challenge):
            raise SsoRefused(
                400, "sso_invalid", "The add-in must send an S256 code_challenge (RFC 7636)."
            )
        target = _target_origin(origin)
        if len(login_hint) > 254 or _CONTROL.search(login_hint):
            raise SsoRefused(400, "sso_invalid", "The login hint is not valid.")
        metadata = _metadata(provider)
    except SsoRefused as refused:
        refused.addin_state = state
        raise

    crm_state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(48)  # 64 characters (RFC 7636 section 4.1)
    browser_key = secrets.token_urlsafe(32)
    _put(
        "attempt",
        crm_state,
        {
            "provider": provider.id,
            "addin_challenge": code_challenge,
            "addin_state": state,
            "origin": target,
            "nonce": nonce,
            "verifier": verifier,
            "browser": _digest(browser_key),
        },
        ATTEMPT_LIFETIME,
    )
    # OpenID Connect Core 1.0 section 3.1.2.1, with PKCE (RFC 7636 section 4.3).
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": callback_url(),
        "scope": provider.scopes,
        "state": crm_state,
        "nonce": nonce,
        "code_challenge": generate_code_challenge(verifier, "S256"),
        "code_challenge_method": "S256",
    }
    if login_hint:
        params["login_hint"] = login_hint
    endpoint = metadata["authorization_endpoint"]
    separator = "&" if urlsplit(endpoint).query else "?"
    return Redirect(url=endpoint + separator + urlencode(params), browser_key=browser_key)


def _target_origin(origin: str) -> str | None:
    """The task pane's origin for messageParent's targetOrigin, when it is not the CRM's own.

    Only the add-in origins the administrator allowed: the page hands the CRM code to it.
    """
    if not origin:
        return None
    allowed = {o.rstrip("/") for o in settings.ADDIN_ALLOWED_ORIGINS}
    own = urlsplit(settings.CRM_BASE_URL)
    if origin == f"{own.scheme}://{own.netloc}":
        return None
    if origin not in allowed:
        raise SsoRefused(400, "sso_invalid", "The add-in's origin is not allowed by the CRM.")
    return origin


# --- Leg 2: the provider sends the dialog back --------------------------------------------


def finish(*, state: str, code: str, error: str, error_description: str, browser_key: str) -> Done:
    """Check the callback, exchange the code, verify the ID token, mint the CRM code."""
    attempt = _take("attempt", state) if _STATE_SHAPE.fullmatch(state or "") else None
    if attempt is None:
        raise SsoRefused(
            400,
            "sso_invalid",
            "This sign-in is unknown, expired or already finished; start again from the add-in.",
        )
    try:
        return _finish(attempt, code, error, error_description, browser_key)
    except SsoRefused as refused:
        refused.addin_state = attempt["addin_state"]
        refused.origin = attempt["origin"]
        raise


def _finish(
    attempt: dict[str, Any], code: str, error: str, error_description: str, browser_key: str
) -> Done:
    # A callback in another browser than the one that started (login CSRF, a forwarded link).
    if not browser_key or not hmac.compare_digest(_digest(browser_key), attempt["browser"]):
        raise SsoRefused(
            400,
            "sso_invalid",
            "This sign-in was started in another window; start again from the add-in.",
        )
    provider = _provider(attempt["provider"])
    if provider is None:
        raise SsoRefused(400, "sso_unknown_provider", "This provider is no longer configured.")
    if error:
        # RFC 6749 section 4.1.2.1: the user cancelled, or the provider refused him.
        said = _CONTROL.sub(" ", error_description or error)[:300]
        log.info("single sign-on refused by %s: %s", provider.id, said)
        raise SsoRefused(403, "sso_denied", f"{provider.name} did not sign you in: {said}")
    if not code or len(code) > 2048:
        raise SsoRefused(400, "sso_invalid", "The identity provider sent no code.")

    metadata = _metadata(provider)
    id_token = _exchange(provider, metadata, code, attempt["verifier"])
    claims = _verified_claims(provider, metadata, id_token, attempt["nonce"])
    user = _user_for(provider, claims)

    crm_code = secrets.token_urlsafe(32)
    _put(
        "code",
        crm_code,
        {"user": user.pk, "challenge": attempt["addin_challenge"], "provider": provider.id},
        CODE_LIFETIME,
    )
    log.info("single sign-on through %s for user %s", provider.id, user.pk)
    return Done(
        code=crm_code,
        addin_state=attempt["addin_state"],
        origin=attempt["origin"],
        user=user,
        provider=provider,
    )


def _exchange(provider: Provider, metadata: dict[str, Any], code: str, verifier: str) -> str:
    """The token request (OpenID Connect Core 3.1.3.1), with the CRM's PKCE verifier."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": callback_url(),
        "code_verifier": verifier,
    }
    headers = {"Accept": "application/json"}
    methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" in methods:
        # RFC 6749 section 2.3.1: id and secret are form-encoded before the Basic encoding.
        user, password = (
            quote_plus(v, safe="") for v in (provider.client_id, provider.client_secret)
        )
        headers["Authorization"] = "Basic " + _b64(f"{user}:{password}".encode())
    else:
        data |= {"client_id": provider.client_id, "client_secret": provider.client_secret}
    try:
        response = requests.post(
            metadata["token_endpoint"],
            data=data,
            headers=headers,
            timeout=settings.ADDIN_SSO_HTTP_TIMEOUT,
            allow_redirects=False,
        )
        answer = response.json() if response.content else {}
    except (requests.RequestException, ValueError) as exc:
        log.warning("single sign-on: token endpoint of %s failed: %s", provider.id, exc)
        raise _unavailable(provider) from exc
    if response.status_code == 400 and isinstance(answer, dict):
        # invalid_grant: the code was used already (a replayed callback) or expired.
        log.warning("single sign-on: %s refused the code: %s", provider.id, answer.get("error"))
        raise SsoRefused(
            400, "sso_invalid", f"{provider.name} did not accept this sign-in; start again."
        )
    id_token = answer.get("id_token") if isinstance(answer, dict) else None
    if response.status_code != 200 or not isinstance(id_token, str):
        log.warning(
            "single sign-on: token endpoint of %s answered %s without an ID token",
            provider.id,
            response.status_code,
        )
        raise _unavailable(provider)
    return id_token


def _verified_claims(
    provider: Provider, metadata: dict[str, Any], id_token: str, nonce: str
) -> dict[str, Any]:
    """The ID token's claims, once OpenID Connect Core 1.0 section 3.1.3.7 is satisfied.

    The signature is checked by josepy with a key from the provider's JWKS (never one named in
    the token itself), and only with the asymmetric algorithms configured for the provider: no
    "none", no HMAC keyed with a public key.
    """

    def invalid(reason: str) -> SsoRefused:
        log.warning("single sign-on: ID token from %s refused: %s", provider.id, reason)
        return SsoRefused(
            400,
            "sso_invalid",
            f"The answer from {provider.name} could not be verified; start again.",
        )

    try:
        jws = josepy.JWS.from_compact(id_token.encode("ascii"))
        header = jws.signature.combined
        claims = json.loads(jws.payload)
    except (josepy.errors.Error, ValueError, TypeError, UnicodeError, AssertionError) as exc:
        raise invalid(f"malformed ({exc})") from exc
    alg = header.alg
    if alg is None or alg.name not in provider.signing_algs:
        raise invalid(f"algorithm {alg} is not allowed")
    if header.crit:
        raise invalid("critical header extensions (RFC 7515 section 4.1.11)")
    key = _signing_key(provider, metadata, header.kid, alg)
    if key is None:
        raise invalid(f"no signing key {header.kid!r} in the provider's JWKS")
    try:
        signed = jws.verify(key)
    except (josepy.errors.Error, ValueError, TypeError) as exc:
        raise invalid(f"signature check failed ({exc})") from exc
    if not signed:
        raise invalid("bad signature")
    if not isinstance(claims, dict):
        raise invalid("the payload is not a JSON object")

    now = timezone.now().timestamp()
    leeway = LEEWAY.total_seconds()
    # 2. The issuer is exactly the configured one.
    if claims.get("iss") != provider.issuer:
        raise invalid(f"issuer {claims.get('iss')!r}")
    # 3.-5. We are an audience; with several, azp must name us.
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if provider.client_id not in audiences:
        raise invalid(f"audience {aud!r}")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != provider.client_id:
        raise invalid(f"authorized party {azp!r}")
    # 9.-10. Not expired, not issued in the future.
    exp, iat = claims.get("exp"), claims.get("iat")
    if not _is_number(exp) or now >= exp + leeway:
        raise invalid(f"expired (exp {exp!r})")
    if not _is_number(iat) or iat > now + leeway:
        raise invalid(f"issued in the future (iat {iat!r})")
    # 11. The nonce of this attempt: the token was minted for this sign-in, not replayed.
    token_nonce = claims.get("nonce")
    if not isinstance(token_nonce, str) or not hmac.compare_digest(
        token_nonce.encode(), nonce.encode()
    ):
        raise invalid("nonce mismatch")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise invalid("no subject")
    return claims


def _signing_key(
    provider: Provider, metadata: dict[str, Any], kid: str | None, alg: Any
) -> josepy.JWK | None:
    for refresh in (False, True):
        candidates = [
            k
            for k in _jwks(provider, metadata, refresh=refresh)
            if (kid is None or k.get("kid") == kid)
            and k.get("use", "sig") == "sig"
            and k.get("alg", alg.name) == alg.name
        ]
        if candidates:
            break
    else:
        return None
    if len(candidates) != 1:  # without a kid, only an unambiguous key set will do
        return None
    try:
        key = josepy.JWK.from_json(candidates[0])
    except (josepy.errors.Error, ValueError, TypeError, KeyError):
        return None
    # The key type must be the algorithm's (RSA for RS/PS, EC for ES).
    return key if isinstance(key, alg.kty) else None


def _user_for(provider: Provider, claims: dict[str, Any]) -> User:
    """The one active CRM user the claims name. Accounts are never created here."""
    value = claims.get(provider.claim)
    if not isinstance(value, str) or not value.strip():
        raise SsoRefused(
            403,
            "sso_unknown_user",
            f"{provider.name} did not say who you are (no '{provider.claim}' claim); "
            "ask your CRM administrator.",
        )
    value = value.strip()
    if provider.match == "email":
        # Anyone can put any address on an unverified account at some providers.
        if provider.require_verified_email and claims.get("email_verified") not in (True, "true"):
            raise SsoRefused(
                403,
                "sso_unknown_user",
                f"{provider.name} has not verified the address {value}; "
                "ask your CRM administrator.",
            )
        matches = list(User.objects.filter(email__iexact=value)[:10])
    else:
        matches = list(User.objects.filter(username=value)[:10])
    active = [u for u in matches if u.is_active]
    if len(active) == 1:
        return active[0]
    if len(active) > 1:
        raise SsoRefused(
            403,
            "sso_unknown_user",
            f"Several CRM accounts match {value}; ask your CRM administrator to fix this.",
        )
    if matches:
        raise SsoRefused(
            403,
            "sso_inactive_user",
            f"Your CRM account ({value}) is deactivated; ask your CRM administrator.",
        )
    raise SsoRefused(
        403,
        "sso_unknown_user",
        f"No CRM account matches {value}. Ask your CRM administrator to create one; "
        "signing in does not create accounts.",
    )


# --- Leg 3: the task pane trades the CRM code for tokens --------------------------------------


def redeem(*, code: str, code_verifier: str, request: Request | HttpRequest) -> dict[str, Any]:
    """The add-in's verifier against the challenge it sent at `authorize` (RFC 7636 4.6).

    The code is spent by the first attempt, right or wrong. Failures count for django-axes
    under THROTTLE_USERNAME + the client's IP, as every login path does; a locked client gets
    429 with Retry-After, even with a good code.
    """
    http = cast(HttpRequest, getattr(request, "_request", request))
    credentials = {"username": THROTTLE_USERNAME}
    if auth.is_locked_out(http, credentials):
        raise auth.lockout_error(http, credentials)
    grant = _take("code", code) if _CODE_SHAPE.fullmatch(code or "") else None
    matches = (
        grant is not None
        and _VERIFIER_SHAPE.fullmatch(code_verifier or "") is not None
        and hmac.compare_digest(
            generate_code_challenge(code_verifier, "S256").encode(), grant["challenge"].encode()
        )
    )
    if not matches or grant is None:
        user_login_failed.send(sender=__name__, credentials=credentials, request=http)
        if getattr(http, "axes_locked_out", False):
            raise auth.lockout_error(http, credentials)
        raise ApiError(
            400,
            "sso_invalid",
            "This sign-in code is unknown, expired, already used, or does not match the "
            "code_verifier; sign in again.",
        )
    user = User.objects.filter(pk=grant["user"], is_active=True).first()
    if user is None:  # deactivated within the code's two minutes
        raise ApiError(400, "sso_invalid", "This account can no longer sign in.")
    if settings.AXES_RESET_ON_SUCCESS:
        axes_reset(ip=auth.client_ip(http) or None, username=THROTTLE_USERNAME)
    User.objects.filter(pk=user.pk).update(last_login=timezone.now())
    return auth.issue_tokens(
        user=user,
        client=f"{auth.client_description(http)} · SSO {grant['provider']}"[:255],
        ip=auth.client_ip(http),
    )


# --- Provider metadata ---------------------------------------------------------------------


def _metadata(provider: Provider) -> dict[str, Any]:
    """The provider's discovery document (OpenID Connect Discovery 1.0), cached."""
    key = f"{_KEY}metadata:{_digest(provider.discovery_url)}"
    metadata = cache.get(key)
    if metadata is None:
        metadata = _get_json(provider, provider.discovery_url)
        # Discovery section 4.3: the document must name exactly the issuer we trust.
        if metadata.get("issuer") != provider.issuer:
            log.warning(
                "single sign-on: %s's discovery names issuer %r, not %r",
                provider.id,
                metadata.get("issuer"),
                provider.issuer,
            )
            raise _unavailable(provider)
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not _safe_url(metadata.get(name)):
                log.warning("single sign-on: %s's discovery lacks a usable %s", provider.id, name)
                raise _unavailable(provider)
        cache.set(key, metadata, METADATA_SECONDS)
    return cast(dict[str, Any], metadata)


def _jwks(provider: Provider, metadata: dict[str, Any], *, refresh: bool) -> list[dict[str, Any]]:
    key = f"{_KEY}jwks:{_digest(metadata['jwks_uri'])}"
    keys = None if refresh else cache.get(key)
    if keys is None:
        document = _get_json(provider, metadata["jwks_uri"])
        found = document.get("keys")
        keys = [k for k in found if isinstance(k, dict)] if isinstance(found, list) else []
        cache.set(key, keys, METADATA_SECONDS)
    return cast(list[dict[str, Any]], keys)


def _get_json(provider: Provider, url: str) -> dict[str, Any]:
    try:
        response = requests.get(
            url, headers={"Accept": "application/json"}, timeout=settings.ADDIN_SSO_HTTP_TIMEOUT
        )
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("single sign-on: %s unreachable at %s: %s", provider.id, url, exc)
        raise _unavailable(provider) from exc
    if not isinstance(document, dict):
        raise _unavailable(provider)
    return document


def _unavailable(provider: Provider) -> SsoRefused:
    return SsoRefused(
        502, "sso_unavailable", f"{provider.name} could not be reached; try again later."
    )


def _safe_url(url: Any) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    loopback = parts.hostname in {"127.0.0.1", "localhost", "::1"}
    return parts.scheme == "https" or (parts.scheme == "http" and loopback)


# --- Storage -------------------------------------------------------------------------------


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _put(kind: str, secret: str, value: dict[str, Any], lifetime: timedelta) -> None:
    value = {**value, "expires_at": (timezone.now() + lifetime).timestamp()}
    cache.set(f"{_KEY}{kind}:{_digest(secret)}", value, int(lifetime.total_seconds()) + 5)


def _take(kind: str, secret: str) -> dict[str, Any] | None:
    """Read and delete: of two concurrent takers only the one whose delete removed it wins."""
    key = f"{_KEY}{kind}:{_digest(secret)}"
    value = cache.get(key)
    if value is None or not cache.delete(key):
        return None
    # Expiry is checked here too, not left to the cache alone (whose clock is its own).
    if timezone.now().timestamp() >= value["expires_at"]:
        return None
    return cast(dict[str, Any], value)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
