"""Properties of `ingest.store` for any input: it never raises, keeps the bytes whole, and storing
the same bytes again is a no-op.

Each Hypothesis example runs in a savepoint that is rolled back and with its own MEDIA_ROOT, so
examples see an empty database and an empty storage. The named tests at the end are inputs these
properties found (minimised by hand).
"""

from __future__ import annotations

import base64
import hashlib
import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, transaction
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from crm.email.parse import identity, parse
from crm.models import Attachment, Message, QuarantinedMessage
from crm.services import blobs, ingest

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "emails"
FIXTURE_NAMES = sorted(path.name for path in FIXTURES.glob("*.eml"))
MAX_BYTES = 20_000


def _examples(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --- The property ---------------------------------------------------------------------------


@contextmanager
def _fresh_example(tmp_path: Path) -> Iterator[None]:
    """An empty MEDIA_ROOT and a savepoint rolled back at the end, for one example."""
    media = tempfile.mkdtemp(dir=tmp_path)
    with override_settings(MEDIA_ROOT=media), transaction.atomic():
        yield
        transaction.set_rollback(True)


def _store(raw: bytes) -> ingest.Stored:
    try:
        return ingest.store(raw, source="import")
    except Exception:
        _assert_quarantined(raw)
        raise


def _assert_quarantined(raw: bytes) -> None:
    """Even a failure keeps the bytes (store's contract), when the transaction can still tell."""
    try:
        with transaction.atomic():
            kept = [blobs.read(q.raw.name) for q in QuarantinedMessage.objects.all()]
    except DatabaseError:
        # The error broke the test's own transaction; in production store runs in autocommit.
        return
    assert kept == [raw]


def assert_stored_whole(raw: bytes) -> None:
    """One Message, the exact bytes, every part, the same identity again, and a no-op repeat."""
    first = _store(raw)
    assert first.created
    assert not QuarantinedMessage.objects.exists()
    message = Message.objects.get()  # read back: every stored value must load again
    assert message.pk == first.message.pk

    stored = blobs.read(message.raw.name)
    assert stored == raw
    assert message.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert message.size == len(raw)
    reparsed = parse(stored)
    assert identity(reparsed, stored) == message.identity

    attachments = Attachment.objects.filter(message=message).select_related("document")
    assert sorted(a.document.sha256 for a in attachments) == sorted(
        hashlib.sha256(part.payload).hexdigest() for part in reparsed.parts
    )
    for document in {a.document.sha256: a.document for a in attachments}.values():
        assert hashlib.sha256(blobs.read(document.file.name)).hexdigest() == document.sha256

    again = _store(raw)
    assert not again.created
    assert again.message.pk == message.pk
    assert Message.objects.count() == 1
    assert not QuarantinedMessage.objects.exists()


# --- Near-email input -----------------------------------------------------------------------

# Real labels, the supersets mail clients mean, unknown ones and Python codecs that are not text.
CHARSETS = (
    "utf-8",
    "us-ascii",
    "iso-8859-1",
    "windows-1252",
    "iso-8859-15",
    "koi8-r",
    "big5",
    "gb2312",
    "shift_jis",
    "euc-kr",
    "iso-2022-jp",
    "utf-16",
    "utf-7",
    "x-unknown",
    "",
    "base64",
    "rot13",
    "unicode-escape",
    "idna",
)
# Lengths around the columns' limits (255, 320, 998, 100) and the parser's header bound.
LENGTHS = st.sampled_from([1, 2, 99, 100, 101, 254, 255, 256, 320, 321, 998, 999, 17_000])
TOKEN = st.one_of(
    st.text("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-._+", min_size=1, max_size=20),
    st.tuples(st.sampled_from("xZ9-"), LENGTHS).map(lambda t: t[0] * t[1]),
)
SUBTYPES = st.one_of(st.sampled_from(["plain", "html", "pdf", "octet-stream", "x-y"]), TOKEN)


def _encode(text: str, charset: str) -> bytes:
    try:
        return text.encode(charset or "utf-8", "replace")
    except (LookupError, TypeError, UnicodeError):
        return text.encode("utf-8", "surrogatepass")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def text_bytes(draw: st.DrawFn, max_size: int = 300) -> tuple[bytes, str]:
    """(bytes, declared charset): text in a charset, or bytes that are not in it."""
    charset = draw(st.sampled_from(CHARSETS))
    data = draw(
        st.one_of(
            st.text(max_size=max_size).map(lambda text: _encode(text, charset)),
            st.binary(max_size=max_size),
        )
    )
    return data, charset


@st.composite
def encoded_words(draw: st.DrawFn) -> bytes:
    data, charset = draw(text_bytes(max_size=40))
    if draw(st.booleans()):
        word = b"B?" + base64.b64encode(data)
    else:
        word = b"Q?" + b"".join(b"=%02X" % byte for byte in data)
    if draw(st.booleans()):
        word = word[: draw(st.integers(0, len(word)))]  # broken on purpose
    return b"=?" + charset.encode() + b"?" + word + b"?="


# The ends of Python's datetime, in the sender's zone and in UTC.
EDGE_DATES = [
    "Fri, 31 Dec 9999 23:59:59 -2359",
    "Fri, 31 Dec 9999 12:00:00 +2359",
    "1 Jan 100 00:00 +2359",
]


@st.composite
def dates(draw: st.DrawFn) -> bytes:
    """Mostly valid RFC 5322 dates, with the edges: years 1..9999, offsets up to +-2359."""
    day = draw(st.integers(1, 31))
    month = draw(st.sampled_from(["Jan", "Feb", "Jun", "Dec"]))
    year = draw(st.one_of(st.integers(1970, 2100), st.sampled_from([0, 1, 99, 100, 999, 9999])))
    clock = f"{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}:00"
    hours, minutes = draw(st.integers(-23, 23)), draw(st.sampled_from([0, 30, 59]))
    offset = draw(st.sampled_from(["+", "-"])) + f"{abs(hours):02d}{minutes:02d}"
    offset = draw(st.sampled_from([offset, offset, "-0000", "GMT", "EST", "+9999"]))
    regular = f"Mon, {day} {month} {year} {clock} {offset}"
    return draw(st.sampled_from([regular] * 6 + EDGE_DATES)).encode()


ADDRESSES = st.lists(
    st.tuples(st.text(max_size=20), TOKEN, TOKEN).map(lambda t: _utf8(f'"{t[0]}" <{t[1]}@{t[2]}>')),
    max_size=4,
).map(b", ".join)
MESSAGE_IDS = st.tuples(st.one_of(st.text(max_size=30), TOKEN), TOKEN).map(
    lambda t: _utf8(f"<{t[0]}@{t[1]}.COM>")
)
TEXT = st.one_of(st.text(max_size=80).map(_utf8), st.binary(max_size=80), encoded_words())
CONTENT_TYPES = st.tuples(st.sampled_from(["text", "multipart", "application"]), SUBTYPES).map(
    lambda t: b"%s/%s; charset=utf-8; boundary=b; name=a.pdf" % (t[0].encode(), t[1].encode())
)
# Each header with values of its kind, plus anything under any name.
HEADERS: dict[str, st.SearchStrategy[bytes]] = {
    "From": ADDRESSES,
    "Sender": ADDRESSES,
    "To": ADDRESSES,
    "Cc": ADDRESSES,
    "Reply-To": ADDRESSES,
    "Subject": TEXT,
    "Date": dates(),
    "Message-ID": MESSAGE_IDS,
    "In-Reply-To": MESSAGE_IDS,
    "References": st.lists(MESSAGE_IDS, max_size=5).map(b" ".join),
    "Auto-Submitted": st.one_of(TOKEN.map(str.encode), TEXT),
    "Return-Path": st.one_of(ADDRESSES, st.just(b"<>")),
    "Content-Type": CONTENT_TYPES,
    "Content-Transfer-Encoding": st.sampled_from([b"base64", b"quoted-printable", b"8bit", b"x"]),
    "Content-Disposition": st.just(b"attachment; filename*=utf-8''%C3%A9t%C3%A9.pdf"),
}
ANY_VALUE = st.one_of(
    TEXT,
    st.sampled_from([b"", b"\x00", b"<>", b"=?utf-8?B?###?=", b"multipart/mixed; boundary=b"]),
    st.integers(1, 2_000).map(lambda n: b"a@b, " * n),  # past the header-length bound
)


@st.composite
def header_lines(draw: st.DrawFn, linesep: bytes) -> bytes:
    """Typed headers (each one half the time, in any order), then a few of anything."""
    names = [name for name in draw(st.permutations(sorted(HEADERS))) if draw(st.booleans())]
    lines = [(name, draw(HEADERS[name])) for name in names]
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.one_of(st.sampled_from(sorted(HEADERS)), TOKEN))
        lines.insert(draw(st.integers(0, len(lines))), (name, draw(ANY_VALUE)))
    out = []
    for name, value in lines:
        if draw(st.booleans()) and len(value) > 10:
            value = value[:5] + linesep + b" " + value[5:]  # folded
        out.append(name.encode() + b": " + value + linesep)
    return b"".join(out)


