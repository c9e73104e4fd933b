"""The provider's userinfo added to a token's claims (``userinfo = true`` in ``[auth]``).

Against a real provider, oidc-provider (tests/oidc/provider.mjs): a person signs in by code at its
login form; lamina's server exchanges the code (:func:`viewer_client.exchange`) for an access
token that carries the ``acr`` but neither ``SubjectNameID`` nor ``SubjectRefPro``, which the
provider's userinfo gives, as JSON, signed (JWS) or signed then encrypted to lamina's key (JWE).
Then the bad answers, built with joserfc and read by :class:`UserinfoReader` directly (their keys
published by the unit tests' issuer on loopback), and the requests that fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwe
from joserfc.jwk import KeySet, RSAKey

from lamina.errors import AuthenticationError, ConfigurationError, UnavailableError
from lamina.governance.claims import ClaimsMapping, Membership
from lamina.governance.oidc import IssuerConfig, IssuerKeys
from lamina.governance.roles import Role
from lamina.governance.tokens import INVALID_TOKEN, Claims, TokenValidator
from lamina.governance.userinfo import (
    MAX_USERINFO_BYTES,
    Userinfo,
    UserinfoReader,
    fetch_userinfo,
    merge,
)
from lamina.governance.viewer_client import ViewerClient, exchange
from tests.governance.issuer import AUDIENCE, Issuer, make_key, serve_issuer
from tests.governance.test_claims import PSC_RULES
from tests.governance.test_oidc_provider import Provider, provider

__all__ = ["provider", "sign_in"]

REDIRECT = "http://127.0.0.1/"
PATHOLOGIST = (
    Membership("690781810", Role.PATHOLOGIST),
    Membership("750712184", Role.LAB_ADMIN),
    Membership("750712184", Role.PATHOLOGIST),
)


def sign_in(issuer: str, client_id: str, login: str = "pathologist") -> dict[str, str]:
    """The form lamina's server gets from the viewer after ``login`` signed in at the provider's
    login form for ``client_id`` (authorization code, PKCE S256)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "resource": "urn:lamina",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
    }
    with httpx.Client(base_url=issuer, timeout=10) as browser:
        answer = browser.get("/auth", params=query)
        while answer.is_redirect:
            location = answer.headers["location"]
            if location.startswith(REDIRECT):
                code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
                return {
                    "grant_type": "authorization_code",
                    "code": code,
                    "code_verifier": verifier,
                    "redirect_uri": REDIRECT,
                }
            answer = browser.get(location)
            if answer.status_code == 200 and "/interaction/" in str(answer.url):
                answer = browser.post(
                    answer.url.path, data={"prompt": "login", "login": login, "password": "any"}
                )
        raise AssertionError(f"no code: HTTP {answer.status_code} {answer.text[:300]}")


def _recording(seen: list[tuple[str, int]]) -> Any:
    """:func:`fetch_userinfo`, noting each answer's content type and JWT parts."""

    def fetch(url: str, token: str, timeout_s: float) -> tuple[str, bytes]:
        content_type, body = fetch_userinfo(url, token, timeout_s)
        seen.append((content_type.split(";")[0], body.count(b".") + 1))
        return content_type, body

    return fetch


@pytest.mark.parametrize(
    ("client_id", "shape"),
    [
        ("psc-userinfo-json", ("application/json", None)),
        ("psc-userinfo-jws", ("application/jwt", 3)),
        ("psc-userinfo-jwe", ("application/jwt", 5)),
    ],
)
def test_subject_ref_pro_comes_from_the_providers_userinfo(
    provider: Provider, client_id: str, shape: tuple[str, int | None]
) -> None:
    config = provider.config(
        required_acr=("eidas1",), userinfo=True, decryption_keys=KeySet([provider.decryption_key])
    )
    validator = TokenValidator(config)
    seen: list[tuple[str, int]] = []
    userinfo = Userinfo(UserinfoReader(config, validator.keys, [client_id]), fetch=_recording(seen))
    client = ViewerClient(client_id, resource="urn:lamina", client_secret=f"{client_id}-secret")
    # Act: lamina's server exchanges the code, and reads the userinfo then
    status, body = exchange(config, client, sign_in(provider.issuer, client_id), userinfo)
    token = json.loads(body)["access_token"]
    claims = userinfo.claims(token, validator.validate(token))
    again = userinfo.claims(token, validator.validate(token))
    # Assert: the token has the acr, not the person's record; the userinfo gives it
    assert status == 200
    alone = validator.validate(token)
    assert "SubjectRefPro" not in alone and "SubjectNameID" not in alone
    assert len(seen) == 1 and seen[0][0] == shape[0]
    if shape[1] is not None:
        assert seen[0][1] == shape[1]
    assert claims.acr == "eidas1" and claims.issuer == provider.issuer
    identity = ClaimsMapping.from_mapping(PSC_RULES).identity(claims)
    assert identity.person == "810000000001"
    assert identity.memberships == PATHOLOGIST
    assert dict(again) == dict(claims) and userinfo.fetches == 1  # kept until the token's exp


