"""Raw RFC 5322 bytes → `ParsedEmail`, for any input, without raising.

Pure code (no models, no settings). The stdlib parser (`email.policy.default`) does the MIME
work; this module adds what real mail needs on top of it:

- Text is decoded by a chain: the declared charset (or the superset mail clients really
  mean, per the WHATWG Encoding Standard) → UTF-8 → charset-normalizer detection →
  windows-1252 → latin-1. Every step past the declared charset adds a defect.
- Headers with raw 8-bit bytes, encoded words in unknown charsets or broken base64
  (RFC 2047 §6.3: show such a word as it is), and RFC 2231 filenames in unknown charsets
  are recovered instead of turning into U+FFFD.
- Nested `message/rfc822` parts stay one attachment (`<subject>.eml`) and are parsed into
  `Part.nested`, down to `MAX_NESTED_DEPTH`.
- TNEF (`winmail.dat`) is unpacked with tnefparse. When that works, the winmail.dat part is
  *replaced* by its files (the raw message, stored by the caller, still holds it); when it
  fails, the winmail.dat is kept as it is and a defect says why. RTF bodies inside TNEF are
  not converted (no RTF library in the stack); HTML and plain bodies are used when the MIME
  message has none.
- Work is bounded: headers are truncated before the stdlib parses them (its address and
  parameter parsers are quadratic), and MIME depth, part count and TNEF object count are
  capped. A timeout is still the caller's job.

Strings in the result hold no NUL and no lone surrogates, so they can go straight to
PostgreSQL.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import mimetypes
import re
import secrets
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email import errors, feedparser
from email.feedparser import BytesFeedParser
from email.generator import BytesGenerator
from email.header import decode_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.policy import EmailPolicy, compat32
from email.utils import getaddresses
from functools import lru_cache
from io import BytesIO, StringIO
from types import FunctionType
from typing import Any, cast
from urllib.parse import unquote

import charset_normalizer
import pybase64
from tnefparse import properties as tnef_properties
from tnefparse.tnef import TNEF

from crm.email.addresses import Address, normalise_email

__all__ = [
    "MAX_NESTED_DEPTH",
    "ParsedEmail",
    "Part",
    "header_section",
    "identity",
    "message_id_of",
    "normalise_message_id",
    "parse",
    "summary",
]

MAX_NESTED_DEPTH = 5  # message/rfc822 inside message/rfc822 …
MAX_MIME_DEPTH = 50  # multipart inside multipart …
MAX_PARTS = 1000
MAX_DEFECTS = 200
MAX_HEADERS = 500  # kept in ParsedEmail.headers
# The stdlib header parsers are quadratic in the number of addresses, parameters and
# encoded words (50 000 encoded words take ~1 minute), so values are cut before parsing.
MAX_HEADER_CHARS = 16_384
MAX_MIME_HEADER_CHARS = 8_192  # Content-*: re-parsed many times by the feed parser
# tnefparse copies the rest of the stream for every object, so its cost is
# objects times size; real Outlook streams have a few dozen objects.
MAX_TNEF_OBJECTS = 10_000
# charset-normalizer guesses wildly on a few bytes (a 12-byte Hungarian filename comes back
# as Urdu), so short text skips detection and falls back to windows-1252.
MIN_DETECTION_BYTES = 32
DETECTION_SAMPLE_BYTES = 65_536


@dataclass(frozen=True, slots=True)
class Part:
    """A MIME leaf that is not the chosen text or HTML body: attachment, inline image…

    `part_path` is the IMAP section number (RFC 3501 §6.4.5: "1", "2.1"); files unpacked
    from a winmail.dat at "2" are "2/1", "2/2". `payload` is transfer-decoded. For a nested
    message, `payload` is that message's bytes and `nested` its parse (None past the depth cap).
    """

    filename: str | None
    content_type: str
    content_id: str | None
    inline: bool
    part_path: str
    size: int
    payload: bytes = field(repr=False)
    nested: ParsedEmail | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ParsedEmail:
    """What the CRM keeps of an email. Message ids are normalised (`normalise_message_id`)."""

    subject: str = ""
    from_: Address | None = None
    sender: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    date: datetime | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    # Auto-reply and bulk signals, as sent (RFC 3834, RFC 2919, RFC 2369, RFC 5321 §4.4).
    auto_submitted: str | None = None
    x_autoreply: str | None = None
    x_autorespond: str | None = None
    x_auto_response_suppress: str | None = None
    precedence: str | None = None
    # "" is the null reverse-path "<>" of bounces (RFC 5321 §4.5.5); None means no header.
    return_path: str | None = None
    list_id: str | None = None
    list_unsubscribe: str | None = None
    content_type: str = "text/plain"
    report_type: str | None = None  # multipart/report (RFC 6522): "delivery-status"…
    text_body: str | None = None
    html_body: str | None = None
    parts: tuple[Part, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    defects: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------
# Entry points


def parse(raw: bytes) -> ParsedEmail:
    """Parse raw message bytes. Never raises; what went wrong is in `defects`."""
    return _parse(raw, depth=0)


def normalise_message_id(value: str | None) -> str | None:
    """`" <ABC.123@Mail.Example.COM> "` → `"ABC.123@mail.example.com"`.

    Only the domain is lowercased: the left part is the sender's opaque token
    (RFC 5322 §3.6.4), while domains are case-insensitive. Folding whitespace inside the
    brackets, which some clients emit, is dropped.
    """
    if not value:
        return None
    match = _MSG_ID.search(value)
    token = match.group(1) if match else value
    token = _scrub("".join(token.split())).strip("<>")
    if not token:
        return None
    local, at, domain = token.rpartition("@")
    return f"{local}@{domain.lower()}" if at else token


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID `parse(raw).message_id` gives, read from the header section alone: a
    caller that must check it before storing the email does not parse the whole email twice."""
    headers = _header_values(raw)
    return normalise_message_id(headers.first("message-id")) if headers else None


_THREAD_HEADERS = ("message-id", "in-reply-to", "references", "x-riferimento-message-id")
_PEOPLE_HEADERS = ("from", "sender", "to", "cc", "reply-to")


def ids_and_addresses(raw: bytes) -> tuple[frozenset[str], frozenset[str]]:
    """The message ids an email carries (its own, those it answers or refers to, the PEC
    original's) and its sender's and recipients' addresses, normalised as `parse` does.

    Read from the header section without building header objects: about a tenth of the cost
    of `parse(header_section(raw))`, for a caller that looks at many emails before any is
    parsed (the converter's scheduling). Addresses come from the lenient legacy parser, the
    one `parse` falls back to; they can differ from `parse`'s for a malformed header.
    """
    headers = _header_values(raw)
    if headers is None:
        return frozenset(), frozenset()
    ids: set[str] = set()
    for name in _THREAD_HEADERS:
        for value in headers.values.get(name, []):
            ids.update(_message_ids(_unfold(value[:MAX_HEADER_CHARS])))
    ctx = _Context(depth=0, linesep="\n")  # its defects are parse()'s to report
    values = []
    for name in _PEOPLE_HEADERS:
        for value in headers.values.get(name, []):
            value = _unfold(value[:MAX_HEADER_CHARS])
            values.append(_restore_8bit(value, name, ctx) if _has_surrogates(value) else value)
    found = (normalise_email(_scrub(spec)) for _name, spec in getaddresses(values))
    return frozenset(ids), frozenset(address for address in found if address)


