"""An OAuth2 authorization server of the tests' own, standing in for Microsoft's and Google's.

Microsoft 365 (login.microsoftonline.com) and Google (oauth2.googleapis.com) cannot be reached
from the tests, so this is the boundary: a small threaded HTTP server on a free loopback port
that behaves as they do where the converter and Dovecot meet them.

- `GET /authorize` (RFC 6749 §4.1.1, PKCE RFC 7636): the consent page. The account in
  `signed_in` "signs in" and accepts (or, with `consent = "deny"`, declines): the browser is
  sent back to the redirect URI with a one-time `code` (or `error=access_denied`) and the
  `state`. An unknown client id or a redirect URI other than the registered one is answered
  with a page, never a redirect (§4.1.2.1); a missing S256 challenge is `invalid_request`.
- `POST /token` (RFC 6749 §6): `grant_type=refresh_token` with the client's id and secret
  answers a new access token with a short lifetime and, like Microsoft's, a *rotated* refresh
  token (the old one stops working). An unknown or revoked refresh token answers 400
  `invalid_grant`; a wrong client secret 401 `invalid_client`. `grant_type=authorization_code`
  (§4.1.3) trades a code, once, for tokens when the redirect URI and the PKCE verifier match.
- `GET /tokeninfo?access_token=…` (Google's tokeninfo): 200 for a live token, 401 otherwise.
- `POST /introspect` (RFC 7662): `token=…` → `{"active": true, "username": …}` or
  `{"active": false}`.

Dovecot's oauth2 passdb asks the last two; the converter asks the first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class _Access:
    username: str
    expires_at: float  # time.time()
    scope: str


@dataclass
class _Code:
    username: str
    redirect_uri: str
    challenge: str
    scope: str


@dataclass
class IdentityProvider:
    client_id: str = "crm-mail-connector"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    lifetime: int = 3600  # seconds an access token issued by a refresh lives
    delay: float = 0.0  # seconds the token endpoint takes to answer (for races)
    refresh_requests: list[dict[str, str]] = field(default_factory=list)
    # The consent page: who is signed in there, and whether they accept.
    signed_in: str = ""
    consent: str = "accept"
    redirect_uri: str = ""  # the app registration's; "" accepts any
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    _codes: dict[str, _Code] = field(default_factory=dict)
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
            if form.get("grant_type") == "authorization_code":
                return self._code_grant(form)
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

    def authorize(self, query: dict[str, str]) -> tuple[int, str]:
        """(status, redirect location) or (status, "") for a page that does not redirect."""
        with self._lock:
            self.authorize_requests.append(query)
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or not redirect_uri:
            return 400, ""
        if self.redirect_uri and redirect_uri != self.redirect_uri:
            return 400, ""
        back: dict[str, str] = {"state": query.get("state", "")}
        if query.get("response_type") != "code":
            back["error"] = "unsupported_response_type"
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            back["error"] = "invalid_request"
            back["error_description"] = "PKCE with S256 is required."
        elif self.consent != "accept" or not self.signed_in:
            back["error"] = "access_denied"
            back["error_description"] = "The user declined to consent."
        else:
            code = "code-" + secrets.token_urlsafe(24)
            with self._lock:
                self._codes[code] = _Code(
                    self.signed_in, redirect_uri, query["code_challenge"], query.get("scope", "")
                )
            back["code"] = code
        joiner = "&" if "?" in redirect_uri else "?"
        return 302, f"{redirect_uri}{joiner}{urlencode(back)}"

    def _code_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Under the lock; the client is authenticated already."""
        found = self._codes.pop(form.get("code", ""), None)  # a code works once
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if (
            found is None
            or found.redirect_uri != form.get("redirect_uri")
            or not secrets.compare_digest(found.challenge, challenge)
        ):
            return 400, {
                "error": "invalid_grant",
                "error_description": "The code is unknown, used, or its verifier does not match.",
            }
        access = "at-" + secrets.token_urlsafe(24)
        refresh = "rt-" + secrets.token_urlsafe(24)
        self._access[access] = _Access(found.username, time.time() + self.lifetime, found.scope)
        self._refresh[refresh] = found.username
        return 200, {
            "token_type": "Bearer",
            "access_token": access,
            "expires_in": self.lifetime,
            "refresh_token": refresh,
            "scope": found.scope,
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
            elif parts.path == "/authorize":
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                status, location = provider.authorize(query)
                if location:
                    self.send_response(status)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._answer(status, {"error": "invalid_client_or_redirect_uri"})
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
