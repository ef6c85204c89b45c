"""A directory of .eml files served to the scanner as one IMAP folder: the first run's sample.

A new installation has no mail server, yet its first run should show mail becoming tickets.
`LocalSource` implements what the scan loop uses of `mailconverter.imap.Session` over the
`.eml` files of one directory (`host = "local:<directory>"`), with what IMAP promises the
scanner (RFC 3501 §2.3.1.1): a UIDVALIDITY that stays, UIDs that never change or get reused,
and flags that persist. Those live in a small state file under `VAR_DIR`, so a second scan
converts nothing twice even when the folder's cursor is lost.

It is not a way to read the server's files: only directories listed in
`settings.CONVERTER_LOCAL_SOURCES` (default: the shipped sample mailbox) are served, only
regular `*.eml` files directly inside them, never a symlink that leads elsewhere; anything
else is refused with an `ImapError`, like a server that cannot be reached.

The scanner opens its sessions with `session_for`, so a mailbox served by a local source is
scanned like any other: by "Scan now", the periodic scan and `manage.py mailconverter_scan`.
A file dropped into the directory later is new mail; the ledger keeps the rest from doubling.

`install_sample` and `scan_sample` are what `manage.py mailconverter_demo` runs: the mailbox
"Support (sample)" with its rules, converted from `fixtures/sample_mailbox/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from crm.exceptions import Invalid
from crm.models import Record, User
from mailconverter import actions, scanner, schedule
from mailconverter.imap import ConnectionSettings, FolderInfo, ImapError, Selected, Session
from mailconverter.models import Folder, LedgerEntry, Mailbox, Rule, ScanRun

__all__ = [
    "PREFIX",
    "SAMPLE_HOST",
    "SAMPLE_NAME",
    "LocalSource",
    "SampleResult",
    "directory_of",
    "install_sample",
    "scan_sample",
    "session_for",
]

PREFIX = "local:"
INBOX = "INBOX"
SEEN = b"\\Seen"
SAMPLE_NAME = "Support (sample)"
SAMPLE_HOST = PREFIX + "fixtures/sample_mailbox"
SAMPLE_ADDRESS = "support@brightwave.example"


# --- where a local source may read -------------------------------------------------------------


def directory_of(host: str) -> Path:
    """The directory a `local:` host names, if CONVERTER_LOCAL_SOURCES allows it.

    Relative paths are taken from the project's directory; both sides are resolved (symlinks,
    `..`) before comparing, so no spelling of a path reaches outside the allowed directories.
    """
    if not host.startswith(PREFIX):
        raise ImapError(f"{host!r} is not a local source (it must start with {PREFIX!r}).")
    named = host[len(PREFIX) :].strip()
    if not named or "\x00" in named:
        raise ImapError("A local source needs a directory after 'local:'.")
    path = _absolute(named).resolve()
    for allowed in _allowed():
        if path == allowed or path.is_relative_to(allowed):
            if not path.is_dir():
                raise ImapError(f"The local source {named} is not a directory.")
            return path
    raise ImapError(
        f"The local source {named} is not an allowed directory: only those listed in "
        "CONVERTER_LOCAL_SOURCES are read."
    )


def _allowed() -> list[Path]:
    return [_absolute(str(p)).resolve() for p in settings.CONVERTER_LOCAL_SOURCES if str(p)]


def _absolute(path: str) -> Path:
    found = Path(path).expanduser()
    return found if found.is_absolute() else Path(settings.BASE_DIR) / found


def session_for(connection: ConnectionSettings) -> Session:
    """The session a mailbox's settings call for: the local source for `local:` hosts."""
    if connection.host.startswith(PREFIX):
        return LocalSource(connection)
    return Session(connection)


# --- the state: UIDVALIDITY, UIDs by file name, flags ------------------------------------------