def summary(raw: bytes) -> ParsedEmail:
    """The subject, sender and Message-ID that `parse(header_section(raw))` gives, and nothing
    else: enough for `identity` and for a line in a list of emails, at about a fifth of the
    cost. Read from the raw header values as `ids_and_addresses` reads them; only the sender's
    header object is built, and `parse` finds it made when it reads the whole email.
    """
    data = raw[len(_UTF8_BOM) :] if raw.startswith(_UTF8_BOM) else raw
    try:
        section = BytesHeaderParser(policy=compat32).parsebytes(header_section(data))
    except Exception:
        return parse(header_section(raw))
    headers = _raw_headers(section)
    ctx = _Context(depth=0, linesep="\n")  # its defects are parse()'s to report
    ctx.charset_hint = _charset_hint(_text_root(section))
    return ParsedEmail(
        subject=_text_header(headers, "subject", ctx) or "",
        from_=_first(_address_header(headers, "from", ctx)),
        message_id=normalise_message_id(headers.first("message-id")),
    )


def _text_root(msg: Message) -> Message | None:
    """The part `get_body` finds in a header section: the message itself when it is plain
    text or HTML and no attachment (a multipart without its body has no parts)."""
    if msg.get_content_type() not in ("text/plain", "text/html"):
        return None
    return None if msg.get_content_disposition() == "attachment" else msg


def _header_values(raw: bytes) -> _Headers | None:
    """The raw header values, read from the header section alone; None when `parse` would
    keep no headers either.

    compat32 splits the values exactly as the default policy does, and its parser does not
    turn Content-Type into a header object (which costs more than everything else here) when
    it checks, at the end, for a multipart without parts.
    """
    data = raw[len(_UTF8_BOM) :] if raw.startswith(_UTF8_BOM) else raw
    try:
        section = BytesHeaderParser(policy=compat32).parsebytes(header_section(data, limit=262_144))
    except Exception:
        return None
    return _raw_headers(section)


def header_section(raw: bytes, *, limit: int | None = None) -> bytes:
    """The bytes up to the first empty line (within `limit`, if given): all that a header
    parser reads, without handing it a megabyte attachment to split into lines."""
    head = raw if limit is None else raw[:limit]
    cut = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    return head[: min(cut) + 2] if cut else head


def identity(parsed: ParsedEmail, raw: bytes) -> str:
    """The key that makes storing one email twice a no-op (sha256 hex).

    With a Message-ID it hashes the normalised id and the subject (whitespace collapsed),
    because some senders reuse one Message-ID for different mails (mass mailers, broken
    scripts): two emails with one Message-ID but different subjects get different
    identities, and a copy of the same email fetched twice gets the same one. Without a
    Message-ID it hashes the raw bytes.
    """
    if not parsed.message_id:
        return hashlib.sha256(raw).hexdigest()
    subject = " ".join(parsed.subject.split())
    key = f"{parsed.message_id}\n{subject}"
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------------------
# Policy


class _BoundedPolicy(EmailPolicy):
    """`email.policy.default` with header values cut to a size its parsers handle fast.

    A part's Content-Type is fetched about ten times during a parse; header objects are
    immutable, so each (name, value) is parsed once (measured: a quarter of parse time).
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return super().header_fetch_parse(name, value)
        return _parsed_header(self, name, value[: _header_limit(name)])


@lru_cache(maxsize=256)
def _parsed_header(policy: _BoundedPolicy, name: str, value: str) -> Any:
    return super(_BoundedPolicy, policy).header_fetch_parse(name, value)


@lru_cache(maxsize=256)
def _header_object(name: str, value: str) -> Any:
    """The policy's header object for an address or date header, made once per value: the
    header section is parsed before the whole email (scanner.process), and one sender's or
    one mailbox's address recurs from email to email. Header objects are immutable."""
    return _POLICY.header_factory(name, value)


def _header_limit(name: str) -> int:
    return MAX_MIME_HEADER_CHARS if name.lower().startswith("content-") else MAX_HEADER_CHARS


_POLICY = _BoundedPolicy()
# Regenerating a nested message must not refold its headers, so its bytes stay as sent.
_CRLF_POLICY = _POLICY.clone(refold_source="none", linesep="\r\n")
_LF_POLICY = _POLICY.clone(refold_source="none", linesep="\n")


# --------------------------------------------------------------------------------------
# Parse context


class _Defects:
    """Ordered, de-duplicated, capped list of human-readable defects."""

    def __init__(self) -> None:
        self._items: dict[str, None] = {}
        self._dropped = 0

    def add(self, text: str) -> None:
        text = _scrub(text)
        if text in self._items:
            return
        if len(self._items) >= MAX_DEFECTS:
            self._dropped += 1
            return
        self._items[text] = None

    def result(self) -> tuple[str, ...]:
        items = tuple(self._items)
        if self._dropped:
            items += (f"{self._dropped} more defects not listed",)
        return items


@dataclass
class _Context:
    depth: int
    linesep: str
    defects: _Defects = field(default_factory=_Defects)
    charset_hint: str | None = None
    tnef_text: str | None = None
    tnef_html: str | None = None
    # A single-part message is its own body part: report its defects once.
    reported: set[int] = field(default_factory=set)

    def part_defects(self, part: Message, where: str) -> None:
        if id(part) in self.reported:
            return
        self.reported.add(id(part))
        for defect in part.defects:
            self.defects.add(_describe_defect(defect, where))


@dataclass
class _Headers:
    """Raw header values by lowercase name, in order, as the parser stored them."""

    values: dict[str, list[str]]
    items: list[tuple[str, str]]

    def first(self, name: str) -> str | None:
        found = self.values.get(name)
        return found[0] if found else None


# --------------------------------------------------------------------------------------
# Top level


_UTF8_BOM = b"\xef\xbb\xbf"


def _parse(raw: bytes, depth: int) -> ParsedEmail:
    try:
        data = bytes(raw)
    except (TypeError, ValueError) as exc:
        return ParsedEmail(defects=(f"input is not bytes ({type(exc).__name__})",))
    notes: list[str] = []
    if data.startswith(_UTF8_BOM):
        # Saved by a Windows editor: a BOM before the first header hides that header.
        data = data[len(_UTF8_BOM) :]
        notes.append("message: starts with a UTF-8 byte order mark; ignored")
    # The contract is "never raises": on failure, retry with headers only, then give up.
    for with_body, what in ((True, "MIME structure"), (False, "headers")):
        ctx = _Context(depth=depth, linesep=_linesep(data))
        for note in notes:
            ctx.defects.add(note)
        try:
            msg = _read(data, headersonly=not with_body)
            return _build(msg, ctx, with_body=with_body)
        except Exception as exc:
            notes.append(f"the {what} could not be read ({_exc_text(exc)})")
    return ParsedEmail(defects=tuple(notes))


