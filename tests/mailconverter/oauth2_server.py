"""An OAuth2 authorization server of the tests' own, standing in for Microsoft's and Google's.

Microsoft 365 (login.microsoftonline.com) and Google (oauth2.googleapis.com) cannot be reached
from the tests, so this is the boundary: a small threaded HTTP server on a free loopback port
that behaves as they do where the converter and Dovecot meet them.

- `POST /token` (RFC 6749 §6): `grant_type=refresh_token` with the client's id and secret
  answers a new access token with a short lifetime and, like Microsoft's, a *rotated* refresh
  token (the old one stops working). An unknown or revoked refresh token answers 400
  `invalid_grant`; a wrong client secret 401 `invalid_client`.
- `GET /tokeninfo?access_token=…` (Google's tokeninfo): 200 for a live token, 401 otherwise.
- `POST /introspect` (RFC 7662): `token=…` → `{"active": true, "username": …}` or
  `{"active": false}`.

Dovecot's oauth2 passdb asks the last two; the converter asks the first.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class _Access:
    username: str
    expires_at: float  # time.time()
    scope: str


@dataclass
class IdentityProvider:
    client_id: str = "crm-mail-connector"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    lifetime: int = 3600  # seconds an access token issued by a refresh lives
    delay: float = 0.0  # seconds the token endpoint takes to answer (for races)
    refresh_requests: list[dict[str, str]] = field(default_factory=list)
    _access: dict[str, _Access] = field(default_factory=dict)
    _refresh: dict[str, str] = field(default_factory=dict)  # refresh token -> username
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # --- what a test does ----------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def issue_refresh_token(self, username: str) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh[token] = username
        return token

    def issue_access_token(self, username: str, *, lifetime: int, scope: str = "") -> str:
        """A token as the consent flow hands it out; a negative lifetime: already expired."""
        token = "at-" + secrets.token_urlsafe(24)
        with self._lock:
            self._access[token] = _Access(username, time.time() + lifetime, scope)
        return token

    def revoke(self, refresh_token: str) -> None:
        """What a user's "sign out everywhere" or a password change does to a refresh token."""
        with self._lock:
            self._refresh.pop(refresh_token, None)

    def refresh_token_is_live(self, refresh_token: str) -> bool:
        with self._lock:
            return refresh_token in self._refresh

    def live_access_tokens(self, username: str) -> set[str]:
        now = time.time()
        with self._lock:
            return {
                t for t, a in self._access.items() if a.username == username and a.expires_at > now
            }

    # --- server --------------------------------------------------------------------------

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- endpoints -----------------------------------------------------------------------

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.refresh_requests.append(form)
            if (form.get("client_id"), form.get("client_secret")) != (
                self.client_id,
                self.client_secret,
            ):
                return 401, {
                    "error": "invalid_client",
                    "error_description": "Client authentication failed.",
                }
            if form.get("grant_type") != "refresh_token":
                return 400, {"error": "unsupported_grant_type"}
            username = self._refresh.pop(form.get("refresh_token", ""), None)
            if username is None:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "The refresh token has expired or been revoked.",
                }
            access = "at-" + secrets.token_urlsafe(24)
            rotated = "rt-" + secrets.token_urlsafe(24)
            scope = form.get("scope", "")
            self._access[access] = _Access(username, time.time() + self.lifetime, scope)
            self._refresh[rotated] = username
        return 200, {
            "token_type": "Bearer",
            "access_token": access,
            "expires_in": self.lifetime,
            "refresh_token": rotated,
            "scope": scope,
        }

    def lookup(self, token: str) -> _Access | None:
        with self._lock:
            access = self._access.get(token)
        if access is None or access.expires_at <= time.time():
            return None
        return access

    def tokeninfo(self, token: str) -> tuple[int, dict[str, Any]]:
        access = self.lookup(token)
        if access is None:
            return 401, {"error": "invalid_token"}
        return 200, {"aud": self.client_id, "expires_in": int(access.expires_at - time.time())}

    def introspect(self, token: str) -> tuple[int, dict[str, Any]]:
        access = self.lookup(token)
        if access is None:
            return 200, {"active": False}
        return 200, {
            "active": True,
            "username": access.username,
            "scope": access.scope,
            "client_id": self.client_id,
            "exp": int(access.expires_at),
        }


def _handler(provider: IdentityProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            path = urlsplit(self.path).path
            if path == "/token":
                self._answer(*provider.token(form))
            elif path == "/introspect":
                self._answer(*provider.introspect(form.get("token", "")))
            else:
                self._answer(404, {"error": "not_found"})

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/tokeninfo":
                query = parse_qs(parts.query)
                self._answer(*provider.tokeninfo(query.get("access_token", [""])[0]))
            else:
                self._answer(404, {"error": "not_found"})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
