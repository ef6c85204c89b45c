"""Where imported emails come from: .eml files, mbox files and Maildir folders (pure)."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path


def is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def count(paths: list[Path]) -> int:
    """How many messages `read` will yield (for a progress bar)."""
    total = 0
    for path in paths:
        if path.is_dir():
            total += len(mailbox.Maildir(path, create=False)) if _is_maildir(path) else 0
        elif is_mbox(path):
            total += len(mailbox.mbox(path, create=False))
        else:
            total += 1
    return total


def read(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(origin, raw bytes) for every message, in order; origin names the file and position."""
    for path in paths:
        if path.is_dir():
            if not _is_maildir(path):
                raise ValueError(f"{path} is a folder but not a Maildir (no cur/ and new/)")
            yield from _maildir(path)
        elif is_mbox(path):
            yield from _mbox(path)
        else:
            yield str(path), path.read_bytes()


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _maildir(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.keys()):
        yield f"{path}/{key}", box.get_bytes(key)


def _mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(path, factory=None, create=False)
    for index, key in enumerate(box.keys(), start=1):
        yield f"{path}#{index}", box.get_bytes(key)
