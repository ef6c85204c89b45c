"""Italian certified mail (PEC): tell envelopes from receipts, and take the original out.

Pure code (no models, no settings). A PEC provider wraps every certified message in a
transport envelope ("busta di trasporto", DPR 68/2005 and the technical rules of
DM 2 November 2005): headers `X-Trasporto: posta-certificata` (or `errore` for an anomaly
envelope around mail that could not be certified), `X-Riferimento-Message-ID: <the original's
Message-ID>`, `From: "Per conto di: <sender>" <posta-certificata@provider>`, `Subject:
POSTA CERTIFICATA: <subject>`; an S/MIME multipart/signed holding the provider's text,
`daticert.xml` (the certification data) and the original as a `message/rfc822` part named
`postacert.eml`. Receipts carry `X-Ricevuta: accettazione | non-accettazione |
presa-in-carico | avvenuta-consegna | errore-consegna | preavviso-errore-consegna |
rilevazione-virus` and the same `X-Riferimento-Message-ID` of the message they are about.

What the scanner does with a message on a mailbox whose PEC flag is on (see `view`):

- **Receipt**: never a ticket; the ledger row's outcome is "loop" (automatic mail: after the
  scan it goes where unmatched mail goes) with the reason "PEC receipt: <kind>". When it is
  about an email the CRM holds on records (an answer sent from a ticket), the receipt is kept
  on those records too.
- **Envelope**: the rules and actions see the original (its sender, subject, body and
  attachments). Two Messages are stored through `crm.services.ingest.store`: the envelope,
  with the exact bytes fetched from the server (the legal proof: signature, `daticert.xml`,
  provider text), and the original, with the exact bytes of the `postacert.eml` part (not a
  re-serialisation). The actions link the original; every record they link it to also gets
  the envelope, so `daticert.xml` (an attachment of the envelope) becomes a Document of those
  records, with the envelope's other parts (the signature `smime.p7s`, the certified copy
  `postacert.eml`): the link is the one way documents reach a record. The ledger row points
  at the envelope's Message and shows the original's sender and subject. Its identity is the
  original's: `X-Riferimento-Message-ID` (which every recipient's copy carries alike) with the
  original's subject, so one certified message delivered to two PEC mailboxes makes one
  ticket, as does a plain copy of it with that Message-ID.
- **Anything else**, or an envelope whose `postacert.eml` is missing or unreadable: processed
  as it is. Nothing here raises on malformed input.

Threading: the update-ticket action matches a reply's In-Reply-To/References against the
Message-IDs of the emails on a ticket: the original's own, the envelope's (it is linked too),
and the certified id, X-Riferimento-Message-ID, which the scanner records on both as
`Message.certified_id`. A provider may renumber (Aruba gives postacert.eml its own id and keeps
the sender's only in that header): a reply carrying the provider's id, which is what the
recipients saw, and one quoting only the sender's certified id both find the ticket.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, replace
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from typing import Literal, NamedTuple

from crm.email.parse import (
    ParsedEmail,
    header_section,
    identity,
    normalise_message_id,
    parse,
    summary,
)

__all__ = [
    "RECEIPT_KINDS",
    "Classification",
    "Unwrapped",
    "View",
    "classify",
    "unwrap",
    "view",
]

# DM 2 November 2005, technical rules §3: the receipts and notices a provider sends.
RECEIPT_KINDS = frozenset(
    {
        "accettazione",
        "non-accettazione",
        "presa-in-carico",
        "avvenuta-consegna",
        "errore-consegna",
        "preavviso-errore-consegna",
        "rilevazione-virus",
    }
)
POSTACERT = "postacert.eml"
DATICERT = "daticert.xml"
# Walking the envelope's MIME tree is bounded like crm.email.parse's own walk.
_MAX_PARTS = 1000
_MAX_DEPTH = 50

Kind = Literal["envelope", "receipt", "not_pec"]


@dataclass(frozen=True)
class Classification:
    kind: Kind
    detail: str = ""  # the receipt's kind, or the envelope's X-Trasporto value
    riferimento: str | None = None  # X-Riferimento-Message-ID, normalised


class Unwrapped(NamedTuple):
    original: bytes | None  # the postacert.eml part's bytes; None when there is none
    daticert: bytes | None
    riferimento: str | None  # the original's Message-ID as the provider certified it


@dataclass(frozen=True)
class View:
    """What a message on a PEC mailbox is, and what the rules should see of it."""

    classification: Classification
    original: bytes | None = None
    daticert: bytes | None = None
    riferimento: str | None = None
    identity: str | None = None  # the ledger identity of an unwrapped envelope
    head: ParsedEmail | None = None  # the original's subject, sender and Message-ID (`summary`)

    @property
    def receipt(self) -> str | None:
        return self.classification.detail if self.classification.kind == "receipt" else None

    @property
    def reason(self) -> str:
        return f"PEC receipt: {self.receipt}" if self.receipt is not None else ""


def classify(message: bytes | ParsedEmail) -> Classification:
    """Envelope, receipt or not PEC, from the headers alone (cheap; the header section does).

    A receipt wins over an envelope: a complete delivery receipt also carries postacert.eml.
    """
    parsed = parse(header_section(message)) if isinstance(message, bytes) else message
    headers = _headers(parsed)
    riferimento = normalise_message_id(headers.get("x-riferimento-message-id"))
    receipt = _token(headers.get("x-ricevuta"))
    if receipt:
        return Classification("receipt", receipt, riferimento)
    transport = _token(headers.get("x-trasporto"))
    if transport:
        return Classification("envelope", transport, riferimento)
    return Classification("not_pec", "", riferimento)


def unwrap(raw: bytes) -> Unwrapped:
    """The original carried as postacert.eml, daticert.xml, and the certified Message-ID.

    The original's bytes are cut from the envelope as they are (RFC 2046 §5.1.1: the CRLF
    before a delimiter belongs to the delimiter); when that fails, the parser's copy of the
    part is used. The certified Message-ID is X-Riferimento-Message-ID, else daticert's
    <msgid>, else the original's own Message-ID.
    """
    try:
        return _unwrap(raw)
    except Exception:  # the contract: malformed mail is processed as it is, never lost
        return Unwrapped(None, None, None)


def view(raw: bytes) -> View:
    """Classify, and for an envelope unwrap it and compute the original's ledger identity."""
    try:
        found = classify(raw)
    except Exception:
        return View(Classification("not_pec"))
    if found.kind != "envelope":
        return View(found, riferimento=found.riferimento)
    original, daticert, riferimento = unwrap(raw)
    if original is None or not original.strip():  # nothing to run rules on: keep the envelope
        return View(found, daticert=daticert, riferimento=riferimento)
    head = summary(original)
    if riferimento:
        head = replace(head, message_id=riferimento)
    return View(found, original, daticert, riferimento, identity(head, original), head)