def test_the_token_alone_is_refused_at_a_userinfo_that_wants_a_token_for_itself(provider: Provider) -> None:
    """oidc-provider refuses lamina's token (it has an audience) at userinfo: 401 -> invalid_token."""
    config = provider.config(userinfo=True)
    validator = TokenValidator(config)
    userinfo = Userinfo(UserinfoReader(config, validator.keys, ["psc-userinfo-jws"]))
    client = ViewerClient("psc-userinfo-jws", resource="urn:lamina", client_secret="psc-userinfo-jws-secret")
    _, body = exchange(config, client, sign_in(provider.issuer, "psc-userinfo-jws"))  # no userinfo read
    token = json.loads(body)["access_token"]
    with pytest.raises(AuthenticationError) as caught:
        userinfo.claims(token, validator.validate(token))
    assert caught.value.error == "invalid_token" and str(caught.value) == INVALID_TOKEN
    assert userinfo.fetches == 1


# -- bad answers, read directly -------------------------------------------------------------------


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with serve_issuer() as served:
        yield served


def _config(issuer: Issuer, **overrides: Any) -> IssuerConfig:
    fields: dict[str, Any] = {"issuer": issuer.url, "discovery_url": issuer.discovery_url}
    return IssuerConfig(**{**fields, "audience": (AUDIENCE,), "userinfo": True, **overrides})


def _reader(issuer: Issuer, **overrides: Any) -> UserinfoReader:
    config = _config(issuer, **overrides)
    return UserinfoReader(config, IssuerKeys(config), ["lamina-viewer"])


def _signed(issuer: Issuer, **claims: Any) -> bytes:
    return issuer.token(**{"aud": "lamina-viewer", "SubjectNameID": "810000000001", **claims}).encode()


def _encrypted(key: RSAKey, plaintext: bytes) -> bytes:
    protected = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": key.kid}
    return jwe.encrypt_compact(protected, plaintext, key, algorithms=["RSA-OAEP-256", "A256GCM"]).encode()


def _refused(reader: UserinfoReader, body: bytes, content_type: str = "application/jwt") -> None:
    with pytest.raises(AuthenticationError) as caught:
        reader.read(body, content_type)
    assert caught.value.error == "invalid_token" and str(caught.value) == INVALID_TOKEN


def test_a_signed_userinfo_is_verified_with_the_issuers_keys(issuer: Issuer) -> None:
    reader = _reader(issuer)
    assert reader.read(_signed(issuer), "application/jwt; charset=utf-8")["SubjectNameID"] == "810000000001"
    assert reader.read(_signed(issuer, aud=None), "application/jwt")["sub"] == "alice"
    # a bad signature, another issuer, another client, an expired one, an algorithm not allowed
    head, payload, _ = _signed(issuer).decode().split(".")
    _refused(reader, f"{head}.{payload}.{_signed(issuer, sub='mallory').decode().split('.')[2]}".encode())
    _refused(reader, issuer.token(make_key(kid="key-1"), aud="lamina-viewer").encode())
    _refused(reader, _signed(issuer, iss="https://another.example"))
    _refused(reader, _signed(issuer, aud="another-client"))
    _refused(reader, _signed(issuer, exp=int(time.time()) - 3600))
    _refused(reader, b'{"sub": "alice"}')  # JSON sent as a JWT
    _refused(reader, b"[1, 2]", "application/json")


def test_an_encrypted_userinfo_must_be_signed_inside_unless_allowed(issuer: Issuer) -> None:
    key = RSAKey.generate_key(2048, {"kid": "lamina-enc", "use": "enc", "alg": "RSA-OAEP-256"})
    plain = json.dumps({"sub": "alice", "SubjectNameID": "810000000001"}).encode()
    reader = _reader(issuer, decryption_keys=KeySet([key]))
    # Act / Assert: a signed userinfo encrypted to lamina's key is opened and verified
    assert reader.read(_encrypted(key, _signed(issuer)), "application/jwt")["SubjectNameID"] == "810000000001"
    _refused(reader, _encrypted(key, plain))  # anyone may encrypt to lamina's public key
    _refused(_reader(issuer), _encrypted(key, _signed(issuer)))  # no decryption key configured
    other = RSAKey.generate_key(2048, {"kid": "lamina-enc", "use": "enc", "alg": "RSA-OAEP-256"})
    _refused(reader, _encrypted(other, _signed(issuer)))
    allowing = _reader(issuer, decryption_keys=KeySet([key]), userinfo_unsigned_jwe=True)
    assert allowing.read(_encrypted(key, plain), "application/jwt")["SubjectNameID"] == "810000000001"


