"""Untrusted email HTML → HTML safe to show, and → plain text for rule matching.

Pure code. nh3 (ammonia) parses and serialises; this module only chooses what it allows and
rewrites image sources. The page still shows the result in a sandboxed frame under a strict
Content-Security-Policy: sanitising is one layer, not the only one.

Decisions:
- Links: http, https, mailto, tel only; relative and protocol-relative URLs are dropped
  (inside our frame they would point at the CRM itself). Every link gets
  rel="noopener noreferrer" target="_blank".
- Images: `cid:` sources go through the caller's `cid_url`; `data:` is kept only for raster
  images (png, gif, jpeg, webp, bmp; not SVG, which is a document); remote http(s) images
  are replaced by a placeholder, their address kept in `data-blocked-src`, unless
  `allow_remote_images`. Nothing else loads: no srcset, no `background` attribute, and
  inline styles limited to properties that take no URL.
- Dropped with their content: script, style, title, iframe, object, embed, svg, math,
  form controls. Dropped, content kept: form, unknown tags.
- HTML nested deeper than MAX_NESTING comes out as escaped flat text: nh3's cost grows with
  the square of the nesting depth.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from html import escape, unescape
from html.parser import HTMLParser
from urllib.parse import urlsplit

import nh3

__all__ = [
    "BLOCKED_IMAGE_PLACEHOLDER",
    "MAX_NESTING",
    "SanitizedHtml",
    "html_to_text",
    "sanitize_html",
]

# A 1x1 transparent GIF: the page swaps in data-blocked-src when the user asks.
BLOCKED_IMAGE_PLACEHOLDER = (
    "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
)


@dataclass(frozen=True, slots=True)
class SanitizedHtml:
    html: str
    blocked_remote_images: int


_TAGS = frozenset(
    {
        *("a", "abbr", "address", "article", "aside", "b", "bdi", "bdo", "big", "blockquote"),
        *("br", "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "details"),
        *("dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "footer", "h1"),
        *("h2", "h3", "h4", "h5", "h6", "header", "hr", "i", "img", "ins", "kbd", "li"),
        *("main", "mark", "ol", "p", "pre", "q", "s", "samp", "section", "small", "span"),
        *("strike", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th"),
        *("thead", "time", "tr", "tt", "u", "ul", "var", "wbr"),
    }
)
_DROPPED_WITH_CONTENT = frozenset(
    {
        *("script", "style", "title", "iframe", "frame", "frameset", "object", "embed"),
        *("applet", "noscript", "noembed", "noframes", "template", "svg", "math", "textarea"),
        *("select", "button", "xmp"),
    }
)
_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"align", "valign", "dir", "lang", "title", "style", "width", "height", "bgcolor"},
    "a": {"href", "name"},
    "img": {"src", "alt", "border", "hspace", "vspace"},
    "table": {"border", "cellpadding", "cellspacing", "summary", "frame", "rules"},
    "td": {"colspan", "rowspan", "nowrap", "scope", "headers"},
    "th": {"colspan", "rowspan", "nowrap", "scope", "headers", "abbr"},
    "col": {"span"},
    "colgroup": {"span"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value", "type"},
    "hr": {"size", "noshade"},
    "time": {"datetime"},
    "del": {"datetime"},
    "ins": {"datetime"},
    "details": {"open"},
}
# Properties that cannot fetch anything (no url(), no image values) and cannot escape the
# message's box (no position, no z-index).
_STYLE_PROPERTIES = frozenset(
    {
        *("color", "background-color", "font", "font-family", "font-size", "font-style"),
        *("font-weight", "font-variant", "line-height", "letter-spacing", "word-spacing"),
        *("text-align", "text-decoration", "text-indent", "text-transform", "vertical-align"),
        *("white-space", "word-break", "word-wrap", "overflow-wrap", "direction"),
        *("width", "height", "min-width", "max-width", "min-height", "max-height"),
        *("margin", "margin-top", "margin-right", "margin-bottom", "margin-left"),
        *("padding", "padding-top", "padding-right", "padding-bottom", "padding-left"),
        *("border", "border-top", "border-right", "border-bottom", "border-left"),
        *("border-color", "border-style", "border-width", "border-radius"),
        *("border-collapse", "border-spacing", "table-layout", "caption-side"),
        *("display", "float", "clear", "list-style-type", "list-style-position"),
    }
)
_LINK_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_DATA_IMAGE = re.compile(r"data:image/(?:png|gif|jpe?g|webp|bmp);base64,[a-z0-9+/=\s]*\Z", re.I)
# Belt and braces over filter_style_properties: legacy IE expressions, escapes that hide
# a property name, and any URL.
_DANGEROUS_STYLE = re.compile(r"url\s*\(|expression\s*\(|javascript:|behavior|@import|\\", re.I)

CidUrl = Callable[[str], str | None]


def sanitize_html(
    html: str,
    *,
    allow_remote_images: bool,
    cid_url: CidUrl | None = None,
    placeholder_src: str = BLOCKED_IMAGE_PLACEHOLDER,
) -> SanitizedHtml:
    """Sanitise an email's HTML body.

    `cid_url(content_id)` returns the URL serving that inline part (absolute http(s), or a
    path starting with "/") or None to drop the image; without it `cid:` images are dropped.
    """
    if _too_deep(html):
        return SanitizedHtml(html=f"<pre>{escape(_flat_text(html))}</pre>", blocked_remote_images=0)
    # Blocked images are marked with a per-call random scheme and rewritten after nh3 has
    # serialised the document: the marker cannot be forged by the message itself.
    html = _encodable(html)
    marker = f"x-blocked-{secrets.token_hex(8)}:"

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "style":
            return None if _DANGEROUS_STYLE.search(value) else value
        if tag == "img" and attribute == "src":
            return _image_src(value, allow_remote_images, cid_url, marker)
        if attribute == "href":
            return value if _scheme(value) in _LINK_SCHEMES else None
        return value

    cleaned = nh3.clean(
        html,
        tags=set(_TAGS),
        clean_content_tags=set(_DROPPED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in _ATTRIBUTES.items()},
        attribute_filter=attribute_filter,
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        # nh3 drops other schemes before attribute_filter runs; "cid", "data" and relative
        # URLs reach it, and it decides per tag (it drops relative links itself, because
        # url_relative="deny" would also drop the cid_url paths it returns).
        url_schemes=set(_LINK_SCHEMES | {"cid", "data"}),
        filter_style_properties=set(_STYLE_PROPERTIES),
        strip_comments=True,
    )
    needle = f' src="{marker}'
    blocked = cleaned.count(needle)
    if blocked:
        cleaned = cleaned.replace(
            needle, f' src="{escape(placeholder_src, quote=True)}" data-blocked-src="'
        )
    return SanitizedHtml(html=cleaned, blocked_remote_images=blocked)


def _encodable(text: str) -> str:
    """Lone surrogates (from undecodable bytes) cannot cross into nh3: replace them."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _scheme(url: str) -> str:
    try:
        return urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return ""