# --- unwrapping --------------------------------------------------------------------------------


def _unwrap(raw: bytes) -> Unwrapped:
    root = message_from_bytes(raw, policy=compat32)
    riferimento = normalise_message_id(_header(root, "x-riferimento-message-id"))
    daticert: bytes | None = None
    postacert: tuple[Message, list[tuple[str, int]]] | None = None
    nested: list[tuple[Message, list[tuple[str, int]]]] = []
    for part, chain in _walk(root):
        filename = (_filename(part) or "").lower()
        if filename == DATICERT and daticert is None and not part.is_multipart():
            payload = part.get_payload(decode=True)
            daticert = payload if isinstance(payload, bytes) else None
        elif part.get_content_maintype() == "message":
            nested.append((part, chain))
            if filename == POSTACERT and postacert is None:
                postacert = (part, chain)
    if postacert is None and len(nested) == 1 and _header(root, "x-trasporto"):
        postacert = nested[0]  # a provider that names the part after the subject
    original = _original_bytes(raw, *postacert) if postacert is not None else None
    if riferimento is None and daticert is not None:
        riferimento = _daticert_msgid(daticert)
    if riferimento is None and original is not None:
        riferimento = parse(header_section(original)).message_id
    return Unwrapped(original, daticert, riferimento)


def _walk(root: Message) -> list[tuple[Message, list[tuple[str, int]]]]:
    """Every part below the root, with its path as (parent's boundary, index) pairs.

    message/* parts are leaves: an envelope's postacert.eml is not searched inside.
    """
    found: list[tuple[Message, list[tuple[str, int]]]] = []
    stack: list[tuple[Message, list[tuple[str, int]]]] = [(root, [])]
    while stack and len(found) < _MAX_PARTS:
        part, chain = stack.pop()
        if part is not root:
            found.append((part, chain))
        if part.get_content_maintype() != "multipart" or len(chain) >= _MAX_DEPTH:
            continue
        children = part.get_payload()
        boundary = part.get_boundary()
        if not isinstance(children, list) or not boundary:
            continue
        for index in reversed(range(len(children))):
            child = children[index]
            if isinstance(child, Message):
                stack.append((child, [*chain, (boundary, index)]))
    return found


