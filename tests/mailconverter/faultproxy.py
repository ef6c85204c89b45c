"""A TCP proxy between the scanner and Dovecot that breaks connections on purpose.

RELIABILITY.md, "The scanner is exactly-once under faults": faults are injected by the
project's own tools, on 127.0.0.1. The proxy listens on a free loopback port and forwards to
Dovecot's plain IMAP port; each new connection takes the next planned `Fault`, or passes when
none is planned. A fault counts the bytes the server sends and, once `after` of them went
through, does one of:

- "cut": close both sides cleanly (FIN), as a server or NAT box that hangs up mid-answer;
- "reset": close the client side with SO_LINGER 0, which sends a TCP RST;
- "stall": forward nothing more for `stall` seconds (longer than the scanner's socket
  timeout), then close: a connection that silently stops.

Most of a scan's server bytes are FETCH literals, so an `after` drawn across the mailbox's
size lands mid-message most of the time (`plan(seed, ...)` draws kinds and positions from
`random.Random(seed)`). At run time, `switch(kind)` makes the fault strike open connections
at the server's next byte, and `default` is what unplanned connections get. The proxy also
counts how many connections clients hold open at once: one mailbox is read over at most one.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Self

KINDS = ("cut", "reset", "stall")


@dataclass(frozen=True)
class Fault:
    kind: str  # "pass", "cut", "reset", "stall"
    after: int = 0  # server bytes forwarded before the fault strikes
    stall: float = 2.0  # seconds a "stall" holds the connection before closing it


PASS = Fault("pass")


def plan(seed: int, count: int, max_bytes: int, *, stall: float = 2.0) -> list[Fault]:
    """`count` faults drawn from `random.Random(seed)`: kinds and byte positions."""
    rng = random.Random(seed)
    return [
        Fault(rng.choice(KINDS), rng.randrange(200, max(201, max_bytes)), stall)
        for _ in range(count)
    ]


class FaultProxy:
    """`with FaultProxy(upstream_port) as proxy:` then point the mailbox at `proxy.port`."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.host = host
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._planned: deque[Fault] = deque()
        self._sockets: set[socket.socket] = set()
        self._links: set[_Link] = set()
        self._closed = threading.Event()
        self.default = PASS
        self.connections = 0  # accepted so far
        self.open = 0  # open now
        self.max_open = 0  # most connections a client held open at once
        self.struck: list[Fault] = []  # faults that actually fired, in order
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)

    # --- control -------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        _quiet_close(self._listener)
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked reading it
                _quiet_close(sock)
        self._thread.join(timeout=5)

    def add(self, *faults: Fault) -> None:
        """Faults for the next connections, one each, in order."""
        with self._lock:
            self._planned.extend(faults)

    def pending(self) -> int:
        with self._lock:
            return len(self._planned)

    def switch(self, kind: str, stall: float = 2.0) -> None:
        """Open connections: `kind` strikes at the server's next byte. `default` (a Fault)
        is what new connections get when nothing is planned."""
        with self._lock:
            for link in self._links:
                link.fault = Fault(kind, after=link.sent, stall=stall)

    def clear(self) -> None:
        with self._lock:
            self._planned.clear()
        self.default = PASS

    # --- forwarding ----------------------------------------------------------------------

    def _accept(self) -> None:
        self._listener.settimeout(0.1)  # a closed listener does not wake accept(): poll
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)  # the server is down: so is the proxy, for this client
                continue
            server.settimeout(None)
            with self._lock:
                fault = self._planned.popleft() if self._planned else self.default
                # Not the pumps' bookkeeping, which lags: whether each earlier client has
                # hung up by now, as the kernel knows it.
                held = 1 + sum(1 for link in self._links if link.client_open())
                self.connections += 1
                self.open += 1
                self.max_open = max(self.max_open, held)
                self._sockets |= {client, server}
                link = _Link(self, client, server, fault)
                self._links.add(link)
            link.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self.open -= 1
            self._sockets -= {link.client, link.server}
            self._links.discard(link)


class _Link:
    """One proxied connection: two pumps, the server's side carrying the fault."""

    def __init__(
        self, proxy: FaultProxy, client: socket.socket, server: socket.socket, fault: Fault
    ) -> None:
        self.proxy, self.client, self.server, self.fault = proxy, client, server, fault
        self._once = threading.Lock()
        self._done = False
        self.client_gone = False
        self.sent = 0  # server bytes forwarded to the client

    def start(self) -> None:
        threading.Thread(target=self._upstream, daemon=True).start()
        threading.Thread(target=self._downstream, daemon=True).start()

    def client_open(self) -> bool:
        """False once the client has closed its end (its FIN or RST has arrived)."""
        if self.client_gone or self._done:
            return False
        try:
            return self.client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True  # nothing to read, and no end of stream either
        except OSError:
            return False

    def _upstream(self) -> None:
        """Client to server, untouched."""
        with contextlib.suppress(OSError):
            while chunk := self.client.recv(65536):
                self.server.sendall(chunk)
        self.client_gone = True
        self._finish()

    def _downstream(self) -> None:
        """Server to client, counted; the fault strikes at byte `after`."""
        try:
            while chunk := self.server.recv(65536):
                fault = self.fault  # `switch` may change it meanwhile
                if fault.kind != "pass" and self.sent + len(chunk) >= fault.after:
                    self.client.sendall(chunk[: max(0, fault.after - self.sent)])
                    self._strike(fault)
                    return
                self.client.sendall(chunk)
                self.sent += len(chunk)
        except OSError:
            pass
        self._finish()

    def _strike(self, fault: Fault) -> None:
        with self.proxy._lock:
            self.proxy.struck.append(fault)
        if fault.kind == "stall":
            # Nothing more either way; the client's read times out and it hangs up.
            self.proxy._closed.wait(fault.stall)
        self._finish(reset=fault.kind == "reset")

    def _finish(self, *, reset: bool = False) -> None:
        """Close both sides once; the first caller decides how (the other pump may race)."""
        with self._once:
            if self._done:
                return
            self._done = True
        if reset:
            _reset(self.client)
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            _quiet_close(sock)
        self.proxy._forget(self)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel answers with RST instead of FIN.

    The other pump may be blocked reading this socket, and the kernel closes it only when that
    read returns: shutting down the reading side wakes it first (it sends nothing).
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    _quiet_close(sock)


def _quiet_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def wait_idle(proxy: FaultProxy, timeout: float = 5.0) -> None:
    """Until no proxied connection is open (the pumps notice a closed peer a moment later)."""
    deadline = time.monotonic() + timeout
    while proxy.open and time.monotonic() < deadline:
        time.sleep(0.02)
