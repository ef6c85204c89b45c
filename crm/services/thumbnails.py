"""Thumbnails for image Documents (Pillow), never decoding what could be a bomb."""

from __future__ import annotations

import io
import logging
import warnings

from PIL import Image

from crm.services import blobs

log = logging.getLogger(__name__)

SIZE = (240, 240)
# Formats worth a thumbnail; anything else (SVG, PSD, EPS: a parser's attack surface) gets none.
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
# A small camera picture is ~12 Mpx; past this an image is refused before it is decoded.
MAX_PIXELS = 50_000_000


def make(data: bytes, content_type: str) -> str | None:
    """The storage name of a PNG thumbnail, or None when the bytes are not a safe image."""
    if content_type.lower() not in CONTENT_TYPES:
        return None
    try:
        return _thumbnail(data)
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


def _thumbnail(data: bytes) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Opening reads only the header: the size is known before any pixel is decoded.
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
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
