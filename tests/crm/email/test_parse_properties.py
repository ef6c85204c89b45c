"""Properties of crm.email.parse that must hold for any bytes at all."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.email.parse import (
    ParsedEmail,
    header_section,
    identity,
    message_id_of,
    parse,
    summary,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "emails"
FIXTURE_NAMES = sorted(path.name for path in FIXTURES.glob("*.eml"))

# Fast enough for every run; the autouse fixtures of tests/conftest.py are harmless to share
# between examples.
FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Pieces of real messages, so generated input reaches the MIME and header code paths.
FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"From: a@b.example\r\n",
    b'From: "x" <@@>, =?utf-8?B?w7w=?= <a@b>\r\n',
    b"To: undisclosed-recipients:;\r\n",
    b"Subject: =?x-bogus?Q?caf=E9?= =?utf-8?B?###?=\r\n",
    b"Subject: \xff\xfe raw\r\n",
    b"Date: Mon, 1 Jan 99999 10:00:00 +9999\r\n",
    b"Message-ID: <a@B>\r\n",
    b"References: <a@b> <c@d\r\n",
    b"MIME-Version: 1.0\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b'Content-Type: text/plain; charset="koi8-r"\r\n',
    b"Content-Type: text/html; charset=x-unknown\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: application/ms-tnef\r\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename*0*=utf-8''%C5; filename*1*=%82.txt\r\n",
    b'Content-Disposition: inline; filename="\xe1.pdf"\r\n',
    b"Content-ID: <x@y>\r\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"eJ4=\r\n",
    b"=C3=A9=\r\n",
    b'<img src="cid:x@y">',
    b"\x78\x9f\x3e\x22",  # TNEF signature
    b"\x00",
    b"\xef\xbb\xbf",
]

messages = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=40)), max_size=40).map(
    b"".join
)


def assert_well_formed(email: ParsedEmail, depth: int = 0) -> None:
    """What every caller relies on: storable strings, aware dates, honest sizes."""
    assert isinstance(email, ParsedEmail)
    for field in fields(email):
        value = getattr(email, field.name)
        for text in _strings(value):
            assert "\x00" not in text, field.name
            text.encode("utf-8")  # no lone surrogates
    assert email.date is None or (isinstance(email.date, datetime) and email.date.tzinfo)
    for part in email.parts:
        assert part.size == len(part.payload)
        if part.nested is not None:
            assert depth < 10
            assert_well_formed(part.nested, depth + 1)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple):
        return [text for item in value for text in _strings(item)]
    if hasattr(value, "name") and hasattr(value, "email"):
        return [value.name, value.email]
    return []


@FAST
@given(st.binary(max_size=4096))
def test_parse_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    assert_well_formed(parse(data))


@FAST
@given(messages)
def test_parse_never_raises_on_message_shaped_garbage(data: bytes) -> None:
    assert_well_formed(parse(data))


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> bytes:
    data = bytearray((FIXTURES / draw(st.sampled_from(FIXTURE_NAMES))).read_bytes())
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate"]))
        if operation == "flip" and data:
            data[at] = draw(st.integers(min_value=0, max_value=255))
        elif operation == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=16)))
        elif operation == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=64))]
        elif operation == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(min_value=1, max_value=256))]
        else:
            del data[at:]
    return bytes(data)


@FAST
@given(mutated_fixtures())
def test_parse_never_raises_on_mutated_fixture_emails(data: bytes) -> None:
    assert_well_formed(parse(data))


@FAST
@given(st.one_of(mutated_fixtures(), messages))
def test_the_message_id_read_from_the_headers_alone_is_the_one_parse_gives(data: bytes) -> None:
    # The add-in checks the Idempotency-Key against it before storing the email.
    assert message_id_of(data) == parse(data).message_id


@FAST
@given(st.one_of(mutated_fixtures(), messages))
def test_the_summary_gives_the_header_sections_subject_sender_and_identity(data: bytes) -> None:
    head, quick = parse(header_section(data)), summary(data)

    assert (quick.subject, quick.from_, quick.message_id) == (
        head.subject,
        head.from_,
        head.message_id,
    )
    assert identity(quick, data) == identity(head, data)


@FAST
@given(st.one_of(mutated_fixtures(), messages))
def test_identity_is_stable_when_the_same_bytes_are_parsed_again(data: bytes) -> None:
    first = identity(parse(data), data)

    assert identity(parse(data), data) == first
    assert len(first) == 64
    assert int(first, 16) >= 0