@dataclass
class _State:
    path: Path
    uidvalidity: int
    uidnext: int = 1
    uids: dict[str, int] = field(default_factory=dict)  # file name -> UID
    flags: dict[int, set[bytes]] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> _State:
        key = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
        path = Path(settings.VAR_DIR) / "localsource" / f"{key}.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path=path, uidvalidity=int(time.time()))
        except (OSError, ValueError) as exc:
            raise ImapError(f"The local source's state {path} cannot be read: {exc}") from exc
        return cls(
            path=path,
            uidvalidity=int(data["uidvalidity"]),
            uidnext=int(data["uidnext"]),
            uids={str(k): int(v) for k, v in data["uids"].items()},
            flags={int(k): {f.encode() for f in v} for k, v in data["flags"].items()},
        )

    def save(self) -> None:
        data = {
            "uidvalidity": self.uidvalidity,
            "uidnext": self.uidnext,
            "uids": self.uids,
            "flags": {str(k): sorted(f.decode() for f in v) for k, v in self.flags.items() if v},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(temporary, self.path)  # a crash leaves the old state or the new, never half

    def number(self, names: Iterable[str]) -> None:
        """New files get the next UIDs in name order; a vanished file's UID is never reused."""
        present = set(names)
        for name in sorted(present - self.uids.keys()):
            self.uids[name] = self.uidnext
            self.uidnext += 1
        for name in list(self.uids):
            if name not in present:
                self.flags.pop(self.uids.pop(name), None)


# --- the session -------------------------------------------------------------------------------


class LocalSource(Session):
    """`with LocalSource(settings) as source:` as with `Session`; one folder, INBOX."""

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        self.directory: Path | None = None
        self._state: _State | None = None
        self._files: dict[int, Path] = {}

    def connect(self) -> None:
        self.directory = directory_of(self.settings.host)
        self._state = _State.load(self.directory)
        self._refresh()
        self.capabilities = frozenset({b"IMAP4REV1", b"UIDPLUS"})

    def close(self) -> None:
        if self._state is not None:
            self._state.save()
        self._state = None

    @property
    def state(self) -> _State:
        if self._state is None:
            raise ImapError("Not connected.")
        return self._state

    def _refresh(self) -> None:
        """The directory's mail files, numbered: regular *.eml files inside it, nothing else."""
        if self.directory is None:
            raise ImapError("Not connected.")
        found: dict[str, Path] = {}
        for path in self.directory.iterdir():
            if path.name.startswith(".") or path.suffix.lower() != ".eml":
                continue
            real = path.resolve()
            if real.parent != self.directory or not real.is_file():
                continue  # a symlink out of the directory, or not a file: not mail here
            found[path.name] = real
        self.state.number(found)
        self._files = {self.state.uids[name]: path for name, path in found.items()}
        self.state.save()

    # --- folders ---------------------------------------------------------------------------

    def folders(self) -> list[FolderInfo]:
        return [FolderInfo(name=INBOX, delimiter="/", flags=())]

    def status(self, folder: str) -> tuple[int, int]:
        self._folder(folder)
        unseen = [uid for uid in self._files if SEEN not in self.state.flags.get(uid, set())]
        return len(self._files), len(unseen)

    def select(self, folder: str) -> Selected:
        self._folder(folder)
        self._refresh()
        return Selected(
            name=INBOX,
            uidvalidity=self.state.uidvalidity,
            uidnext=self.state.uidnext,
            exists=len(self._files),
        )

    def _folder(self, folder: str) -> None:
        if folder.upper() != INBOX:
            raise ImapError(f"The local source has no folder {folder!r}, only {INBOX}.")

    # --- messages --------------------------------------------------------------------------

    def new_uids(self, after: int, *, unseen_only: bool = False) -> list[int]:
        return sorted(
            uid
            for uid in self._files
            if uid > after and not (unseen_only and SEEN in self.state.flags.get(uid, set()))
        )

    def sizes(self, uids: Sequence[int], *, chunk: int = 1000) -> dict[int, int]:
        result = {}
        for uid in uids:
            path = self._files.get(uid)
            if path is not None and path.exists():
                result[uid] = path.stat().st_size
        return result

    def bodies(
        self, uids: Sequence[int], sizes: dict[int, int], *, batch: int, batch_bytes: int
    ) -> Iterator[tuple[int, bytes]]:
        for uid in uids:
            raw = self._read(uid)
            if raw is not None:
                yield uid, raw

    def header(self, uid: int) -> bytes:
        raw = self._read(uid) or b""
        cut = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
        return raw[: min(cut) + 2] if cut else raw

    def _read(self, uid: int) -> bytes | None:
        path = self._files.get(uid)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None  # removed meanwhile: gone, like an expunged message

    def mark_seen(self, uids: Iterable[int]) -> None:
        for uid in uids:
            if uid in self._files:
                self.state.flags.setdefault(uid, set()).add(SEEN)
        self.state.save()

    def flags(self, uids: Iterable[int]) -> dict[int, tuple[bytes, ...]]:
        return {
            uid: tuple(sorted(self.state.flags.get(uid, set())))
            for uid in uids
            if uid in self._files
        }

    def move(self, uids: Iterable[int], target: str) -> None:
        if list(uids):
            raise ImapError(
                "The local source cannot move messages: set the mailbox to mark mail as read."
            )


# --- the sample mailbox ------------------------------------------------------------------------

# Who writes what in fixtures/sample_mailbox: the rules an administrator would set up for a
# support address that also receives sales questions and newsletters.
_QUOTES = [
    {"field": "subject", "operator": "contains", "value": word}
    for word in ("quote", "pricing", "price")
]
SAMPLE_RULES: list[dict[str, Any]] = [
    {
        "name": "Ignore newsletters",
        "match": "any",
        "conditions": [
            {"field": "from", "operator": "contains", "value": "newsletter"},
            {"field": "subject", "operator": "contains", "value": "newsletter"},
        ],
        "actions": [{"type": "nothing"}],
    },
    {
        "name": "Replies update their ticket",
        "match": "all",
        "conditions": [],
        "actions": [{"type": "update_ticket"}],
    },
    {
        "name": "Quotes: link to the customer and the company",
        "match": "any",
        "conditions": _QUOTES,
        "actions": [
            {"type": "link", "module": actions.CONTACTS, "by": "sender"},
            {"type": "link", "module": actions.COMPANIES, "by": "sender"},
        ],
    },
    {
        "name": "Quotes from someone new: link to a Lead, created if missing",
        "match": "any",
        "conditions": _QUOTES,
        "actions": [{"type": "link_or_create", "module": actions.LEADS, "by": "sender"}],
    },
    {
        "name": "Everything else opens a ticket",
        "match": "all",
        "conditions": [],
        "actions": [{"type": "create_ticket", "create_lead": True}],
    },
]


@dataclass(frozen=True)
class SampleResult:
    mailbox: Mailbox
    run: ScanRun
    entries: list[LedgerEntry]  # this run's, in UID order
    tickets: list[Record]  # created by this run


def install_sample(*, owner: User | None = None) -> Mailbox:
    """The mailbox "Support (sample)" reading the shipped sample, with its rules (once)."""
    found = Mailbox.objects.filter(name=SAMPLE_NAME).first()
    if found is not None:
        return found
    owner = owner or User.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if owner is None:
        raise Invalid("There is no administrator to own the sample's records: load the demo.")
    with transaction.atomic():
        mailbox = Mailbox.objects.create(
            name=SAMPLE_NAME,
            host=SAMPLE_HOST,
            port=0,
            security=Mailbox.Security.NONE,
            username=SAMPLE_ADDRESS,
            address=SAMPLE_ADDRESS,
            # The local source cannot move mail: it keeps read marks in its state file.
            after_scan=Mailbox.AfterScan.MARK_READ,
            enabled=True,
            owner=owner,
        )
        Folder.objects.create(mailbox=mailbox, name=INBOX, selected=True)
        for position, rule in enumerate(SAMPLE_RULES):
            Rule.objects.create(mailbox=mailbox, position=position, **rule)
        schedule.sync(mailbox)
    return mailbox


def scan_sample(mailbox: Mailbox) -> SampleResult:
    """Scan the sample mailbox from its local source; what this run converted."""
    if not mailbox.host.startswith(PREFIX):
        raise ImapError(f"{mailbox.name} is not a local mailbox.")
    since = LedgerEntry.objects.filter(mailbox=mailbox).order_by("-pk").values("pk").first()
    run = scanner.scan(mailbox)
    entries = list(
        LedgerEntry.objects.filter(mailbox=mailbox, pk__gt=since["pk"] if since else 0)
        .select_related("message")
        .order_by("uid")
    )
    tickets = [
        record
        for entry in entries
        if entry.outcome == "created"
        for record in entry.records.select_related("module").order_by("pk")
        if record.module.name == actions.TICKETS
    ]
    return SampleResult(mailbox=mailbox, run=run, entries=entries, tickets=tickets)