def _build(msg: EmailMessage, ctx: _Context, *, with_body: bool) -> ParsedEmail:
    ctx.part_defects(msg, "message")
    root = (_salvage_multipart(msg, ctx) or msg) if with_body else msg
    text_part, html_part = _body_parts(root, ctx) if with_body else (None, None)
    ctx.charset_hint = _charset_hint(text_part, html_part)
    headers = _raw_headers(msg)
    text_body = _part_text(text_part, "text body", ctx) if text_part is not None else None
    html_body = _part_text(html_part, "HTML body", ctx) if html_part is not None else None
    parts: list[Part] = []
    if with_body:
        parts = _collect_parts(root, (text_part, html_part), ctx)
    text_body = text_body if text_body is not None else ctx.tnef_text
    html_body = html_body if html_body is not None else ctx.tnef_html
    parts = _mark_inline(parts, html_body)
    return ParsedEmail(
        subject=_text_header(headers, "subject", ctx) or "",
        from_=_first(_address_header(headers, "from", ctx)),
        sender=_first(_address_header(headers, "sender", ctx)),
        to=_address_header(headers, "to", ctx),
        cc=_address_header(headers, "cc", ctx),
        bcc=_address_header(headers, "bcc", ctx),
        reply_to=_address_header(headers, "reply-to", ctx),
        date=_date_header(headers, ctx),
        message_id=normalise_message_id(headers.first("message-id")),
        in_reply_to=normalise_message_id(headers.first("in-reply-to")),
        references=_message_ids(headers.first("references")),
        auto_submitted=_text_header(headers, "auto-submitted", ctx),
        x_autoreply=_text_header(headers, "x-autoreply", ctx),
        x_autorespond=_text_header(headers, "x-autorespond", ctx),
        x_auto_response_suppress=_text_header(headers, "x-auto-response-suppress", ctx),
        precedence=_text_header(headers, "precedence", ctx),
        return_path=_return_path(headers.first("return-path")),
        list_id=_text_header(headers, "list-id", ctx),
        list_unsubscribe=_text_header(headers, "list-unsubscribe", ctx),
        content_type=_content_type(msg, "text/plain", "Content-Type", ctx),
        report_type=_report_type(msg, ctx),
        text_body=text_body,
        html_body=html_body,
        parts=tuple(parts),
        headers=_decoded_headers(headers, ctx),
        defects=ctx.defects.result(),
    )


def _read(data: bytes, *, headersonly: bool = False) -> EmailMessage:
    """Parse without `BytesParser.parsebytes`' two whole-message copies.

    parsebytes decodes the bytes into one str and reads it through a StringIO: five bytes of
    memory per input byte before parsing starts. The feed parser takes slices just as well.
    Large runs of base64 lines are lifted out first (`_Lifted`) and put back afterwards.
    """
    lifted = None if headersonly else _Lifted.find(data)
    if lifted is not None:
        msg = _feed(lifted.data, headersonly=False)
        if lifted.restore(msg):
            return msg
    return _feed(data, headersonly=headersonly)


def _feed(data: bytes, *, headersonly: bool) -> EmailMessage:
    parser = _FeedParser(policy=_POLICY)
    parser._input = _RunLines()  # type: ignore[attr-defined]  # before the first feed
    if headersonly:
        parser._set_headersonly()  # type: ignore[attr-defined]
    view = memoryview(data)
    for start in range(0, len(data), _FEED_SLICE):
        parser.feed(bytes(view[start : start + _FEED_SLICE]))
    # The policy's message_factory is EmailMessage; typeshed only knows Message.
    return cast(EmailMessage, parser.close())


_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
# A body smaller than this is fed as it is: lifting pays off on attachments.
_LIFT_MIN_BYTES = 16_384


@dataclass
class _Lifted:
    """The message with each large body made only of base64 lines replaced by one token line.

    `_RunLines` already hands the feed parser such a run as one line, which the parser appends
    to the body it collects whatever state it is in (see there): a token line in its place is
    treated the same way, without the parser seeing the megabyte. Found with `bytes.find` and
    `bytes.translate` (C loops) instead of a regular expression over every character; the
    runs are put back into the parsed payloads, and if a token is not found exactly once in
    a leaf's payload the message is parsed again as it is.
    """

    data: bytes
    prefix: str
    runs: list[tuple[str, bytes]]  # (token line, the run it stands for)

    @classmethod
    def find(cls, data: bytes) -> _Lifted | None:
        if len(data) < _LIFT_MIN_BYTES:
            return None
        prefix = f"CRMLIFT{secrets.token_hex(8)}N"
        if prefix.encode() in data:
            return None
        pieces: list[bytes] = []
        runs: list[tuple[str, bytes]] = []
        at = 0
        for start, end, run in _base64_bodies(data):
            ending = "\r\n" if run.endswith(b"\r\n") else "\n"
            token = f"{prefix}{len(runs)}X{ending}"
            pieces += (data[at:start], token.encode())
            runs.append((token, run))
            at = end
        if not runs:
            return None
        pieces.append(data[at:])
        return cls(b"".join(pieces), prefix, runs)

    def restore(self, msg: Message) -> bool:
        found = 0
        for part in msg.walk():
            for name in ("preamble", "epilogue"):
                if self.prefix in (getattr(part, name, None) or ""):
                    return False
            payload = part._payload  # type: ignore[attr-defined]
            if not isinstance(payload, str) or self.prefix not in payload:
                continue
            whole = None
            for token, data in self.runs:
                cut = len(token) - len(token.rstrip("\r\n"))
                if payload in (token, token[:-cut]):  # the part's body is this run, nothing more
                    # The run's text made once, without the break the parser may have taken
                    # off: a replace would hold a second copy of a large attachment's text.
                    whole = data
                    payload = _ascii(data, len(data) - len(token) + len(payload))
                    found += 1
                elif token in payload:
                    payload = payload.replace(token, _ascii(data, len(data)), 1)
                    found += 1
                elif token[:-cut] in payload:  # the last line: its break was taken off
                    payload = payload.replace(token[:-cut], _ascii(data, len(data) - cut), 1)
                    found += 1
            if self.prefix in payload:
                return False
            part._payload = payload  # type: ignore[attr-defined]
            if whole is not None:
                # Checked to be base64 characters and line breaks only: `_clean_base64`
                # decodes these bytes rather than encoding the text again.
                part.crm_base64_lines = whole  # type: ignore[attr-defined]
        return found == len(self.runs)


def _ascii(data: bytes, end: int) -> str:
    """`data[:end]` as text, decoded from the bytes in place (no copy of the slice)."""
    return str(memoryview(data)[:end], "ascii")


