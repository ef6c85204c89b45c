"""Thumbnails for image Documents (Pillow), never decoding what could be a bomb.

A thumbnail is made the first time a page asks for it, not while the file arrives: most
attachments are never shown as a picture, and making one costs more than storing the email
that carried it (a mail scan, the add-in's link). Once made it is kept; bytes that are no safe
image are marked so and never tried again.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import BinaryIO

from django.core.files import File
from django.core.files.storage import default_storage
from PIL import Image

from crm.models import Document
from crm.models.documents import THUMBNAIL_TYPES
from crm.services import blobs

log = logging.getLogger(__name__)

SIZE = (240, 240)
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
# A small camera picture is ~12 Mpx; past this an image is refused before it is decoded.
MAX_PIXELS = 50_000_000


def of(document: Document) -> str | None:
    """The storage name of the document's thumbnail, made now if it has none yet; None when
    the document is not a safe image of a type worth a thumbnail."""
    if document.thumbnail:
        return document.thumbnail.name
    if not document.may_have_thumbnail:
        return None
    with default_storage.open(document.file.name, "rb") as handle:
        name = make(handle, document.content_type)
    document.thumbnail, document.no_thumbnail = name or "", name is None
    Document.objects.filter(pk=document.pk).update(
        thumbnail=document.thumbnail, no_thumbnail=document.no_thumbnail
    )
    return name


def make(data: bytes | BinaryIO | File, content_type: str) -> str | None:
    """The storage name of a PNG thumbnail, or None when the bytes are not a safe image."""
    if content_type.lower() not in THUMBNAIL_TYPES:
        return None
    try:
        return _thumbnail(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        log.info("no thumbnail: %s", exc)
        return None


def _thumbnail(source: BinaryIO | File) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Opening reads only the header: the size is known before any pixel is decoded.
        with Image.open(source, formats=FORMATS) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                return None
            image.draft("RGB", SIZE)
            image.thumbnail(SIZE)
            out = io.BytesIO()
            image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB").save(
                out, "PNG", optimize=True
            )
    name, _ = blobs.put(out.getvalue(), kind="thumbnails")
    return name
