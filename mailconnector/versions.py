"""Comparing dotted versions ("1.4.2") without surprises on odd input."""

from __future__ import annotations

import re

_PART = re.compile(r"\d+")


def as_tuple(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in _PART.findall(version.split("-")[0])[:4]]
    return tuple(parts + [0] * (3 - len(parts)))


def older_than(version: str, minimum: str) -> bool:
    return as_tuple(version) < as_tuple(minimum)
