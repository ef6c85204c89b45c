"""mailconverter.pec without a database: the project's PEC fixtures and the public samples.

Expected facts come from tests/fixtures/emails/MANIFEST.json ("pec", written by hand from
how each fixture was made) and from the corpora's SOURCE.md notes, never from the code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm.email.parse import identity, parse
from mailconverter import pec
from tests.mailconverter.helpers import corpus

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "emails"
RECEIPT_KINDS = [
    "accettazione",
    "non-accettazione",
    "presa-in-carico",
    "avvenuta-consegna",
    "errore-consegna",
    "preavviso-errore-consegna",
    "rilevazione-virus",
]


@cache
def manifest() -> dict[str, Any]:
    pec_files: dict[str, Any] = json.loads((FIXTURES / "MANIFEST.json").read_text("utf-8"))["pec"][
        "files"
    ]
    return pec_files


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tipo(daticert: bytes) -> str:
    text = daticert.decode("utf-16") if daticert[:2] in (b"\xff\xfe", b"\xfe\xff") else None
    text = text if text is not None else daticert.decode("utf-8")
    found = re.search(r'<postacert[^>]*\btipo="([^"]+)"', text)
    assert found is not None
    return found.group(1)


# --- the project's fixtures, fact by fact ------------------------------------------------------


def test_every_pec_fixture_is_described_in_the_manifest() -> None:
    on_disk = sorted(f"pec/{p.name}" for p in (FIXTURES / "pec").glob("*.eml"))
    assert on_disk == sorted(manifest())
    assert all(entry["exercises"] for entry in manifest().values())


@pytest.mark.parametrize("name", sorted(manifest()))
def test_each_pec_fixture_classifies_and_unwraps_to_its_manifest_facts(name: str) -> None:
    facts = manifest()[name]["expect"]
    data = raw(name)

    found = pec.classify(data)
    original, daticert, riferimento = pec.unwrap(data)

    assert (found.kind, found.detail) == (facts["classify"], facts["detail"])
    assert found.riferimento == facts["riferimento"] == riferimento
    assert daticert is not None
    assert (len(daticert), sha256(daticert)) == (
        facts["daticert"]["size"],
        facts["daticert"]["sha256"],
    )
    assert tipo(daticert) == facts["daticert"]["tipo"]
    if facts["original"] is None:
        assert original is None
        assert parse(data).subject == facts.get("subject", parse(data).subject)
        return
    assert original is not None
    want = facts["original"]
    assert (len(original), sha256(original)) == (want["size"], want["sha256"])
    assert original in data  # cut out as it stands, not written out again
    inner = parse(original)
    assert inner.subject == want["subject"]
    assert inner.from_ is not None
    assert inner.from_.email == want["from"]
    assert inner.message_id == want["message_id"]
    assert inner.in_reply_to == want.get("in_reply_to")
    if "text_contains" in want:
        assert want["text_contains"] in (inner.text_body or "")
    got = [
        {"filename": p.filename, "content_type": p.content_type, "size": p.size}
        | {"sha256": sha256(p.payload)}
        for p in inner.parts
    ]
    assert got == want["attachments"]


def test_classify_reads_an_already_parsed_email_too() -> None:
    assert pec.classify(parse(raw("pec/receipt-accettazione.eml"))).kind == "receipt"
    assert pec.classify(parse(raw("plain-text-utf8.eml"))).kind == "not_pec"


@pytest.mark.parametrize("kind", RECEIPT_KINDS)
def test_every_receipt_kind_is_a_receipt(kind: str) -> None:
    data = raw("pec/receipt-accettazione.eml").replace(
        b"X-Ricevuta: accettazione", f"X-Ricevuta: {kind}".encode()
    )
    seen = pec.view(data)
    assert (seen.classification.kind, seen.receipt) == ("receipt", kind)
    assert seen.reason == f"PEC receipt: {kind}"
    assert seen.original is None  # a receipt is never unwrapped for the rules


def test_a_receipt_that_carries_the_delivered_message_is_still_a_receipt() -> None:
    seen = pec.view(raw("pec/receipt-avvenuta-consegna.eml"))
    assert seen.receipt == "avvenuta-consegna"
    assert seen.original is None
    assert seen.identity is None


def test_an_anomaly_envelope_is_unwrapped_like_a_certified_one() -> None:
    # X-Trasporto: errore wraps mail the provider could not certify (an ordinary sender).
    data = (
        raw("pec/envelope-posta-certificata.eml")
        .replace(b"X-Trasporto: posta-certificata", b"X-Trasporto: errore")
        .replace(b"Subject: POSTA CERTIFICATA:", b"Subject: ANOMALIA MESSAGGIO:")
    )
    seen = pec.view(data)
    assert (seen.classification.kind, seen.classification.detail) == ("envelope", "errore")
    assert seen.original is not None
    assert parse(seen.original).subject == "Richiesta di assistenza ordine 4711"


def test_the_ledger_identity_of_an_envelope_is_its_originals_whatever_the_wrapping() -> None:
    envelope = raw("pec/envelope-posta-certificata.eml")
    # The copy another PEC mailbox receives: its own envelope id, recipient and date.
    other = (
        envelope.replace(b"opec.20261124101507.4711.01", b"opec.20261124101508.4711.99")
        .replace(b"To: assistenza@pec.crm.test", b"To: vendite@pec.crm.test")
        .replace(b"10:15:07 +0100", b"10:15:08 +0100")
    )
    plain_copy = (
        b"Message-ID: <richiesta-4711@pec.cliente.example>\r\n"
        b"Subject: Richiesta di assistenza ordine 4711\r\n\r\nbody\r\n"
    )

    first, second = pec.view(envelope).identity, pec.view(other).identity

    assert first is not None
    assert first == second
    assert first == identity(parse(plain_copy), plain_copy)
    assert first != identity(parse(envelope), envelope)
    assert identity(parse(other), other) != identity(parse(envelope), envelope)


def test_a_non_pec_mail_and_a_malformed_envelope_are_left_as_they_are() -> None:
    plain = pec.view(raw("plain-text-utf8.eml"))
    assert plain.classification.kind == "not_pec"
    assert (plain.original, plain.identity) == (None, None)
    broken = pec.view(raw("pec/envelope-without-postacert.eml"))
    assert broken.classification.kind == "envelope"
    assert (broken.original, broken.identity) == (None, None)
    assert broken.daticert is not None


def test_an_envelope_with_an_empty_postacert_keeps_the_envelope_for_the_rules() -> None:
    envelope = raw("pec/envelope-posta-certificata.eml")
    head = b'filename="postacert.eml"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'
    start = envelope.index(head) + len(head)
    emptied = envelope[:start] + envelope[envelope.index(b"\r\n------=_mixed_1--") :]
    seen = pec.view(emptied)
    assert seen.classification.kind == "envelope"
    assert (seen.original, seen.identity) == (None, None)
    assert seen.daticert is not None


def test_truncated_and_garbage_input_never_raises() -> None:
    envelope = raw("pec/envelope-posta-certificata.eml")
    inputs = [b"", b"\x00\xff" * 50, b"X-Trasporto: posta-certificata\r\n", envelope[:-1]]
    inputs += [envelope[:cut] for cut in range(0, len(envelope), 97)]
    inputs += [envelope.replace(b"------=_mixed_1", b"------=_other")]  # boundary never found
    for data in inputs:
        seen = pec.view(data)
        pec.unwrap(data)
        if seen.original is not None:
            # Whatever survives the cut is the original's start, never the signature part.
            assert seen.original in envelope
            assert b"smime.p7s" not in seen.original


@settings(max_examples=150, deadline=None)
@given(
    cuts=st.lists(st.tuples(st.integers(0, 3000), st.binary(max_size=12)), max_size=6),
    name=st.sampled_from(sorted(manifest())),
)
def test_any_damage_to_a_pec_message_never_raises(cuts: list[tuple[int, bytes]], name: str) -> None:
    data = bytearray(raw(name))
    for position, junk in cuts:
        data[position : position + len(junk)] = junk
    seen = pec.view(bytes(data))
    pec.unwrap(bytes(data))
    assert seen.classification.kind in ("envelope", "receipt", "not_pec")
    assert (seen.original is None) == (seen.identity is None)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_at_all_never_raise(data: bytes) -> None:
    assert pec.classify(data).kind in ("envelope", "receipt", "not_pec")
    pec.unwrap(data)
    pec.view(data)


def test_the_certified_message_id_falls_back_to_daticert_in_utf16() -> None:
    folder = corpus("pec-jopenpec")
    daticert = (folder / "daticert.xml").read_bytes()
    original = b"From: a@example.it\r\nSubject: Test2\r\n\r\nciao\r\n"
    envelope = (
        b"X-Trasporto: posta-certificata\r\nSubject: POSTA CERTIFICATA: Test2\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b'--b\r\nContent-Type: application/xml; name="daticert.xml"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(daticert).replace(b"\n", b"\r\n")
        + b'--b\r\nContent-Type: message/rfc822; name="postacert.eml"\r\n\r\n'
        + original
        + b"\r\n--b--\r\n"
    )
    got = pec.unwrap(envelope)
    assert got.daticert == daticert
    # SOURCE.md: the standalone daticert is UTF-16BE with its <msgid> escaped as &lt;…&gt;.
    assert got.riferimento == "NBFBS2$356499608B206976D53E57473B285C3A@pec.it"
    assert got.original == original


# --- the public samples (read in place) --------------------------------------------------------

# folder, file, kind, detail: from each corpus's SOURCE.md table.
CORPUS = [
    ("pec-go-pec", "accettazione.eml", "receipt", "accettazione"),
    ("pec-go-pec", "consegna.eml", "receipt", "errore-consegna"),
    ("pec-go-pec", "email_2.eml", "receipt", "avvenuta-consegna"),
    ("pec-go-pec", "email_3.eml", "envelope", "posta-certificata"),
    ("pec-java-pec-parser", "accettazione.eml", "receipt", "accettazione"),
    ("pec-java-pec-parser", "consegna.eml", "receipt", "errore-consegna"),
    ("pec-java-pec-parser", "Delivery Status Notification (Failure).eml", "not_pec", ""),
    ("pec-java-pec-parser", "Test - Simple Mail.eml", "not_pec", ""),
    ("pec-java-pec-parser", "Test - Simple Mail (2).eml", "not_pec", ""),
    ("pec-java-pec-parser", "Test - Simple Mail (3).eml", "not_pec", ""),
    ("pec-jopenpec", "message_ok.eml", "envelope", "posta-certificata"),
    ("pec-jopenpec", "message_ko.eml", "envelope", "posta-certificata"),
    ("pec-jopenpec", "message-ok2.eml", "receipt", "avvenuta-consegna"),
    ("pec-jopenpec", "nopec.eml", "not_pec", ""),
]


@pytest.mark.parametrize(("folder", "name", "kind", "detail"), CORPUS)
def test_the_public_samples_classify_as_their_sources_describe(
    folder: str, name: str, kind: str, detail: str
) -> None:
    data = (corpus(folder) / name).read_bytes()
    found = pec.classify(data)
    assert (found.kind, found.detail) == (kind, detail)
    seen = pec.view(data)
    if kind == "receipt":
        assert seen.receipt == detail
        assert found.riferimento  # every receipt names the message it is about
    if kind == "not_pec":
        assert (seen.original, seen.identity) == (None, None)


# file, the original's subject: the SOURCE.md tables and the envelopes' "POSTA CERTIFICATA:" lines
ENVELOPES = [
    ("pec-jopenpec", "message_ok.eml", "test"),
    (
        "pec-jopenpec",
        "message_ko.eml",
        "Riscontro alla missiva dei lavoratori I.Public datata 02.12.2013",
    ),
    ("pec-go-pec", "email_3.eml", "POSTA CERTIFICATA: SUBJECT"),
]


@pytest.mark.parametrize(("folder", "name", "subject"), ENVELOPES)
def test_the_public_envelopes_give_up_their_original_and_daticert(
    folder: str, name: str, subject: str
) -> None:
    data = (corpus(folder) / name).read_bytes()
    original, daticert, riferimento = pec.unwrap(data)
    assert original is not None
    assert original in data
    assert b"smime.p7s" not in original  # email_3's parts are never closed: the cut still holds
    assert parse(original).subject == subject
    assert daticert is not None
    assert tipo(daticert) == "posta-certificata"
    header = re.search(rb"X-Riferimento-Message-ID: <([^>]+)>", data)
    assert header is not None
    assert riferimento == header.group(1).decode()


def test_a_provider_that_renumbers_the_original_still_gives_one_identity() -> None:
    # message_ok.eml (Aruba): postacert.eml carries the provider's id as Message-ID; the id the
    # sender's client gave is only in X-Riferimento-Message-ID. A plain copy of the original
    # (a Cc outside PEC) carries the client's id.
    data = (corpus("pec-jopenpec") / "message_ok.eml").read_bytes()
    seen = pec.view(data)
    assert seen.original is not None
    assert parse(seen.original).message_id != seen.riferimento
    plain = (
        b"Message-ID: <N9VQGC$B2254FE9FD0BA8E3C2A66F0F7F17D574@pec.it>\r\nSubject: test\r\n\r\nx"
    )
    assert seen.identity == identity(parse(plain), plain)
