"""Licensing: activate a key, enable users, and answer the connector's gate cheaply.

Writes (`activate`, `set_enabled_users`, `enable_users`, `disable_user`) are for active
superusers; each owns its transaction and locks the current License row, so the seat count is
never exceeded even when administrators act at the same time.

`status(user)` is asked on every add-in API call. It answers from a cached state (the current
key re-verified against today's settings, and the seated user ids) under a generation number
bumped by any change to licenses, seats or users; the key also carries a fingerprint of the
settings it was verified against. Expiry is compared with the clock on every call, so a key
stops working the second it expires, without a restart or a cache flush.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from crm import generations
from crm.exceptions import Conflict, Forbidden, Invalid, NotFound
from crm.models import User
from licensing import keys
from licensing.models import License, LicensedUser

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from django.contrib.auth.models import AnonymousUser

    Actor = User | AnonymousUser

log = logging.getLogger(__name__)

FEATURE = keys.FEATURE_MAILCONNECTOR
PRODUCT = "Outlook Mail Connector"
WARNING_DAYS = 30
# Upper bound on a cached state's life; every change retires it earlier through the generation.
CACHE_SECONDS = 3600

Code = Literal["active", "license_inactive", "user_not_licensed"]


@dataclass(frozen=True)
class LicenseStatus:
    active: bool
    code: Code
    reason: str


ACTIVE = LicenseStatus(active=True, code="active", reason="")


@dataclass(frozen=True)
class LicenseSummary:
    """What the "Outlook Mail Connector" page shows about the current license."""

    license: License
    status: LicenseStatus
    users_used: int
    users_allowed: int
    days_left: int | None
    warning: str  # expiry within WARNING_DAYS; "" otherwise
    over_limit: str  # more users ticked than allowed (a user came back); "" otherwise

    @property
    def installation(self) -> str:
        return self.license.installation

    @property
    def crm_url(self) -> str:
        return self.license.crm_url

    @property
    def expires_at(self) -> datetime | None:
        return self.license.expires_at

    @property
    def seats_left(self) -> int:
        return max(0, self.users_allowed - self.users_used)


@dataclass(frozen=True)
class SeatRow:
    """A user on the page's list: may he be ticked, is he ticked, does he hold a seat."""

    user: User
    enabled: bool
    enabled_at: datetime | None
    enabled_by: User | None


@dataclass(frozen=True)
class SeatChange:
    enabled: list[str]
    disabled: list[str]


# --- Reads ---------------------------------------------------------------------------------


def status(user: Actor | None) -> LicenseStatus:
    """Whether `user` may use the connector now: active, license_inactive or user_not_licensed.

    Costs no query while the cached state holds (see the module docstring).
    """
    state = _state()
    license_state = _license_status(state, timezone.now())
    if not license_state.active:
        return license_state
    if user is None or not getattr(user, "is_authenticated", False):
        return LicenseStatus(False, "user_not_licensed", "Log in to use the connector.")
    if not user.is_active:
        return LicenseStatus(False, "user_not_licensed", "This account is deactivated.")
    if user.pk in state.seated:
        return ACTIVE
    if user.pk in state.enabled:
        # Only reachable when a deactivated user came back while every seat was taken.
        return LicenseStatus(
            False,
            "user_not_licensed",
            f"More users are enabled than the license allows ({_users(state.users)}); "
            "ask your CRM administrator to free a seat.",
        )
    return LicenseStatus(
        False,
        "user_not_licensed",
        f"You are not enabled for the {PRODUCT}; ask your CRM administrator.",
    )


def license_status() -> LicenseStatus:
    """Whether the license itself is active, for anyone (the add-in's `meta` reports it)."""
    return _license_status(_state(), timezone.now())


def summary() -> LicenseSummary | None:
    """The current license for the page, or None before the first activation."""
    current = License.objects.current().select_related("activated_by").first()
    if current is None:
        return None
    now = timezone.now()
    days_left: int | None = None
    warning = ""
    state = license_status()
    if current.expires_at is not None:
        left = current.expires_at - now
        days_left = max(0, left.days)
        if timedelta(0) < left <= timedelta(days=WARNING_DAYS):
            when = "today" if left < timedelta(days=1) else f"in {_plural(days_left, 'day')}"
            warning = (
                f"The license expires {when} (on {_moment(current.expires_at)}). "
                "Ask your vendor for a renewal key before then; without one the connector stops."
            )
    used = _used_seats()
    over_limit = ""
    if used > current.users:
        over_limit = (
            f"{used} users are enabled but the license allows {current.users}: only the "
            f"{_plural(current.users, 'earliest enabled user')} can use the connector. "
            f"Untick {used - current.users}, or ask your vendor for a key with more users."
        )
    return LicenseSummary(
        license=current,
        status=state,
        users_used=used,
        users_allowed=current.users,
        days_left=days_left,
        warning=warning,
        over_limit=over_limit,
    )


