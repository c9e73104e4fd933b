"""The tests' signed-in HTTP client: every lamina server a test starts has sign-in on, as in
production, and the tests talk to it as a person of a lab, with a real token.

:func:`sign_in_operator` registers, on the archive a server serves, the tests' lab
(:data:`TEST_LAB`) and its operator (:data:`OPERATOR`: pathologist, technician and lab admin
there), issues a token from the node's own issuer (the keys in ``$LAMINA_HOME``, which the
server reads), and remembers it for the server's port. :data:`signed` is httpx's functions with
that token sent to that port (``Authorization: Bearer ...``), and nothing added for any other
address. ``tests.support.serving`` signs in for every app it serves unless told not to; a test
of sign-in itself uses httpx alone, or its own people and tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from lamina.archive.catalog import Catalog
from lamina.errors import RequestError
from lamina.governance.issuer import LocalIssuer
from lamina.governance.registry import Registry
from lamina.governance.roles import Role

#: The tests' lab (a FINESS number: 75, Paris, with its check digit)
TEST_LAB = "750712184"
OPERATOR = "test-operator"
OPERATOR_ROLES = (Role.PATHOLOGIST, Role.TECHNICIAN, Role.LAB_ADMIN)

_TOKENS: dict[int, str] = {}


def register_operator(catalog: Catalog) -> None:
    """The tests' lab and operator on ``catalog`` (kept if there: idempotent). On a catalog
    without labs, the lab adopts what was stored before (the first lab does)."""
    registry = Registry(catalog)
    if TEST_LAB not in {tenant.finess for tenant in registry.tenants()}:
        with contextlib.suppress(RequestError):  # added by another server on the same catalog
            registry.add_tenant(TEST_LAB, "Anatomie pathologique (tests)", "tests")
    known = registry.known_person(OPERATOR)
    if known is None or not set(OPERATOR_ROLES) <= known.roles_in(TEST_LAB):
        registry.add_person(OPERATOR, TEST_LAB, OPERATOR_ROLES, "Test operator", "tests")


def sign_in_operator(catalog: Catalog, home: Any, port: int) -> str:
    """Register the operator on ``catalog``, issue its token from the issuer of ``home`` (the
    server's ``$LAMINA_HOME``), and send it to ``port`` from now on; the token."""
    register_operator(catalog)
    token = LocalIssuer.open(home).issue(OPERATOR, 6 * 3600)
    _TOKENS[port] = token
    return token


def token_for(port: int) -> str | None:
    """The token sent to the server on ``port``, if the tests signed in there."""
    return _TOKENS.get(port)


def forget(port: int) -> None:
    _TOKENS.pop(port, None)


def auth_headers(url: str | httpx.URL, headers: Any = None) -> dict[str, str]:
    """``headers`` with the operator's token for the server of ``url``, when signed in there and
    no Authorization is given."""
    merged = dict(httpx.Headers(headers or {}))
    token = _TOKENS.get(httpx.URL(str(url)).port or 0)
    if token is not None and not any(name.lower() == "authorization" for name in merged):
        merged["Authorization"] = f"Bearer {token}"
    return merged


class _Signed:
    """httpx's module-level functions, signed in (see the module's documentation)."""

    def request(self, method: str, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        kwargs["headers"] = auth_headers(url, kwargs.get("headers"))
        return httpx.request(method, url, **kwargs)

    def get(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def options(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        return self.request("OPTIONS", url, **kwargs)

    @contextlib.contextmanager
    def stream(self, method: str, url: str | httpx.URL, **kwargs: Any) -> Iterator[httpx.Response]:
        kwargs["headers"] = auth_headers(url, kwargs.get("headers"))
        with httpx.stream(method, url, **kwargs) as response:
            yield response


signed = _Signed()


def dicomweb_client(url: str) -> Any:
    """dicomweb-client's ``DICOMwebClient`` on ``url``, sending the operator's token as any
    signed-in client does (its ``headers``)."""
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url, headers=auth_headers(url))


def colleague_token(catalog: Catalog, home: Any, person: str, roles: Any = (Role.PATHOLOGIST,)) -> str:
    """A token of another person of the tests' lab (registered with ``roles`` there)."""
    register_operator(catalog)
    Registry(catalog).add_person(person, TEST_LAB, roles, "", "tests")
    return LocalIssuer.open(home).issue(person, 6 * 3600)


def sign_in_process(settings: Any, port: int) -> str:
    """:func:`sign_in_operator` for a ``lamina serve`` process on ``port`` serving ``settings``'s
    archive (its catalog opened here for the registration)."""
    catalog = Catalog.open(settings.database_url)
    try:
        return sign_in_operator(catalog, settings.home, port)
    finally:
        catalog.close()
