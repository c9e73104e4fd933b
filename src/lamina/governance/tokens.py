"""Bearer tokens (RFC 6750): an OpenID Connect access or ID token, checked against its issuer's
keys, and its claims.

:class:`TokenValidator` checks, in this order: the size and shape (a JWS, or a JWE wrapping a
JWS when decryption keys are configured); the ``alg`` against the allow-list; the signature
with the issuer's key named by ``kid`` (:class:`~lamina.governance.oidc.IssuerKeys`); ``iss``,
``aud``, ``exp`` (required), ``nbf`` and ``iat`` (when present) with the configured leeway;
``acr`` when required. Every failure is one :class:`~lamina.errors.AuthenticationError` whose
message does not say which check failed (that would guide an attacker); the precise reason is
logged at DEBUG, without the token. A token that passed is kept, by its SHA-256, until its
``exp``: the next request with it costs a hash and a dictionary look-up.

>>> validator = TokenValidator(IssuerConfig(
...     issuer="https://idp.example", discovery_url="https://idp.example/.well-known/openid-configuration",
...     audience=("lamina",)))
>>> validator.validate("not.a.token")
Traceback (most recent call last):
...
lamina.errors.AuthenticationError: the bearer token is not valid; sign in again to get a new one
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from joserfc import jwe, jws
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwe import JWERegistry
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry

from lamina.errors import AuthenticationError
from lamina.governance.oidc import Fetch, IssuerConfig, IssuerKeys, fetch_json

__all__ = ["INVALID_TOKEN", "MAX_TOKEN_BYTES", "Claims", "TokenValidator"]

log = logging.getLogger("lamina.governance")

#: The longest token accepted. Pro Santé Connect's, with every place of work in ``SubjectRefPro``,
#: are a few kB; HTTP servers cap a header line near this anyway.
MAX_TOKEN_BYTES = 32 * 1024
INVALID_TOKEN = "the bearer token is not valid; sign in again to get a new one"
_INVALID = INVALID_TOKEN


class _AllowList(JWSRegistry):
    """joserfc's registry, without its warning on "EdDSA": RFC 9864 deprecates that name for
    "Ed25519", yet providers (oidc-provider, Keycloak) still sign as "EdDSA"; lamina's allow-list
    is what decides, and a warning per request would only be noise."""

    def get_alg(self, name: str) -> JWSAlgModel:
        if name not in self.algorithms or name not in (self.allowed or ()):
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


class Claims(Mapping[str, Any]):
    """The claims of a validated token: a read-only mapping, with the registered ones typed.

    Parameters
    ----------
    claims
        The token's payload, as decoded; the caller must not change it afterwards (it is shared
        by every request that presents the same token).
    """

    __slots__ = ("_claims",)

    def __init__(self, claims: dict[str, Any]) -> None:
        self._claims = claims

    def __getitem__(self, name: str) -> Any:
        return self._claims[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._claims)

    def __len__(self) -> int:
        return len(self._claims)

    def __repr__(self) -> str:
        # the names only: values are personal data (names, practitioner numbers)
        return f"Claims({sorted(self._claims)})"

    @property
    def issuer(self) -> str:
        """``iss``."""
        return str(self._claims["iss"])

    @property
    def subject(self) -> str | None:
        """``sub``, when the token has one."""
        sub = self._claims.get("sub")
        return sub if isinstance(sub, str) else None

    @property
    def expires_at(self) -> float:
        """``exp``, in seconds since the epoch."""
        return float(self._claims["exp"])

    @property
    def acr(self) -> str | None:
        """``acr``, the authentication context class (``eidas1``), when the token has one."""
        acr = self._claims.get("acr")
        return acr if isinstance(acr, str) else None


class _RefusedError(Exception):
    """Why a token (or a userinfo answer) is refused, for the DEBUG log only."""


def _decrypted(text: str, config: IssuerConfig, registry: JWERegistry) -> bytes:
    """The plaintext of a JWE to lamina's decryption keys. A JWE alone proves nothing (anyone may
    encrypt to lamina's public key): what it holds must still be verified."""
    if config.decryption_keys is None:
        raise _RefusedError("encrypted, and no decryption key is configured")
    try:
        return jwe.decrypt_compact(text, config.decryption_keys, registry=registry).plaintext or b""
    except (JoseError, ValueError, TypeError) as error:
        raise _RefusedError(f"cannot be decrypted ({type(error).__name__})") from None


