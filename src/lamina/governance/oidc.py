"""An OpenID provider as lamina trusts it: its settings (:class:`IssuerConfig`) and its signing keys
(:class:`IssuerKeys`), read from its discovery document and its JWKS.

The discovery URL is configuration, never derived from the issuer: Pro Santé Connect serves its
document at ``/.well-known/wallet-openid-configuration``, not at OpenID Connect Discovery's
``/.well-known/openid-configuration``. The keys are cached; a token signed by a key the cache
lacks (the provider rotated its keys) makes one refetch of the JWKS, at most one per
``refetch_interval_s``, so that a flood of forged ``kid`` s cannot turn lamina into a load on the
provider.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, Key, KeySet, OKPKey, RSAKey

from lamina.errors import ConfigurationError, UnavailableError

__all__ = ["DEFAULT_ALGORITHMS", "DEFAULT_ENCRYPTION_ALGORITHMS", "IssuerConfig", "IssuerKeys", "fetch_json"]

log = logging.getLogger("lamina.governance")

#: Signature algorithms accepted unless configured otherwise: asymmetric only.
DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
#: Key management and content encryption algorithms of an encrypted (JWE) token. RSA1_5 is left
#: out on purpose: its padding oracle (Bleichenbacher) is the classic JWE attack.
DEFAULT_ENCRYPTION_ALGORITHMS = (
    "RSA-OAEP",
    "RSA-OAEP-256",
    "ECDH-ES",
    "ECDH-ES+A128KW",
    "ECDH-ES+A256KW",
    "A128GCM",
    "A256GCM",
    "A128CBC-HS256",
    "A256CBC-HS512",
)
_SIGNATURE_KEYS = (RSAKey, ECKey, OKPKey)
#: The most bytes a discovery document or a JWKS may have: real ones are a few kB.
MAX_DOCUMENT_BYTES = 256 * 1024
_LOOPBACK_NAMES = ("localhost",)


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(name: str, url: str) -> str:
    """``url`` if it is https (or http on loopback, as tests and a local provider run), else
    :class:`ConfigurationError` naming the field: keys fetched in clear text can be replaced."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return url
    raise ConfigurationError(
        f"{name}: {url!r} is not an https URL (http is allowed on loopback only); give the "
        "provider's https address"
    )