def history() -> list[License]:
    """Every key ever activated, newest first."""
    return list(License.objects.select_related("activated_by"))


def seat_rows() -> list[SeatRow]:
    """Active users, and deactivated ones still holding a tick, with their seat."""
    seats = {s.user_id: s for s in LicensedUser.objects.select_related("enabled_by")}
    users = User.objects.filter(is_active=True) | User.objects.filter(pk__in=seats)
    rows = []
    for user in users.order_by("-is_active", "username"):
        seat = seats.get(user.pk)
        rows.append(
            SeatRow(
                user=user,
                enabled=seat is not None,
                enabled_at=seat.enabled_at if seat else None,
                enabled_by=seat.enabled_by if seat else None,
            )
        )
    return rows


def crm_address() -> str:
    """This CRM's address as keys must name it (CRM_BASE_URL, normalised)."""
    return _base_url()


def require_administrator(actor: Actor) -> None:
    """The licensing page exists only for CRM administrators; to others it is not found."""
    if not _is_admin(actor):
        raise NotFound("Page not found.")


# --- Writes --------------------------------------------------------------------------------


def activate(*, actor: Actor, key: str) -> License:
    """Check a key and make it the current license; a refusal changes nothing.

    A renewal keeps the users already enabled, the earliest enabled first, as far as the new
    key allows; the rest are disabled and their usernames kept on the new row.
    """
    admin = _require_admin(actor)
    now = timezone.now()
    payload = _check(key, now=now)
    text = "".join(key.split())
    with transaction.atomic():
        current = License.objects.select_for_update().current().first()
        if current is not None:
            if current.key == text:
                raise Conflict("This key is already the active license.")
            if payload.issued_at < current.issued_at:
                raise Invalid(
                    f"This key was issued on {_moment(payload.issued_at)}, before the active "
                    f"license ({_moment(current.issued_at)}); an older key cannot replace a "
                    "newer one. Ask your vendor for a current key.",
                    fields={"key": "older than the active license"},
                )
            current.is_current = False
            current.replaced_at = now
            current.save(update_fields=["is_current", "replaced_at"])
        disabled = _fit_seats(payload.users)
        try:
            with transaction.atomic():
                license_ = License.objects.create(
                    key=text,
                    license_id=payload.license_id,
                    installation=payload.installation,
                    crm_url=payload.crm_url,
                    users=payload.users,
                    features=list(payload.features),
                    issued_at=payload.issued_at,
                    expires_at=payload.expires_at,
                    activated_by=admin,
                    activated_at=now,
                    users_disabled=disabled,
                )
        except IntegrityError:
            # Only the first activation can race past the row lock: there was no row to lock.
            raise Conflict(
                "Another key was activated at the same moment; reload the page to see it."
            ) from None
        invalidate()
    log.info(
        "license %s activated by %s for %s users%s",
        payload.license_id,
        actor,
        payload.users,
        f"; disabled {', '.join(disabled)}" if disabled else "",
    )
    return license_


def set_enabled_users(*, actor: Actor, users: Iterable[User]) -> SeatChange:
    """Make exactly `users` (active ones) the enabled users: what the page's checkboxes say."""
    admin = _require_admin(actor)
    wanted_ids = {u.pk for u in users}
    with transaction.atomic():
        license_ = _lock_current()
        wanted = _active_users(wanted_ids)
        if len(wanted) > license_.users:
            raise Invalid(
                f"You selected {_users(len(wanted))}, but the license allows "
                f"{_users(license_.users)}. Untick {len(wanted) - license_.users} or ask your "
                "vendor for a key with more users.",
                fields={"users": f"at most {license_.users}"},
            )
        seats = LicensedUser.objects.filter(user__is_active=True).select_related("user")
        removed = [s for s in seats if s.user_id not in wanted]
        held = {s.user_id for s in seats}
        added = [u for u in wanted.values() if u.pk not in held]
        LicensedUser.objects.filter(pk__in=[s.pk for s in removed]).delete()
        _seat(added, admin)
        invalidate()
    change = SeatChange(
        enabled=sorted(u.username for u in added),
        disabled=sorted(s.user.username for s in removed),
    )
    log.info("connector seats changed by %s: %s", actor, change)
    return change


