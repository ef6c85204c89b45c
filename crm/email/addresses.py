"""Email addresses as the CRM compares them: normalised, with their domain classified.

Pure code: no models, no settings. Matching a sender to a contact or an account compares
the normalised form produced here, so every caller must go through `normalise_email`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError

__all__ = [
    "FREE_MAIL_DOMAINS",
    "Address",
    "domain_of",
    "is_automated_sender",
    "is_free_mail",
    "normalise_domain",
    "normalise_email",
    "parse_address",
    "parse_addresses",
]


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: display name (may be empty) and normalised address."""

    name: str
    email: str

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


# Consumer mailbox providers: a sender at one of these says nothing about the company they
# work for, so account matching by domain must skip them. Country variants are listed one by
# one because the providers only run the ones below (there is no "hotmail.*" wildcard in DNS).
FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    {
        # Google
        "gmail.com",
        "googlemail.com",
        # Microsoft
        "outlook.com",
        "outlook.de",
        "outlook.fr",
        "outlook.it",
        "outlook.es",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.de",
        "hotmail.fr",
        "hotmail.it",
        "hotmail.es",
        "hotmail.nl",
        "hotmail.be",
        "hotmail.ch",
        "hotmail.at",
        "hotmail.se",
        "hotmail.com.br",
        "live.com",
        "live.co.uk",
        "live.de",
        "live.fr",
        "live.it",
        "live.nl",
        "live.be",
        "msn.com",
        # Yahoo / AOL
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.de",
        "yahoo.fr",
        "yahoo.it",
        "yahoo.es",
        "yahoo.ca",
        "yahoo.in",
        "yahoo.co.jp",
        "yahoo.com.br",
        "yahoo.com.au",
        "ymail.com",
        "rocketmail.com",
        "aol.com",
        "aim.com",
        # Apple
        "icloud.com",
        "me.com",
        "mac.com",
        # German-speaking providers
        "gmx.de",
        "gmx.net",
        "gmx.at",
        "gmx.ch",
        "gmx.com",
        "web.de",
        "t-online.de",
        "freenet.de",
        "posteo.de",
        "mailbox.org",
        "bluewin.ch",
        # Italy
        "libero.it",
        "virgilio.it",
        "tiscali.it",
        "alice.it",
        "tin.it",
        # France, Benelux
        "orange.fr",
        "wanadoo.fr",
        "free.fr",
        "laposte.net",
        "sfr.fr",
        "telenet.be",
        "skynet.be",
        "ziggo.nl",
        "kpnmail.nl",
        # Privacy-oriented and independent
        "proton.me",
        "protonmail.com",
        "protonmail.ch",
        "pm.me",
        "tutanota.com",
        "tuta.io",
        "fastmail.com",
        "fastmail.fm",
        "hushmail.com",
        "zoho.com",
        "mail.com",
        "email.com",
        # Eastern Europe, Russia
        "yandex.ru",
        "yandex.com",
        "mail.ru",
        "inbox.ru",
        "list.ru",
        "bk.ru",
        "rambler.ru",
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "interia.pl",
        "onet.pl",
        # Asia
        "qq.com",
        "163.com",
        "126.com",
        "sina.com",
        "naver.com",
        "hanmail.net",
        # North American and UK ISPs
        "comcast.net",
        "verizon.net",
        "att.net",
        "sbcglobal.net",
        "bellsouth.net",
        "cox.net",
        "charter.net",
        "earthlink.net",
        "shaw.ca",
        "rogers.com",
        "sympatico.ca",
        "btinternet.com",
        "sky.com",
    }
)

# Local parts of senders that are machines. Compared after lowercasing and removing "-",
# "_" and ".", so "no-reply", "no_reply", "No.Reply" and "noreply" are one entry.
_AUTOMATED_LOCAL_PARTS = frozenset({"mailerdaemon", "postmaster", "noreply", "donotreply"})
# "notifications-noreply@…", "noreply-billing@…" are just as automated.
_AUTOMATED_AFFIXES = ("noreply", "donotreply", "dontreply")
_SEPARATORS = re.compile(r"[-_.]")
_WHITESPACE = re.compile(r"\s+")
_NOT_IN_ADDRESS = re.compile(r"[\s<>]")


def normalise_domain(domain: str) -> str:
    """Lowercase, drop the root dot, and IDNA-encode each label (RFC 5890, via Python's codec).

    A domain the codec rejects (an empty or over-long label) is returned lowercased, so that
    a malformed address still compares equal to itself.
    """
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def normalise_email(value: str) -> str | None:
    """`"<John.Doe@Example.COM>"` → `"john.doe@example.com"`; None when there is no domain.

    The local part is lowercased although RFC 5321 §2.4 lets servers treat it as
    case-sensitive: no provider the CRM meets does, and users type addresses in any case.
    """
    value = value.strip().strip("<>").strip()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        return None
    if _NOT_IN_ADDRESS.search(domain) or (
        _NOT_IN_ADDRESS.search(local) and not local.startswith('"')
    ):
        return None  # "Name <a@b>" is a mailbox, not an address: use parse_address
    domain = normalise_domain(domain)
    if not domain:
        return None
    return f"{local.lower()}@{domain}"


def parse_addresses(value: str) -> tuple[Address, ...]:
    """Every mailbox of an address-list header value (groups flattened, RFC 5322 §3.4).

    Entries that are not addresses (no domain) are skipped; a value the parser cannot read at
    all gives an empty tuple.
    """
    try:
        header = policy.default.header_factory("to", value)
        found = header.addresses  # type: ignore[attr-defined]
    except (HeaderParseError, IndexError, ValueError, TypeError, RecursionError):
        return ()
    result = []
    for item in found:
        email = normalise_email(item.addr_spec)
        if email:
            result.append(Address(name=_clean_name(item.display_name), email=email))
    return tuple(result)


def parse_address(value: str) -> Address | None:
    """The first mailbox of `value`, or None."""
    found = parse_addresses(value)
    return found[0] if found else None


def domain_of(address: str | Address) -> str | None:
    """The normalised domain (`"Ann <a@Ex.com>"` → `"ex.com"`), or None."""
    email = _email_of(address)
    return email.rpartition("@")[2] if email else None


def _email_of(address: str | Address) -> str | None:
    if isinstance(address, Address):
        return address.email
    found = normalise_email(address)
    if found is None:
        mailbox = parse_address(address)
        found = mailbox.email if mailbox else None
    return found


def is_free_mail(domain: str) -> bool:
    """True for consumer providers (gmail.com, web.de…). Accepts a domain or an address."""
    if "@" in domain:
        found = domain_of(domain)
        return found is not None and found in FREE_MAIL_DOMAINS
    return normalise_domain(domain) in FREE_MAIL_DOMAINS


def is_automated_sender(address: str | Address) -> bool:
    """True for bounce and no-reply senders, whose mail must never start a conversation."""
    email = _email_of(address)
    if not email:
        return False
    local = email.rpartition("@")[0]
    # Sub-addressing ("noreply+list@…", RFC 5233) does not change who sends.
    compact = _SEPARATORS.sub("", local.partition("+")[0])
    return (
        compact in _AUTOMATED_LOCAL_PARTS
        or compact.startswith(_AUTOMATED_AFFIXES)
        or compact.endswith(_AUTOMATED_AFFIXES)
    )


def _clean_name(name: str) -> str:
    return _WHITESPACE.sub(" ", name).strip()