def _signed_payload(signed: str, config: IssuerConfig, keys: IssuerKeys, registry: _AllowList) -> bytes:
    """The payload of a JWS the issuer signed: an allow-listed algorithm, a key of the issuer's
    (by ``kid``), a valid signature."""
    try:
        header = jws.extract_compact(signed.encode("ascii")).headers()
    except (JoseError, ValueError, TypeError, UnicodeError) as error:
        raise _RefusedError(f"malformed ({type(error).__name__})") from None
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in config.algorithms:
        raise _RefusedError(f"alg {alg!r} is not allowed")
    if kid is not None and not isinstance(kid, str):
        raise _RefusedError("kid is not a string")
    key = keys.find(kid, alg)
    if key is None:
        raise _RefusedError(f"no key of the issuer for kid {kid!r}")
    try:
        return jws.deserialize_compact(signed, key, registry=registry).payload or b""
    except (JoseError, ValueError, TypeError) as error:
        raise _RefusedError(f"signature ({type(error).__name__})") from None


class TokenValidator:
    """Checks bearer tokens of one issuer, and caches those that pass until their ``exp``.

    Thread-safe: called from the server's thread pool.

    Parameters
    ----------
    config
        The issuer.
    fetch
        ``fetch(url, timeout_s) -> bytes`` for the discovery document and the JWKS
        (:func:`~lamina.governance.oidc.fetch_json`, urllib with a timeout and a size cap).
    clock
        Seconds since the epoch (``time.time``), for ``exp``, ``nbf`` and ``iat``.
    cache_size
        The most validated tokens kept; the least recently used go first.
    """

    def __init__(
        self,
        config: IssuerConfig,
        *,
        fetch: Fetch = fetch_json,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self.config = config
        self.keys = IssuerKeys(config, fetch)
        self._clock = clock
        self._cache: OrderedDict[bytes, Claims] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._jws = _AllowList(algorithms=config.algorithms, strict_check_header=False)
        self._jwe = JWERegistry(algorithms=config.encryption_algorithms, strict_check_header=False)
        #: how many tokens were fully verified (a cache hit is not), for tests and metrics
        self.verified = 0

    def validate(self, token: str) -> Claims:
        """The claims of ``token`` if it is valid now.

        Raises
        ------
        AuthenticationError
            The token is malformed, expired, not yet valid, for another audience or issuer,
            tampered with, signed by an unknown key or without the ``acr`` required
            (``error="invalid_token"``).
        UnavailableError
            The issuer's keys could not be fetched (503: retry later, the token may be fine).
        """
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_BYTES or not token.isascii():
            log.debug("bearer token refused: empty, too long or not ASCII")
            raise AuthenticationError(_INVALID)
        digest = hashlib.sha256(token.encode("ascii")).digest()
        now = self._clock()
        with self._cache_lock:
            cached = self._cache.get(digest)
            if cached is not None:
                if now < cached.expires_at:
                    self._cache.move_to_end(digest)
                    return cached
                del self._cache[digest]
        try:
            claims = self._verify(token, now)
        except _RefusedError as reason:
            # the hash's head lets a log line be matched to a client's report; the token is not logged
            log.debug("bearer token %s refused: %s", digest.hex()[:12], reason)
            raise AuthenticationError(_INVALID) from None
        with self._cache_lock:
            self._cache[digest] = claims
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    def _verify(self, token: str, now: float) -> Claims:
        self.verified += 1
        signed = self._decrypt(token) if token.count(".") == 4 else token
        if signed.count(".") != 2:
            raise _RefusedError("not a JWS compact serialization")
        try:
            payload = json.loads(_signed_payload(signed, self.config, self.keys, self._jws))
        except ValueError as error:
            raise _RefusedError(f"payload ({type(error).__name__})") from None
        if not isinstance(payload, dict):
            raise _RefusedError("the payload is not a JSON object")
        self._check_claims(payload, int(now))
        return Claims(payload)

    def _decrypt(self, token: str) -> str:
        """The JWS inside a JWE."""
        try:
            return _decrypted(token, self.config, self._jwe).decode("ascii")
        except UnicodeDecodeError:
            raise _RefusedError("the decrypted token is not ASCII") from None

    def _check_claims(self, payload: dict[str, Any], now: int) -> None:
        config = self.config
        registry = JWTClaimsRegistry(
            now=now,
            leeway=config.leeway_s,
            iss={"essential": True, "value": config.issuer},
            aud={"essential": True, "values": list(config.audience)},
            exp={"essential": True},
        )
        try:
            registry.validate(payload)
        except JoseError as error:
            raise _RefusedError(f"claims: {error.error} {error.description or ''}".strip()) from None
        if config.required_acr and payload.get("acr") not in config.required_acr:
            raise _RefusedError(f"acr {payload.get('acr')!r} is not one of {list(config.required_acr)}")
