"""Shared bits for the converter's tests: fixture emails and the third-party corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MAILS = Path(__file__).parent / "mails"


def mail(name: str, **values: str) -> bytes:
    raw = (MAILS / name).read_bytes()
    for key, value in values.items():
        raw = raw.replace(b"{" + key.encode() + b"}", value.encode())
    return raw


def corpus(folder: str) -> Path:
    """A folder of /work/shared/corpora, read in place; the test is skipped when absent."""
    root = Path(os.environ.get("CRM_TEST_CORPORA", Path(__file__).parents[3] / "shared/corpora"))
    path = root / folder
    if not path.is_dir():
        pytest.skip(f"third-party corpus {path} not present (set CRM_TEST_CORPORA)")
    return path