def test_an_oversized_or_untyped_answer_is_a_provider_fault(issuer: Issuer) -> None:
    reader = _reader(issuer)
    big = json.dumps({"sub": "alice", "pad": "x" * MAX_USERINFO_BYTES}).encode()
    with pytest.raises(UnavailableError, match="over 65536 bytes"):
        reader.read(big, "application/json")
    with pytest.raises(UnavailableError, match="text/html"):
        reader.read(b"<html>", "text/html")


def test_the_userinfo_adds_claims_and_cannot_change_the_tokens(issuer: Issuer) -> None:
    now = int(time.time())
    token = Claims({"iss": issuer.url, "aud": AUDIENCE, "sub": "alice", "exp": now + 300, "acr": "eidas1"})
    answer = {"sub": "alice", "acr": "eidas3", "exp": now + 9999, "iss": "x", "SubjectNameID": "8"}
    merged = merge(token, answer)
    assert dict(merged) == {**token, "SubjectNameID": "8"}
    for other in ({"sub": "bob", "SubjectNameID": "8"}, {"SubjectNameID": "8"}):
        with pytest.raises(AuthenticationError) as caught:
            merge(token, other)
        assert str(caught.value) == INVALID_TOKEN


def test_the_userinfo_is_kept_until_the_token_expires_in_a_bounded_cache(provider: Provider) -> None:
    """(The provider's discovery document names its userinfo endpoint; the answers are counted here.)"""
    clock = [1000.0]
    asked: list[str] = []

    def fetch(url: str, token: str, timeout_s: float) -> tuple[str, bytes]:
        asked.append(token)
        return "application/json", json.dumps({"sub": "alice", "n": len(asked)}).encode()

    config = provider.config(userinfo=True)
    reader = UserinfoReader(config, IssuerKeys(config))
    userinfo = Userinfo(reader, fetch=fetch, clock=lambda: clock[0], cache_size=2)
    claims = Claims({"iss": provider.issuer, "aud": AUDIENCE, "sub": "alice", "exp": 1100})
    # Act / Assert: kept until exp, then asked again; the least recently used dropped past 2 tokens
    assert userinfo.claims("t1", claims)["n"] == 1
    clock[0] = 1099.0
    assert userinfo.claims("t1", claims)["n"] == 1
    clock[0] = 1100.0
    assert userinfo.claims("t1", claims)["n"] == 2
    userinfo.claims("t2", claims)
    userinfo.claims("t3", claims)
    assert len(userinfo) == 2
    assert userinfo.claims("t1", claims)["n"] == 5
    assert asked == ["t1", "t1", "t2", "t3", "t1"] and userinfo.fetches == 5


def test_the_request_refuses_redirects_and_names_the_url_not_the_token(issuer: Issuer) -> None:
    token = "secret-token-value"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{closed.getsockname()[1]}/userinfo"
    for url, message in [
        (down, "did not answer"),
        (f"{issuer.url}/moved", "follows no redirect"),
        (f"{issuer.url}/nothing", "HTTP 404"),
    ]:
        with pytest.raises(UnavailableError, match=message) as caught:
            fetch_userinfo(url, token, 2.0)
        assert url in str(caught.value) and token not in str(caught.value)


def test_a_discovery_document_without_userinfo_endpoint_is_a_provider_fault(issuer: Issuer) -> None:
    userinfo = Userinfo(_reader(issuer))
    claims = Claims({"iss": issuer.url, "aud": AUDIENCE, "sub": "alice", "exp": time.time() + 300})
    with pytest.raises(UnavailableError, match="no usable userinfo_endpoint"):
        userinfo.claims("t1", claims)


def test_the_settings_name_a_bad_userinfo_value(issuer: Issuer) -> None:
    table = {"issuer": issuer.url, "discovery_url": issuer.discovery_url, "audience": AUDIENCE}
    assert IssuerConfig.from_mapping({**table, "userinfo": True}).userinfo
    assert not IssuerConfig.from_mapping(table).userinfo
    with pytest.raises(ConfigurationError, match=r"auth\.userinfo: expected true or false"):
        IssuerConfig.from_mapping({**table, "userinfo": "yes"})
