"""From a bearer token to the :class:`~lamina.governance.decide.Principal` it stands for.

A node trusts one or several issuers: lamina's own (:mod:`lamina.governance.issuer`, whose
tokens name a person registered on the node) and, when ``[auth]`` is configured, an OpenID
provider (Pro Santé Connect through a hospital's Keycloak, any OIDC provider), whose claims give
the person and, by the rules of ``[auth.claims]``, roles per lab (:mod:`lamina.governance.claims`).
The token's ``iss`` picks the issuer before anything is verified; the issuer's
:class:`~lamina.governance.tokens.TokenValidator` then checks it.

The principal holds the roles the registry gives the person on this node, plus those the claims
give in the node's own tenants (a FINESS the node does not serve is ignored), and the grants in
force that reach them. It is kept, by the token's SHA-256, until the token expires or
``ttl_s`` (25 s) pass, whichever comes first; the HTTP layer reuses it on a keep-alive connection
for 5 s more (``lamina.api.auth``): a role removed or a grant revoked takes effect within 30 s;
a request that finds its token's principal cached costs a hash and a look-up,
without a thread (:meth:`Principals.cached`, for the event loop).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lamina.archive.catalog import Catalog
from lamina.errors import AuthenticationError
from lamina.governance.claims import ClaimsMapping
from lamina.governance.decide import Principal, principal_of
from lamina.governance.registry import Registry
from lamina.governance.tokens import INVALID_TOKEN, MAX_TOKEN_BYTES, TokenValidator
from lamina.governance.userinfo import Userinfo

__all__ = ["Principals", "TrustedIssuer"]

#: How long a principal is kept: the bound on a revocation taking effect (seconds).
PRINCIPAL_TTL_S = 25.0


@dataclass(frozen=True)
class TrustedIssuer:
    """An issuer whose tokens this node accepts, and how its claims name people and roles
    (``mapping`` None: lamina's own issuer, whose ``sub`` is a person registered on the node, and
    whose roles come from the registry alone); ``userinfo``: the provider's userinfo, whose
    claims the mapping sees beside the token's (``userinfo = true`` in ``[auth]``)."""

    validator: TokenValidator
    mapping: ClaimsMapping | None = None
    userinfo: Userinfo | None = None

    @property
    def issuer(self) -> str:
        return self.validator.config.issuer


class Principals:
    """Bearer tokens to principals, cached. Thread-safe.

    Parameters
    ----------
    catalog
        The catalog holding the registry (people, roles, grants).
    issuers
        The issuers trusted, each with its validator.
    ttl_s
        How long a principal is kept before the registry is read again.
    clock
        Monotonic seconds.
    wall
        Seconds since the epoch (for the tokens' ``exp``).
    """

    def __init__(
        self,
        catalog: Catalog,
        issuers: Sequence[TrustedIssuer],
        *,
        ttl_s: float = PRINCIPAL_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self.registry = Registry(catalog)
        self.issuers = tuple(issuers)
        self.ttl_s = ttl_s
        self._clock = clock
        self._wall = wall
        self._cache: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def cached(self, token: str) -> Principal | None:
        """The principal of ``token`` if it is kept and fresh, else None; never blocks."""
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            return None
        digest = hashlib.sha256(token.encode("ascii")).digest()
        with self._lock:
            found = self._cache.get(digest)
            if found is None:
                return None
            until, principal = found
            if self._clock() >= until:
                del self._cache[digest]
                return None
            return principal

    def cached_raw(self, raw: bytes) -> Principal | None:
        """:meth:`cached` for the token's bytes as the header carries them, without a lock (a
        dictionary read is atomic): the cost of a frame's sign-in on the event loop is one
        SHA-256 and one look-up."""
        found = self._cache.get(hashlib.sha256(raw).digest())
        if found is None or self._clock() >= found[0]:
            return None
        return found[1]

    def resolve(self, token: str) -> Principal:
        """The principal of ``token``: validated, mapped, read from the registry (blocking).

        Raises
        ------
        AuthenticationError
            The token is not valid, names no person, or names a person this node does not know
            (lamina's own tokens).
        UnavailableError
            The issuer's keys, or its userinfo, could not be fetched.
        """
        kept = self.cached(token)
        if kept is not None:
            return kept
        trusted = self._issuer_of(token)
        claims = trusted.validator.validate(token)
        if trusted.userinfo is not None:
            claims = trusted.userinfo.claims(token, claims)
        if trusted.mapping is None:
            known = self.registry.known_person(claims.subject) if claims.subject else None
            if known is None:
                raise AuthenticationError(INVALID_TOKEN)
            person = known.id
            roles = [(item.tenant, item.role) for item in known.roles]
        else:
            identity = trusted.mapping.identity(claims)
            person = identity.person
            known = self.registry.known_person(person)
            roles = [(item.tenant, item.role) for item in known.roles] if known else []
            served = self.registry.existing_tenants(m.finess for m in identity.memberships)
            roles += [(m.finess, m.role) for m in identity.memberships if m.finess in served]
        tenants = {tenant for tenant, _ in roles}
        grants = self.registry.grants_reaching(person, tenants)
        collections = self.registry.collections_of(grants)
        principal = principal_of(person, roles, grants, collections=collections)
        lifetime = min(self.ttl_s, max(0.0, claims.expires_at - self._wall()))
        digest = hashlib.sha256(token.encode("ascii")).digest()
        with self._lock:
            self._cache[digest] = (self._clock() + lifetime, principal)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def forget(self) -> None:
        """Drop every kept principal (after a change of roles or grants made in this process)."""
        with self._lock:
            self._cache.clear()

    def _issuer_of(self, token: str) -> TrustedIssuer:
        """The trusted issuer named by the token's (not yet verified) ``iss``; an encrypted token
        goes to the issuer with decryption keys."""
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise AuthenticationError(INVALID_TOKEN)
        parts = token.split(".")
        if len(parts) == 5:
            for trusted in self.issuers:
                if trusted.validator.config.decryption_keys is not None:
                    return trusted
            raise AuthenticationError(INVALID_TOKEN)
        if len(parts) != 3:
            raise AuthenticationError(INVALID_TOKEN)
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (binascii.Error, ValueError):
            raise AuthenticationError(INVALID_TOKEN) from None
        iss = payload.get("iss") if isinstance(payload, dict) else None
        for trusted in self.issuers:
            if trusted.issuer == iss:
                return trusted
        raise AuthenticationError(INVALID_TOKEN)