def _base64_bodies(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, bytes) of each stretch from just after an empty line up to the next empty
    line, line starting with "--" or the end, that is at least `_LIFT_MIN_BYTES` of whole
    base64 lines. One scan for the breaks (a regular expression with a literal first byte is a
    C search), one `bytes.translate` per large stretch."""
    start: int | None = None
    for brk in _RUN_BREAK.finditer(data):
        if start is not None and (run := _whole_base64_lines(data, start, brk.start() + 1)):
            yield start, brk.start() + 1, run
        start = brk.end() if brk.group().endswith(b"\n") else None
    if start is not None and (run := _whole_base64_lines(data, start, len(data))):
        yield start, len(data), run


_RUN_BREAK = re.compile(rb"\n(?:\r?\n|--)")


def _whole_base64_lines(data: bytes, start: int, end: int) -> bytes | None:
    """The stretch if it is at least two lines of base64 characters, each ending in a line
    break, else None.

    A stretch between two breaks holds no empty line; one starting with a line break (the
    scan's matches cannot overlap) is left alone.
    """
    if end - start < _LIFT_MIN_BYTES:
        return None
    body = data[start:end]
    if not body.endswith(b"\n") or body[:1] in (b"\r", b"\n") or b"\n" not in body[:-1]:
        return None
    return None if body.translate(None, _BASE64_CHARS + b"\r\n") else body


_FEED_SLICE = 65_536


class _EndOfLineAtEnd:
    r"""`email.feedparser.NLCRE_eol`, `(\r\n|\r|\n)\Z`, looking at the last two characters.

    The parser strips the line break before a boundary off each part's body with it; the
    regular expression tries every position of the body, 11 ms for a megabyte attachment. The
    match can only be in the last two characters, and it is the same there.
    """

    def search(self, text: str) -> re.Match[str] | None:
        return _NLCRE_EOL.search(text[-2:])


_NLCRE_EOL = re.compile(r"(\r\n|\r|\n)\Z")


class _FeedParser(BytesFeedParser):
    """The stdlib's BytesFeedParser, its `_parsegen` (the same code) finding NLCRE_eol above.

    Only this parser's lookup of the name changes; email.feedparser itself is left alone.
    """

    _parsegen = FunctionType(
        BytesFeedParser._parsegen.__code__,  # type: ignore[attr-defined]
        {**vars(feedparser), "NLCRE_eol": _EndOfLineAtEnd()},
        "_parsegen",
    )


class _RunLines(feedparser.BufferedSubFile):  # type: ignore[misc,name-defined]
    """The feed parser's line buffer, handing over runs of base64-like lines as one line.

    The parser looks at a body one line at a time (a boundary test per line): 18,000 lines for
    a megabyte attachment, which cost more than everything else in a parse. A line made only
    of base64 characters can be no boundary (those start with "--"), no blank line and no
    header (it has no colon and does not start with a space), so the parser does the same with
    a run of them as with each of them: it appends them to the body it collects, which is
    then joined. The result is the same message, with the same defects.
    """

    def push(self, data: str) -> None:
        r"""As BufferedSubFile.push (lines cut at "\r\n", "\r" or "\n"; a last line without
        "\n" waits for more data), with the runs of base64 lines kept whole."""
        self._partial.write(data)
        if "\n" not in data and "\r" not in data:
            return
        self._partial.seek(0)
        text = self._partial.read()
        self._partial.seek(0)
        self._partial.truncate()
        if text.endswith("\n"):
            cut = len(text)
        else:
            head = text[:-1] if text.endswith("\r") else text
            cut = max(head.rfind("\n"), head.rfind("\r")) + 1
            self._partial.write(text[cut:])
        self.pushlines(_lines(text, cut))


def _lines(text: str, end: int) -> list[str]:
    """text[:end] cut into lines as StringIO(newline="") cuts it, runs of base64 lines whole."""
    out: list[str] = []
    at = 0
    for run in _BASE64_RUN.finditer(text, 0, end):
        if run.start() > at:
            out.extend(StringIO(text[at : run.start()], newline="").readlines())
        out.append(run.group())
        at = run.end()
    if at < end:
        out.extend(StringIO(text[at:end], newline="").readlines())
    return out


# Whole lines (from a line start to their "\n") of base64 characters, at least two of them.
_BASE64_RUN = re.compile(r"^(?:[A-Za-z0-9+/=]+\r?\n){2,}", re.MULTILINE)


_DELIMITER_LINE = re.compile(r"\s*--([^\s\"]{1,70})[ \t]*\r?\n")


def _salvage_multipart(msg: EmailMessage, ctx: _Context) -> EmailMessage | None:
    """Re-read a multipart whose declared boundary never occurs, with the one it uses.

    RFC 2046 §5.1.1 delimits parts by the boundary parameter; some senders (spam tools,
    broken relays) declare one and use another, and the parser then finds no parts at all.
    """
    if msg.is_multipart() or msg.get_content_maintype() != "multipart":
        return None
    payload = msg.get_payload()
    if not isinstance(payload, str):
        return None
    match = _DELIMITER_LINE.match(payload)
    if match is None:
        return None
    boundary = match.group(1)
    head = f'Content-Type: {msg.get_content_type()}; boundary="{boundary}"\n\n'
    salvaged = _read((head + payload).encode("ascii", "surrogateescape"))
    if not salvaged.is_multipart():
        return None
    ctx.defects.add(f"message: parts read with the boundary {boundary!r} the body uses")
    return salvaged


def _linesep(data: bytes) -> str:
    end = data.find(b"\n", 0, 65_536)
    return "\r\n" if end > 0 and data[end - 1 : end] == b"\r" else "\n"


def _safe(func: Any, default: Any, ctx: _Context, what: str) -> Any:
    try:
        return func()
    except Exception as exc:
        ctx.defects.add(f"{what} could not be read ({_exc_text(exc)})")
        return default


def _exc_text(exc: BaseException) -> str:
    text = str(exc)[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first(addresses: tuple[Address, ...]) -> Address | None:
    return addresses[0] if addresses else None


# --------------------------------------------------------------------------------------
# Headers


def _raw_headers(msg: Message) -> _Headers:
    # raw_items() is what the generator uses: values as received, 8-bit bytes kept as
    # surrogate escapes, which the decoders below turn back into bytes.
    values: dict[str, list[str]] = {}
    items: list[tuple[str, str]] = []
    for name, value in msg.raw_items():
        key = name.lower().strip()
        values.setdefault(key, []).append(value)
        items.append((name, value))
    return _Headers(values=values, items=items)


def _label(name: str) -> str:
    """Names a header one way in every defect: "reply-to" → "Reply-To header"."""
    return "-".join(word.capitalize() for word in name.strip().split("-")) + " header"


def _bounded(name: str, value: str, ctx: _Context) -> str:
    limit = _header_limit(name)
    if len(value) > limit:
        ctx.defects.add(f"{_label(name)} longer than {limit} characters; the rest was ignored")
        return value[:limit]
    return value


def _unfold(value: str) -> str:
    # RFC 5322 §2.2.3: unfolding removes the CRLF before folding whitespace.
    return value.replace("\r\n", "").replace("\n", "").replace("\r", "")


def _text_header(headers: _Headers, name: str, ctx: _Context) -> str | None:
    raw = headers.first(name)
    if raw is None:
        return None
    return _decode_header_value(name, raw, ctx).strip()


def _decode_header_value(name: str, raw: str, ctx: _Context) -> str:
    """A header as text, RFC 2047 words decoded one by one (see `_decode_words`).

    Not `str(policy.header_factory(...))`: that silently turns words in unknown charsets
    into U+FFFD and drops undecodable words, and reports neither on the header.
    """
    value = _unfold(_bounded(name, raw, ctx))
    if _has_surrogates(value):
        value = _restore_8bit(value, _label(name), ctx)
    if "=?" in value:
        value = _decode_words(value, _label(name), ctx)
    return _scrub(value)


def _restore_8bit(value: str, where: str, ctx: _Context) -> str:
    """Raw 8-bit header bytes: UTF-8 is legal (RFC 6532), anything else goes by the chain."""
    data = value.encode("ascii", "surrogateescape")
    text = _try(data, "utf-8")
    if text is not None:
        return text
    text, note = _decode_bytes(data, None, hint=ctx.charset_hint)
    ctx.defects.add(f"{where}: raw 8-bit bytes that are not UTF-8 (RFC 6532)")
    if note:
        ctx.defects.add(f"{where}: {note}")
    return text


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_MSG_ID = re.compile(r"<([^<>]*)>")


def _decode_words(value: str, where: str, ctx: _Context) -> str:
    """RFC 2047 encoded words decoded one by one, each through the charset chain.

    Adjacent words in one charset are joined before decoding (a UTF-8 character may be split
    across two words), whitespace between words is dropped (§6.2), and a word that decodes
    to nothing is shown as it is (§6.3).
    """
    out: list[str] = []
    pending: list[tuple[bytes, str, str]] = []  # (bytes, charset, source word)
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        if between and (between.strip() or not pending):
            _flush_words(pending, out, where, ctx)
            out.append(between)
        data = _decode_word(match.group(0))
        charset = match.group(1).partition("*")[0]  # RFC 2231 §5 language suffix
        if pending and pending[-1][1].lower() != charset.lower():
            _flush_words(pending, out, where, ctx)
        if data is None or (not data and match.group(3)):
            _flush_words(pending, out, where, ctx)
            ctx.defects.add(f"{where}: undecodable encoded word kept as it is")
            out.append(match.group(0))
        else:
            pending.append((data, charset, match.group(0)))
        position = match.end()
    _flush_words(pending, out, where, ctx)
    out.append(value[position:])
    return "".join(out)


def _decode_word(word: str) -> bytes | None:
    try:
        chunks = decode_header(word)
    except (errors.HeaderParseError, ValueError, LookupError):
        return None
    data = chunks[0][0] if chunks else b""
    return data if isinstance(data, bytes) else None


def _flush_words(
    pending: list[tuple[bytes, str, str]], out: list[str], where: str, ctx: _Context
) -> None:
    if not pending:
        return
    data = b"".join(item[0] for item in pending)
    text, note = _decode_bytes(data, pending[0][1], hint=ctx.charset_hint)
    if note:
        ctx.defects.add(f"{where}: {note}")
    out.append(text)
    pending.clear()


def _address_header(headers: _Headers, name: str, ctx: _Context) -> tuple[Address, ...]:
    result: list[Address] = []
    for raw in headers.values.get(name, []):
        value = _unfold(_bounded(name, raw, ctx))
        if _has_surrogates(value):
            value = _restore_8bit(value, _label(name), ctx)
        result.extend(_addresses(value, name, ctx))
    return tuple(result)


def _addresses(value: str, name: str, ctx: _Context) -> Iterator[Address]:
    try:
        header = _header_object(name, value)
        found = [(item.display_name, item.addr_spec) for item in header.addresses]
    except Exception as exc:
        # The RFC 5322 parser trips on some real headers ("unlisted-recipients:; (no
        # To-header on input)" raises AttributeError); the lenient legacy parser copes.
        ctx.defects.add(f"{_label(name)} could not be parsed ({_exc_text(exc)})")
        found = getaddresses([value])
    else:
        for defect in header.defects:
            if not isinstance(defect, errors.ObsoleteHeaderDefect):
                ctx.defects.add(_describe_defect(defect, _label(name)))
    for display_name, addr_spec in found:
        email = normalise_email(_scrub(addr_spec))
        if email is None:
            if addr_spec.strip():
                ctx.defects.add(f"{_label(name)}: {_scrub(addr_spec)!r} is not an address")
            continue
        yield Address(name=" ".join(_scrub(display_name).split()), email=email)


def _date_header(headers: _Headers, ctx: _Context) -> datetime | None:
    raw = headers.first("date")
    if raw is None:
        return None
    try:
        header = _header_object("date", _unfold(_bounded("date", raw, ctx)))
        value: datetime | None = header.datetime
    except Exception as exc:
        value = None
        ctx.defects.add(f"Date header could not be parsed ({_exc_text(exc)})")
    if value is None:
        ctx.defects.add(f"Date header {_scrub(raw.strip()[:80])!r} is not a date")
        return None
    # RFC 5322 §3.3: "-0000" means UTC with the sender's local offset unknown; the stdlib
    # returns a naive datetime for it.
    value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        value.astimezone(UTC)
    except OverflowError:  # past 9999-12-31 in UTC: no datetime holds it, no reader of the row
        ctx.defects.add(f"Date header {_scrub(raw.strip()[:80])!r} is out of range")
        return None
    return value


def _message_ids(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    found = _MSG_ID.findall(value) or value.split()
    ids = (normalise_message_id(item) for item in found)
    return tuple(dict.fromkeys(item for item in ids if item))


def _return_path(value: str | None) -> str | None:
    if value is None:
        return None
    value = _scrub(_unfold(value)).strip()
    if value.strip("<> ") == "":
        return ""
    return normalise_email(value) or value


def _report_type(msg: Message, ctx: _Context) -> str | None:
    if _content_type(msg, "", "Content-Type", ctx) != "multipart/report":
        return None
    value = _safe(lambda: msg.get_param("report-type"), None, ctx, "Content-Type")
    return _scrub(value).lower() if isinstance(value, str) else None


def _decoded_headers(headers: _Headers, ctx: _Context) -> tuple[tuple[str, str], ...]:
    if len(headers.items) > MAX_HEADERS:
        ctx.defects.add(f"{len(headers.items)} headers; only the first {MAX_HEADERS} kept")
    return tuple(
        (_scrub(name), _decode_header_value(name, value, ctx).strip())
        for name, value in headers.items[:MAX_HEADERS]
    )


# --------------------------------------------------------------------------------------
# Bodies


def _body_parts(msg: EmailMessage, ctx: _Context) -> tuple[Message | None, Message | None]:
    # get_body() applies RFC 2046/2387 rules (alternative, related, attachments skipped).
    text = _safe(lambda: msg.get_body(preferencelist=("plain",)), None, ctx, "text body")
    html = _safe(lambda: msg.get_body(preferencelist=("html",)), None, ctx, "HTML body")
    return text, html


def _charset_hint(*parts: Message | None) -> str | None:
    for part in parts:
        if part is None:
            continue
        try:
            charset = part.get_content_charset()
        except Exception:  # the hint is optional; the body decoder reports the problem
            charset = None
        if charset and _codec(charset):
            return charset
    return None


def _part_text(part: Message, where: str, ctx: _Context) -> str:
    data = _payload(part, where, ctx)
    try:
        declared = part.get_content_charset()
    except Exception:
        declared = None
    text, note = _decode_bytes(data, declared)
    if note:
        ctx.defects.add(f"{where}: {note}")
    ctx.part_defects(part, where)
    return _scrub(text.replace("\r\n", "\n"), where, ctx)


def _payload(part: Message, where: str, ctx: _Context) -> bytes:
    clean = _clean_base64(part)
    if clean is not None:
        return clean
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        ctx.defects.add(f"{where}: content could not be decoded ({_exc_text(exc)})")
        return b""
    return data if isinstance(data, bytes) else b""


def _clean_base64(part: Message) -> bytes | None:
    """Well-formed base64 decoded straight from the parsed text, or None to take the stdlib way.

    get_payload(decode=True) copies the text, encodes it, splits it into lines and joins them
    before decoding: 4.4 bytes of memory per byte of a large attachment. Anything but clean
    base64 (alphabet and line breaks, at most two "=" at the end, whole quanta) goes the
    stdlib way, with the same results and defects. Checked with `bytes.translate` (a regular
    expression cost more than the rest of the parse) and decoded by pybase64, which skips the
    line breaks at SIMD speed: CPython's decoder takes 3.7 ms for a megabyte attachment, and
    taking the line breaks out before it 2 ms more.
    """
    payload = part._payload  # type: ignore[attr-defined]  # get_payload() would copy it
    lifted = getattr(part, "crm_base64_lines", None)  # bytes checked by `_Lifted`
    if not (
        isinstance(payload, str)
        and (lifted is not None or payload.isascii())
        and str(part.get("content-transfer-encoding", "")).lower() == "base64"
    ):
        return None
    source = lifted if isinstance(lifted, bytes) else payload.encode("ascii")
    if lifted is None and source.translate(None, _BASE64_CHARS + b"\r\n"):
        return None
    # Base64 characters and line breaks only, from here on.
    pad = source.find(b"=")  # "=" only as the last one or two characters
    padding = source[pad:].translate(None, b"\r\n") if pad >= 0 else b""
    if padding not in (b"", b"=", b"=="):
        return None
    try:
        data = pybase64.b64decode(source)  # the line breaks skipped, as a2b_base64 does
    except (binascii.Error, ValueError):
        return None
    # Whole quanta, or the stdlib way (which reports the defect): a surplus "=" is decoded
    # anyway, and shows in the length decoded (counting the characters costs more than that).
    return data if len(data) % 3 == (0, 2, 1)[len(padding)] else None


# --------------------------------------------------------------------------------------
# Charsets

# Labels that mail clients use for a superset (WHATWG Encoding Standard, "Encodings"):
# Outlook writes "iso-8859-1" for windows-1252 text with curly quotes and euro signs.
_SUPERSETS = {
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "big5hkscs",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
}
# Labels Python does not know under these names.
_LABELS = {
    "windows-31j": "cp932",
    "windows-874": "cp874",
    "x-sjis": "cp932",
    "x-mac-roman": "mac-roman",
    "ks_c_5601-1987": "cp949",
}
# Python-only codecs a hostile charset parameter must not select.
_NOT_MAIL_CODECS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "charmap"}
)
# Single-byte charsets where valid multi-byte UTF-8 means the label is wrong.
_LATIN = frozenset({"ascii", "iso8859-1", "iso8859-15", "cp1252", "iso8859-2", "cp1250"})


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _LABELS.get(label, label)
    try:
        name = codecs.lookup(label).name
        "".encode(name)  # non-text codecs (rot13, base64) raise LookupError here
    except (LookupError, ValueError, TypeError):
        return None
    return None if name in _NOT_MAIL_CODECS else name


def _decode_bytes(
    data: bytes, declared: str | None, *, hint: str | None = None
) -> tuple[str, str | None]:
    """Decode text; the note (None when the declared charset worked) says which fallback won."""
    codec = _codec(declared)
    if codec is not None:
        decoded = _try_declared(data, codec)
        if decoded is not None:
            text, used = decoded
            if used == "utf-8" and codec in _LATIN:
                return text, f"declared {declared!r} but the text is UTF-8; read as UTF-8"
            return text, None
        reason = f"text is not valid {declared!r}"
    elif declared:
        reason = f"unknown charset {declared!r}"
    else:
        reason = "8-bit text without a declared charset"
    if data.isascii() and b"\x1b" not in data:
        return data.decode("ascii"), (f"{reason}; read as ASCII" if declared else None)
    return _fallback(data, reason, hint)


def _try_declared(data: bytes, codec: str) -> tuple[str, str] | None:
    candidates = [_SUPERSETS.get(codec), codec]
    if codec in _LATIN and not data.isascii():
        # Valid multi-byte UTF-8 is almost never real latin-1 text: the label is wrong.
        candidates.insert(0, "utf-8")
    for candidate in candidates:
        if candidate:
            text = _try(data, candidate)
            if text is not None:
                return text, candidate
    return None


def _try(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _fallback(data: bytes, reason: str, hint: str | None) -> tuple[str, str]:
    text = _try(data, "utf-8")
    if text is not None:
        return text, f"{reason}; read as UTF-8"
    hint_codec = _codec(hint)
    decoded = _try_declared(data, hint_codec) if hint_codec else None
    if decoded is not None:
        return decoded[0], f"{reason}; read as {decoded[1]}, the charset of the body"
    if len(data) >= MIN_DETECTION_BYTES:
        best = charset_normalizer.from_bytes(data[:DETECTION_SAMPLE_BYTES]).best()
        if best is not None and _codec(best.encoding):
            text = data.decode(best.encoding, errors="replace")
            return text, f"{reason}; read as {best.encoding} (detected)"
    text = _try(data, "cp1252")
    if text is not None:
        return text, f"{reason}; read as windows-1252 (fallback)"
    return data.decode("latin-1"), f"{reason}; read as latin-1 (last resort)"


_SURROGATES = re.compile("[\ud800-\udfff]")


def _has_surrogates(value: str) -> bool:
    return not value.isascii() and _SURROGATES.search(value) is not None


def _scrub(value: str, where: str | None = None, ctx: _Context | None = None) -> str:
    """No NUL (PostgreSQL text rejects it) and no lone surrogate (UTF-8 cannot encode it)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
        if ctx is not None and where:
            ctx.defects.add(f"{where}: NUL characters removed")
    if _has_surrogates(value):
        value = _SURROGATES.sub("\ufffd", value)
    return value


# --------------------------------------------------------------------------------------
# Parts


def _walk(msg: Message, ctx: _Context) -> Iterator[tuple[Message, str]]:
    """MIME leaves with their IMAP section numbers, depth-first, without recursion."""
    if not _is_container(msg):
        yield msg, "1"
        return
    stack: list[tuple[Message, str, int]] = [(msg, "", 0)]
    count = 0
    while stack:
        part, path, depth = stack.pop()
        if not _is_container(part):
            count += 1
            if count > MAX_PARTS:
                ctx.defects.add(f"more than {MAX_PARTS} MIME parts; the rest were ignored")
                return
            yield part, path
            continue
        if depth >= MAX_MIME_DEPTH:
            ctx.defects.add(f"part {path}: multipart nesting deeper than {MAX_MIME_DEPTH}")
            continue
        children = part.get_payload()
        prefix = f"{path}." if path else ""
        stack.extend(
            (child, f"{prefix}{index}", depth + 1)
            for index, child in reversed(list(enumerate(children, 1)))
            if isinstance(child, Message)
        )


def _is_container(part: Message) -> bool:
    # message/* parts are leaves here: a nested message is kept whole.
    return part.is_multipart() and part.get_content_maintype() != "message"


def _collect_parts(
    msg: Message, bodies: tuple[Message | None, Message | None], ctx: _Context
) -> list[Part]:
    parts: list[Part] = []
    for part, path in _walk(msg, ctx):
        if any(part is body for body in bodies):
            continue
        try:
            parts.extend(_leaf(part, path, ctx))
        except Exception as exc:
            ctx.defects.add(f"part {path} could not be read ({_exc_text(exc)})")
    return parts


def _leaf(part: Message, path: str, ctx: _Context) -> list[Part]:
    content_type = _content_type(part, "application/octet-stream", f"part {path}", ctx)
    if part.is_multipart() and content_type.startswith("message/"):
        return [_message_part(part, path, content_type, ctx)]
    ctx.part_defects(part, f"part {path}")
    payload = _payload(part, f"part {path}", ctx)
    filename = _filename(part, path, ctx)
    leaf = Part(
        filename=filename,
        content_type=content_type,
        content_id=_content_id(part),
        inline=False,
        part_path=path,
        size=len(payload),
        payload=payload,
    )
    if content_type == "application/ms-tnef" or (filename or "").lower() == "winmail.dat":
        return _tnef_parts(leaf, ctx)
    return [leaf]


def _content_type(part: Message, default: str, where: str, ctx: _Context) -> str:
    value: str = _safe(part.get_content_type, default, ctx, where)
    return _scrub(value)


def _content_id(part: Message) -> str | None:
    raw = part.get("content-id")
    if raw is None:
        return None
    value = _scrub("".join(str(raw).split())).strip("<>")
    return value or None


def _mark_inline(parts: list[Part], html: str | None) -> list[Part]:
    if not html:
        return parts
    # RFC 2392: "cid:" URLs carry the Content-ID %-encoded and without angle brackets.
    referenced = {unquote(ref).lower() for ref in _CID_REF.findall(html)}
    return [
        replace(part, inline=True)
        if part.content_id and part.content_id.lower() in referenced
        else part
        for part in parts
    ]


_CID_REF = re.compile(r"cid:([^\s\"'<>)]+)", re.IGNORECASE)


# --------------------------------------------------------------------------------------
# Filenames

_FILENAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def _filename(part: Message, path: str, ctx: _Context) -> str | None:
    where = f"part {path} filename"
    try:
        name = part.get_filename()
    except Exception as exc:
        ctx.defects.add(f"{where} could not be parsed ({_exc_text(exc)})")
        name = None
    if not name or "\ufffd" in name or _has_surrogates(name):
        name = _filename_fallback(part, where, ctx) or name
    return _safe_filename(name)


def _filename_fallback(part: Message, where: str, ctx: _Context) -> str | None:
    """Recover a filename the stdlib decoded to U+FFFD: raw 8-bit or an unknown charset."""
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        raw = _first_raw(part, header)
        if raw is None:
            continue
        value = _unfold(_bounded(header, raw, ctx))
        if _has_surrogates(value):
            value = _restore_8bit(value, where, ctx)
        found = _legacy_param(value, param, where, ctx)
        if found:
            return found
    return None


def _first_raw(part: Message, name: str) -> str | None:
    for key, value in part.raw_items():
        if key.lower() == name:
            return value
    return None


def _legacy_param(value: str, param: str, where: str, ctx: _Context) -> str | None:
    # The compat32 API returns RFC 2231 values undecoded as (charset, language, text), so
    # an unknown charset can go through the decoding chain instead of becoming U+FFFD.
    holder = Message()
    holder["Content-Disposition"] = value
    try:
        found = holder.get_param(param, header="content-disposition")
    except Exception:
        return None
    if isinstance(found, tuple):
        charset, _language, text = found
        text, note = _decode_bytes(text.encode("latin-1", "replace"), charset or None)
        if note:
            ctx.defects.add(f"{where}: {note}")
        return text
    if isinstance(found, str) and found:
        return _decode_words(found.strip('"'), where, ctx) if "=?" in found else found
    return None


def _safe_filename(name: str | None) -> str | None:
    if not name:
        return None
    # RFC 2183 §2.3: a receiving agent must not honour directory paths in a filename.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _FILENAME_CATEGORIES)
    name = " ".join(name.split())
    if name in {"", ".", ".."}:
        return None
    if len(name) > 255:
        _stem, dot, extension = name.rpartition(".")
        keep = f"{dot}{extension}" if dot and len(extension) <= 16 else ""
        name = name[: 255 - len(keep)] + keep
    return name


# --------------------------------------------------------------------------------------
# Nested messages


def _message_part(part: Message, path: str, content_type: str, ctx: _Context) -> Part:
    subtype = content_type.partition("/")[2]
    if subtype in {"rfc822", "global"}:
        return _nested_message(part, path, content_type, ctx)
    # delivery-status, disposition-notification…: keep the body as it was sent.
    payload = _strip_headers(_generate(part, f"part {path}", ctx), ctx.linesep)
    return Part(
        filename=_filename(part, path, ctx),
        content_type=content_type,
        content_id=_content_id(part),
        inline=False,
        part_path=path,
        size=len(payload),
        payload=payload,
    )


def _nested_message(part: Message, path: str, content_type: str, ctx: _Context) -> Part:
    inner = part.get_payload(0)
    if not isinstance(inner, Message):
        raise TypeError("message/rfc822 part without a message")
    payload = _generate(inner, f"part {path}", ctx)
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding in {"base64", "quoted-printable"}:
        # RFC 2046 §5.2.1 forbids encoding message/rfc822, some clients do it anyway; the
        # parser then read the encoded text as a message, so decode and parse again.
        ctx.defects.add(f"part {path}: message/rfc822 with {encoding} transfer encoding")
        payload = _transfer_decode(payload, encoding)
    nested = None
    if ctx.depth + 1 > MAX_NESTED_DEPTH:
        ctx.defects.add(f"part {path}: nested message deeper than {MAX_NESTED_DEPTH}; not parsed")
    else:
        nested = _parse(payload, depth=ctx.depth + 1)
    filename = _filename(part, path, ctx)
    if filename is None and nested is not None:
        filename = _safe_filename(f"{nested.subject or 'message'}.eml")
    elif filename is None:
        filename = _subject_filename(inner, ctx)
    return Part(
        filename=filename,
        content_type=content_type,
        content_id=_content_id(part),
        inline=False,
        part_path=path,
        size=len(payload),
        payload=payload,
        nested=nested,
    )


def _subject_filename(msg: Message, ctx: _Context) -> str | None:
    subject = _first_raw(msg, "subject")
    if subject is not None:
        subject = _decode_header_value("subject", subject, ctx).strip()
    return _safe_filename(f"{subject or 'message'}.eml")


def _generate(msg: Message, where: str, ctx: _Context) -> bytes:
    out = BytesIO()
    policy = _CRLF_POLICY if ctx.linesep == "\r\n" else _LF_POLICY
    try:
        BytesGenerator(out, mangle_from_=False, policy=policy).flatten(msg)
    except Exception as exc:
        ctx.defects.add(f"{where}: content could not be written out ({_exc_text(exc)})")
        return b""
    return out.getvalue()


def _strip_headers(data: bytes, linesep: str) -> bytes:
    sep = linesep.encode()
    if data.startswith(sep):
        return data[len(sep) :]
    _head, found, body = data.partition(sep + sep)
    return body if found else b""


def _transfer_decode(data: bytes, encoding: str) -> bytes:
    holder = Message()
    holder["Content-Transfer-Encoding"] = encoding
    holder.set_payload(_strip_headers(data, "\r\n" if b"\r\n" in data else "\n"))
    decoded = holder.get_payload(decode=True)
    return decoded if isinstance(decoded, bytes) else data


# --------------------------------------------------------------------------------------
# TNEF (application/ms-tnef, "winmail.dat")


def _tnef_parts(original: Part, ctx: _Context) -> list[Part]:
    where = f"part {original.part_path} (winmail.dat)"
    count = _tnef_object_count(original.payload)
    if count > MAX_TNEF_OBJECTS:
        ctx.defects.add(f"{where}: more than {MAX_TNEF_OBJECTS} TNEF objects; kept as is")
        return [original]
    try:
        tnef = TNEF(original.payload, do_checksum=False)
        files = [
            _tnef_file(attachment, original.part_path, index)
            for index, attachment in enumerate(tnef.attachments, 1)
        ]
        _tnef_bodies(tnef, where, ctx)
    except Exception as exc:
        ctx.defects.add(f"{where} could not be unpacked ({_exc_text(exc)}); kept as is")
        return [original]
    if not files and ctx.tnef_html is None and ctx.tnef_text is None:
        ctx.defects.add(f"{where}: nothing inside; kept as is")
        return [original]
    return files


def _tnef_object_count(data: bytes) -> int:
    # TNEF framing (MS-OXTNEF §2.1.3.1): 6-byte header, then per attribute 1 level byte,
    # 4 id bytes, 4 length bytes, the data and a 2-byte checksum.
    offset, count = 6, 0
    while offset + 12 < len(data) and count <= MAX_TNEF_OBJECTS:
        offset += int.from_bytes(data[offset + 5 : offset + 9], "little") + 11
        count += 1
    return count


def _tnef_file(attachment: Any, path: str, index: int) -> Part:
    name = attachment.long_filename() or attachment.name
    if isinstance(name, bytes):
        name = _decode_bytes(name.rstrip(b"\x00"), None)[0]
    filename = _safe_filename(str(name)) or f"attachment-{index}"
    payload = bytes(attachment.data or b"")
    return Part(
        filename=filename,
        content_type=mimetypes.guess_type(filename)[0] or "application/octet-stream",
        content_id=_tnef_content_id(attachment),
        inline=False,
        part_path=f"{path}/{index}",
        size=len(payload),
        payload=payload,
    )


def _tnef_content_id(attachment: Any) -> str | None:
    for prop in attachment.mapi_attrs:
        if prop.name == tnef_properties.MAPI_ATTACH_CONTENT_ID:
            value = prop.data
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            return _scrub(str(value)).strip("\x00<> ") or None
    return None


def _tnef_bodies(tnef: TNEF, where: str, ctx: _Context) -> None:
    if tnef.htmlbody:
        ctx.tnef_html = _tnef_text(tnef.htmlbody, where, ctx)
    if tnef.body:
        ctx.tnef_text = _tnef_text(tnef.body, where, ctx)


def _tnef_text(value: str | bytes, where: str, ctx: _Context) -> str:
    if isinstance(value, bytes):
        value, note = _decode_bytes(value.rstrip(b"\x00"), None, hint=ctx.charset_hint)
        if note:
            ctx.defects.add(f"{where} body: {note}")
    return _scrub(value.replace("\r\n", "\n"))


# --------------------------------------------------------------------------------------
# Defects

_DEFECT_TEXT = {
    "NoBoundaryInMultipartDefect": "multipart without a boundary parameter",
    "StartBoundaryNotFoundDefect": "the multipart start boundary was never found",
    "CloseBoundaryNotFoundDefect": "the multipart closing boundary is missing",
    "FirstHeaderLineIsContinuationDefect": "the first header line is a continuation line",
    "MisplacedEnvelopeHeaderDefect": "a 'From ' envelope line among the headers",
    "MissingHeaderBodySeparatorDefect": "a header line without a colon; the rest read as body",
    "MultipartInvariantViolationDefect": "declared multipart but has no parts",
    "InvalidMultipartContentTransferEncodingDefect": "multipart with an invalid encoding",
    "UndecodableBytesDefect": "undecodable 8-bit bytes",
    "InvalidBase64PaddingDefect": "base64 with bad padding",
    "InvalidBase64CharactersDefect": "base64 with invalid characters",
    "InvalidBase64LengthDefect": "base64 of invalid length",
    "InvalidDateDefect": "unreadable date",
    "HeaderMissingRequiredValue": "a header without its required value",
    "NonPrintableDefect": "non-printable characters",
    "CharsetError": "unknown charset",
    "InvalidHeaderDefect": "invalid header",
}


def _describe_defect(defect: Exception, where: str) -> str:
    name = type(defect).__name__
    text = _DEFECT_TEXT.get(name, name)
    detail = str(defect)[:120]
    return f"{where}: {text} ({detail})" if detail and detail != text else f"{where}: {text}"
