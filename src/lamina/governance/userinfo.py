"""The OpenID provider's userinfo (OpenID Connect Core 5.3), added to a token's claims.

Pro Santé Connect gives the person's professional record (``SubjectRefPro``: each profession and
place of work) at its userinfo endpoint, not in its access tokens. With ``userinfo = true`` in
``[auth]``, once a bearer token has passed :class:`~lamina.governance.tokens.TokenValidator`,
lamina asks the ``userinfo_endpoint`` of the provider's discovery document (configuration, never
a request's header) with that token, and the claims mapping sees the token's claims with the
userinfo's added. The token keeps its own ``iss``, ``aud``, ``exp``, ``nbf``, ``acr`` and the
other claims of the token itself (:data:`TOKEN_ONLY`); a userinfo whose ``sub`` is not the
token's refuses the token.

The answer may be (:meth:`UserinfoReader.read`):

- ``application/json``: the claims, as sent over the provider's https;
- ``application/jwt``, signed (JWS): verified with the provider's keys (the validator's cache,
  the same allow-listed algorithms); its ``iss`` must be the issuer and its ``aud``, when set,
  name lamina's client (OpenID Connect Core 5.3.2);
- ``application/jwt``, encrypted (JWE, five parts): opened with ``decryption_jwks_file``'s keys,
  and the signed userinfo inside verified as above; plain JSON inside is refused unless
  ``userinfo_unsigned_jwe = true`` (anyone may encrypt to lamina's public key).

The request has a timeout, follows no redirect and reads at most :data:`MAX_USERINFO_BYTES`;
the provider refusing the token (401, 403) refuses it here (``invalid_token``); the provider
unreachable or failing is a 503 naming the endpoint, never the token. The userinfo is kept by the
token's SHA-256 until the token's ``exp`` (at most ``cache_size`` tokens, the least recently used
dropped first): the principal, looked up again every 25 s, does not ask the provider again.

Some providers refuse, at userinfo, an access token issued for a resource server (RFC 8707;
oidc-provider does: such a token is for that server only). For them, the viewer's sign-in, whose
code lamina's server exchanges (:func:`lamina.governance.viewer_client.exchange`), gets a second
access token from the refresh token without a ``resource`` (one for userinfo), reads the
userinfo with it and keeps it under lamina's token (:meth:`Userinfo.remember`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from joserfc.jwe import JWERegistry

from lamina.errors import AuthenticationError, UnavailableError
from lamina.governance.oidc import _OPENER, IssuerConfig, IssuerKeys, _Redirected
from lamina.governance.tokens import (
    INVALID_TOKEN,
    Claims,
    _AllowList,
    _decrypted,
    _RefusedError,
    _signed_payload,
)

__all__ = ["MAX_USERINFO_BYTES", "TOKEN_ONLY", "Userinfo", "UserinfoReader", "fetch_userinfo", "merge"]

log = logging.getLogger("lamina.governance")

#: The largest userinfo answer read: Pro Santé Connect's, with every place of work, are a few kB.
MAX_USERINFO_BYTES = 64 * 1024
#: The claims that stay the token's: who issued it, for whom, when, how strongly the person signed
#: in; a userinfo cannot change them.
TOKEN_ONLY = frozenset(
    {
        "iss",
        "aud",
        "exp",
        "nbf",
        "iat",
        "acr",
        "amr",
        "auth_time",
        "azp",
        "client_id",
        "scope",
        "jti",
        "cnf",
        "sid",
        "sub",
    }
)
_JSON = "application/json"
_JWT = "application/jwt"

#: ``fetch(url, access_token, timeout_s) -> (content type, body)``
UserinfoFetch = Callable[[str, str, float], tuple[str, bytes]]


def fetch_userinfo(url: str, access_token: str, timeout_s: float) -> tuple[str, bytes]:
    """The content type and body of a GET of the userinfo endpoint ``url`` with ``access_token``.

    Raises
    ------
    AuthenticationError
        The provider refused the token (401, 403): ``invalid_token``.
    UnavailableError
        The provider did not answer, redirected, answered another error, or more than
        :data:`MAX_USERINFO_BYTES`; the message names ``url``, never the token.
    """
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {access_token}", "Accept": f"{_JWT}, {_JSON}"}
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as answer:  # no redirect followed
            body: bytes = answer.read(MAX_USERINFO_BYTES + 1)
            content_type = str(answer.headers.get("Content-Type", ""))
    except _Redirected as moved:
        raise UnavailableError(
            f"the identity provider redirected its userinfo endpoint {url} (HTTP {moved.code}); lamina "
            "follows no redirect there: fix the provider's userinfo_endpoint"
        ) from None
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            log.debug("the userinfo endpoint %s refused a token (HTTP %d)", url, error.code)
            raise AuthenticationError(INVALID_TOKEN) from None
        raise UnavailableError(
            f"the identity provider answered HTTP {error.code} at its userinfo endpoint {url}; retry later"
        ) from None
    except (OSError, ValueError) as error:
        raise UnavailableError(
            f"the identity provider's userinfo endpoint {url} did not answer ({type(error).__name__}); "
            "retry later"
        ) from None
    if len(body) > MAX_USERINFO_BYTES:
        raise UnavailableError(f"the userinfo at {url} is over {MAX_USERINFO_BYTES} bytes")
    return content_type, body


class UserinfoReader:
    """Reads one userinfo answer: JSON, signed JWT or encrypted JWT (see the module).

    Parameters
    ----------
    config
        The provider (issuer, algorithms, decryption keys, ``userinfo_unsigned_jwe``).
    keys
        Its signing keys (the validator's cache: :attr:`TokenValidator.keys
        <lamina.governance.tokens.TokenValidator>`).
    client_ids
        The client ids a signed userinfo's ``aud`` may name, besides ``config.audience`` (the
        viewer's client, whose token the userinfo answered).
    clock
        Seconds since the epoch, for a signed userinfo's ``exp``.
    """

    def __init__(
        self,
        config: IssuerConfig,
        keys: IssuerKeys,
        client_ids: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.keys = keys
        self.client_ids = frozenset((*config.audience, *client_ids))
        self._clock = clock
        self._jws = _AllowList(algorithms=config.algorithms, strict_check_header=False)
        self._jwe = JWERegistry(algorithms=config.encryption_algorithms, strict_check_header=False)

    def read(self, body: bytes, content_type: str) -> dict[str, Any]:
        """The claims of a userinfo answer of ``content_type``.

        Raises
        ------
        AuthenticationError
            The answer cannot be believed (a bad signature, another issuer or client, an unsigned
            JWE where none is allowed, not a JSON object): the token is refused (``invalid_token``).
        UnavailableError
            The answer is too large, of another content type, or the provider's keys cannot be
            fetched.
        """
        if len(body) > MAX_USERINFO_BYTES:
            raise UnavailableError(f"the identity provider's userinfo is over {MAX_USERINFO_BYTES} bytes")
        media = content_type.split(";")[0].strip().lower()
        if media not in (_JSON, _JWT):
            raise UnavailableError(
                f"the identity provider's userinfo is {media or 'untyped'}; lamina reads {_JSON} or {_JWT}"
            )
        try:
            claims = _json_object(body) if media == _JSON else self._jwt(body)
        except _RefusedError as reason:
            log.debug("a userinfo answer is refused: %s", reason)
            raise AuthenticationError(INVALID_TOKEN) from None
        return claims

    def _jwt(self, body: bytes) -> dict[str, Any]:
        try:
            text = body.decode("ascii").strip()
        except UnicodeDecodeError:
            raise _RefusedError("a JWT that is not ASCII") from None
        if text.count(".") == 4:
            text = self._decrypt(text)
            if text.count(".") != 2:
                if not self.config.userinfo_unsigned_jwe:
                    raise _RefusedError("encrypted but not signed, and userinfo_unsigned_jwe is false")
                return _json_object(text.encode("utf-8"))
        if text.count(".") != 2:
            raise _RefusedError("not a JWS compact serialization")
        return self._verify(text)

    def _decrypt(self, text: str) -> str:
        try:
            return _decrypted(text, self.config, self._jwe).decode("utf-8").strip()
        except UnicodeDecodeError:
            raise _RefusedError("the decrypted answer is not UTF-8") from None

    def _verify(self, text: str) -> dict[str, Any]:
        payload = _signed_payload(text, self.config, self.keys, self._jws)
        claims = _json_object(payload)
        if claims.get("iss") != self.config.issuer:
            raise _RefusedError(f"iss {claims.get('iss')!r} is not the issuer")
        aud = claims.get("aud")
        if aud is not None:
            named = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
            if not named & self.client_ids:
                raise _RefusedError("aud names none of lamina's clients")
        exp = claims.get("exp")
        if exp is not None and (
            not isinstance(exp, int | float) or exp + self.config.leeway_s < self._clock()
        ):
            raise _RefusedError("expired")
        return claims


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise _RefusedError("not JSON") from None
    if not isinstance(value, dict):
        raise _RefusedError("not a JSON object")
    return value


def merge(token: Claims, userinfo: Mapping[str, Any]) -> Claims:
    """The token's claims with the userinfo's added; the token keeps :data:`TOKEN_ONLY`.

    Raises
    ------
    AuthenticationError
        The userinfo's ``sub`` is not the token's (OpenID Connect Core 5.3.2): ``invalid_token``.
    """
    if token.subject is None or userinfo.get("sub") != token.subject:
        log.debug("a userinfo's sub is not its token's; the token is refused")
        raise AuthenticationError(INVALID_TOKEN)
    merged = {name: value for name, value in userinfo.items() if name not in TOKEN_ONLY}
    merged.update(token)
    return Claims(merged)


class Userinfo:
    """The provider's userinfo for each token, fetched once and kept until the token's ``exp``.
    Thread-safe.

    Parameters
    ----------
    reader
        Reads the answers (and holds the provider's settings and keys).
    fetch
        ``fetch(url, access_token, timeout_s) -> (content type, body)``: :func:`fetch_userinfo`.
    clock
        Seconds since the epoch.
    cache_size
        The most tokens whose userinfo is kept; the least recently used go first.
    """

    def __init__(
        self,
        reader: UserinfoReader,
        *,
        fetch: UserinfoFetch = fetch_userinfo,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self.reader = reader
        self._fetch = fetch
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[float, dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        #: how many times the userinfo endpoint was asked (for tests and metrics)
        self.fetches = 0

    def claims(self, token: str, token_claims: Claims) -> Claims:
        """``token_claims`` (of the validated ``token``) with its userinfo's (:func:`merge`).

        Raises
        ------
        AuthenticationError
            The provider refused the token, or its userinfo cannot be believed or names another
            ``sub``.
        UnavailableError
            The provider could not be asked.
        """
        digest = _digest(token)
        now = self._clock()
        with self._lock:
            found = self._cache.get(digest)
            if found is not None and now >= found[0]:
                del self._cache[digest]
                found = None
            if found is not None:
                self._cache.move_to_end(digest)
        if found is None:
            userinfo = self.fetch(token)
            self.remember(token, userinfo, token_claims.expires_at)
        else:
            userinfo = found[1]
        return merge(token_claims, userinfo)

    def fetch(self, access_token: str) -> dict[str, Any]:
        """The userinfo the provider answers for ``access_token``, read and verified (not kept)."""
        url = self.reader.keys.userinfo_endpoint()
        self.fetches += 1
        content_type, body = self._fetch(url, access_token, self.reader.config.timeout_s)
        return self.reader.read(body, content_type)

    def remember(self, token: str, userinfo: dict[str, Any], expires_at: float) -> None:
        """Keep ``userinfo`` as ``token``'s until ``expires_at`` (seconds since the epoch)."""
        with self._lock:
            self._cache[_digest(token)] = (expires_at, userinfo)
            self._cache.move_to_end(_digest(token))
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()
