"""One IMAP session for the converter, on IMAPClient, with errors told in words.

What the scan loop needs and nothing more: connect (SSL/TLS, STARTTLS or none, a socket
timeout on every read), log in (PLAIN, LOGIN or XOAUTH2), list folders, SELECT with
UIDVALIDITY, UID SEARCH from a cursor, sizes first, bodies in batches with BODY.PEEK[] (which
never sets \\Seen, RFC 3501 §6.4.5), then \\Seen or a move once the CRM has committed.

Every failure becomes `ImapError` whose message an administrator can act on ("wrong username
or password", "certificate error: …", "no such host", "no answer within 60 seconds").
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

__all__ = [
    "BodiesAhead",
    "ConnectionSettings",
    "FolderInfo",
    "ImapError",
    "Selected",
    "Session",
    "batches",
    "test_connection",
]

# RFC 6154 special-use attributes of folders that are never scanned.
_NEVER_SCANNED_FLAGS = frozenset({b"\\trash", b"\\drafts", b"\\junk"})
# Servers without SPECIAL-USE: the names clients give those folders (last path segment).
_NEVER_SCANNED_NAMES = frozenset(
    {
        "trash",
        "deleted items",
        "deleted messages",
        "bin",
        "papierkorb",
        "cestino",
        "corbeille",
        "drafts",
        "draft",
        "entwürfe",
        "bozze",
        "brouillons",
        "junk",
        "junk e-mail",
        "junk email",
        "spam",
        "bulk mail",
        "posta indesiderata",
        "courrier indésirable",
    }
)


class ImapError(Exception):
    """An IMAP failure, described for an administrator."""


@dataclass(frozen=True)
class ConnectionSettings:
    host: str
    port: int
    username: str
    password: str = field(repr=False)  # for "xoauth2": the OAuth2 access token
    security: str = "ssl"  # "ssl", "starttls", "none"
    verify_certificate: bool = True
    auth: str = "plain"  # "plain", "login", "xoauth2"
    timeout: float = 60.0
    ca_file: str = ""  # a private CA's certificates (PEM), trusted besides the system's


@dataclass(frozen=True)
class FolderInfo:
    name: str
    delimiter: str
    flags: tuple[str, ...]

    @property
    def special_use(self) -> str:
        for flag in self.flags:
            if flag.lower() in {
                "\\all",
                "\\archive",
                "\\drafts",
                "\\flagged",
                "\\junk",
                "\\sent",
                "\\trash",
            }:
                return flag
        return ""

    @property
    def selectable(self) -> bool:
        return not any(f.lower() in ("\\noselect", "\\nonexistent") for f in self.flags)

    @property
    def scannable(self) -> bool:
        """Trash, Drafts and Junk are never scanned, whether flagged (RFC 6154) or only named."""
        if not self.selectable:
            return False
        if any(f.lower().encode() in _NEVER_SCANNED_FLAGS for f in self.flags):
            return False
        leaf = self.name.rsplit(self.delimiter, 1)[-1] if self.delimiter else self.name
        return leaf.strip().lower() not in _NEVER_SCANNED_NAMES


@dataclass(frozen=True)
class Selected:
    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int


class Session:
    """`with Session(settings) as imap: ...`; logs out (or closes) on the way out."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._client: IMAPClient | None = None
        self.capabilities: frozenset[bytes] = frozenset()

    # --- connection ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        s = self.settings
        context = _ssl_context(s.verify_certificate, s.ca_file)
        with _described(s):
            client = IMAPClient(
                s.host,
                port=s.port,
                ssl=s.security == "ssl",
                ssl_context=context if s.security == "ssl" else None,
                timeout=s.timeout,
            )
            try:
                if s.security == "starttls":
                    client.starttls(context)
                if s.auth == "login":
                    client.login(s.username, s.password)
                elif s.auth == "xoauth2":
                    _xoauth2_login(client, s.username, s.password)
                else:
                    client.plain_login(s.username, s.password)
                self.capabilities = frozenset(c.upper() for c in client.capabilities())
            except BaseException:
                _shutdown(client)
                raise
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                client.logout()
            except (OSError, IMAPClientError, imaplib.IMAP4.error):
                _shutdown(client)

    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            raise ImapError("Not connected.")
        return self._client

    # --- folders -------------------------------------------------------------------------

    def folders(self) -> list[FolderInfo]:
        with _described(self.settings):
            listed = self.client.list_folders()
        return [
            FolderInfo(
                name=name,
                delimiter=(delimiter or b"").decode("ascii", "replace"),
                flags=tuple(f.decode("ascii", "replace") for f in flags),
            )
            for flags, delimiter, name in listed
        ]

    def status(self, folder: str) -> tuple[int, int]:
        """(messages, unseen) without selecting the folder (RFC 3501 §6.3.10)."""
        with _described(self.settings):
            answer = self.client.folder_status(folder, [b"MESSAGES", b"UNSEEN"])
        return int(answer.get(b"MESSAGES", 0)), int(answer.get(b"UNSEEN", 0))

    def select(self, folder: str) -> Selected:
        with _described(self.settings):
            answer = self.client.select_folder(folder)
        uidnext = answer.get(b"UIDNEXT")
        return Selected(
            name=folder,
            uidvalidity=int(answer[b"UIDVALIDITY"]),
            uidnext=int(uidnext) if uidnext is not None else None,
            exists=int(answer.get(b"EXISTS", 0)),
        )

    # --- messages ------------------------------------------------------------------------

    def new_uids(self, after: int, *, unseen_only: bool = False) -> list[int]:
        """UIDs above the cursor, ascending. Cost follows new mail, not the folder's size.

        RFC 3501 §6.4.8: in "UID n:*", "*" is the highest UID in the folder, so with no new
        mail the range still contains the last message; anything at or below `after` is
        dropped here.
        """
        criteria: list[Any] = ["UID", f"{after + 1}:*"]
        if unseen_only:
            criteria.append("UNSEEN")
        with _described(self.settings):
            found = self.client.search(criteria)
        return sorted(uid for uid in found if uid > after)

    def sizes(self, uids: Sequence[int], *, chunk: int = 1000) -> dict[int, int]:
        """RFC822.SIZE per UID, so oversize messages are never fetched whole."""
        result: dict[int, int] = {}
        for start in range(0, len(uids), chunk):
            with _described(self.settings):
                answer = self.client.fetch(uids[start : start + chunk], [b"RFC822.SIZE"])
            for uid, data in answer.items():
                result[uid] = int(data.get(b"RFC822.SIZE", 0))
        return result

    def bodies(
        self, uids: Sequence[int], sizes: dict[int, int], *, batch: int, batch_bytes: int
    ) -> Iterator[tuple[int, bytes]]:
        """(uid, raw bytes) in UID order, fetched in batches with BODY.PEEK[].

        A message expunged meanwhile is absent from the answer and simply not yielded: it is
        gone from the server, and the ledger never saw it.
        """
        for group in batches(uids, sizes, batch, batch_bytes):
            with _described(self.settings):
                answer = self.client.fetch(group, [b"BODY.PEEK[]"])
            for uid in group:
                data = answer.get(uid)
                if data is None:
                    continue
                raw = data.get(b"BODY[]")
                if raw is not None:
                    yield uid, bytes(raw)

    def header(self, uid: int) -> bytes:
        """The header section only (RFC 3501 §6.4.5 BODY.PEEK[HEADER]): for oversize mail."""
        with _described(self.settings):
            answer = self.client.fetch([uid], [b"BODY.PEEK[HEADER]"])
        data = answer.get(uid) or {}
        return bytes(data.get(b"BODY[HEADER]") or b"")

    def mark_seen(self, uids: Iterable[int]) -> None:
        uids = list(uids)
        if uids:
            with _described(self.settings):
                self.client.add_flags(uids, [b"\\Seen"], silent=True)

    def flags(self, uids: Iterable[int]) -> dict[int, tuple[bytes, ...]]:
        with _described(self.settings):
            answer = self.client.get_flags(list(uids))
        return {uid: tuple(flags) for uid, flags in answer.items()}

    def move(self, uids: Iterable[int], target: str) -> None:
        """MOVE (RFC 6851) where offered; else COPY, \\Deleted and UID EXPUNGE (RFC 4315).

        Without UIDPLUS there is no way to expunge only our messages, and a plain EXPUNGE would
        also remove mail a user had marked deleted: then the copies stay marked \\Deleted.
        """
        uids = list(uids)
        if not uids:
            return
        with _described(self.settings):
            if b"MOVE" in self.capabilities:
                self.client.move(uids, target)
                return
            self.client.copy(uids, target)
            self.client.add_flags(uids, [b"\\Deleted"], silent=True)
            if b"UIDPLUS" in self.capabilities:
                self.client.uid_expunge(uids)


