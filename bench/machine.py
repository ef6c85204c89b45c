"""How fast the CPU is at the moment, so that the figures of two runs can be compared.

The cores of a shared machine do not always run at the same speed: the same code has taken
twice the CPU time on one day as on another. Each benchmark prints this reference with its
figures; runs whose references differ by more than a few per cent compare only as ratios.
"""

from __future__ import annotations

import time

LOOP = 3_000_000


def reference_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop (3 million additions), best of three."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        total = 0
        for i in range(LOOP):
            total += i
        best = min(best, time.process_time() - started)
    return best * 1000


def reference() -> str:
    return f"CPU reference loop {reference_ms():.0f} ms (bench/machine.py; lower is faster)"
