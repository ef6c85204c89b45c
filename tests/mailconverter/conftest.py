"""A private Dovecot for the converter's tests, and mailboxes on it.

One Dovecot per test session (`dovecot -F -c <its own config>`), listening on a free loopback
port, with Maildir homes under its own temporary directory. Each test gets a fresh IMAP
account (the passwd-file lists ACCOUNTS of them from the start: Dovecot notices a changed file
only by its mtime, in whole seconds), so tests never see each other's mail. Mail is delivered
with APPEND, as a real client would.

Run as root (containers), Dovecot refuses uid 0 for mail and for its login processes: then the
mail user is Dovecot's own `dovecot` account and the unprivileged `dovenull` serves logins.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from imapclient import IMAPClient

from mailconverter.imap import ConnectionSettings

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PASSWORD = "imap-test-password"
ACCOUNTS = 500
_accounts = itertools.count(1)


@dataclass
class Dovecot:
    root: Path
    port: int = 0  # IMAP, plain or STARTTLS
    tls_port: int = 0  # IMAPS: TLS from the first byte
    process: subprocess.Popen[bytes] | None = None
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)

    @property
    def users_file(self) -> Path:
        return self.root / "users"

    def config(self) -> str:
        root = os.geteuid() == 0
        internal = "dovecot" if root else pwd.getpwuid(os.getuid()).pw_name
        login = "dovenull" if root else internal
        return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
info_log_path = {self.root}/dovecot.log
ssl = yes
ssl_cert = <{self.root}/cert.pem
ssl_key = <{self.root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
auth_failure_delay = 0
default_internal_user = {internal}
default_login_user = {login}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.users_file}
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
"""

    def start(self) -> None:
        if not self.port:
            self.port, self.tls_port = _free_port(), _free_port()
        if not (self.root / "cert.pem").exists():
            _self_signed_certificate(self.root)
        for sub in ("run", "state"):
            (self.root / sub).mkdir(exist_ok=True)
        (self.root / "dovecot.conf").write_text(self.config())
        if not self.users_file.exists():
            uid, gid = _mail_ids()
            self.users_file.write_text(
                "".join(
                    f"{_user(n)}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{self._home(n)}\n"
                    for n in range(1, ACCOUNTS + 1)
                )
            )
        self.process = subprocess.Popen(  # noqa: S603
            [DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self._log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer on port {self.port}: {self._log()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None
        # The master's children (imap, auth) leave with it, a moment later.
        deadline = time.monotonic() + 10
        while (self.root / "run" / "master.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def add_account(self) -> Account:
        n = next(_accounts)
        home = self._home(n)
        home.mkdir(parents=True)
        os.chown(home, *_mail_ids())
        return Account(server=self, user=_user(n), home=home)

    def _home(self, n: int) -> Path:
        return self.root / "homes" / f"u{n}"

    def _log(self) -> str:
        path = self.root / "dovecot.log"
        stderr = b""
        if self.process is not None and self.process.stderr and self.process.poll() is not None:
            stderr = self.process.stderr.read() or b""
        return (path.read_text() if path.exists() else "") + stderr.decode(errors="replace")


@dataclass
class Account:
    server: Dovecot
    user: str
    home: Path

    def settings(self, **overrides: object) -> ConnectionSettings:
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.server.port,
            "username": self.user,
            "password": PASSWORD,
            "security": "none",
            "timeout": 10.0,
        }
        values.update(overrides)
        return ConnectionSettings(**values)  # type: ignore[arg-type]

    def client(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.server.port, ssl=False, timeout=10)
        client.login(self.user, PASSWORD)
        return client

    def create_folder(self, name: str) -> None:
        with self.client() as c:
            c.create_folder(name)

    def deliver(self, raw: bytes, folder: str = "INBOX", flags: tuple[bytes, ...] = ()) -> int:
        """APPEND a message; returns its UID (RFC 4315 APPENDUID)."""
        with self.client() as c:
            answer = c.append(folder, raw, flags=flags)
        # b"[APPENDUID <uidvalidity> <uid>] Append completed."
        return int(answer.split(b"]")[0].split()[-1])

    def flags(self, folder: str = "INBOX") -> dict[int, set[bytes]]:
        with self.client() as c:
            c.select_folder(folder, readonly=True)
            return {uid: set(f) for uid, f in c.get_flags(c.search("ALL")).items()}

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.client() as c:
            c.select_folder(folder, readonly=True)
            return sorted(c.search("ALL"))

    def reset_uidvalidity(self, folder: str = "INBOX") -> None:
        """What a server restore or migration does: the folder's UIDs start over.

        Dovecot keeps UIDs in dovecot-uidlist and its indexes; without them it renumbers the
        Maildir and picks a new UIDVALIDITY.
        """
        self.server.stop()
        maildir = self.home / "Maildir"
        path = maildir if folder == "INBOX" else maildir / f".{folder.replace('/', '.')}"
        for name in os.listdir(path):
            if name == "dovecot-uidlist" or name.startswith("dovecot.index"):
                (path / name).unlink()
        self.server.start()


def _user(n: int) -> str:
    return f"support{n}@crm.test"


def _mail_ids() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    entry = pwd.getpwnam("dovecot")
    return entry.pw_uid, entry.pw_gid


def _self_signed_certificate(root: Path) -> None:
    """A certificate for 127.0.0.1 that no system trusts: for certificate checks."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (root / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def _media_in_tmp(settings: Any, tmp_path: Path) -> None:
    # Stored emails and quarantined bytes go to the test's own directory, not var/.
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    if not Path(DOVECOT).exists():
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    # Not pytest's tmp_path: its parents are private to the user, and when the tests run as
    # root, Dovecot's mail processes run as another user who must reach the homes.
    root = Path(tempfile.mkdtemp(prefix="crm-dovecot-"))
    root.chmod(0o755)
    server = Dovecot(root=root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def account(dovecot: Dovecot) -> Account:
    if dovecot.process is None:
        dovecot.start()
    return dovecot.add_account()
