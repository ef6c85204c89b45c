"""Content-addressed files: each content once, wherever an earlier layout stored it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from crm.services import blobs

DATA = b"%PDF-1.4 quarterly report\n" * 500
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def _media(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = str(tmp_path / "media")


def _files() -> list[Path]:
    return sorted(p for p in Path(default_storage.location).rglob("*") if p.is_file())


def _directories() -> list[Path]:
    return sorted(p for p in Path(default_storage.location).rglob("*") if p.is_dir())


def test_the_same_bytes_are_written_once_under_their_sha256() -> None:
    assert blobs.put(DATA, kind="files") == (f"files/{SHA[:2]}/{SHA}", SHA)
    assert blobs.put(DATA, kind="files") == (f"files/{SHA[:2]}/{SHA}", SHA)
    assert blobs.read(f"files/{SHA[:2]}/{SHA}") == DATA
    assert len(_files()) == 1


def test_files_share_at_most_256_directories_per_kind() -> None:
    for n in range(300):
        blobs.put(b"file %d" % n, kind="files")
    first_level = [d for d in _directories() if d.parent.name == "files"]
    assert len(_files()) == 300
    assert len(first_level) <= 256
    assert all(d.parent.name == "files" for d in _directories() if d.name != "files")


def test_a_file_stored_under_the_earlier_layout_is_found_not_copied() -> None:
    earlier = f"files/{SHA[:2]}/{SHA[2:4]}/{SHA}"
    default_storage.save(earlier, ContentFile(DATA))
    assert blobs.put(DATA, kind="files") == (earlier, SHA)
    assert len(_files()) == 1


def test_a_truncated_file_is_replaced_by_the_whole_one() -> None:
    # A process killed while writing leaves one under the content's name.
    default_storage.save(blobs.name_for(SHA, "raw"), ContentFile(DATA[:100]))
    name, _ = blobs.put(DATA, kind="raw")
    assert blobs.read(name) == DATA
    assert len(_files()) == 1


def test_a_truncated_file_under_the_earlier_layout_is_not_taken() -> None:
    default_storage.save(f"raw/{SHA[:2]}/{SHA[2:4]}/{SHA}", ContentFile(DATA[:100]))
    name, _ = blobs.put(DATA, kind="raw")
    assert name == blobs.name_for(SHA, "raw")
    assert blobs.read(name) == DATA
