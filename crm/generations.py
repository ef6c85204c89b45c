"""Generation counters in the cache: bumping one retires every entry keyed with it.

Cached state (a user's privileges, the license's status) is stored under a key holding the
current generation; a change bumps the generation instead of hunting down the entries.

Within one request a generation and the entries read under it are remembered (`remembered`):
a request checks privileges several times and each read would be a round trip to the cache.
A bump in this process forgets them at once; a change made by another process is seen by the
next request, as it would be had it come a moment later.
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


def current(key: str) -> int:
    return remembered(key, lambda: _read(key))


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


def bump(key: str) -> None:
    """Retire the entries now, and again when the transaction commits.

    The second bump matters: a request that read the old rows between the first bump and the
    commit would otherwise keep its stale state under the new generation.
    """
    _bump(key)
    transaction.on_commit(lambda: _bump(key))


def _read(key: str) -> int:
    gen = cache.get(key)
    if gen is None:
        # A fresh clock value, so entries left from before a cache restart are never reused.
        gen = time.time_ns()
        cache.add(key, gen, None)
        gen = cache.get(key, gen)
    return int(gen)


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
