"""Content-addressed files through Django's storage API (local disk, or S3-compatible).

A file's storage name comes from its sha256 alone: the same bytes are written once, and no
user-supplied text (a filename, a subject) ever becomes part of a path.

Names are `kind/ab/<sha256>`: 256 directories per kind, each made once. Files stored before
under `kind/ab/cd/<sha256>` keep their names and are still found, so the same bytes are never
stored twice. (That layout's 65,536 directories per kind meant a new directory for nearly
every new file: on ext4, making one cost more than writing the megabyte in it.)
"""

from __future__ import annotations

import hashlib

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


def name_for(sha256: str, kind: str) -> str:
    return f"{kind}/{sha256[:2]}/{sha256}"


def _earlier_name(sha256: str, kind: str) -> str:
    return f"{kind}/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def put(data: bytes, *, kind: str) -> tuple[str, str]:
    """Store `data` once; returns (storage name, sha256). Safe to call concurrently."""
    sha256 = hashlib.sha256(data).hexdigest()
    name = name_for(sha256, kind)
    if default_storage.exists(name):
        if default_storage.size(name) == len(data):
            return name, sha256
        # A write cut short (process killed, disk full) left a truncated file: replace it.
        default_storage.delete(name)
    earlier = _earlier_name(sha256, kind)
    if default_storage.exists(earlier) and default_storage.size(earlier) == len(data):
        return earlier, sha256
    # ContentFile wraps the bytes without copying; storage writes them in chunks.
    # If another process wins the race, storage picks another name for the same bytes.
    name = default_storage.save(name, ContentFile(data))
    return name, sha256


def read(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()
