"""The viewer as a client of the OpenID provider of ``[auth]``: authorization code with PKCE.

The viewer sends the pathologist's browser to the provider's authorization endpoint (with a
PKCE S256 challenge, a ``state`` and a ``nonce``); the provider sends it back with a code; the
viewer hands the code and its PKCE verifier to lamina (``POST /auth/oidc/token``), which
exchanges them at the provider's token endpoint, adding the client's secret when the provider
wants a confidential client (Pro Santé Connect does), and answers the provider's tokens. The
refresh token is exchanged the same way before the access token expires (a silent refresh).
The browser thus talks to lamina only, besides the redirects: no secret in the page, no
cross-origin request to the provider, and the page's content security policy stays ``'self'``.

``[auth.viewer]`` in lamina.toml::

    [auth.viewer]
    client_id = "lamina-viewer"          # the client registered at the provider for the viewer
    client_secret_file = "/etc/lamina/viewer-secret"   # when the provider wants one (never inline)
    scope = "openid"                     # what the viewer asks (default "openid")
    resource = "urn:lamina"              # RFC 8707 resource indicator, when the provider needs one
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.errors import AuthenticationError, ConfigurationError, RequestError, UnavailableError
from lamina.governance.oidc import _OPENER, IssuerConfig, _check_url, fetch_json
from lamina.governance.userinfo import Userinfo

__all__ = ["MAX_TOKEN_FORM_BYTES", "ProviderEndpoints", "ViewerClient", "exchange"]

#: The largest form the viewer sends to ``/auth/oidc/token``, and the largest answer kept.
MAX_TOKEN_FORM_BYTES = 16 * 1024
_MAX_ANSWER_BYTES = 256 * 1024
log = logging.getLogger("lamina.governance")
_GRANTS = {
    "authorization_code": ("code", "code_verifier", "redirect_uri"),
    "refresh_token": ("refresh_token",),
}


@dataclass(frozen=True)
class ViewerClient:
    """The viewer's registration at the provider."""

    client_id: str
    scope: str = "openid"
    resource: str | None = None
    client_secret: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], prefix: str = "auth.viewer") -> ViewerClient:
        known = {"client_id", "scope", "resource", "client_secret_file"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(
                f"{prefix}.{unknown[0]}: unknown key; known ones: {', '.join(sorted(known))}"
            )
        client_id = data.get("client_id")
        if not isinstance(client_id, str) or not client_id.strip():
            raise ConfigurationError(f"{prefix}.client_id: missing; the client registered at the provider")
        scope = data.get("scope", "openid")
        if not isinstance(scope, str) or "openid" not in scope.split():
            raise ConfigurationError(f"{prefix}.scope: a string of scopes that includes 'openid'")
        resource = data.get("resource")
        if resource is not None and not isinstance(resource, str):
            raise ConfigurationError(f"{prefix}.resource: a URI (RFC 8707), e.g. 'urn:lamina'")
        secret = None
        if "client_secret_file" in data:
            path = Path(str(data["client_secret_file"])).expanduser()
            try:
                secret = path.read_text("utf-8").strip()
            except OSError as error:
                raise ConfigurationError(
                    f"{prefix}.client_secret_file: {path} cannot be read ({error.strerror or error})"
                ) from None
            if not secret:
                raise ConfigurationError(f"{prefix}.client_secret_file: {path} is empty")
        return cls(client_id.strip(), scope, resource, secret)


@dataclass(frozen=True)
class ProviderEndpoints:
    """The provider's endpoints the viewer uses, from its discovery document."""

    authorization_endpoint: str
    token_endpoint: str
    end_session_endpoint: str | None = None


class _Endpoints:
    """The discovery document's endpoints, fetched once an hour at most (thread-safe)."""

    def __init__(self, config: IssuerConfig, max_age_s: float = 3600.0) -> None:
        self._config = config
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._found: tuple[float, ProviderEndpoints] | None = None

    def get(self) -> ProviderEndpoints:
        with self._lock:
            if self._found is not None and time.monotonic() - self._found[0] < self._max_age_s:
                return self._found[1]
            body = fetch_json(self._config.discovery_url, self._config.timeout_s)
            try:
                document = json.loads(body)
                end_session = document.get("end_session_endpoint")
                endpoints = ProviderEndpoints(
                    _check_url("authorization_endpoint", str(document["authorization_endpoint"])),
                    _check_url("token_endpoint", str(document["token_endpoint"])),
                    _check_url("end_session_endpoint", str(end_session)) if end_session else None,
                )
            except (ValueError, KeyError, TypeError, ConfigurationError):
                raise UnavailableError(
                    f"the discovery document at {self._config.discovery_url} has no authorization "
                    "and token endpoints"
                ) from None
            self._found = (time.monotonic(), endpoints)
            return endpoints


_CACHE: dict[str, _Endpoints] = {}
_CACHE_LOCK = threading.Lock()


def endpoints(config: IssuerConfig) -> ProviderEndpoints:
    """The provider's endpoints (cached per discovery URL)."""
    with _CACHE_LOCK:
        found = _CACHE.setdefault(config.discovery_url, _Endpoints(config))
    return found.get()


def exchange(
    config: IssuerConfig, client: ViewerClient, form: Mapping[str, str], userinfo: Userinfo | None = None
) -> tuple[int, bytes]:
    """Forward the viewer's code (or refresh token) to the provider's token endpoint, as the
    viewer's client; (the provider's status, its JSON answer). Only the parameters of the grant
    are forwarded. With ``userinfo`` (``userinfo = true`` in ``[auth]``), the userinfo of the
    access token answered is read now and kept for it (:func:`_read_userinfo`).

    Raises
    ------
    RequestError
        Another grant type, or a parameter of the grant missing.
    UnavailableError
        The provider could not be reached, or answered something too large.
    """
    grant = form.get("grant_type", "")
    if grant not in _GRANTS:
        raise RequestError("grant_type", "use authorization_code or refresh_token")
    sent = {"grant_type": grant, "client_id": client.client_id}
    for name in _GRANTS[grant]:
        value = form.get(name)
        if not value:
            raise RequestError(name, f"missing; the {grant} grant needs it")
        sent[name] = value
    if client.resource:
        sent["resource"] = client.resource
    status, body = _token_request(config, client, sent)
    if userinfo is not None and status == 200:
        body = _read_userinfo(config, client, userinfo, body)
    return status, body


def _token_request(config: IssuerConfig, client: ViewerClient, sent: dict[str, str]) -> tuple[int, bytes]:
    if client.client_secret:
        sent = {**sent, "client_secret": client.client_secret}
    url = endpoints(config).token_endpoint
    request = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(sent).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        method="POST",
    )
    try:
        with _OPENER.open(request, timeout=config.timeout_s) as answer:  # no redirect followed
            return answer.status, _bounded(answer.read(_MAX_ANSWER_BYTES + 1), url)
    except urllib.error.HTTPError as error:  # the provider's refusal (invalid_grant...): passed on
        return error.code, _bounded(error.read(_MAX_ANSWER_BYTES + 1), url)
    except (OSError, ValueError) as error:
        raise UnavailableError(
            f"the identity provider at {url} did not answer ({type(error).__name__})"
        ) from None