def _image(kind: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), "teal").save(out, kind)
    return out.getvalue()


IMAGES = {kind.lower(): _image(kind) for kind in ("PNG", "GIF", "JPEG", "BMP", "WEBP")}


@st.composite
def mutated(draw: st.DrawFn, data: bytes, max_mutations: int = 6) -> bytes:
    """`data` with a few bytes flipped, inserted or deleted, or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, max_mutations))):
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if operation == "flip" and out:
            out[at] = draw(st.integers(0, 255))
        elif operation == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del out[at : at + draw(st.integers(1, 64))]
        elif operation == "truncate":
            del out[at:]
    return bytes(out)


CTES = st.sampled_from(["base64", "quoted-printable", "8bit"])


@st.composite
def leaves(draw: st.DrawFn) -> EmailMessage:
    part = EmailMessage(policy=default_policy)
    kind = draw(st.sampled_from(["text", "attachment", "image", "tnef"]))
    if kind == "text":
        data, charset = draw(text_bytes())
        subtype = draw(st.sampled_from(["plain", "html"]))
        part.set_content(data, "text", subtype, cte=draw(CTES))
        if charset:
            part.set_param("charset", charset)
    elif kind == "image":
        image_type = draw(st.sampled_from(sorted(IMAGES)))
        data = draw(mutated(IMAGES[image_type], max_mutations=3))
        part.set_content(data, "image", image_type, cte="base64", cid="<i@x>")
    elif kind == "tnef":
        data = b"\x78\x9f\x3e\x22" + draw(st.binary(max_size=200))
        part.set_content(data, "application", "ms-tnef", filename="winmail.dat")
    else:
        maintype = draw(st.sampled_from(["application", "audio", "video", "model"]))
        part.set_content(
            draw(st.binary(max_size=2_000)),
            maintype,
            draw(SUBTYPES),
            cte=draw(CTES),
            disposition=draw(st.sampled_from(["attachment", "inline"])),
            filename=draw(st.none() | st.text(max_size=40)),
        )
    return part


def trees(max_depth: int = 3) -> st.SearchStrategy[EmailMessage]:
    if max_depth == 0:
        return leaves()
    return st.one_of(leaves(), containers(max_depth), nested_messages(max_depth))


@st.composite
def containers(draw: st.DrawFn, max_depth: int) -> EmailMessage:
    container = EmailMessage(policy=default_policy)
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report", "signed"]))
    container["Content-Type"] = f"multipart/{subtype}"
    container.set_param(
        "boundary", draw(st.sampled_from(["b", "==b==", "a'b(c)d+e_f,g-h.i/j:k=l?m"]))
    )
    container.set_payload(draw(st.lists(trees(max_depth - 1), max_size=4)))
    return container


@st.composite
def nested_messages(draw: st.DrawFn, max_depth: int) -> EmailMessage:
    inner = draw(trees(max_depth - 1))
    inner["Subject"] = draw(st.text(max_size=20).map(lambda text: "".join(text.split())))
    part = EmailMessage(policy=default_policy)
    part.set_content(inner)
    return part


@st.composite
def near_emails(draw: st.DrawFn) -> bytes:
    """Random header lines over a random MIME tree; bare LFs, NULs and cuts sprinkled on top."""
    linesep = draw(st.sampled_from([b"\r\n", b"\n"]))
    tree = draw(trees())
    body = tree.as_bytes(policy=default_policy.clone(linesep=linesep.decode()))
    raw = draw(header_lines(linesep)) + body
    if linesep == b"\r\n" and draw(st.booleans()):
        raw = raw.replace(b"\r\n", b"\n", draw(st.integers(1, 20)))  # some bare LF
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + b"\x00" + raw[at:]
    return raw[:MAX_BYTES]


def _chain(levels: int, siblings: dict[int, int], leaves: int) -> bytes:
    """Multiparts nested `levels` deep; level n has siblings[n] parts before the next level."""
    head, tail = b"Message-ID: <deep@x>\nSubject: deep\n", b""
    for level in range(levels):
        boundary = b"b%d" % level
        head += b"Content-Type: multipart/mixed; boundary=" + boundary + b"\n\n"
        for n in range(siblings.get(level, 0)):
            head += b"--%s\nContent-Type: application/pdf\n\nsibling %d.%d\n" % (boundary, level, n)
        head += b"--" + boundary + b"\n"
        tail = b"\n--" + boundary + b"--\n" + tail
    separator = b"\n--b%d\n" % (levels - 1)
    bottom = separator.join(b"Content-Type: application/pdf\n\nleaf %d" % n for n in range(leaves))
    return head + bottom + tail


@st.composite
def deep_multiparts(draw: st.DrawFn) -> bytes:
    """A chain of multiparts about as deep as parse allows, with siblings: long part paths."""
    levels = draw(st.integers(1, 55))
    siblings = draw(st.dictionaries(st.integers(0, levels - 1), st.integers(0, 11), max_size=3))
    return _chain(levels, siblings, leaves=draw(st.integers(1, 3)))


# --- Properties -----------------------------------------------------------------------------


@_examples(150)
@given(st.binary(max_size=MAX_BYTES))
def test_any_bytes_are_stored_whole_once(tmp_path: Path, raw: bytes) -> None:
    with _fresh_example(tmp_path):
        assert_stored_whole(raw)


@_examples(150)
@given(st.one_of(near_emails(), near_emails(), deep_multiparts()))
def test_near_emails_are_stored_whole_once(tmp_path: Path, raw: bytes) -> None:
    with _fresh_example(tmp_path):
        assert_stored_whole(raw)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
@_examples(3)
@given(data=st.data())
def test_damaged_fixture_emails_are_stored_whole_once(
    tmp_path: Path, name: str, data: st.DataObject
) -> None:
    raw = data.draw(mutated((FIXTURES / name).read_bytes(), max_mutations=8), label="raw")
    with _fresh_example(tmp_path):
        assert_stored_whole(raw)


# --- Inputs these properties found ----------------------------------------------------------


def test_a_content_type_longer_than_its_column_is_stored(tmp_path: Path) -> None:
    # RFC 6838 §4.2 caps type and subtype at 127 characters each: 255 with the slash.
    raw = b"Message-ID: <long-type@x>\nContent-Type: application/" + b"x" * 250 + b"\n\n%PDF\n"
    with _fresh_example(tmp_path):
        assert_stored_whole(raw)
        document = Attachment.objects.select_related("document").get().document
        assert len(document.content_type) <= 255
        assert blobs.read(document.file.name) == b"%PDF\n"


def test_a_date_offset_postgresql_cannot_hold_keeps_its_instant(tmp_path: Path) -> None:
    # The stdlib accepts offsets up to +-23:59; PostgreSQL refuses any beyond +-15:59.
    raw = b"Message-ID: <far-east@x>\nDate: Mon, 1 Jan 1970 00:00:00 +1600\n\nbody\n"
    with _fresh_example(tmp_path):
        assert_stored_whole(raw)
        assert Message.objects.get().date == datetime(1969, 12, 31, 8, 0, tzinfo=UTC)


def test_a_date_past_the_year_9999_in_utc_is_dropped_not_fatal(tmp_path: Path) -> None:
    # 9999-12-31 23:00 at -15:00 is 10000-01-01 14:00 UTC: PostgreSQL stores it, but Python's
    # datetime cannot hold it, so every later read of the row would fail.
    raw = b"Message-ID: <y10k@x>\nDate: Fri, 31 Dec 9999 23:00:00 -1500\n\nbody\n"
    with _fresh_example(tmp_path):
        assert_stored_whole(raw)
        assert Message.objects.get().date is None


def test_parts_deeper_than_the_part_path_column_are_all_kept(tmp_path: Path) -> None:
    # Two levels of ten parts make the section numbers "10.10.1.1…": 101 characters at the
    # bottom of a 50-level chain, where two leaves differ only in their last digit.
    raw = _chain(50, {0: 9, 1: 9}, leaves=2)
    with _fresh_example(tmp_path):
        assert_stored_whole(raw)
        paths = list(Attachment.objects.values_list("part_path", flat=True))
        assert len(paths) == 9 + 9 + 2
        assert len(set(paths)) == len(paths)
        assert max(map(len, paths)) > 100


def test_a_file_left_half_written_is_written_again(tmp_path: Path) -> None:
    # A process killed while writing (OOM, deploy, full disk) leaves a truncated file under the
    # content-addressed name; storing the same bytes later must not trust it.
    raw = b"Message-ID: <half@x>\nSubject: half\n\n" + b"body line\n" * 1000
    with _fresh_example(tmp_path):
        name = blobs.name_for(hashlib.sha256(raw).hexdigest(), "raw")
        default_storage.save(name, ContentFile(raw[:100]))
        assert_stored_whole(raw)
