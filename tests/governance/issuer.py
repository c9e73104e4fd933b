"""A minimal OpenID provider for the unit tests: a real HTTP server on loopback serving a discovery
document and a JWKS that a test changes, counting the requests; keys made and tokens signed by
joserfc in the test. (The integration tests use a real provider, oidc-provider: test_oidc_provider.py.)"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

AUDIENCE = "lamina"


def make_key(alg: str = "RS256", kid: str = "key-1") -> Key:
    """A private key for ``alg`` (signature, or encryption: ``RSA-OAEP-256``), named ``kid``."""
    use = "enc" if alg.startswith(("RSA-", "ECDH")) else "sig"
    parameters: Any = {"kid": kid, "use": use, "alg": alg}
    if alg.startswith(("RS", "PS")):
        return RSAKey.generate_key(2048, parameters)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters)
    return OKPKey.generate_key("Ed25519", parameters)


class Issuer:
    """The provider's state: its keys (as published), and what was asked of it."""

    def __init__(self) -> None:
        self.url = ""
        self.keys: list[Key] = []
        self.requests: list[str] = []
        self.discovery_issuer: str | None = None  # None: the issuer's own URL
        self.jwks_body: bytes | None = None  # None: the keys' JWKS

    @property
    def discovery_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    def token(self, key: Key | None = None, alg: str | None = None, **claims: Any) -> str:
        """A token signed by ``key`` (the first one by default), with sensible claims that
        ``claims`` override (``None`` removes one)."""
        key = key or self.keys[0]
        now = int(time.time())
        payload = {"iss": self.url, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        alg = alg or str(key.get("alg"))
        with warnings.catch_warnings():
            # joserfc warns that RFC 9864 deprecates "EdDSA"; providers still sign with it
            warnings.simplefilter("ignore", SecurityWarning)
            return jwt.encode({"alg": alg, "kid": key.kid}, payload, key, algorithms=[alg])

    def jwks(self) -> bytes:
        if self.jwks_body is not None:
            return self.jwks_body
        return json.dumps({"keys": [key.as_dict(private=False) for key in self.keys]}).encode()


@contextmanager
def serve_issuer() -> Iterator[Issuer]:
    """An :class:`Issuer` served on loopback until the block ends."""
    issuer = Issuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.requests.append(self.path)
            if self.path == "/.well-known/openid-configuration":
                document = {"issuer": issuer.discovery_issuer or issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
                body = json.dumps(document).encode()
            elif self.path == "/jwks":
                body = issuer.jwks()
            elif self.path == "/moved":  # a redirect, as a compromised or misconfigured proxy may answer
                self.send_response(302)
                self.send_header("Location", f"{issuer.url}/jwks")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    issuer.keys.append(make_key())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