def _strings(name: str, value: object) -> tuple[str, ...]:
    """One string or a list of strings, as a tuple; else a :class:`ConfigurationError` naming it."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(item, str) and item for item in value):
        return tuple(value)
    raise ConfigurationError(f"{name}: expected a string or a list of strings, got {value!r}")


@dataclass(frozen=True)
class IssuerConfig:
    """One trusted OpenID provider (Pro Santé Connect, a hospital's Keycloak, any OIDC provider).

    Parameters
    ----------
    issuer
        The ``iss`` its tokens carry, exactly (``https://auth.esw.esante.gouv.fr/auth/realms/
        esante-wallet``).
    discovery_url
        Where its discovery document is: configuration, never derived from ``issuer``.
    audience
        The ``aud`` values lamina answers to (its client id, its resource URL); a token must
        name one of them.
    algorithms
        The signature algorithms allowed: asymmetric only. ``none`` and the HMAC ones (``HS*``)
        are refused, since a verifier that accepts HMAC can be fooled with the public key used as
        the shared secret.
    leeway_s
        Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
    required_acr
        When not empty, the ``acr`` values accepted (e.g. ``("eidas1",)`` for Pro Santé Connect's
        strong authentication); a token without one of them is refused.
    decryption_keys
        Private keys for encrypted (JWE) tokens, when the provider encrypts them; never printed.
    encryption_algorithms
        The JWE ``alg`` and ``enc`` values allowed.
    refetch_interval_s
        The fewest seconds between two fetches of the JWKS caused by an unknown ``kid``.
    keys_max_age_s
        How long the keys are kept before being fetched again on the next token.
    timeout_s
        The timeout of each request to the provider.
    userinfo
        Whether the claims of the provider's userinfo endpoint (its discovery document's
        ``userinfo_endpoint``) are added to those of each token (:mod:`lamina.governance.userinfo`):
        Pro Santé Connect gives ``SubjectRefPro`` there, not in its access tokens.
    userinfo_unsigned_jwe
        Whether an encrypted userinfo whose content is plain JSON (not signed) is accepted; by
        default only a signed one is, since anyone may encrypt to lamina's public key.
    """

    issuer: str
    discovery_url: str
    audience: tuple[str, ...]
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_s: int = 60
    required_acr: tuple[str, ...] = ()
    decryption_keys: KeySet | None = field(default=None, repr=False, compare=False)
    encryption_algorithms: tuple[str, ...] = DEFAULT_ENCRYPTION_ALGORITHMS
    refetch_interval_s: float = 10.0
    keys_max_age_s: float = 3600.0
    timeout_s: float = 5.0
    userinfo: bool = False
    userinfo_unsigned_jwe: bool = False

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ConfigurationError("issuer: empty; give the provider's issuer URL, as its tokens carry it")
        _check_url("discovery_url", self.discovery_url)
        if not self.audience or not all(isinstance(item, str) and item for item in self.audience):
            raise ConfigurationError("audience: give lamina's client id or resource URL (one or several)")
        if not self.algorithms:
            raise ConfigurationError(f"algorithms: empty; use e.g. {list(DEFAULT_ALGORITHMS)}")
        for alg in self.algorithms:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ConfigurationError(
                    f"algorithms: {alg!r} is refused (no signature, or a shared secret that the "
                    f"provider's public key can forge); use asymmetric ones, e.g. {list(DEFAULT_ALGORITHMS)}"
                )
        if not 0 <= self.leeway_s <= 300:
            raise ConfigurationError(f"leeway_s: {self.leeway_s} is not within 0 to 300 seconds (default 60)")
        for name in ("refetch_interval_s", "keys_max_age_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name}: must be a positive number of seconds")
        if "RSA1_5" in self.encryption_algorithms:
            raise ConfigurationError(
                "encryption_algorithms: RSA1_5 is refused (padding oracle); use RSA-OAEP-256"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], prefix: str = "auth") -> IssuerConfig:
        """An issuer from a table of ``lamina.toml`` (``prefix`` names it in errors).

        Keys are the fields' names; ``audience``, ``algorithms`` and ``required_acr`` take a
        string or a list; ``decryption_jwks_file`` names a JWKS file of private keys (JSON).
        """
        known = {name for name in cls.__dataclass_fields__ if name != "decryption_keys"}
        known.add("decryption_jwks_file")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(
                f"{prefix}.{unknown[0]}: unknown key; known ones: {', '.join(sorted(known))}"
            )
        for required in ("issuer", "discovery_url", "audience"):
            if not isinstance(data.get(required), str | list):
                raise ConfigurationError(f"{prefix}.{required}: missing; it is required")
        kwargs: dict[str, Any] = {
            "issuer": data["issuer"],
            "discovery_url": data["discovery_url"],
            "audience": _strings(f"{prefix}.audience", data["audience"]),
        }
        for name in ("algorithms", "required_acr", "encryption_algorithms"):
            if name in data:
                kwargs[name] = _strings(f"{prefix}.{name}", data[name])
        for name in ("leeway_s", "refetch_interval_s", "keys_max_age_s", "timeout_s"):
            if name in data:
                value = data[name]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigurationError(f"{prefix}.{name}: expected a number of seconds, got {value!r}")
                kwargs[name] = int(value) if name == "leeway_s" else float(value)
        for name in ("userinfo", "userinfo_unsigned_jwe"):
            if name in data:
                if not isinstance(data[name], bool):
                    raise ConfigurationError(f"{prefix}.{name}: expected true or false, got {data[name]!r}")
                kwargs[name] = data[name]
        if "decryption_jwks_file" in data:
            kwargs["decryption_keys"] = _read_private_jwks(
                f"{prefix}.decryption_jwks_file", data["decryption_jwks_file"]
            )
        try:
            return cls(**kwargs)
        except ConfigurationError as error:
            raise ConfigurationError(f"{prefix}.{error}") from None


def _read_private_jwks(name: str, path: object) -> KeySet:
    if not isinstance(path, str):
        raise ConfigurationError(f"{name}: expected a file path, got {path!r}")
    try:
        return KeySet.import_key_set(json.loads(Path(path).read_text("utf-8")))
    except OSError as error:
        raise ConfigurationError(f"{name}: cannot read {path}: {error.strerror}") from None
    except (ValueError, JoseError):
        # no detail: the file holds private keys
        raise ConfigurationError(f"{name}: {path} is not a JWKS (JSON with a 'keys' list of JWKs)") from None


Fetch = Callable[[str, float], bytes]


class _Redirected(urllib.error.HTTPError):
    """A redirect, refused: followed, it could lead the keys' fetch from https to http or to
    another host than the one configured."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        raise _Redirected(req.full_url, code, msg, headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


