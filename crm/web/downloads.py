"""Serving stored bytes safely: sanitised names (RFC 6266), no HTML from an attachment."""

from __future__ import annotations

import re
import unicodedata

from django.core.files.storage import default_storage
from django.http import FileResponse
from django.utils.http import content_disposition_header

# Types a browser would run or render as a document in our origin: always downloaded as bytes.
ACTIVE_TYPES = re.compile(
    r"^(text/html|application/xhtml|image/svg|text/xml|application/xml|text/javascript|"
    r"application/javascript|application/ecmascript|text/xsl|multipart/)",
    re.I,
)
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"*/:<>?\\|]')
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.I)


def safe_filename(name: str, default: str = "download") -> str:
    """A name fit for Content-Disposition: no path, no controls, no bidi tricks, not too long."""
    name = unicodedata.normalize("NFC", name or "")
    name = "".join(c for c in name if unicodedata.category(c) not in {"Cf", "Cc", "Cs"})
    name = _UNSAFE.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip(" .")
    if _RESERVED.match(name):
        name = f"_{name}"
    if len(name.encode()) > 200:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:16] if dot else ""
        stem = (stem if dot else name).encode()[: 190 - len(ext)].decode(errors="ignore")
        name = f"{stem}.{ext}" if ext else stem
    return name or default


def serve(storage_name: str, *, filename: str, content_type: str, inline: bool) -> FileResponse:
    """Stream a stored file. Only plain images are ever shown inline."""
    content_type = (content_type or "application/octet-stream").lower()
    if ACTIVE_TYPES.match(content_type):
        content_type = "application/octet-stream"
    inline = inline and content_type in INLINE_IMAGES
    response = FileResponse(default_storage.open(storage_name, "rb"), content_type=content_type)
    # Never None: safe_filename() always returns a name.
    response["Content-Disposition"] = (
        content_disposition_header(as_attachment=not inline, filename=safe_filename(filename))
        or "attachment"
    )
    response["X-Content-Type-Options"] = "nosniff"
    # Even if a browser decided to render it, nothing in it may run or load.
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    return response
