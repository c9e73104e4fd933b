"""lamina's own token issuer, for the embedded default: a node signs in its people itself, with
no external OpenID provider.

Its keys are a private JWKS in ``<home>/issuer/jwks.json`` (mode 0600), made on first use with one
ES256 key, with the node's issuer identifier, ``urn:lamina:issuer:<uuid4>``: a token of one node
names another ``iss`` than a second node's, and is refused there. The file is the one source of
truth, shared by the server and the ``lamina`` commands: it is rewritten whole (a temporary file,
then ``os.replace``), under a lock, so that a reader sees the old keys or the new ones, never half
of them; a :class:`LocalIssuer` reads it again when it changed, so ``lamina issuer rotate`` takes
effect in a running server without a restart.

Rotation makes a new current key; the keys before it stay, for verification only, until every
token they signed has expired (a token lives at most :data:`MAX_LIFETIME_S`), and are dropped at
the next rotation after that.

The file layout (a JWKS, with two members of lamina's own, which RFC 7517 section 5 allows)::

    {"issuer": "urn:lamina:issuer:…", "current": "<kid>",
     "retired": {"<kid>": <epoch seconds>}, "keys": [<private JWK>, …]}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry

from lamina.errors import ConfigurationError, RequestError, UnavailableError
from lamina.governance.model import check_person_id
from lamina.governance.oidc import IssuerConfig
from lamina.governance.tokens import TokenValidator

__all__ = ["ALGORITHM", "AUDIENCE", "MAX_LIFETIME_S", "LocalIssuer", "check_lifetime"]

log = logging.getLogger("lamina.governance")

ALGORITHM = "ES256"
AUDIENCE = "lamina"
#: The longest a token of the local issuer may live: 30 days.
MAX_LIFETIME_S = 30 * 24 * 3600
#: How long a retired key outlives its last token: a validator's clock may lag this much.
_SKEW_S = 300
_FILE = Path("issuer") / "jwks.json"
# The validator fetches the discovery document and the keys through a function of this module,
# which answers these two addresses from the key file, never from the network. IssuerConfig
# requires an https URL or http on loopback (oidc._check_url); these fit, and are never opened:
# nothing listens for them, and no other fetch is given them.
_DISCOVERY_URL = "http://127.0.0.1/.well-known/openid-configuration"
_JWKS_URL = "http://127.0.0.1/jwks"


def check_lifetime(seconds: int, parameter: str = "expires_in_s") -> int:
    """``seconds`` if it is a token lifetime the local issuer gives (1 s to 30 days), else
    :class:`RequestError` naming ``parameter``."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_LIFETIME_S:
        raise RequestError(
            parameter,
            f"{seconds!r} is not a lifetime from 1 to {MAX_LIFETIME_S} seconds (30 days); e.g. 3600",
        )
    return seconds


@dataclass(frozen=True)
class _Keys:
    """The key file's content: the issuer, the current kid, every key and when each was retired."""

    issuer: str
    current: str
    keys: dict[str, ECKey]
    retired: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "current": self.current,
            "retired": self.retired,
            "keys": [key.as_dict(private=True) for key in self.keys.values()],
        }


def _new_key() -> ECKey:
    kid = secrets.token_urlsafe(12)
    return ECKey.generate_key("P-256", {"kid": kid, "alg": ALGORITHM, "use": "sig"}, private=True)


def _parse(path: Path, text: str) -> _Keys:
    """The file's keys; a :class:`ConfigurationError` that names the file, never its content."""
    broken = ConfigurationError(
        f"{path}: not lamina's issuer key file; restore it from a backup, or remove it to make a "
        "new issuer (every token given so far is then refused)"
    )
    try:
        data = json.loads(text)
        issuer, current, retired = data["issuer"], data["current"], data.get("retired", {})
        keys = {}
        for entry in data["keys"]:
            key = JWKRegistry.import_key(entry)
            if not isinstance(key, ECKey) or not key.is_private or not key.kid:
                raise ValueError("not a private EC key with a kid")
            keys[key.kid] = key
    except (ValueError, TypeError, KeyError, JoseError):
        raise broken from None
    if not (isinstance(issuer, str) and issuer.startswith("urn:lamina:issuer:")) or current not in keys:
        raise broken
    if not isinstance(retired, dict) or not all(isinstance(v, int | float) for v in retired.values()):
        raise broken
    return _Keys(issuer, current, keys, {kid: float(at) for kid, at in retired.items() if kid in keys})