def fetch_json(url: str, timeout_s: float) -> bytes:
    """The body of a GET of ``url`` (JSON expected), at most :data:`MAX_DOCUMENT_BYTES`.

    Raises
    ------
    UnavailableError
        The provider did not answer, answered an error, or something too large.
    """
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout_s) as answer:
            body: bytes = answer.read(MAX_DOCUMENT_BYTES + 1)
    except _Redirected as moved:
        raise UnavailableError(
            f"the identity provider redirected {url} (HTTP {moved.code}); set the address it redirects "
            "to in the settings: lamina follows no redirect for its keys"
        ) from None
    except urllib.error.HTTPError as error:
        raise UnavailableError(
            f"the identity provider answered HTTP {error.code} for {url}; check its address in "
            "the settings, or retry later"
        ) from None
    except (OSError, ValueError) as error:
        raise UnavailableError(
            f"the identity provider at {url} did not answer ({type(error).__name__}); retry later"
        ) from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise UnavailableError(f"the identity provider's answer at {url} is over {MAX_DOCUMENT_BYTES} bytes")
    return body


def _signature_keys(jwks: object) -> list[Key]:
    """The public signature keys of a JWKS. Symmetric (``oct``) keys and encryption keys are
    dropped: a JWKS is public, so a shared secret in it is no secret. A key lamina cannot read is
    skipped (tolerant on decode) rather than losing the others."""
    entries = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(entries, list):
        raise ValueError("no 'keys' list")
    keys: list[Key] = []
    for entry in entries[:100]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = JWKRegistry.import_key(entry)
        except (JoseError, ValueError, TypeError, KeyError):
            log.debug("a key of the provider's JWKS (kid %r) cannot be read; skipped", entry.get("kid"))
            continue
        if isinstance(key, _SIGNATURE_KEYS):
            keys.append(key)
    return keys


