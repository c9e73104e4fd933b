"""Sign-in with lamina's own issuer: the token endpoint of its sign-in page, and the issuer's
public discovery document and keys.

These routes are public: no bearer token is asked for (they are how one is obtained, and how
other tools check one).

``POST /auth/token``
    A form (``application/x-www-form-urlencoded``) in the shape of OAuth 2.0's resource owner
    password grant (RFC 6749 section 4.3): ``grant_type=password&username=…&password=…``, for
    lamina's own sign-in page only. 200: ``{"access_token", "token_type": "Bearer",
    "expires_in"}`` (8 hours), never cached. 401 ``invalid_grant``: a wrong person or a wrong
    password, with one message for both. 429 with ``Retry-After``: too many failures for this
    person from this client (:class:`~lamina.governance.passwords.Throttle`). 413: a body over
    8 KiB. 400: another grant type or content type, a parameter missing or repeated.
``GET /.well-known/openid-configuration``, ``GET /auth/jwks``
    The local issuer's discovery document and public keys (JWKS), so that other tools can
    validate lamina's tokens.

``GET /auth/viewer-config``, ``POST /auth/oidc/token``
    How the viewer signs in (a password, and the OpenID provider of ``[auth.viewer]`` when
    configured), and the provider's code or refresh token exchanged for the viewer as its client
    (:mod:`lamina.governance.viewer_client`): PKCE's verifier from the page, the client's secret
    from lamina's settings.

The issuer is ``request.app.state.issuer`` (a :class:`~lamina.governance.issuer.LocalIssuer`),
the passwords are in ``request.app.state.archive.catalog``.
"""

from __future__ import annotations

import math
import urllib.parse
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.errors import ThrottledError
from lamina.governance import viewer_client
from lamina.governance.issuer import LocalIssuer
from lamina.governance.passwords import Passwords, Throttle

__all__ = ["MAX_FORM_BYTES", "SIGN_IN_LIFETIME_S", "routes"]

#: The largest form accepted at the token endpoint.
MAX_FORM_BYTES = 8 * 1024
#: How long a token from the sign-in page lives: a working day.
SIGN_IN_LIFETIME_S = 8 * 3600
_FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 section 5.1


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**_NO_STORE, **(headers or {})},
    )


class _TooLargeError(Exception):
    """The body is over :data:`MAX_FORM_BYTES`."""


async def _body(request: Request) -> bytes:
    """The body, at most :data:`MAX_FORM_BYTES`; :class:`_TooLargeError` past it (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise _TooLargeError
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _TooLargeError
    return bytes(body)


def _form(body: bytes) -> dict[str, str] | str:
    """The form's fields, or what is wrong with it (RFC 6749 3.2: no parameter twice)."""
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return "the form is not UTF-8 URL-encoded text"
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            return f"the parameter {name} is given twice"
        form[name] = value
    return form


def _audit_sign_in(catalog: Catalog, person: str, client: str) -> None:
    """A sign-in on the sign-in page, in the audit log (the person, from where; never the token)."""
    with catalog.begin() as conn:
        audit.append(conn, person, "sign-in", f"person/{person}", {"client": client, "by": "password"})


def routes(throttle: Throttle | None = None) -> list[BaseRoute]:
    """The sign-in routes; ``throttle`` counts failed sign-ins for all of them (one per app)."""
    failures = throttle if throttle is not None else Throttle()

    async def sign_in_token(request: Request) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != _FORM:
            return _error(400, "invalid_request", f"send the parameters as {_FORM}")
        try:
            form = _form(await _body(request))
        except _TooLargeError:
            return _error(413, "invalid_request", f"the form is over {MAX_FORM_BYTES} bytes")
        if isinstance(form, str):
            return _error(400, "invalid_request", form)
        if form.get("grant_type") != "password":
            return _error(400, "unsupported_grant_type", "grant_type: use 'password'")
        for name in ("username", "password"):
            if not form.get(name):
                return _error(400, "invalid_request", f"{name}: missing")
        person, password = form["username"], form["password"]
        client = request.client.host if request.client else ""
        issuer: LocalIssuer = request.app.state.issuer
        passwords = Passwords(request.app.state.archive.catalog, failures)
        try:
            # argon2 and the catalog block: the thread pool does them
            ok = await run_in_threadpool(passwords.verify, person, password, client)
        except ThrottledError as error:
            retry = str(math.ceil(error.retry_after_s))
            return _error(429, "slow_down", str(error), {"Retry-After": retry})
        if not ok:
            return _error(
                401,
                "invalid_grant",
                "wrong person or password",
                {"WWW-Authenticate": 'Bearer realm="lamina"'},
            )
        token = await run_in_threadpool(issuer.issue, person, SIGN_IN_LIFETIME_S)
        await run_in_threadpool(_audit_sign_in, request.app.state.archive.catalog, person, client)
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": SIGN_IN_LIFETIME_S,
        }
        return JSONResponse(answer, headers=_NO_STORE)

    def openid_configuration(request: Request) -> Response:
        issuer: LocalIssuer = request.app.state.issuer
        return JSONResponse(issuer.discovery(str(request.base_url)))

    def issuer_jwks(request: Request) -> Response:
        issuer: LocalIssuer = request.app.state.issuer
        return JSONResponse(issuer.public_jwks(), media_type="application/jwk-set+json")

    def viewer_config(request: Request) -> Response:
        """How the viewer signs in: with a password (the node's own issuer), and, when
        ``[auth.viewer]`` is configured, at the OpenID provider by authorization code with PKCE."""
        settings = request.app.state.settings
        answer: dict[str, Any] = {"password": True, "provider": None}
        client, provider = settings.auth_viewer, settings.auth_issuer
        if client is not None and provider is not None:
            found = viewer_client.endpoints(provider)
            answer["provider"] = {
                "issuer": provider.issuer,
                "authorization_endpoint": found.authorization_endpoint,
                "end_session_endpoint": found.end_session_endpoint,
                "client_id": client.client_id,
                "scope": client.scope,
                "resource": client.resource,
            }
        return JSONResponse(answer, headers=_NO_STORE)

    async def provider_token(request: Request) -> Response:
        """The viewer's code (or refresh token) exchanged at the provider, as the viewer's client
        (its secret added here, never in the page); the provider's answer passed on."""
        settings = request.app.state.settings
        client, provider = settings.auth_viewer, settings.auth_issuer
        if client is None or provider is None:
            return _error(400, "invalid_request", "no OpenID provider is configured for the viewer")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != _FORM:
            return _error(400, "invalid_request", f"send the parameters as {_FORM}")
        try:
            form = _form(await _body(request))
        except _TooLargeError:
            return _error(413, "invalid_request", f"the form is over {MAX_FORM_BYTES} bytes")
        if isinstance(form, str):
            return _error(400, "invalid_request", form)
        status, body = await run_in_threadpool(
            viewer_client.exchange, provider, client, form, getattr(request.app.state, "userinfo", None)
        )
        return Response(body, status_code=status, media_type="application/json", headers=_NO_STORE)

    return [
        Route("/auth/viewer-config", viewer_config, methods=["GET"]),
        Route("/auth/oidc/token", provider_token, methods=["POST"]),
        Route("/auth/token", sign_in_token, methods=["POST"]),
        Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
        Route("/auth/jwks", issuer_jwks, methods=["GET"]),
    ]