def enable_users(*, actor: Actor, users: Iterable[User]) -> list[User]:
    """Enable these users besides those already enabled; all or none. Returns the new ones."""
    admin = _require_admin(actor)
    wanted_ids = {u.pk for u in users}
    with transaction.atomic():
        license_ = _lock_current()
        wanted = _active_users(wanted_ids)
        missing = wanted_ids - wanted.keys()
        if missing:
            names = User.objects.filter(pk__in=missing).values_list("username", flat=True)
            raise Invalid(
                f"Deactivated users cannot be enabled: {', '.join(sorted(names)) or 'unknown'}.",
                fields={"users": "deactivated"},
            )
        held = set(
            LicensedUser.objects.filter(user_id__in=wanted).values_list("user_id", flat=True)
        )
        added = [u for u in wanted.values() if u.pk not in held]
        used = _used_seats()
        if used + len(added) > license_.users:
            left = max(0, license_.users - used)
            raise Invalid(
                f"The license allows {_users(license_.users)} and {used} already "
                f"{'holds' if used == 1 else 'hold'} a seat, so {_users(len(added))} more "
                f"cannot be enabled ({_plural(left, 'seat')} left). Disable someone first or "
                "ask your vendor for a key with more users.",
                fields={"users": f"at most {license_.users}"},
            )
        _seat(added, admin)
        invalidate()
    log.info("connector enabled for %s by %s", [u.username for u in added], actor)
    return added


def disable_user(*, actor: Actor, user: User) -> bool:
    """Free the user's seat; False when he held none."""
    admin = _require_admin(actor)
    with transaction.atomic():
        deleted, _ = LicensedUser.objects.filter(user=user).delete()
        invalidate()
    if deleted:
        log.info("connector disabled for %s by %s", user.username, admin)
    return bool(deleted)


# --- Checks --------------------------------------------------------------------------------


def _check(key: str, *, now: datetime | None) -> keys.LicensePayload:
    """The payload of a key valid for this CRM, or Invalid with the reason in words.

    `now=None` skips expiry: the cached state compares it with the clock at each call.
    """
    public_key = _public_key()
    try:
        payload = keys.verify(key, public_key)
    except keys.InvalidKey as exc:
        raise Invalid(exc.reason, fields={"key": exc.reason}) from None
    if not keys.same_crm(payload.crm_url, settings.CRM_BASE_URL):
        reason = (
            f"This key is for {payload.crm_url}, but this CRM's address is "
            f"{_base_url()}. Ask your vendor for a key issued for this address."
        )
        raise Invalid(reason, fields={"key": "issued for another CRM address"})
    if not payload.has_feature(FEATURE):
        reason = (
            f"This key does not include the {PRODUCT} (feature {FEATURE!r}); "
            f"it covers {', '.join(payload.features) or 'no feature'}."
        )
        raise Invalid(reason, fields={"key": "feature missing"})
    if now is not None and payload.expires_at is not None and now >= payload.expires_at:
        reason = f"This key expired on {_moment(payload.expires_at)}."
        raise Invalid(reason, fields={"key": "expired"})
    return payload


def _public_key() -> Ed25519PublicKey:
    value = settings.LICENSE_PUBLIC_KEY
    if not value:
        raise Invalid(
            "This CRM has no license vendor key configured (setting LICENSE_PUBLIC_KEY), "
            "so it cannot check any license key."
        )
    try:
        return _load_public_key(value)
    except ValueError as exc:
        raise Invalid(
            f"The vendor key in the setting LICENSE_PUBLIC_KEY is malformed: {exc}."
        ) from None


@functools.lru_cache(maxsize=4)
def _load_public_key(value: str) -> Ed25519PublicKey:
    return keys.load_public_key(value)


def _is_admin(actor: Actor | None) -> bool:
    return bool(
        actor is not None
        and getattr(actor, "is_authenticated", False)
        and actor.is_active
        and actor.is_superuser
    )


def _require_admin(actor: Actor) -> User:
    if not _is_admin(actor) or not isinstance(actor, User):
        raise Forbidden("Only CRM administrators manage the connector's license.")
    return actor


# --- Seats ---------------------------------------------------------------------------------


def _lock_current() -> License:
    """The current License row, locked for this transaction: the seat count's mutex."""
    # Two tries: when an activation replaced the row we waited on, the first statement's
    # snapshot cannot see the new row yet; a second statement can.
    for _ in range(2):
        current = License.objects.select_for_update().current().first()
        if current is not None:
            return current
    raise Invalid("Activate a license key first: without one no user can be enabled.")


def _used_seats() -> int:
    return LicensedUser.objects.filter(user__is_active=True).count()


def _active_users(ids: set[int]) -> dict[int, User]:
    # In id order: callers report the users, and an unordered scan's order varies with the plan.
    return {u.pk: u for u in User.objects.filter(pk__in=ids, is_active=True).order_by("pk")}


def _seat(users: list[User], admin: User) -> None:
    now = timezone.now()
    # One by one, in a stable order, so enabled_at keeps "earliest enabled first" meaningful.
    for user in sorted(users, key=lambda u: u.username):
        LicensedUser.objects.create(user=user, enabled_by=admin, enabled_at=now)