class IssuerKeys:
    """The signing keys of one provider: fetched on first use, kept, fetched again after
    ``keys_max_age_s`` or, rate-limited, when a token names a ``kid`` they lack. Thread-safe.

    Parameters
    ----------
    config
        The provider.
    fetch
        ``fetch(url, timeout_s) -> bytes``: :func:`fetch_json` unless a test passes its own.
    clock
        Monotonic seconds, for the rate limit and the age of the keys.
    """

    def __init__(
        self, config: IssuerConfig, fetch: Fetch = fetch_json, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: tuple[Key, ...] | None = None
        self._jwks_uri: str | None = None
        self._userinfo_endpoint: str | None = None
        self._fetched_at = 0.0
        self._refetched_at: float | None = None
        self._generation = 0
        #: how many times the JWKS was fetched (for tests and metrics)
        self.fetches = 0

    def find(self, kid: str | None, alg: str) -> Key | None:
        """The key for a token's ``kid`` and ``alg``; one rate-limited refetch when it is unknown.

        Raises
        ------
        UnavailableError
            The provider could not be asked for its keys.
        """
        keys, generation = self._current()
        key = _pick(keys, kid, alg)
        if key is None and self._refetch(generation):
            key = _pick(self._keys or (), kid, alg)
        return key

    def userinfo_endpoint(self) -> str:
        """The ``userinfo_endpoint`` of the discovery document read with the keys (never from a
        request).

        Raises
        ------
        UnavailableError
            The provider could not be asked, or its document names no usable userinfo endpoint.
        """
        self._current()
        if self._userinfo_endpoint is None:
            raise UnavailableError(
                f"the discovery document at {self._config.discovery_url} has no usable userinfo_endpoint "
                "(https, or http on loopback); set userinfo = false in [auth] or fix the provider"
            )
        return self._userinfo_endpoint

    def _current(self) -> tuple[tuple[Key, ...], int]:
        with self._lock:
            stale = self._keys is None or self._clock() - self._fetched_at > self._config.keys_max_age_s
            if stale:
                try:
                    self._load(discovery=True)
                except UnavailableError:
                    if self._keys is None:
                        raise
                    # keep serving with the keys already known; the next token tries again
                    log.warning(
                        "the keys of %s could not be refreshed; the cached ones are used", self._config.issuer
                    )
                    self._fetched_at = self._clock()
            assert self._keys is not None
            return self._keys, self._generation

    def _refetch(self, seen_generation: int) -> bool:
        """Fetch the JWKS again unless another thread just did, or one was fetched less than
        ``refetch_interval_s`` ago; whether the keys may have changed."""
        with self._lock:
            if self._generation != seen_generation:
                return True
            now = self._clock()
            if self._refetched_at is not None and now - self._refetched_at < self._config.refetch_interval_s:
                log.debug(
                    "unknown kid, and the JWKS of %s was fetched too recently to fetch again",
                    self._config.issuer,
                )
                return False
            self._refetched_at = now
            self._load(discovery=False)
            return True

    def _load(self, discovery: bool) -> None:
        # under self._lock: one fetch at a time, the others wait for its result
        config = self._config
        if discovery or self._jwks_uri is None:
            document = self._json(config.discovery_url, "discovery document")
            if not isinstance(document, dict) or document.get("issuer") != config.issuer:
                # OpenID Connect Discovery 1.0, 4.3: the document must name the issuer expected
                raise UnavailableError(
                    f"the discovery document at {config.discovery_url} does not name the issuer "
                    f"{config.issuer!r}; check the issuer and discovery_url settings"
                )
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise UnavailableError(f"the discovery document at {config.discovery_url} has no jwks_uri")
            try:
                self._jwks_uri = _check_url("jwks_uri", jwks_uri)
            except ConfigurationError as error:
                raise UnavailableError(f"the discovery document at {config.discovery_url}: {error}") from None
            userinfo = document.get("userinfo_endpoint")
            try:
                self._userinfo_endpoint = (
                    _check_url("userinfo_endpoint", userinfo) if isinstance(userinfo, str) else None
                )
            except ConfigurationError:
                self._userinfo_endpoint = None
        assert self._jwks_uri is not None
        try:
            keys = _signature_keys(self._json(self._jwks_uri, "JWKS"))
        except ValueError:
            raise UnavailableError(f"the JWKS at {self._jwks_uri} is not a JSON Web Key Set") from None
        self.fetches += 1
        self._keys = tuple(keys)
        self._fetched_at = self._clock()
        self._generation += 1
        log.debug("fetched %d signing keys of %s", len(keys), config.issuer)

    def _json(self, url: str, what: str) -> object:
        body = self._fetch(url, self._config.timeout_s)
        try:
            return json.loads(body)
        except ValueError:
            raise UnavailableError(f"the {what} at {url} is not JSON") from None


def _pick(keys: Iterable[Key], kid: str | None, alg: str) -> Key | None:
    """The key named ``kid``, if its own ``alg`` (when it states one) is the token's; without a
    ``kid``, the only key that fits ``alg``, if exactly one does."""
    kty = {"RS": "RSA", "PS": "RSA", "ES": "EC"}.get(alg[:2], "OKP")
    fitting = [key for key in keys if key.key_type == kty and key.get("alg") in (None, alg)]
    if kid is not None:
        return next((key for key in fitting if key.kid == kid), None)
    return fitting[0] if len(fitting) == 1 else None
