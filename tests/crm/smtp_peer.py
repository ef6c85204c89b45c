"""A real SMTP server for the tests: aiosmtpd on a free loopback port.

It captures what it accepts (envelope and the exact bytes) and can be told how to answer the
next emails: accept, 421, 451, 550, hang up after DATA without answering, or stall past the
client's timeout; and which recipients do not exist (550 at RCPT). With
`login=(user, password)` it requires AUTH (over plain SMTP: loopback).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

if TYPE_CHECKING:
    from crm.models import User

ANSWERS = {
    "421": "421 4.3.2 Service shutting down, try again later",
    "451": "451 4.3.0 Temporary local problem, try again later",
    "550": "550 5.7.1 Message rejected: recipient mailbox unavailable",
}
QUEUED = "250 2.0.0 Ok: queued as 4XyZ7Q"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Handler:
    stall_seconds: float = 3.0
    received: list[Received] = field(default_factory=list)
    script: deque[str] = field(default_factory=deque)
    unknown: set[str] = field(default_factory=set)  # recipients refused at RCPT

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower() in self.unknown:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        how = self.script.popleft() if self.script else "accept"
        if how == "drop":
            assert server.transport is not None
            server.transport.abort()  # the email was sent, no answer comes back
            return "250 never heard"
        if how == "stall":
            await asyncio.sleep(self.stall_seconds)
            return "250 too late"
        if how in ANSWERS:
            return ANSWERS[how]
        data = envelope.original_content or b""
        self.received.append(
            Received(str(envelope.mail_from), tuple(str(r) for r in envelope.rcpt_tos), data)
        )
        return QUEUED


class SmtpPeer:
    def __init__(self, *, login: tuple[str, str] | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.login = login
        self._handler = _Handler()
        options: dict[str, Any] = {}
        if login is not None:
            options = {
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": False,
            }
        self._controller = Controller(self._handler, hostname=self.host, port=self.port, **options)

    def start(self) -> SmtpPeer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[Received]:
        return self._handler.received

    def answer_next(self, *how: str) -> None:
        """How to answer the next emails, in order: "accept", "421", "451", "550", "drop",
        "stall"; afterwards every email is accepted."""
        self._handler.script.extend(how)

    def refuse_recipients(self, *addresses: str) -> None:
        """Answer RCPT for these addresses with 550 (no such user)."""
        self._handler.unknown.update(a.lower() for a in addresses)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.login is not None
            and (data.login.decode(), data.password.decode()) == self.login
        )
        return AuthResult(success=ok, handled=False)


def free_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def use_as_outgoing_server(admin: User, host: str, port: int, **changes: Any) -> None:
    """Make `host:port` the CRM's outgoing mail server, as the administrator saves it on the
    Outgoing mail page: plain SMTP on loopback, no login, open tracking on; `changes` override."""
    from crm.services import mail

    values: dict[str, Any] = {
        "host": host,
        "port": port,
        "security": "none",
        "verify_certificate": True,
        "username": "",
        "from_central": False,
        "central_address": "",
        "central_name": "",
        "open_tracking": True,
        "hourly_cap": 60,
        "timeout_seconds": 2,
    } | changes
    mail.save_settings(actor=admin, values=mail.SettingsInput(**values))
