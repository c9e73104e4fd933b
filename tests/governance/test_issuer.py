"""lamina's own issuer: real ES256 keys in a real key file, tokens checked by its real validator;
rotation seen without a restart, by another process's instance too; other nodes' tokens refused."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

import pytest
from joserfc import jws

from lamina.errors import AuthenticationError, ConfigurationError, RequestError
from lamina.governance.issuer import MAX_LIFETIME_S, LocalIssuer
from lamina.governance.oidc import IssuerConfig
from lamina.governance.tokens import TokenValidator

DAY = 24 * 3600


def _header(token: str) -> dict[str, object]:
    return dict(jws.extract_compact(token.encode()).headers())


def test_first_use_makes_a_private_key_file_and_the_same_issuer_after(tmp_path: Path) -> None:
    # Act
    issuer = LocalIssuer.open(tmp_path)
    again = LocalIssuer.open(tmp_path)

    # Assert
    path = tmp_path / "issuer" / "jwks.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert issuer.issuer.startswith("urn:lamina:issuer:") and again.issuer == issuer.issuer
    assert again.kids() == issuer.kids() == [issuer.current_kid]
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert LocalIssuer.open(tmp_path / "other").issuer != issuer.issuer


def test_a_token_names_the_person_and_passes_the_validator(tmp_path: Path) -> None:
    issuer = LocalIssuer.open(tmp_path)

    token = issuer.issue("alice", 600)

    claims = issuer.validator().validate(token)
    assert claims.subject == "alice" and claims.issuer == issuer.issuer
    assert claims["aud"] == "lamina" and claims["exp"] - claims["iat"] == 600
    assert claims["nbf"] == claims["iat"] and len(claims["jti"]) >= 16
    assert _header(token) == {"alg": "ES256", "kid": issuer.current_kid, "typ": "at+jwt"}
    assert issuer.issue("alice", 600) != token  # a fresh jti each time


@pytest.mark.parametrize("seconds", [0, -1, MAX_LIFETIME_S + 1, True])
def test_a_lifetime_outside_one_second_to_30_days_is_refused(tmp_path: Path, seconds: int) -> None:
    issuer = LocalIssuer.open(tmp_path)
    with pytest.raises(RequestError, match=r"expires_in_s: .* 1 to 2592000 seconds"):
        issuer.issue("alice", seconds)
    assert issuer.validator().validate(issuer.issue("alice", MAX_LIFETIME_S)).subject == "alice"


def test_a_malformed_person_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match=r"PERSON: .* cannot name a person"):
        LocalIssuer.open(tmp_path).issue("-x y")


def test_expired_and_not_yet_valid_tokens_are_refused(tmp_path: Path) -> None:
    issuer = LocalIssuer.open(tmp_path)
    validator = issuer.validator()
    expired = issuer.issue("alice", 3600, now=time.time() - 7200)
    early = issuer.issue("alice", 3600, now=time.time() + 600)  # past the 60 s leeway

    for token in (expired, early):
        with pytest.raises(AuthenticationError):
            validator.validate(token)


def test_a_tampered_token_is_refused(tmp_path: Path) -> None:
    issuer = LocalIssuer.open(tmp_path)
    head, _, signature = issuer.issue("alice").split(".")
    other_payload = issuer.issue("mallory").split(".")[1]

    with pytest.raises(AuthenticationError):
        issuer.validator().validate(f"{head}.{other_payload}.{signature}")


def test_rotation_keeps_old_tokens_valid_and_new_ones_are_seen_without_restart(tmp_path: Path) -> None:
    # Arrange: the server's issuer and validator; the CLI's own instance in "another process"
    server = LocalIssuer.open(tmp_path)
    validator = server.validator()
    before = server.issue("alice")
    assert validator.validate(before).subject == "alice"
    first_kid = server.current_kid

    # Act
    new_kid = LocalIssuer.open(tmp_path).rotate()

    # Assert: the server signs with the new key at once, and its validator finds it
    after = server.issue("bob")
    assert new_kid != first_kid and _header(after)["kid"] == new_kid == server.current_kid
    assert validator.validate(after).subject == "bob"
    assert validator.validate(before).subject == "alice"
    assert set(server.kids()) == {first_kid, new_kid}


def test_a_token_of_another_node_is_refused(tmp_path: Path) -> None:
    ours, theirs = LocalIssuer.open(tmp_path / "a"), LocalIssuer.open(tmp_path / "b")
    validator = ours.validator()
    assert validator.validate(ours.issue("alice")).subject == "alice"

    with pytest.raises(AuthenticationError):
        validator.validate(theirs.issue("alice"))


def test_retired_keys_are_dropped_at_the_first_rotation_after_their_tokens_expired(tmp_path: Path) -> None:
    issuer = LocalIssuer.open(tmp_path)
    first = issuer.current_kid
    start = time.time()

    second = issuer.rotate(now=start)
    third = issuer.rotate(now=start + 29 * DAY)  # the first key may still have live tokens
    assert issuer.kids() == [first, second, third]

    fourth = issuer.rotate(now=start + 31 * DAY)
    assert issuer.kids() == [second, third, fourth]  # the second retired only 2 days ago


def test_the_public_keys_and_the_discovery_document(tmp_path: Path) -> None:
    issuer = LocalIssuer.open(tmp_path)
    issuer.rotate()

    jwks = issuer.public_jwks()
    document = issuer.discovery("https://lamina.example/")

    assert [key["kid"] for key in jwks["keys"]] == issuer.kids()
    assert all("d" not in key and key["kty"] == "EC" and key["alg"] == "ES256" for key in jwks["keys"])
    assert document["issuer"] == issuer.issuer
    assert document["jwks_uri"] == "https://lamina.example/auth/jwks"
    assert document["token_endpoint"] == "https://lamina.example/auth/token"
    assert document["id_token_signing_alg_values_supported"] == ["ES256"]


def test_the_public_keys_validate_tokens_as_any_oidc_client_would(tmp_path: Path) -> None:
    """What /auth/jwks serves is enough: a validator given only the public documents agrees."""
    issuer = LocalIssuer.open(tmp_path)
    documents = {
        "https://lamina.example/.well-known/openid-configuration": issuer.discovery("https://lamina.example"),
        "https://lamina.example/auth/jwks": issuer.public_jwks(),
    }
    config = IssuerConfig(
        issuer=issuer.issuer,
        discovery_url="https://lamina.example/.well-known/openid-configuration",
        audience=("lamina",),
    )
    outside = TokenValidator(config, fetch=lambda url, timeout_s: json.dumps(documents[url]).encode())

    assert outside.validate(issuer.issue("alice")).subject == "alice"


def test_a_damaged_key_file_is_a_clear_error_without_its_content(tmp_path: Path) -> None:
    issuer = LocalIssuer.open(tmp_path)
    path = tmp_path / "issuer" / "jwks.json"
    data = json.loads(path.read_text())
    secret = data["keys"][0]["d"]
    data["keys"][0]["kty"] = "oct"
    path.write_text(json.dumps(data))

    with pytest.raises(ConfigurationError) as raised:
        LocalIssuer.open(tmp_path)
    assert "jwks.json: not lamina's issuer key file; restore it from a backup" in str(raised.value)
    assert secret not in str(raised.value)
    with pytest.raises(ConfigurationError):
        issuer.issue("alice")  # a running instance notices too, and signs nothing


def test_a_key_file_readable_by_others_is_made_private_again(tmp_path: Path) -> None:
    LocalIssuer.open(tmp_path)
    path = tmp_path / "issuer" / "jwks.json"
    path.chmod(0o644)

    LocalIssuer.open(tmp_path).issue("alice")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_processes_opening_a_new_node_at_once_agree_on_one_issuer(tmp_path: Path) -> None:
    found: list[str] = []

    def open_one() -> None:
        found.append(LocalIssuer.open(tmp_path).issuer)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(found) == 8 and len(set(found)) == 1
    assert LocalIssuer.open(tmp_path).issuer == found[0]
