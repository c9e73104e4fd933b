"""``Authenticate`` reuses a keep-alive connection's principal for the same Authorization header
(a viewer's tile burst), never for another header on that connection, and not past its bound."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import State

from lamina.api import auth
from lamina.api.auth import Authenticate
from lamina.archive.archive import Archive
from lamina.governance.decide import Principal
from lamina.governance.issuer import LocalIssuer
from lamina.governance.principals import Principals, TrustedIssuer
from lamina.governance.registry import Registry
from lamina.governance.roles import Role

LYON, NICE = "690781810", "060785011"


class _Owner:
    def __init__(self, principals: Principals) -> None:
        self.state = State()
        self.state.principals = principals


def _principal_of(layer: Authenticate, header: bytes | None, client: tuple[str, int]) -> Any:
    seen: dict[str, Any] = {}

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope["state"])

    layer.app = inner
    headers = [(b"host", b"lamina")] + ([(b"authorization", header)] if header else [])
    asyncio.run(layer({"type": "http", "headers": headers, "client": client}, None, None))  # type: ignore[arg-type]
    return seen


@pytest.fixture
def layer(archive: Archive, tmp_path: Path) -> tuple[Authenticate, LocalIssuer, Registry]:
    registry = Registry(archive.catalog)
    registry.add_tenant(LYON, "HCL")
    registry.add_tenant(NICE, "Nice")
    registry.add_person("dr-lyon", LYON, [Role.PATHOLOGIST])
    registry.add_person("dr-nice", NICE, [Role.PATHOLOGIST])
    issuer = LocalIssuer.open(archive.settings.home)
    principals = Principals(archive.catalog, [TrustedIssuer(issuer.validator())])
    return Authenticate(None, _Owner(principals)), issuer, registry  # type: ignore[arg-type]


def test_a_connection_keeps_its_principal_for_the_same_header_only(
    layer: tuple[Authenticate, LocalIssuer, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    authenticate, issuer, _ = layer
    lyon = b"Bearer " + issuer.issue("dr-lyon").encode()
    nice = b"Bearer " + issuer.issue("dr-nice").encode()
    client = ("127.0.0.1", 50000)

    first = _principal_of(authenticate, lyon, client)["principal"]
    again = _principal_of(authenticate, lyon, client)["principal"]
    other = _principal_of(authenticate, nice, client)["principal"]  # the same connection, another token
    none = _principal_of(authenticate, None, client)
    tampered = _principal_of(authenticate, lyon[:-3] + b"AAA", client)

    assert isinstance(first, Principal) and first.id == "dr-lyon" and again is first
    assert isinstance(other, Principal) and other.id == "dr-nice"
    assert none["principal"] is None and none["token_refused"] is None
    assert tampered["principal"] is None and tampered["token_refused"] is not None


def test_a_connections_principal_is_asked_again_past_its_bound(
    layer: tuple[Authenticate, LocalIssuer, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    authenticate, issuer, registry = layer
    header = b"Bearer " + issuer.issue("dr-lyon").encode()
    client = ("127.0.0.1", 50001)
    first = _principal_of(authenticate, header, client)["principal"]
    registry.remove_roles("dr-lyon", LYON)
    owner_principals: Principals = authenticate.owner.state.principals  # type: ignore[attr-defined]
    owner_principals.forget()  # as if the principals' own bound had passed
    # within the connection's bound: the same answer
    assert _principal_of(authenticate, header, client)["principal"] is first
    # past it: asked again, and the role taken away is seen
    monkeypatch.setattr(auth, "_CONNECTION_S", 0.0)
    authenticate._connections.clear()
    later = _principal_of(authenticate, header, client)["principal"]
    assert later is not first and later.roles.get(LYON, frozenset()) == frozenset()
