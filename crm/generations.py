"""Generation counters in the cache: bumping one retires every entry keyed with it.

Cached state (a user's privileges, the license's status, the session policy) is stored under a
key holding the current generation; a change bumps the generation instead of hunting down the
entries.

Two levels keep the shared cache off the hot path:

- Within one request the generations are read once, all together (one round trip), and a
  value read under them is remembered (`remembered`): a request checks privileges several
  times, and each read would be a round trip to the cache.
- Across requests, a process keeps what it computed or read under a key (`kept`). The key
  holds the current generation, so a bump anywhere retires the process's copy as soon as the
  next request reads the new generation; the process keeps nothing longer than the shared
  cache would have (`seconds`).

A bump in this process forgets the request's values at once; a change made by another process
is seen by the next request, as it would be had it come a moment later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import transaction

T = TypeVar("T")

# None outside a request (tasks, commands, tests calling services): nothing is remembered.
_memo: ContextVar[dict[str, Any] | None] = ContextVar("crm_generations_memo", default=None)
# Generation keys read together at a request's first need of any of them.
_registered: list[str] = []
# What this process keeps across requests: slot (what is kept, e.g. one user's privileges) →
# (key holding the generation, monotonic deadline, value). A slot holds one generation's
# value, so retired ones do not pile up; past KEPT_MAX slots it is emptied and refilled.
_kept: dict[str, tuple[str, float, Any]] = {}
KEPT_MAX = 4096


def register(key: str) -> str:
    """Declare a generation key, so that a request reads it with the others in one trip."""
    if key not in _registered:
        _registered.append(key)
    return key


def current(key: str) -> int:
    memo = _memo.get()
    if memo is None:
        return _read_many([key])[key]
    if key not in memo:
        wanted = [k for k in _registered if k not in memo]
        memo.update(_read_many(wanted if key in wanted else [key, *wanted]))
    return memo[key]  # type: ignore[no-any-return]


def remembered(key: str, load: Callable[[], T]) -> T:
    """`load()`, or within a request the value it gave for `key` earlier in that request.

    For a generation, or for a value whose key holds one: a bump forgets them all.
    """
    memo = _memo.get()
    if memo is None:
        return load()
    if key not in memo:
        memo[key] = load()
    return memo[key]  # type: ignore[no-any-return]


def kept(slot: str, key: str, load: Callable[[], T], seconds: float | Callable[[T], float]) -> T:
    """`load()`, kept in this process in `slot` under `key` for at most `seconds` (or
    `seconds(value)`).

    `key` must hold the current generation of everything the value depends on: that is what
    retires the process's copy when another process changes the data.
    """
    now = time.monotonic()
    hit = _kept.get(slot)
    if hit is not None and hit[0] == key and hit[1] > now:
        return hit[2]  # type: ignore[no-any-return]
    value = load()
    if len(_kept) >= KEPT_MAX:
        _kept.clear()
    _kept[slot] = (key, now + (seconds(value) if callable(seconds) else seconds), value)
    return value


def bump(key: str) -> None:
    """Retire the entries now, and again when the transaction commits.

    The second bump matters: a request that read the old rows between the first bump and the
    commit would otherwise keep its stale state under the new generation.
    """
    _bump(key)
    transaction.on_commit(lambda: _bump(key))


def _read_many(keys: list[str]) -> dict[str, int]:
    found = cache.get_many(keys)
    for key in keys:
        if found.get(key) is None:
            # A fresh clock value, so entries left from before a cache restart are never reused.
            gen = time.time_ns()
            cache.add(key, gen, None)
            found[key] = cache.get(key, gen)
    return {key: int(found[key]) for key in keys}


def _bump(key: str) -> None:
    _forget()
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, time.time_ns(), None)


def _forget() -> None:
    memo = _memo.get()
    if memo is not None:
        memo.clear()


def _request_started(**kwargs: Any) -> None:
    _memo.set({})


def _request_finished(**kwargs: Any) -> None:
    _memo.set(None)


request_started.connect(_request_started, dispatch_uid="crm-generations-request-started")
request_finished.connect(_request_finished, dispatch_uid="crm-generations-request-finished")