class LocalIssuer:
    """The token issuer of one node (see the module's documentation). Thread-safe.

    Use :meth:`open`; ``path`` is the key file.
    """

    audience = AUDIENCE

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: _Keys | None = None
        self._data = b""

    @classmethod
    def open(cls, home: Path) -> LocalIssuer:
        """The issuer of the node whose data folder is ``home``; its key file is made on first use.

        Raises
        ------
        ConfigurationError
            The key file cannot be read, written or understood.
        """
        issuer = cls(Path(home) / _FILE)
        issuer._create_once()
        issuer._state()
        return issuer

    # -- the key file -----------------------------------------------------------------------------

    def _create_once(self) -> None:
        """Write a first key file unless one is there; two processes starting at once make one."""
        if self.path.exists():
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self._file_lock():
                if self.path.exists():
                    return
                key = _new_key()
                assert key.kid is not None
                first = _Keys(f"urn:lamina:issuer:{uuid.uuid4()}", key.kid, {key.kid: key}, {})
                self._write(first)
        except OSError as error:
            raise ConfigurationError(
                f"{self.path}: cannot create the issuer's key file ({error.strerror}); check that "
                "the data folder is writable by the account running lamina"
            ) from None
        log.info("made the token issuer's keys in %s", self.path)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Held while the key file is read and rewritten, across processes (the server and the CLI)."""
        fd = os.open(self.path.with_name("jwks.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(self, keys: _Keys) -> None:
        """Replace the key file at once: a reader sees the old file or the new one, whole."""
        temporary = self.path.with_name(f".jwks.{secrets.token_hex(6)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(keys.to_json(), out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            temporary.replace(self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def _state(self) -> _Keys:
        """The keys as the file holds them now: parsed again when its bytes changed. (Its bytes,
        not its mtime: two rotations within one tick of a coarse file clock look alike.)"""
        try:
            with self.path.open("rb") as file:
                mode = os.fstat(file.fileno()).st_mode
                data = file.read()
        except OSError as error:
            raise ConfigurationError(
                f"{self.path}: cannot read the issuer's key file ({error.strerror}); restore it, or "
                "remove the folder to make a new issuer (every token given so far is then refused)"
            ) from None
        with self._lock:
            if self._keys is not None and data == self._data:
                return self._keys
            if mode & 0o077:
                # private keys: only the account running lamina may read them
                log.warning("%s could be read by others; its mode is set to 0600", self.path)
                self.path.chmod(0o600)
            self._keys = _parse(self.path, data.decode("utf-8", errors="replace"))
            self._data = data
            return self._keys

    # -- what the issuer does ---------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The ``iss`` of this node's tokens: ``urn:lamina:issuer:<uuid4>``."""
        return self._state().issuer

    @property
    def current_kid(self) -> str:
        """The ``kid`` of the key that signs new tokens."""
        return self._state().current

    def kids(self) -> list[str]:
        """The ``kid`` of every key kept, the current one included, oldest first."""
        return list(self._state().keys)

    def issue(self, person: str, expires_in_s: int = 3600, *, now: float | None = None) -> str:
        """A signed access token (RFC 9068: ``typ`` ``at+jwt``) naming ``person`` as ``sub``.

        Raises
        ------
        RequestError
            ``person`` cannot name a person, or ``expires_in_s`` is not 1 s to 30 days.
        """
        check_person_id(person)
        check_lifetime(expires_in_s)
        keys = self._state()
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": keys.issuer,
            "sub": person,
            "aud": self.audience,
            "client_id": self.audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + expires_in_s,
            "jti": secrets.token_urlsafe(16),
        }
        header = {"alg": ALGORITHM, "kid": keys.current, "typ": "at+jwt"}
        return jwt.encode(header, claims, keys.keys[keys.current], algorithms=[ALGORITHM])

    def rotate(self, *, now: float | None = None) -> str:
        """Make a new current key, and return its ``kid``. The keys before it stay until every
        token they signed has expired; those past that are dropped now."""
        when = time.time() if now is None else now
        with self._file_lock():
            keys = self._state()
            retired = {**keys.retired, keys.current: when}
            kept = {
                kid: key
                for kid, key in keys.keys.items()
                if kid not in retired or when < retired[kid] + MAX_LIFETIME_S + _SKEW_S
            }
            key = _new_key()
            assert key.kid is not None
            kept[key.kid] = key
            self._write(_Keys(keys.issuer, key.kid, kept, {k: at for k, at in retired.items() if k in kept}))
        new = self._state()
        log.info("token issuer: key %s now signs; %d kept for verification", new.current, len(new.keys) - 1)
        return new.current

    def public_jwks(self) -> dict[str, Any]:
        """The public keys, current and retired, as a JWKS: what verifies this node's tokens."""
        return {"keys": [key.as_dict(private=False) for key in self._state().keys.values()]}

    def discovery(self, base_url: str) -> dict[str, Any]:
        """A minimal OpenID Connect discovery document for the routes under ``base_url``
        (``https://lamina.example``): where the keys are, and where tokens are asked for.

        ``issuer`` is the node's URN, not ``base_url``: a tool validating lamina's tokens
        configures it as the issuer expected, and this document's address as its discovery URL.
        """
        base = base_url.rstrip("/")
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{base}/auth/jwks",
            "token_endpoint": f"{base}/auth/token",
            "grant_types_supported": ["password"],
            "token_endpoint_auth_methods_supported": ["none"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
        }

    def validator(self) -> TokenValidator:
        """A validator of this node's tokens that reads the keys from the key file (no network):
        a key made by a rotation in another process is found on the first token it signed."""
        config = IssuerConfig(
            issuer=self.issuer,
            discovery_url=_DISCOVERY_URL,
            audience=(self.audience,),
            algorithms=(ALGORITHM,),
            refetch_interval_s=1.0,
        )
        return TokenValidator(config, fetch=self._fetch)

    def _fetch(self, url: str, timeout_s: float) -> bytes:
        """The validator's fetch: the two pseudo-addresses answered from the key file."""
        if url == _DISCOVERY_URL:
            return json.dumps({"issuer": self.issuer, "jwks_uri": _JWKS_URL}).encode()
        if url == _JWKS_URL:
            return json.dumps(self.public_jwks()).encode()
        raise UnavailableError(f"the local issuer serves no {url}")