class BodiesAhead:
    """Bodies in batches, the next batch fetched while the caller works on the current one.

    The fetch runs in one helper thread on the session's connection, one batch ahead; between
    batches (`idle()`) nothing is in flight, and the caller may use the connection itself
    (\\Seen, moves). Still one connection, one command at a time. A fetch's error is raised
    to the caller when it asks for that batch; leaving the `with` block waits for the fetch in
    flight, so the session is never closed under it.
    """

    def __init__(
        self,
        session: Any,
        uids: Sequence[int],
        sizes: dict[int, int],
        *,
        batch: int,
        batch_bytes: int,
    ) -> None:
        self._session, self._sizes = session, sizes
        self._groups = iter(list(batches(uids, sizes, batch, batch_bytes)))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-fetch")
        self._ahead: Future[list[tuple[int, bytes]]] | None = None

    def __enter__(self) -> Self:
        self._ahead = self._submit()
        return self

    def __exit__(self, *exc: object) -> None:
        self.idle()
        self._pool.shutdown(wait=True)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> list[tuple[int, bytes]]:
        if self._ahead is None:
            raise StopIteration
        current = self._ahead.result()
        self._ahead = self._submit()
        return current

    def idle(self) -> None:
        """Wait until no fetch is in flight (the next batch, or its error, is then held)."""
        if self._ahead is not None:
            wait([self._ahead])

    def _submit(self) -> Future[list[tuple[int, bytes]]] | None:
        group = next(self._groups, None)
        if group is None:
            return None
        return self._pool.submit(self._fetch, group)

    def _fetch(self, group: list[int]) -> list[tuple[int, bytes]]:
        # One FETCH for the group: it was sized by `batches` already.
        return list(
            self._session.bodies(group, self._sizes, batch=len(group), batch_bytes=sys.maxsize)
        )