def _original_bytes(raw: bytes, part: Message, chain: list[tuple[str, int]]) -> bytes | None:
    """The part's body as it is in the envelope; the parser's copy when it cannot be cut out."""
    inner = part.get_payload(0) if part.is_multipart() else None
    if not isinstance(inner, Message):
        return None
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding in ("", "7bit", "8bit", "binary"):
        try:
            exact = _cut(raw, chain)
        except (ValueError, UnicodeError):
            exact = None
        if exact is not None and _same_message(exact, inner):
            return exact
    return _parsed_copy(raw, part)


def _cut(raw: bytes, chain: list[tuple[str, int]]) -> bytes | None:
    start, end = _body_start(raw, 0, len(raw)), len(raw)
    for boundary, index in chain:
        segments = _segments(raw, start, end, boundary)
        if index >= len(segments):
            return None
        segment_start, end = segments[index]
        start = _body_start(raw, segment_start, end)
    return raw[start:end]


def _segments(raw: bytes, start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """(start, end) of each body part between the multipart's delimiter lines."""
    delimiter = re.compile(
        rb"(?:\r?\n|^)--"
        + re.escape(boundary.encode("utf-8", "surrogateescape"))
        + rb"(--)?[ \t]*(?:\r?\n|$)",
        re.MULTILINE,
    )
    segments: list[tuple[int, int]] = []
    opened: int | None = None
    for match in delimiter.finditer(raw, start, end):
        if opened is not None:
            segments.append((opened, match.start()))
        if match.group(1):  # the close delimiter
            return segments
        opened = match.end()
    if opened is not None:  # never closed (a truncated envelope): the part runs to the end
        segments.append((opened, end))
    return segments


def _body_start(raw: bytes, start: int, end: int) -> int:
    """Where a part's body begins: after its header block and the empty line."""
    if raw.startswith(b"\r\n", start):
        return start + 2
    if raw.startswith(b"\n", start):
        return start + 1
    ends = [i for i in (raw.find(b"\r\n\r\n", start, end), raw.find(b"\n\n", start, end)) if i >= 0]
    if not ends:
        return end
    first = min(ends)
    return first + (4 if raw.startswith(b"\r\n\r\n", first) else 2)


def _same_message(data: bytes, inner: Message) -> bool:
    """The cut bytes are the part the parser saw: same Message-ID and Subject."""
    cut = message_from_bytes(header_section(data), policy=compat32)
    return all(str(cut.get(h, "")) == str(inner.get(h, "")) for h in ("message-id", "subject"))


def _parsed_copy(raw: bytes, part: Message) -> bytes | None:
    name = (_filename(part) or "").lower()
    for found in parse(raw).parts:
        nested = found.content_type.startswith("message/") and found.payload
        if nested and (not name or (found.filename or "").lower() == name):
            return found.payload
    return None


_MSGID = re.compile(r"<msgid>(.*?)</msgid>", re.IGNORECASE | re.DOTALL)


def _daticert_msgid(data: bytes) -> str | None:
    text = _xml_text(data)
    match = _MSGID.search(text)
    return normalise_message_id(html.unescape(match.group(1))) if match else None


def _xml_text(data: bytes) -> str:
    # daticert.xml is UTF-8 as a rule; some providers write UTF-16 with a byte order mark.
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    return data.decode("utf-8", "replace")


# --- headers -----------------------------------------------------------------------------------


def _headers(parsed: ParsedEmail) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in parsed.headers:
        found.setdefault(name.strip().lower(), value)
    return found


def _header(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    return None if value is None else str(value)


def _token(value: str | None) -> str:
    return (value or "").strip().split(";")[0].strip().lower()


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    return str(name) if name else None