def _read_userinfo(config: IssuerConfig, client: ViewerClient, userinfo: Userinfo, body: bytes) -> bytes:
    """Read the userinfo of the access token in the provider's answer ``body``, and keep it for
    that token until it expires; the answer, with the refresh token the provider rotated if it did.

    The access token is for lamina (its ``aud``). Without a ``resource`` (Pro Santé Connect,
    Keycloak) it also opens the userinfo endpoint. With one (RFC 8707), a provider may refuse it
    there (oidc-provider does): a token for userinfo is then asked with the refresh token and no
    ``resource``. Failing, the sign-in goes on: the userinfo is asked with lamina's token when it
    is first presented, and the provider's answer then decides.
    """
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        return body
    expires_in = answer.get("expires_in")
    lifetime = min(max(float(expires_in), 0.0), 86_400.0) if isinstance(expires_in, int | float) else 300.0
    refresh = answer.get("refresh_token")
    try:
        opener = token
        if client.resource and isinstance(refresh, str) and refresh:
            status, second = _token_request(
                config,
                client,
                {"grant_type": "refresh_token", "client_id": client.client_id, "refresh_token": refresh},
            )
            found = json.loads(second) if status == 200 else {}
            opener = found.get("access_token") or token
            if isinstance(found.get("refresh_token"), str) and found["refresh_token"] != refresh:
                answer["refresh_token"] = found["refresh_token"]  # rotated: the old one is spent
                body = json.dumps(answer).encode()
        claims = userinfo.fetch(opener)
    except (AuthenticationError, UnavailableError, ValueError, AttributeError) as error:
        log.warning(
            "the userinfo of a sign-in could not be read now (%s); it is asked again later",
            type(error).__name__,
        )
        return body
    userinfo.remember(token, claims, time.time() + lifetime)
    return body


def _bounded(body: bytes, url: str) -> bytes:
    if len(body) > _MAX_ANSWER_BYTES:
        raise UnavailableError(f"the identity provider's answer at {url} is over {_MAX_ANSWER_BYTES} bytes")
    return body
