"""licensing.keys: pure, no database, no settings.

A key must survive only as issued: any change, down to one bit, is refused with a reason.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from licensing import keys
from tests.licensing.vendor import CRM_URL, Vendor

ISSUED = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


@pytest.fixture
def vendor() -> Vendor:  # overrides the conftest one: no settings, no database here
    return Vendor()


def _public(v: Vendor) -> Ed25519PublicKey:
    return v.private_key.public_key()


def _payload_dict(v: Vendor, **changes: object) -> dict[str, object]:
    data = v.payload(issued_at=ISSUED).as_dict()
    data.update(changes)
    return data


def _refusal(key: str, v: Vendor) -> str:
    with pytest.raises(keys.InvalidKey) as caught:
        keys.verify(key, _public(v))
    return caught.value.reason


# --- Valid keys ------------------------------------------------------------------------------


def test_an_issued_key_verifies_to_its_payload(vendor: Vendor) -> None:
    payload = vendor.payload(issued_at=ISSUED, features=("mailconnector", "sync"))
    key = keys.issue(payload, vendor.private_key)
    assert keys.verify(key, _public(vendor)) == payload


def test_the_key_is_base64url_payload_dot_signature_without_padding(vendor: Vendor) -> None:
    key = vendor.key(issued_at=ISSUED)
    body, signature = key.split(".")
    assert "=" not in key
    data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    # What is signed is canonical JSON: sorted keys, no spaces.
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode(
        "ascii"
    )
    assert json.loads(data) == {
        "license_id": "lic-0001",
        "installation": "Acme Ltd",
        "crm_url": CRM_URL,
        "users": 3,
        "features": ["mailconnector"],
        "issued_at": "2026-01-05T09:30:00Z",
        "expires_at": "2027-01-05T09:30:00Z",
    }
    assert len(base64.urlsafe_b64decode(signature + "==")) == 64


def test_a_key_without_expiry_carries_null(vendor: Vendor) -> None:
    key = vendor.key(expires_at=None)
    assert keys.verify(key, _public(vendor)).expires_at is None


def test_a_key_wrapped_across_lines_by_an_email_client_still_verifies(vendor: Vendor) -> None:
    key = vendor.key()
    wrapped = "\n  " + "\r\n".join(key[i : i + 60] for i in range(0, len(key), 60)) + " \n"
    assert keys.verify(wrapped, _public(vendor)) == keys.verify(key, _public(vendor))


def test_a_name_outside_ascii_travels_escaped_and_comes_back(vendor: Vendor) -> None:
    key = vendor.key(installation="Müller & Söhne GmbH")
    assert key.isascii()
    assert keys.verify(key, _public(vendor)).installation == "Müller & Söhne GmbH"


# --- Tampering -------------------------------------------------------------------------------


def test_every_single_bit_flip_of_a_key_is_refused(vendor: Vendor) -> None:
    # A short key, so that every bit of every character can be tried.
    key = vendor.key(license_id="1", installation="A", crm_url="https://a.io", expires_at=None)
    raw = key.encode("ascii")
    tried = 0
    for index in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[index] ^= 1 << bit
            text = flipped.decode("latin-1")
            with pytest.raises(keys.InvalidKey):
                keys.verify(text, _public(vendor))
            tried += 1
    assert tried == 8 * len(key)


def test_a_payload_edited_for_more_users_is_refused(vendor: Vendor) -> None:
    key = vendor.key(users=3)
    signature = key.split(".")[1]
    forged = keys.b64url_encode(keys.canonical_json(_payload_dict(vendor, users=300)))
    assert "signature does not match" in _refusal(f"{forged}.{signature}", vendor)


def test_a_payload_edited_for_a_later_expiry_is_refused(vendor: Vendor) -> None:
    key = vendor.key()
    signature = key.split(".")[1]
    later = _payload_dict(vendor, expires_at="2099-12-31T23:59:59Z")
    forged = keys.b64url_encode(keys.canonical_json(later))
    assert "signature does not match" in _refusal(f"{forged}.{signature}", vendor)


def test_a_tampered_signature_is_refused(vendor: Vendor) -> None:
    body, signature = vendor.key().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 0xFF
    assert "signature does not match" in _refusal(f"{body}.{keys.b64url_encode(raw)}", vendor)


def test_a_key_signed_by_another_vendor_key_is_refused(vendor: Vendor) -> None:
    other = Vendor()
    assert "not issued by this CRM's license vendor" in _refusal(other.key(), vendor)


def test_a_signature_moved_from_another_key_is_refused(vendor: Vendor) -> None:
    body = vendor.key(users=50).split(".")[0]
    signature = vendor.key(users=3).split(".")[1]
    assert "signature does not match" in _refusal(f"{body}.{signature}", vendor)


# --- Malformed strings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "No license key was given"),
        ("   \n\t ", "No license key was given"),
        ("abc", "two parts separated by one dot (this text has 1 parts)"),
        ("a.b.c", "(this text has 3 parts)"),
        ("abcd.", "signature is damaged"),
        (".abcd", "content is damaged"),
        ("ab+c.abcd", "content is damaged"),
        ("abcd.ab/c", "signature is damaged"),
        ("abcd.abcd=", "signature is damaged"),
        ("abcde.abcd", "content is damaged"),  # a length no base64 text has
        ("abcd.abcd", "signature has the wrong length"),
        ("clé.abcd", "characters that never appear in a license key"),
        ("abcd\x00.abcd", "content is damaged"),
    ],
)
def test_malformed_text_is_refused_with_a_reason(vendor: Vendor, text: str, reason: str) -> None:
    assert reason in _refusal(text, vendor)


def test_a_huge_text_is_refused_before_any_decoding(vendor: Vendor) -> None:
    huge = "A" * (keys.MAX_KEY_CHARS + 1) + "." + "B" * 86
    assert "too long to be a license key" in _refusal(huge, vendor)


def test_stray_bits_in_the_last_base64_character_are_refused(vendor: Vendor) -> None:
    # Python's decoder ignores them; a key has one text only.
    body, signature = vendor.key().split(".")
    last = signature[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(last) ^ 1]  # 64 bytes: 86 characters, the last holds 2 bits
    assert "signature is damaged" in _refusal(f"{body}.{signature[:-1]}{twin}", vendor)


def test_something_that_is_not_a_string_is_refused(vendor: Vendor) -> None:
    assert "must be text" in _refusal(b"abc.def", vendor)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_are_refused_and_never_crash(data: bytes) -> None:
    v = Vendor()
    with pytest.raises(keys.InvalidKey):
        keys.verify(data.decode("latin-1"), _public(v))


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.= \n"),
)
def test_random_key_like_text_is_refused_and_never_crash(text: str) -> None:
    v = Vendor()
    with pytest.raises(keys.InvalidKey):
        keys.verify(text, _public(v))


# --- Content checks (validly signed, so the checks past the signature are reached) ----------


def _signed(v: Vendor, data: dict[str, object] | bytes) -> str:
    raw = data if isinstance(data, bytes) else keys.canonical_json(data)
    return v.sign_raw(raw)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"users": 0}, "users must be a whole number from 1"),
        ({"users": -5}, "users must be a whole number from 1"),
        ({"users": "3"}, "users must be a whole number from 1"),
        ({"users": 3.0}, "users must be a whole number from 1"),
        ({"users": True}, "users must be a whole number from 1"),
        ({"users": 10**7}, "users must be a whole number from 1"),
        ({"installation": ""}, "installation must be text"),
        ({"installation": 42}, "installation must be text"),
        ({"installation": "x" * 201}, "installation must be text of 1 to 200"),
        ({"installation": "Acme\nLtd"}, "installation contains control characters"),
        ({"license_id": None}, "license_id must be text"),
        ({"crm_url": "crm.example.com"}, "crm_url is not a usable address"),
        ({"crm_url": "ftp://crm.example.com"}, "crm_url is not a usable address"),
        ({"features": "mailconnector"}, "features must be a list of names"),
        ({"features": ["mailconnector", 7]}, "features must be a list of names"),
        ({"features": [""]}, "features must be a list of names"),
        ({"issued_at": "2026-01-05"}, "issued_at must be a time like"),
        ({"issued_at": 1767605400}, "issued_at must be a time like"),
        ({"issued_at": "2026-02-30T00:00:00Z"}, "issued_at is not a real date"),
        ({"expires_at": "2026-01-05T09:30:00+01:00"}, "expires_at must be a time like"),
        ({"expires_at": "2025-01-01T00:00:00Z"}, "expires before it was issued"),
    ],
)
def test_mistyped_fields_are_refused_with_the_field_named(
    vendor: Vendor, changes: dict[str, object], reason: str
) -> None:
    assert reason in _refusal(_signed(vendor, _payload_dict(vendor, **changes)), vendor)


def test_a_missing_field_is_named(vendor: Vendor) -> None:
    data = _payload_dict(vendor)
    del data["users"], data["features"]
    assert "lacks the field(s) features, users" in _refusal(_signed(vendor, data), vendor)


def test_an_extra_field_is_named(vendor: Vendor) -> None:
    data = _payload_dict(vendor, unlimited=True)
    assert "unknown field(s) unlimited" in _refusal(_signed(vendor, data), vendor)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"users": NaN}', "NaN is not a number"),
        (b'{"users": 1, "users": 2}', "the field users appears twice"),
        (b"\xff\xfe", "not valid JSON"),
        pytest.param(b"[" * 2500 + b"]" * 2500, "cannot be read", id="deeply-nested"),
        pytest.param(b'{"users":' + b"9" * 5000 + b"}", "not valid JSON", id="huge-number"),
    ],
)
def test_unreadable_content_is_refused(vendor: Vendor, raw: bytes, reason: str) -> None:
    assert reason in _refusal(_signed(vendor, raw), vendor)


def test_content_with_spaces_is_refused_as_not_canonical(vendor: Vendor) -> None:
    data = json.dumps(_payload_dict(vendor), sort_keys=True, indent=1).encode()
    assert "not in canonical form" in _refusal(_signed(vendor, data), vendor)


def test_the_vendor_cannot_issue_a_key_the_crm_would_refuse(vendor: Vendor) -> None:
    with pytest.raises(keys.InvalidKey, match="users must be"):
        vendor.key(users=0)


# --- Issuing as license_issue does -----------------------------------------------------------


def test_a_new_payload_normalises_the_url_and_runs_through_the_last_day() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    payload = keys.new_payload(
        installation="  Acme  ",
        crm_url="HTTPS://CRM.Example.com:443/",
        users=5,
        features=("mailconnector", "mailconnector"),
        expires_on=date(2026, 12, 31),
        now=now,
    )
    assert payload.crm_url == "https://crm.example.com"
    assert payload.installation == "Acme"
    assert payload.features == ("mailconnector",)
    assert payload.issued_at == now.replace(microsecond=0)
    assert payload.expires_at == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert payload.expired(datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC)) is False
    assert payload.expired(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) is True
    assert len(payload.license_id) == 36


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("HTTPS://CRM.Example.com:443/", "https://crm.example.com"),
        ("https://crm.example.com", "https://crm.example.com"),
        ("https://crm.example.com///", "https://crm.example.com"),
        ("https://crm.example.com.", "https://crm.example.com"),
        ("http://crm.example.com:80/", "http://crm.example.com"),
        ("https://crm.example.com:8443/", "https://crm.example.com:8443"),
        ("https://Example.com/CRM/", "https://example.com/CRM"),
        ("  https://crm.example.com/  ", "https://crm.example.com"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https://[2001:DB8::1]:443/", "https://[2001:db8::1]"),
    ],
)
def test_urls_normalise(given: str, normal: str) -> None:
    assert keys.normalise_url(given) == normal


@pytest.mark.parametrize(
    "same",
    [
        "HTTPS://CRM.Example.com:443/",
        "https://crm.example.com/",
        "https://CRM.EXAMPLE.COM",
        "https://crm.example.com:443",
    ],
)
def test_spellings_of_the_same_crm_match(same: str) -> None:
    assert keys.same_crm(same, "https://crm.example.com")


@pytest.mark.parametrize(
    "look_alike",
    [
        "https://crm.example.com.evil.net",
        "https://evil.net/crm.example.com",
        "https://crm.example.com@evil.net",
        "https://crm.example.com:443@evil.net",
        "https://evil.net?crm.example.com",
        "https://evil.net#crm.example.com",
        "https://crm-example.com",
        "https://crmexample.com",
        "https://crm.example.co",
        "https://xcrm.example.com",
        "https://crm.example.com.",  # same, control: see below
        "http://crm.example.com",
        "https://crm.example.com:8443",
        "https://crm.example.com:80",
        "https://crm.example.com/crm",
        "https://crm.example.com/crm/other",
        "ftp://crm.example.com",
        "https://crm.\u0435xample.com",  # a Cyrillic letter in place of the e
        "https://crm.example.com\\@evil.net",
        "//crm.example.com",
        "crm.example.com",
        "",
    ],
)
def test_look_alike_urls_do_not_match(look_alike: str) -> None:
    if look_alike == "https://crm.example.com.":
        # The fully qualified spelling is the same host; it is here to show it is not a gap.
        assert keys.same_crm(look_alike, "https://crm.example.com")
        return
    assert not keys.same_crm(look_alike, "https://crm.example.com")


def test_paths_are_compared_as_they_are() -> None:
    assert keys.same_crm("https://example.com/crm/", "https://example.com/crm")
    assert not keys.same_crm("https://example.com/CRM", "https://example.com/crm")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("ftp://crm.example.com", "does not start with http:// or https://"),
        ("https://", "no host name"),
        ("https://user:secret@crm.example.com", "user name or password"),
        ("https://crm.example.com:99999", "invalid port"),
        ("https://crm.example.com:abc", "invalid port"),
        ("https://crm example.com", "spaces"),
        ("https://crm.example.com/?a=1", "query or fragment"),
        ("https://crm.example.com/#top", "query or fragment"),
        ("https://crm_ex%41mple.com", "invalid host name"),
        ("https://bücher.example", "outside ASCII"),
    ],
)
def test_unusable_urls_are_refused_in_words(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        keys.normalise_url(url)


# --- Key pairs -------------------------------------------------------------------------------


def test_key_pairs_round_trip_through_pem_and_raw_base64() -> None:
    private = keys.generate_private_key()
    public = private.public_key()
    again = keys.load_private_key(keys.private_key_pem(private))
    assert keys.public_key_b64(again.public_key()) == keys.public_key_b64(public)
    b64 = keys.public_key_b64(public)
    assert len(b64) == 44
    for spelling in (b64, b64.rstrip("="), b64.replace("+", "-").replace("/", "_"), f" {b64}\n"):
        assert keys.public_key_b64(keys.load_public_key(spelling)) == b64
    assert keys.public_key_b64(keys.load_public_key(keys.public_key_pem(public))) == b64
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    loaded = keys.load_private_key(base64.b64encode(raw_private).decode())
    assert keys.public_key_b64(loaded.public_key()) == b64


def test_a_key_loaded_from_pem_verifies_what_the_private_key_issued(vendor: Vendor) -> None:
    public = keys.load_public_key(keys.public_key_pem(_public(vendor)))
    assert keys.verify(vendor.key(), public).users == 3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "0 bytes once decoded"),
        ("not base64!", "neither PEM nor base64"),
        (base64.b64encode(b"x" * 31).decode(), "31 bytes once decoded; an Ed25519 key is 32"),
        ("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----", "not a readable PEM"),
    ],
)
def test_unusable_public_keys_are_refused_in_words(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        keys.load_public_key(text)


def test_a_public_key_of_another_algorithm_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="not an Ed25519 key"):
        keys.load_public_key(pem)


def test_timestamps_must_carry_a_zone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        keys.format_timestamp(datetime(2026, 1, 1))  # noqa: DTZ001
    assert keys.format_timestamp(ISSUED + timedelta(hours=1)) == "2026-01-05T10:30:00Z"
