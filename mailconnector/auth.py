"""Add-in authentication: password (+ TOTP) logins, and bearer tokens bound to sessions.

The add-in logs in with a password (`login`); a user with a confirmed TOTP device gets an
`mfa_token` instead and finishes with a code (`verify_mfa`). Single sign-on ends in
`issue_tokens` too. Each login is an `AddinSession` row with an access token (short) and a
refresh token (single use, rotated by `refresh`). Tokens are `secrets.token_urlsafe(32)`,
returned once and stored only as SHA-256 digests: 256 random bits need no salt or slow hash,
and a database dump holds nothing that authenticates.

Every password and TOTP attempt goes through django-axes, so the add-in's login paths share
the web login's lockout (by username + IP). A session ends when it is revoked (logout, ended
from the profile page, password change or deactivation: see `signals.py`; a reused refresh
token), when it has been idle too long, or when its absolute lifetime is over
(`ConnectorPolicy`). These functions raise `ApiError`s: the add-in API is their only caller
besides the profile page, which uses the session and TOTP helpers at the end.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import re
import secrets
from base64 import b32encode
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import quote, urlencode, urlsplit

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_ip_address, get_cool_off
from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib.auth import authenticate as django_authenticate
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.db import transaction
from django.db.models import Max, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from crm import generations, statements
from crm.exceptions import Conflict, Invalid, NotFound
from crm.models import User
from mailconnector.api.errors import ApiError
from mailconnector.models import AddinSession, AddinToken, ConnectorPolicy, MfaChallenge

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

log = logging.getLogger(__name__)

EndReason = AddinSession.EndReason
ACCESS = AddinToken.Kind.ACCESS
REFRESH = AddinToken.Kind.REFRESH

# An mfa_token lives long enough to open an authenticator app, and dies after a few wrong
# codes: with 10^6 codes, five guesses per password entry (and axes' lockout) bound guessing.
MFA_LIFETIME = timedelta(minutes=5)
MFA_MAX_FAILURES = 5
# Writing last_used_at on every call would turn each read into a write; a minute's
# imprecision on a timeout counted in hours or days does not matter.
TOUCH_EVERY = timedelta(minutes=1)
# The policy is read on every call: kept by each process under a generation that saving the
# policy bumps; the short life bounds the staleness of the per-process cache used without Redis.
POLICY_GENERATION_KEY = generations.register("mailconnector:policy:generation")
POLICY_CACHE_SECONDS = 60
# Ended sessions stay listed for the administrator's audit this long, then go.
KEEP_ENDED = timedelta(days=90)
# token_urlsafe(32) gives 43 characters; anything unlike a token is refused unhashed.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 6750 section 3: a 401 names the scheme, and error="invalid_token" when a token failed.
_CHALLENGE = 'Bearer realm="crm"'


# --- Policy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    idle: timedelta
    absolute: timedelta
    access: timedelta


def _policy() -> Policy:
    key = f"mailconnector:policy:{generations.current(POLICY_GENERATION_KEY)}"
    return generations.kept(
        "mailconnector:policy", key, lambda: _shared_policy(key), POLICY_CACHE_SECONDS
    )


def _shared_policy(key: str) -> Policy:
    values = cache.get(key)
    if values is None:
        row = ConnectorPolicy.objects.filter(pk=ConnectorPolicy.SINGLETON_PK).first()
        row = row or ConnectorPolicy()  # no row yet: the model's defaults
        values = (row.idle_minutes, row.absolute_hours, row.access_token_seconds)
        cache.set(key, values, POLICY_CACHE_SECONDS)
    idle, absolute, access = values
    return Policy(
        idle=timedelta(minutes=idle),
        absolute=timedelta(hours=absolute),
        access=timedelta(seconds=access),
    )


def forget_policy() -> None:
    """Called when an administrator saves the policy, so that it applies at once."""
    generations.bump(POLICY_GENERATION_KEY)


def session_policy() -> dict[str, int]:
    """The policy as `meta` shows it to the add-in."""
    policy = _policy()
    return {
        "idle_minutes": int(policy.idle.total_seconds() // 60),
        "absolute_hours": int(policy.absolute.total_seconds() // 3600),
        "access_token_seconds": int(policy.access.total_seconds()),
    }


# --- Tokens and sessions -------------------------------------------------------------------


def _digest(token: str) -> str:
    # surrogatepass: a lone surrogate from a JSON body must not turn into a 500.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _well_formed(token: Any) -> bool:
    return isinstance(token, str) and _TOKEN_SHAPE.fullmatch(token) is not None


def _new_token(session: AddinSession, kind: str, now: datetime, expires_at: datetime) -> str:
    token = secrets.token_urlsafe(32)
    AddinToken.objects.create(
        session=session, kind=kind, digest=_digest(token), created_at=now, expires_at=expires_at
    )
    return token


def _ends_at(session: AddinSession, policy: Policy) -> datetime:
    """When the session ends if it keeps being used: the earlier of its absolute limits."""
    return min(session.expires_at, session.created_at + policy.absolute)


def _why_ended(session: AddinSession, policy: Policy, now: datetime) -> str | None:
    """Why the session no longer works at `now`, or None while it does."""
    if session.revoked_at is not None:
        return "revoked"
    # Checked on every call too, because a bulk update deactivates without signals.
    if not session.user.is_active:
        return "deactivated"
    if now >= _ends_at(session, policy):
        return "absolute"
    if now >= session.last_used_at + policy.idle:
        return "idle"
    return None


_ENDED_DETAIL = {
    "revoked": "This session was ended; log in again.",
    "deactivated": "This session was ended; log in again.",
    "absolute": "This session reached its maximum lifetime; log in again.",
    "idle": "This session was unused for too long; log in again.",
}


def _unauthorized(code: str, detail: str) -> ApiError:
    error = ApiError(401, code, detail)
    if code in {"token_invalid", "token_expired", "session_expired"}:
        error.headers["WWW-Authenticate"] = (
            f'{_CHALLENGE}, error="invalid_token", error_description="{code}"'
        )
    else:
        error.headers["WWW-Authenticate"] = _CHALLENGE
    return error


def _session_expired(why: str) -> ApiError:
    return _unauthorized("session_expired", _ENDED_DETAIL.get(why, _ENDED_DETAIL["revoked"]))


def _user_summary(user: User) -> dict[str, Any]:
    return {
        "id": user.pk,
        "username": user.get_username(),
        "name": user.get_full_name() or user.get_username(),
        "email": user.email,
    }


def _token_pair(session: AddinSession, policy: Policy, now: datetime) -> dict[str, Any]:
    ends_at = _ends_at(session, policy)
    access_expires = min(now + policy.access, ends_at)
    access = _new_token(session, ACCESS, now, access_expires)
    refresh = _new_token(session, REFRESH, now, ends_at)
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": max(0, int((access_expires - now).total_seconds())),
        "session_id": session.pk,
        "user": _user_summary(session.user),
    }


def _clean_ip(ip: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address((ip or "").strip()))
    except ValueError:
        return None


def issue_tokens(*, user: User, client: str, ip: str) -> dict[str, Any]:
    """Open a session for a user who has just proven who he is, and return its tokens.

    `{access_token, refresh_token, token_type: "Bearer", expires_in, session_id, user}`. The
    tokens exist only in this answer. Callers: `login`, `verify_mfa`, the single sign-on.
    """
    policy = _policy()
    now = timezone.now()
    with transaction.atomic():
        # A login is a good moment to let this user's long-ended sessions go.
        _prune(user=user, now=now)
        session = AddinSession.objects.create(
            user=user,
            created_at=now,
            last_used_at=now,
            expires_at=now + policy.absolute,
            client=_CONTROL.sub(" ", client or "")[:255],
            ip=_clean_ip(ip),
        )
        answer = _token_pair(session, policy, now)
    log.info("add-in session %s opened for user %s", session.pk, user.pk)
    return answer


def authenticate_access_token(token: str) -> AddinSession:
    """The live session of an access token (RFC 6750 bearer), or a 401 saying why not."""
    if not _well_formed(token):
        raise _unauthorized("token_invalid", "Unknown access token.")
    row = _access_token(_digest(token))
    if row is None:
        raise _unauthorized("token_invalid", "Unknown access token.")
    session = row.session
    now = timezone.now()
    # The session first: when it is over, refreshing cannot help, and the add-in must know.
    why = _why_ended(session, _policy(), now)
    if why:
        raise _session_expired(why)
    if now >= row.expires_at:
        raise _unauthorized("token_expired", "The access token expired; refresh it.")
    if now - session.last_used_at >= TOUCH_EVERY:
        AddinSession.objects.filter(pk=session.pk, last_used_at__lt=now - TOUCH_EVERY).update(
            last_used_at=now
        )
        session.last_used_at = now
    return session


def _access_token(digest: str) -> AddinToken | None:
    """`AddinToken.objects.select_related("session__user").filter(digest=..., kind=ACCESS)
    .first()`, from a statement written once (`crm.statements`): every add-in call makes it.
    """
    sql, rows = _access_token_statement()
    found = rows.first(sql, [digest, ACCESS])
    if found is None:
        return None
    token, session, user = found
    session.user = user
    token.session = session
    return token  # type: ignore[no-any-return]


@functools.cache
def _access_token_statement() -> tuple[str, statements.Rows]:
    rows = statements.rows_of((AddinToken, "t"), (AddinSession, "s"), (User, "u"))
    # Names from the models' metadata only; the digest and kind are bound parameters.
    sql = (
        f"SELECT {rows.columns} FROM {statements.table(AddinToken)} t "  # noqa: S608
        f"JOIN {statements.table(AddinSession)} s ON s.id = t.session_id "
        f"JOIN {statements.table(User)} u ON u.id = s.user_id "
        "WHERE t.digest = %s AND t.kind = %s ORDER BY t.id LIMIT 1"
    )
    return sql, rows


class TokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <access token>` (RFC 6750). Sets `request.user` to the session's
    user and `request.auth` to the `AddinSession`. Without the header the request is anonymous
    and the permission classes answer; a bad token is a 401 whatever the endpoint."""

    def authenticate(self, request: Request) -> tuple[User, AddinSession] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise _unauthorized(
                "token_invalid", "Send the access token as 'Authorization: Bearer <token>'."
            )
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise _unauthorized("token_invalid", "Unknown access token.") from None
        session = authenticate_access_token(token)
        return session.user, session

    def authenticate_header(self, request: Request) -> str:
        return _CHALLENGE


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Tells drf-spectacular that the add-in API takes bearer tokens."""

    target_class = "mailconnector.auth.TokenAuthentication"
    name = "addinBearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return build_bearer_security_scheme_object(  # type: ignore[no-any-return]
            header_name="Authorization",
            token_prefix="Bearer",  # noqa: S106 - the scheme's name, not a secret
        )


def refresh(*, refresh_token: str, request: Request | HttpRequest) -> dict[str, Any]:
    """Rotate: the refresh token is spent and a new pair is returned.

    A refresh token that comes back after it was spent means that two parties hold it (the
    add-in and a thief, or a replay): the whole session is revoked, so that whoever got the
    newer tokens loses them too (OAuth 2.0 Security BCP, RFC 9700 section 4.14.2). There is
    no grace period: an add-in that lost the answer to a refresh must log in again.
    `request` is taken for the same shape as the other login calls; nothing reads it yet.
    """
    if not _well_formed(refresh_token):
        raise _unauthorized("token_invalid", "Unknown refresh token.")
    policy = _policy()
    now = timezone.now()
    outcome: Literal["unknown", "reused", "ended", "ok"]
    why = ""
    answer: dict[str, Any] = {}
    with transaction.atomic():
        # Locking the token row serialises two refreshes with the same token: the second
        # sees it spent. Only this row: the session row stays free for authenticated calls.
        row = (
            AddinToken.objects.select_for_update(of=("self",))
            .select_related("session__user")
            .filter(digest=_digest(refresh_token), kind=REFRESH)
            .first()
        )
        if row is None:
            outcome = "unknown"
        elif row.used_at is not None:
            outcome = "reused"
            _revoke(AddinSession.objects.filter(pk=row.session_id), EndReason.REFRESH_REUSE, now)
        elif why := (_why_ended(row.session, policy, now) or ""):
            outcome = "ended"
        else:
            outcome = "ok"
            row.used_at = now
            row.save(update_fields=["used_at"])
            session = row.session
            # The add-in holds only the newest access token; expired ones can never work again.
            session.tokens.filter(kind=ACCESS, expires_at__lte=now).delete()
            session.last_used_at = now
            session.save(update_fields=["last_used_at"])
            answer = _token_pair(session, policy, now)
    # Raised after the block: the revocation above must be committed, not rolled back.
    if outcome == "unknown":
        raise _unauthorized("token_invalid", "Unknown refresh token.")
    if outcome == "reused":
        log.warning("add-in refresh token reused; session %s revoked", row.session_id)  # type: ignore[union-attr]
        raise _unauthorized(
            "session_expired",
            "This refresh token was already used, so the session was ended. Log in again.",
        )
    if outcome == "ended":
        raise _session_expired(why)
    return answer


def _revoke(sessions: QuerySet[AddinSession], reason: str, now: datetime) -> int:
    return sessions.filter(revoked_at__isnull=True).update(revoked_at=now, revoked_reason=reason)


def logout(*, session: AddinSession) -> None:
    """End this session (its access and refresh tokens stop working at once)."""
    _revoke(AddinSession.objects.filter(pk=session.pk), EndReason.LOGOUT, timezone.now())


def logout_with_refresh_token(*, refresh_token: str) -> None:
    """End the session a refresh token belongs to: for an add-in whose access token expired.

    Unknown tokens are ignored, as RFC 7009 (section 2.2) answers token revocation."""
    if not _well_formed(refresh_token):
        return
    session_ids = AddinToken.objects.filter(digest=_digest(refresh_token), kind=REFRESH).values(
        "session_id"
    )
    _revoke(AddinSession.objects.filter(pk__in=session_ids), EndReason.LOGOUT, timezone.now())


def revoke_all(*, user: User, reason: str) -> int:
    """End every add-in session of the user, and any login half-way through its TOTP step."""
    now = timezone.now()
    with transaction.atomic():
        count = _revoke(AddinSession.objects.filter(user=user), reason, now)
        MfaChallenge.objects.filter(user=user, used_at__isnull=True).update(used_at=now)
    if count:
        log.info("%d add-in sessions of user %s ended: %s", count, user.pk, reason)
    return count


def end_session(*, user: User, session_id: int, reason: str = EndReason.ENDED_BY_USER) -> None:
    """The user ends one of his sessions. Someone else's session is not found, like a missing
    one."""
    sessions = AddinSession.objects.filter(pk=session_id, user=user)
    if not sessions.exists():
        raise NotFound("No such session.")
    _revoke(sessions, reason, timezone.now())


def end_sessions(*, sessions: QuerySet[AddinSession], reason: str) -> int:
    """End the given sessions (the administrator's action)."""
    return _revoke(sessions, reason, timezone.now())


def user_sessions(user: User | AnonymousUser) -> list[AddinSession]:
    """The user's sessions that still work, most recently used first."""
    if not user.is_authenticated or not user.is_active:
        return []
    policy = _policy()
    now = timezone.now()
    candidates = AddinSession.objects.filter(
        user=user,
        revoked_at__isnull=True,
        expires_at__gt=now,
        created_at__gt=now - policy.absolute,
        last_used_at__gt=now - policy.idle,
    ).order_by("-last_used_at", "-pk")
    return list(candidates)


def session_ends_at(session: AddinSession) -> datetime:
    """When the session ends at the latest, under today's policy (for display)."""
    policy = _policy()
    return min(_ends_at(session, policy), session.last_used_at + policy.idle)


def _prune(*, user: User, now: datetime) -> None:
    AddinSession.objects.filter(user=user, expires_at__lt=now - KEEP_ENDED).delete()
    AddinSession.objects.filter(user=user, revoked_at__lt=now - KEEP_ENDED).delete()
    MfaChallenge.objects.filter(user=user, expires_at__lt=now - MFA_LIFETIME).delete()


# --- Logging in ----------------------------------------------------------------------------


def _http(request: Request | HttpRequest) -> HttpRequest:
    """django-axes and Django's authenticate() want the HttpRequest beneath DRF's Request."""
    return getattr(request, "_request", request)


def client_ip(request: Request | HttpRequest) -> str:
    """The client's address, as django-axes sees it (the one lockouts are keyed on)."""
    return get_client_ip_address(_http(request)) or ""


def client_description(request: Request | HttpRequest) -> str:
    """What the profile page shows for a session: the add-in's version and the host's agent."""
    http = _http(request)
    version = _CONTROL.sub("", http.headers.get("X-Addin-Version", ""))[:32].strip()
    agent = _CONTROL.sub("", http.headers.get("User-Agent", "")).strip()
    parts = [f"Outlook add-in {version}" if version else "Outlook add-in", agent]
    return " · ".join(p for p in parts if p)[:255]


def _invalid_credentials() -> ApiError:
    # One error object for an unknown user, a wrong password and an inactive account.
    return _unauthorized("invalid_credentials", "Wrong username or password.")


def lockout_error(request: Request | HttpRequest, credentials: dict[str, Any]) -> ApiError:
    """429 rate_limited with Retry-After while django-axes holds these credentials + IP locked.

    For every login path (password, TOTP, single sign-on), after `is_locked_out` said so or
    after a failure that axes answered with a lock."""
    http = _http(request)
    # axes' middleware would replace our problem document with its own page otherwise.
    http.axes_locked_out = False  # type: ignore[attr-defined]
    wait = _lockout_seconds(http, credentials)
    error = ApiError(
        429,
        "rate_limited",
        f"Too many failed logins; try again in {wait} seconds.",
        retry_after=wait,
    )
    error.headers["Retry-After"] = str(wait)
    return error


def _lockout_seconds(http: HttpRequest, credentials: dict[str, Any]) -> int:
    cool_off = get_cool_off(http)
    if cool_off is None:  # a permanent lock: ask the client to come back in an hour
        return 3600
    handler = AxesProxyHandler.get_implementation()
    latest = None
    if hasattr(handler, "get_user_attempts"):  # the database handler (the default)
        for attempts in handler.get_user_attempts(http, credentials):
            found = attempts.aggregate(latest=Max("attempt_time"))["latest"]
            latest = max(latest, found) if latest and found else (found or latest)
    if latest is None:
        return max(1, math.ceil(cool_off.total_seconds()))
    remaining = (latest + cool_off - timezone.now()).total_seconds()
    return max(1, math.ceil(remaining))


def is_locked_out(request: Request | HttpRequest, credentials: dict[str, Any]) -> bool:
    """Whether django-axes refuses these credentials ({"username": ...}) from this address."""
    return not AxesProxyHandler.is_allowed(_http(request), credentials)


def _complete_login(user: User, http: HttpRequest) -> dict[str, Any]:
    # Django's user_logged_in signal is for cookie sessions (axes would create one on an API
    # call), so its two useful effects are done here: reset axes' count, note the login.
    if settings.AXES_RESET_ON_SUCCESS:
        axes_reset(ip=client_ip(http) or None, username=user.get_username())
    User.objects.filter(pk=user.pk).update(last_login=timezone.now())
    return issue_tokens(user=user, client=client_description(http), ip=client_ip(http))


def has_totp(user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def login(*, username: str, password: str, request: Request | HttpRequest) -> dict[str, Any]:
    """Password login: tokens, or `{status: "mfa_required", mfa_token, ...}` with TOTP on.

    Through Django's authenticate(), so django-axes counts and locks exactly as for the web
    login; an unknown user costs a password hash too (ModelBackend), so answers and their
    timing do not tell which usernames exist.
    """
    http = _http(request)
    user = django_authenticate(request=http, username=username, password=password)
    if user is None:
        if getattr(http, "axes_locked_out", False):
            raise lockout_error(http, {"username": username})
        raise _invalid_credentials()
    user = cast(User, user)  # AUTH_USER_MODEL
    if has_totp(user):
        # Not a completed login: axes' failure count stays, so that wrong codes add to it.
        return _start_mfa(user)
    return _complete_login(user, http)


def _start_mfa(user: User) -> dict[str, Any]:
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    MfaChallenge.objects.create(
        user=user, digest=_digest(token), created_at=now, expires_at=now + MFA_LIFETIME
    )
    return {
        "status": "mfa_required",
        "mfa_token": token,
        "methods": ["totp"],
        "expires_in": int(MFA_LIFETIME.total_seconds()),
    }


def _mfa_invalid(detail: str, attempts_left: int) -> ApiError:
    error = ApiError(401, "mfa_invalid", detail, attempts_left=attempts_left)
    error.headers["WWW-Authenticate"] = _CHALLENGE
    return error


def verify_mfa(*, mfa_token: str, code: str, request: Request | HttpRequest) -> dict[str, Any]:
    """Finish a login with a TOTP code (RFC 6238) from the user's confirmed device.

    A code works once: django-otp keeps the time step of the last accepted code and accepts
    only later ones. The challenge dies after MFA_MAX_FAILURES wrong codes or MFA_LIFETIME,
    and each wrong code is a failed login for django-axes (username + IP).
    """
    http = _http(request)
    dead = _mfa_invalid("This login expired; enter your password again.", 0)
    if not _well_formed(mfa_token):
        raise dead
    challenge = (
        MfaChallenge.objects.select_related("user").filter(digest=_digest(mfa_token)).first()
    )
    now = timezone.now()
    if challenge is None or challenge.used_at is not None or now >= challenge.expires_at:
        raise dead
    user = challenge.user
    credentials = {"username": user.get_username()}
    if is_locked_out(http, credentials):
        raise lockout_error(http, credentials)
    code = "".join(str(code).split())

    outcome: Literal["dead", "throttled", "wrong", "ok"]
    wait = 0
    with transaction.atomic():
        # Both rows locked: two requests with one code cannot both pass (django-otp's
        # last_t is read and written under the lock), nor spend more attempts than allowed.
        challenge = MfaChallenge.objects.select_for_update().get(pk=challenge.pk)
        device = (
            TOTPDevice.objects.select_for_update()
            .filter(user=user, confirmed=True)
            .order_by("pk")
            .first()
        )
        if challenge.used_at is not None or device is None or not user.is_active:
            outcome = "dead"
        else:
            allowed, info = device.verify_is_allowed()
            if not allowed:
                # django-otp's growing delay after wrong codes (1 s, 2 s, 4 s, ...).
                outcome = "throttled"
                until = (info or {}).get("locked_until")
                wait = math.ceil((until - now).total_seconds()) if until else 1
            elif device.verify_token(code):
                outcome = "ok"
                challenge.used_at = now
                challenge.save(update_fields=["used_at"])
            else:
                outcome = "wrong"
                challenge.failures += 1
                if challenge.failures >= MFA_MAX_FAILURES:
                    challenge.used_at = now
                challenge.save(update_fields=["failures", "used_at"])

    if outcome == "dead":
        raise dead
    if outcome == "throttled":
        error = ApiError(
            429,
            "rate_limited",
            f"Wait {max(1, wait)} seconds before the next code.",
            retry_after=max(1, wait),
        )
        error.headers["Retry-After"] = str(max(1, wait))
        raise error
    if outcome == "wrong":
        # Outside the transaction: axes' failure row must stay even though we answer an error.
        user_login_failed.send(sender=__name__, credentials=credentials, request=http)
        if getattr(http, "axes_locked_out", False):
            raise lockout_error(http, credentials)
        left = MFA_MAX_FAILURES - challenge.failures
        if left <= 0:
            raise _mfa_invalid("Too many wrong codes; enter your password again.", 0)
        raise _mfa_invalid("Wrong or expired code.", left)
    return _complete_login(user, http)


# --- TOTP enrolment (the profile page) -----------------------------------------------------


def totp_device(user: User) -> TOTPDevice | None:
    """The user's confirmed TOTP device, if two-step login is on."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def pending_totp_device(user: User) -> TOTPDevice | None:
    """A device being set up: created, shown as a QR code, not yet confirmed with a code."""
    return TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()


def start_totp(*, user: User) -> TOTPDevice:
    """Begin setting up an authenticator app: a new secret, unconfirmed until a code works."""
    with transaction.atomic():
        if TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).exists():
            raise Conflict("Two-step login is already on; remove it first to change apps.")
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


def confirm_totp(*, user: User, code: str) -> TOTPDevice:
    """Turn two-step login on, once the app shows a code that the pending secret accepts."""
    with transaction.atomic():
        device = (
            TOTPDevice.objects.select_for_update()
            .filter(user=user, confirmed=False)
            .order_by("-pk")
            .first()
        )
        if device is None:
            raise Invalid(fields={"code": "Start the set-up again."})
        if not device.verify_token("".join(str(code).split())):
            raise Invalid(fields={"code": "That code does not match; check the app's clock."})
        device.confirmed = True
        device.save(update_fields=["confirmed"])
    log.info("TOTP turned on for user %s", user.pk)
    return device


def cancel_totp(*, user: User) -> None:
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()


def remove_totp(*, user: User, password: str, request: HttpRequest) -> None:
    """Turn two-step login off. The password is asked again (through axes, so that a stolen
    web session cannot guess it here either) before the second factor goes."""
    http = _http(request)
    checked = django_authenticate(request=http, username=user.get_username(), password=password)
    if getattr(http, "axes_locked_out", False):
        http.axes_locked_out = False  # type: ignore[attr-defined]
        raise Invalid(fields={"password": "Too many wrong passwords; try again later."})
    if checked is None or checked.pk != user.pk:
        raise Invalid(fields={"password": "Wrong password."})
    TOTPDevice.objects.filter(user=user).delete()
    log.info("TOTP turned off for user %s", user.pk)


def totp_secret(device: TOTPDevice) -> str:
    """The secret in base32, in groups of four, for typing into an app by hand."""
    secret = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def totp_uri(device: TOTPDevice) -> str:
    """The otpauth:// URI (Key Uri Format) that authenticator apps read from the QR code."""
    host = urlsplit(settings.CRM_BASE_URL).hostname or "crm"
    issuer = getattr(settings, "OTP_TOTP_ISSUER", "") or f"CRM {host}"
    issuer = issuer.replace(":", "")
    label = f"{issuer}:{device.user.get_username()}"
    params = {
        "secret": b32encode(device.bin_key).decode().rstrip("="),
        "issuer": issuer,
        "algorithm": "SHA1",
        "digits": device.digits,
        "period": device.step,
    }
    return f"otpauth://totp/{quote(label)}?{urlencode(params, quote_via=quote)}"