def _image_src(value: str, allow_remote: bool, cid_url: CidUrl | None, marker: str) -> str | None:
    scheme = _scheme(value)
    if scheme == "cid":
        return _cid_src(value.strip()[4:], cid_url)
    if scheme == "data":
        return value if _DATA_IMAGE.match(value.strip()) else None
    if scheme in {"http", "https"}:
        return value if allow_remote else f"{marker}{value}"
    return None


def _cid_src(content_id: str, cid_url: CidUrl | None) -> str | None:
    if cid_url is None:
        return None
    url = cid_url(content_id.strip().strip("<>"))
    # nh3 does not re-check what the filter returns, so the caller's URL is checked here.
    if url is None or not url.strip():
        return None
    if _scheme(url) in {"http", "https"}:
        return url
    return url if url.startswith("/") and not url.startswith("//") and ":" not in url else None


# --------------------------------------------------------------------------------------
# Text

_BLOCKS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "center", "dd", "details", "div"),
        *("dl", "dt", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6"),
        *("header", "hr", "li", "main", "ol", "p", "pre", "section", "summary", "table"),
        *("tr", "ul", "caption"),
    }
)
_CELLS = frozenset({"td", "th"})
_TEXT_TAGS = frozenset(_BLOCKS | _CELLS | {"br", "img"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """Readable text of an HTML body: blocks on their own lines, no script or style text.

    nh3 first reduces the markup to well-formed block elements (html5ever handles any
    input in linear time), then a small HTMLParser lays the text out.
    """
    html = _encodable(html)
    if _too_deep(html):
        return _flat_text(html)
    reduced = nh3.clean(
        html,
        tags=set(_TEXT_TAGS),
        clean_content_tags=set(_DROPPED_WITH_CONTENT - {"noscript", "textarea", "select"}),
        attributes={"img": {"alt"}},
        link_rel=None,
        url_schemes=set(),
        strip_comments=True,
    )
    parser = _TextLayout()
    parser.feed(reduced)
    parser.close()
    return parser.text()


# html5ever's "element in scope" checks walk the stack of open elements, so nh3's cost grows
# with the square of the nesting depth: 100 000 nested <div> take ~15 s, 5 000 take 0.08 s.
# Deeper documents are shown as flat text. Elements the parser closes by itself (p, li, td…)
# and void elements do not nest, so they are not counted.
MAX_NESTING = 5_000
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)")
_NOT_NESTING = frozenset(
    {
        *("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"),
        *("source", "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option"),
        *("optgroup", "thead", "tbody", "tfoot", "colgroup", "rb", "rt", "rtc", "rp"),
    }
)
# "<[^<>]*>" rather than "<[^>]*>": a "<" without ">" must not rescan the rest of the text.
_ANY_TAG = re.compile(r"<[^<>]*>")


def _too_deep(html: str) -> bool:
    depth = 0
    for match in _TAG.finditer(html):
        if match.group(2).lower() in _NOT_NESTING:
            continue
        depth = max(depth - 1, 0) if match.group(1) else depth + 1
        if depth > MAX_NESTING:
            return True
    return False


def _flat_text(html: str) -> str:
    return unescape(_SPACES.sub(" ", _ANY_TAG.sub(" ", html))).strip()


class _TextLayout(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._chunks.append("\n")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self._chunks.append(f" {alt} ")
        elif tag in _CELLS:
            self._chunks.append("\t")
        elif tag in _BLOCKS:
            self._chunks.append("\n")
            if tag == "pre":
                self._pre += 1
            elif tag == "li":
                self._chunks.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS:
            self._chunks.append("\n")
            if tag == "pre" and self._pre:
                self._pre -= 1

    def handle_data(self, data: str) -> None:
        # Outside <pre>, HTML collapses runs of whitespace into one space.
        self._chunks.append(data if self._pre else _SPACES.sub(" ", data))

    def text(self) -> str:
        lines = "".join(self._chunks).replace("\xa0", " ").split("\n")
        joined = "\n".join(line.strip(" \t") for line in lines)
        return _BLANK_LINES.sub("\n\n", joined).strip()