def test_connection(settings: ConnectionSettings) -> str:
    """What an administrator sees after "Test connection": one sentence; raises ImapError."""
    with Session(settings) as session:
        folders = session.folders()
    scannable = sum(1 for f in folders if f.scannable)
    return (
        f"Connected to {settings.host}:{settings.port} as {settings.username}: "
        f"{len(folders)} folders, {scannable} can be scanned."
    )


# Not a pytest test, despite the name.
test_connection.__test__ = False  # type: ignore[attr-defined]


# --- helpers -----------------------------------------------------------------------------------


def _ssl_context(verify: bool, ca_file: str = "") -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def batches(
    uids: Sequence[int], sizes: dict[int, int], batch: int, batch_bytes: int
) -> Iterator[list[int]]:
    """UIDs in groups of at most `batch` messages and `batch_bytes` (one FETCH each)."""
    group: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if group and (len(group) >= batch or total + size > batch_bytes):
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group


def _xoauth2_login(client: IMAPClient, user: str, token: str) -> None:
    """XOAUTH2, the SASL mechanism of Gmail and Microsoft 365.

    A server that refuses the token sends its reason as a JSON challenge and waits for an empty
    answer before it says NO (Google's "OAuth 2.0 Mechanism" description); IMAPClient's own
    `oauth2_login` would send the token again instead. The reason is kept for the error.
    """
    said: list[str] = []

    def respond(challenge: bytes) -> str:
        if challenge:
            said.append(challenge.decode("utf-8", "replace"))
            return ""
        return f"user={user}\x01auth=Bearer {token}\x01\x01"

    try:
        client.sasl_login("XOAUTH2", respond)
    except LoginError as exc:
        raise LoginError(" ".join([str(exc), *said])) from exc


def _shutdown(client: IMAPClient) -> None:
    with contextlib.suppress(OSError, IMAPClientError, imaplib.IMAP4.error):
        client.shutdown()


class _described:
    """Turn socket, TLS and IMAP errors into an ImapError an administrator can act on."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.s = settings

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, ImapError) or not isinstance(exc, Exception):
            return
        raise ImapError(_words(exc, self.s)) from exc


def _words(exc: BaseException, s: ConnectionSettings) -> str:
    where = f"{s.host}:{s.port}"
    if isinstance(exc, LoginError) and s.auth == "xoauth2":
        return (
            f"The server refused the OAuth2 access token for {s.username} "
            f"(the server said: {_said(exc)}). Reconnect the mailbox if this persists."
        )
    if isinstance(exc, LoginError):
        return f"Wrong username or password for {s.username} (the server said: {_said(exc)})."
    if isinstance(exc, socket.gaierror):
        return f"No such host: {s.host} could not be found."
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"Certificate error on {where}: {exc.verify_message or exc}."
    if isinstance(exc, ssl.SSLError):
        return f"TLS error on {where}: {exc.reason or exc}. Check the security setting."
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"No answer from {where} within {s.timeout:g} seconds."
    if isinstance(exc, ConnectionRefusedError):
        return f"{where} refused the connection: is the port right and the server running?"
    if isinstance(exc, ConnectionError | EOFError):
        return f"The connection to {where} was cut ({exc.__class__.__name__})."
    if isinstance(exc, OSError):
        return f"Network error with {where}: {exc.strerror or exc}."
    if isinstance(exc, imaplib.IMAP4.abort):
        text = _said(exc)
        if "timed out" in text or "timeout" in text:
            return f"No answer from {where} within {s.timeout:g} seconds."
        return f"The connection to {where} was lost: {text}."
    if isinstance(exc, IMAPClientError | imaplib.IMAP4.error):
        return f"The server refused: {_said(exc)}."
    return f"{exc.__class__.__name__}: {exc}"


def _said(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text