def _fit_seats(limit: int) -> list[str]:
    """Disable active users beyond `limit`, the latest enabled first; their usernames."""
    seats = list(
        LicensedUser.objects.filter(user__is_active=True)
        .select_related("user")
        .order_by("enabled_at", "pk")
    )
    over = seats[limit:]
    if over:
        LicensedUser.objects.filter(pk__in=[s.pk for s in over]).delete()
    return [s.user.username for s in over]


# --- The cached state ----------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    problem: str  # why the license does not hold, expiry aside; "" when it holds
    users: int
    enabled: frozenset[int]  # active users with a seat row
    seated: frozenset[int]  # the first `users` of them, earliest enabled first
    expires_at: datetime | None


_GENERATION_KEY = generations.register("licensing:generation")


def _state() -> _State:
    key = f"licensing:state:{generations.current(_GENERATION_KEY)}:{_settings_fingerprint()}"
    # Kept by the process under the generation, as long as the shared cache keeps it.
    return generations.kept("licensing:state", key, lambda: _shared_state(key), _cache_seconds)


def _shared_state(key: str) -> _State:
    state = cache.get(key)
    if state is None:
        state = _compute_state()
        cache.set(key, state, _cache_seconds(state))
    return state  # type: ignore[no-any-return]


def _compute_state() -> _State:
    current = License.objects.current().only("key").first()
    if current is None:
        return _State(
            problem=(
                f"No license is activated for the {PRODUCT}. A CRM administrator enters the "
                "vendor's key on the Outlook Mail Connector page in the CRM settings."
            ),
            users=0,
            enabled=frozenset(),
            seated=frozenset(),
            expires_at=None,
        )
    try:
        payload = _check(current.key, now=None)
    except Invalid as exc:
        return _State(
            problem=f"The activated license is not valid: {exc.detail}",
            users=0,
            enabled=frozenset(),
            seated=frozenset(),
            expires_at=None,
        )
    enabled = list(
        LicensedUser.objects.filter(user__is_active=True)
        .order_by("enabled_at", "pk")
        .values_list("user_id", flat=True)
    )
    return _State(
        problem="",
        users=payload.users,
        enabled=frozenset(enabled),
        seated=frozenset(enabled[: payload.users]),
        expires_at=payload.expires_at,
    )


def _license_status(state: _State, now: datetime) -> LicenseStatus:
    if state.problem:
        return LicenseStatus(False, "license_inactive", state.problem)
    if state.expires_at is not None and now >= state.expires_at:
        return LicenseStatus(
            False,
            "license_inactive",
            f"The license expired on {_moment(state.expires_at)}; "
            "a CRM administrator enters a renewal key to continue.",
        )
    return ACTIVE


def _cache_seconds(state: _State) -> int:
    # Also expire the entry when the key does: a state cached before then says nothing wrong
    # (expiry is compared per call), but nothing should outlive the key it describes.
    if state.expires_at is None:
        return CACHE_SECONDS
    left = (state.expires_at - timezone.now()).total_seconds()
    return CACHE_SECONDS if left <= 0 else max(1, min(CACHE_SECONDS, math.ceil(left)))


def _settings_fingerprint() -> str:
    # A changed public key or base URL (a restart with new settings, or a test) must not be
    # answered from a state verified against the old ones.
    return _fingerprint(settings.LICENSE_PUBLIC_KEY, settings.CRM_BASE_URL)


@functools.lru_cache(maxsize=8)
def _fingerprint(public_key: str, base_url: str) -> str:
    return hashlib.sha256(f"{public_key}\n{base_url}".encode()).hexdigest()[:16]


def invalidate() -> None:
    """Retire the cached state now, and again when the transaction commits.

    The second bump matters: a request that read the old rows between the first bump and the
    commit would otherwise keep its stale state under the new generation.
    """
    generations.bump(_GENERATION_KEY)


def _on_change(sender: Any, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    invalidate()


def _on_user_change(sender: Any, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= {"last_login", "password"}:
        return  # a login changes nothing about seats
    _on_change(sender, **kwargs)


for _model in (License, LicensedUser):
    post_save.connect(_on_change, sender=_model, dispatch_uid=f"licensing-save-{_model.__name__}")
    post_delete.connect(_on_change, sender=_model, dispatch_uid=f"licensing-del-{_model.__name__}")
post_save.connect(_on_user_change, sender=User, dispatch_uid="licensing-save-user")
post_delete.connect(_on_change, sender=User, dispatch_uid="licensing-del-user")


# --- Words ---------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _users(n: int) -> str:
    return _plural(n, "user")


def _moment(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%d %b %Y %H:%M UTC").lstrip("0")


def _base_url() -> str:
    try:
        return keys.normalise_url(settings.CRM_BASE_URL)
    except ValueError:
        return str(settings.CRM_BASE_URL)
