"""Generation counters in the cache: bumping one retires every entry keyed with it.

Cached state (a user's privileges, the license's status) is stored under a key holding the
current generation; a change bumps the generation instead of hunting down the entries.
"""

from __future__ import annotations

import time

from django.core.cache import cache
from django.db import transaction


def current(key: str) -> int:
    gen = cache.get(key)
    if gen is None:
        # A fresh clock value, so entries left from before a cache restart are never reused.
        gen = time.time_ns()
        cache.add(key, gen, None)
        gen = cache.get(key, gen)
    return int(gen)


def bump(key: str) -> None:
    """Retire the entries now, and again when the transaction commits.

    The second bump matters: a request that read the old rows between the first bump and the
    commit would otherwise keep its stale state under the new generation.
    """
    _bump(key)
    transaction.on_commit(lambda: _bump(key))


def _bump(key: str) -> None:
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, time.time_ns(), None)
