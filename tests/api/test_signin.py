"""The sign-in routes served by uvicorn on loopback, on both catalogs: a password exchanged for a
token the node's validator accepts, one answer for a wrong person and a wrong password, 429 with
Retry-After while throttled, 413 past 8 KiB; the public discovery document and keys validate
lamina's tokens with the network fetch any OIDC client uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from starlette.applications import Starlette

from lamina.api import signin
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.errors import AuthenticationError
from lamina.governance.issuer import LocalIssuer
from lamina.governance.oidc import IssuerConfig
from lamina.governance.passwords import Passwords, Throttle
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.governance.tokens import TokenValidator
from tests.support import serving

LYON = "690781810"
SECRET = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Server(NamedTuple):
    url: str
    issuer: LocalIssuer
    clock: Clock


@pytest.fixture
def server(archive: Archive, tmp_path: Path) -> Iterator[Server]:
    registry = Registry(archive.catalog)
    registry.add_tenant(LYON, "Anatomie pathologique, HCL")
    registry.add_person("alice", LYON, [Role.PATHOLOGIST])
    Passwords(archive.catalog).set("alice", SECRET, "operator:test")
    clock = Clock()
    app = Starlette(routes=signin.routes(Throttle(clock=clock)))
    app.state.issuer = LocalIssuer.open(tmp_path / "node")
    app.state.archive = archive
    with serving(app) as port:
        yield Server(f"http://127.0.0.1:{port}", app.state.issuer, clock)


def _sign_in(server: Server, username: str, password: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "password", "username": username, "password": password, **extra}
    return httpx.post(f"{server.url}/auth/token", data=form, timeout=30)


def test_a_right_password_gets_a_token_the_node_accepts(server: Server, archive: Archive) -> None:
    # Act
    answer = _sign_in(server, "alice", SECRET)

    # Assert
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 8 * 3600
    assert answer.headers["cache-control"] == "no-store"
    claims = server.issuer.validator().validate(body["access_token"])
    assert claims.subject == "alice" and claims["exp"] - claims["iat"] == 8 * 3600
    with archive.catalog.begin() as conn:
        (entry,) = [e for e in audit.entries(conn, action="sign-in")]
    assert (entry.actor, entry.detail) == ("alice", {"client": "127.0.0.1", "by": "password"})
    assert body["access_token"] not in str(entry) and SECRET not in str(entry)


def test_a_wrong_password_and_an_unknown_person_get_the_same_answer(server: Server) -> None:
    wrong = _sign_in(server, "alice", "not the right passphrase")
    unknown = _sign_in(server, "nobody", SECRET)

    for answer in (wrong, unknown):
        assert answer.status_code == 401
        assert answer.json() == {"error": "invalid_grant", "error_description": "wrong person or password"}
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert SECRET not in unknown.text


def test_failures_are_throttled_with_retry_after_then_a_success_resets(server: Server) -> None:
    assert _sign_in(server, "alice", "not the right passphrase").status_code == 401

    throttled = _sign_in(server, "alice", SECRET)  # the right one, too early
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1"
    assert throttled.json()["error"] == "slow_down"

    server.clock.now += 1
    assert _sign_in(server, "alice", "not the right passphrase").status_code == 401
    assert _sign_in(server, "alice", SECRET).headers["retry-after"] == "2"
    server.clock.now += 2
    assert _sign_in(server, "alice", SECRET).status_code == 200
    assert _sign_in(server, "alice", "not the right passphrase").status_code == 401  # waits 1 s again
    assert _sign_in(server, "alice", SECRET).headers["retry-after"] == "1"


def test_a_form_over_8_kib_is_refused(server: Server) -> None:
    answer = _sign_in(server, "alice", SECRET, padding="x" * 9000)
    assert answer.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: read up to the limit, no further
        yield b"grant_type=password&username=alice&password="
        for _ in range(10):
            yield b"x" * 1024

    streamed = httpx.post(
        f"{server.url}/auth/token",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("form", "error"),
    [
        (
            {"grant_type": "client_credentials", "username": "alice", "password": SECRET},
            "unsupported_grant_type",
        ),
        ({"grant_type": "password", "username": "alice"}, "invalid_request"),
    ],
)
def test_other_grants_and_missing_parameters_are_bad_requests(
    server: Server, form: dict[str, str], error: str
) -> None:
    answer = httpx.post(f"{server.url}/auth/token", data=form, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"] == error


def test_json_and_repeated_parameters_are_bad_requests(server: Server) -> None:
    as_json = httpx.post(
        f"{server.url}/auth/token",
        json={"grant_type": "password", "username": "alice", "password": SECRET},
        timeout=30,
    )
    twice = httpx.post(
        f"{server.url}/auth/token",
        content=f"grant_type=password&username=alice&username=bob&password={SECRET}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert as_json.status_code == 400 and "application/x-www-form-urlencoded" in as_json.text
    assert twice.status_code == 400 and "username is given twice" in twice.text


def test_the_discovery_document_and_keys_validate_tokens_over_http(server: Server, tmp_path: Path) -> None:
    # Arrange: a validator as any other tool configures it, fetching over the network
    document = httpx.get(f"{server.url}/.well-known/openid-configuration", timeout=30).json()
    assert document["issuer"] == server.issuer.issuer
    assert document["token_endpoint"] == f"{server.url}/auth/token"
    jwks = httpx.get(document["jwks_uri"], timeout=30)
    assert jwks.headers["content-type"] == "application/jwk-set+json"
    assert all("d" not in key for key in jwks.json()["keys"])
    outside = TokenValidator(
        IssuerConfig(
            issuer=document["issuer"],
            discovery_url=f"{server.url}/.well-known/openid-configuration",
            audience=("lamina",),
        )
    )
    token = _sign_in(server, "alice", SECRET).json()["access_token"]

    # Act / Assert
    assert outside.validate(token).subject == "alice"
    with pytest.raises(AuthenticationError):
        outside.validate(
            LocalIssuer.open(Path(server.issuer.path).parent.parent / "elsewhere").issue("alice")
        )
