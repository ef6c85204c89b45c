"""A small OpenID Connect provider of the tests' own, on a free loopback port, in a thread.

Enough of OpenID Connect Core 1.0 and RFC 7636 for the CRM's single sign-on to run for real:
a discovery document, `/authorize` (no login form: it signs in `user` at once), `/token`
(authorization_code grant, client_secret_basic or _post, PKCE S256 checked, codes single use)
and `/jwks`. ID tokens are RS256 JWS signed with josepy.

Tests bend it to misbehave: `id_token_claims` overrides claims of the next ID tokens (None
removes one), `sign_with_other_key` signs with a key that is not in the JWKS, `deny` makes
`/authorize` answer with an error.
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
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import josepy
from cryptography.hazmat.primitives.asymmetric import rsa


def s256(verifier: str) -> str:
    """RFC 7636 section 4.2, written out here so that the CRM's own helper is not trusted."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _new_key() -> josepy.JWKRSA:
    return josepy.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str | None
    code_challenge: str
    issued: float


@dataclass
class OidcProvider:
    client_id: str = "crm-addin"
    client_secret: str = "s3cret/with:odd chars"  # exercises RFC 6749 2.3.1's form-encoding
    redirect_uris: list[str] = field(default_factory=list)
    user: dict[str, Any] = field(
        default_factory=lambda: {
            "sub": "00u1",
            "email": "alice@crm.test",
            "email_verified": True,
            "preferred_username": "alice",
            "name": "Alice",
        }
    )
    id_token_claims: dict[str, Any] = field(default_factory=dict)
    sign_with_other_key: bool = False
    deny: str | None = None
    # What the CRM sent to /token, for assertions.
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = _new_key()
        self.other_key = _new_key()
        self.kid = "test-key-1"
        self.grants: dict[str, Grant] = {}
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                provider._get(self)

            def do_POST(self) -> None:
                provider._post(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def settings_entry(self, **overrides: Any) -> dict[str, Any]:
        """This provider as one item of settings.ADDIN_SSO_PROVIDERS (as settings.py builds)."""
        return {
            "id": "testidp",
            "name": "Test IdP",
            "issuer": self.issuer,
            "discovery_url": f"{self.issuer}/.well-known/openid-configuration",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "scopes": "openid email profile",
            "claim": "email",
            "match": "email",
            "signing_algs": ["RS256"],
            "require_verified_email": True,
            **overrides,
        }

    # --- HTTP ----------------------------------------------------------------------------

    def _get(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        if url.path == "/.well-known/openid-configuration":
            self._json(request, 200, self.discovery())
        elif url.path == "/jwks":
            self._json(request, 200, {"keys": [self._public_jwk()]})
        elif url.path == "/authorize":
            self._authorize(request, {k: v[0] for k, v in parse_qs(url.query).items()})
        else:
            self._json(request, 404, {"error": "not_found"})

    def _post(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length).decode("ascii")
        form = {k: v[0] for k, v in parse_qs(body).items()}
        if urlsplit(request.path).path != "/token":
            self._json(request, 404, {"error": "not_found"})
            return
        status, answer = self._token(request.headers.get("Authorization", ""), form)
        self._json(request, status, answer)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }

    def _authorize(self, request: BaseHTTPRequestHandler, q: dict[str, str]) -> None:
        redirect_uri = q.get("redirect_uri", "")
        # RFC 6749 4.1.2.1: a bad client or redirect URI is never redirected to.
        if q.get("client_id") != self.client_id or (
            self.redirect_uris and redirect_uri not in self.redirect_uris
        ):
            self._json(request, 400, {"error": "invalid_request", "detail": "client/redirect"})
            return
        back: dict[str, str] = {"state": q["state"]} if "state" in q else {}
        if (
            q.get("response_type") != "code"
            or "openid" not in q.get("scope", "").split()
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
        ):
            back["error"] = "invalid_request"
        elif self.deny:
            back |= {"error": self.deny, "error_description": "The user said no"}
        else:
            code = secrets.token_urlsafe(24)
            with self._lock:
                self.grants[code] = Grant(
                    client_id=self.client_id,
                    redirect_uri=redirect_uri,
                    nonce=q.get("nonce"),
                    code_challenge=q["code_challenge"],
                    issued=time.time(),
                )
            back["code"] = code
        request.send_response(302)
        request.send_header("Location", f"{redirect_uri}?{urlencode(back)}")
        request.send_header("Content-Length", "0")
        request.end_headers()

    def _token(self, authorization: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.token_requests.append({**form, "authorization": authorization})
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization.startswith("Basic "):
            pair = base64.b64decode(authorization[6:]).decode()
            client_id, _, secret = (unquote_plus(part) for part in pair.partition(":"))
        if client_id != self.client_id or secret != self.client_secret:
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            grant = self.grants.pop(form.get("code", ""), None)  # single use
        if grant is None or time.time() - grant.issued > 60:
            return 400, {"error": "invalid_grant", "error_description": "unknown code"}
        if form.get("redirect_uri") != grant.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        # RFC 7636 section 4.6.
        if s256(form.get("code_verifier", "")) != grant.code_challenge:
            return 400, {"error": "invalid_grant", "error_description": "code_verifier"}
        return 200, {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": self.id_token(nonce=grant.nonce),
        }

    # --- Tokens --------------------------------------------------------------------------

    def id_token(self, *, nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
            **({"nonce": nonce} if nonce is not None else {}),
            **self.user,
        }
        for name, value in self.id_token_claims.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        key = self.other_key if self.sign_with_other_key else self.key
        jws = josepy.JWS.sign(
            json.dumps(claims).encode(),
            key=key,
            alg=josepy.RS256,
            include_jwk=False,
            protect=frozenset(["alg", "kid"]),
            kid=self.kid,
        )
        return jws.to_compact().decode("ascii")

    def _public_jwk(self) -> dict[str, Any]:
        return {**self.key.public_key().to_json(), "kid": self.kid, "use": "sig", "alg": "RS256"}

    @staticmethod
    def _json(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(raw)))
        request.send_header("Cache-Control", "no-store")
        request.end_headers()
        request.wfile.write(raw)
