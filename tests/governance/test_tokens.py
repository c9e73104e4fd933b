"""Bearer token validation against a real HTTP issuer on loopback (keys and tokens made with
joserfc here): every bad token of issue 10 is a 401 ``invalid_token`` with a message that neither
says which check failed nor repeats the token; key rotation through one rate-limited refetch;
leeway; acr; the cache; encrypted (JWE) tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwe
from joserfc.jwk import KeySet, RSAKey

from lamina.errors import AuthenticationError, ConfigurationError, UnavailableError
from lamina.governance.oidc import MAX_DOCUMENT_BYTES, IssuerConfig, IssuerKeys
from lamina.governance.tokens import TokenValidator
from tests.governance.issuer import AUDIENCE, Issuer, make_key, serve_issuer

GENERIC = "the bearer token is not valid; sign in again to get a new one"


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with serve_issuer() as served:
        yield served


def config(issuer: Issuer, **overrides: Any) -> IssuerConfig:
    fields: dict[str, Any] = {
        "issuer": issuer.url,
        "discovery_url": issuer.discovery_url,
        "audience": (AUDIENCE,),
    }
    return IssuerConfig(**{**fields, **overrides})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refused(validator: TokenValidator, token: str) -> AuthenticationError:
    """Assert that ``token`` is refused as issue 10 says, and return the error."""
    with pytest.raises(AuthenticationError) as caught:
        validator.validate(token)
    assert caught.value.error == "invalid_token"
    assert str(caught.value) == GENERIC
    assert not token or token not in str(caught.value)
    return caught.value


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_a_token_signed_by_the_issuer_gives_its_claims(issuer: Issuer, alg: str) -> None:
    issuer.keys[:] = [make_key(alg)]
    validator = TokenValidator(config(issuer))
    # Act
    claims = validator.validate(issuer.token(SubjectNameID="810000000001"))
    # Assert
    assert claims.issuer == issuer.url
    assert claims.subject == "alice"
    assert claims["SubjectNameID"] == "810000000001"
    assert "810000000001" not in repr(claims)


def _none(issuer: Issuer) -> str:
    header = b64(json.dumps({"alg": "none", "kid": issuer.keys[0].kid}).encode())
    payload = json.loads(base64.urlsafe_b64decode(issuer.token().split(".")[1] + "=="))
    return f"{header}.{b64(json.dumps(payload).encode())}."


def _hs256_with_the_public_key(issuer: Issuer) -> str:
    """The classic confusion: HMAC keyed with the issuer's public key, which anyone can fetch."""
    key = issuer.keys[0]
    assert isinstance(key, RSAKey)
    secret = key.as_pem(private=False)
    header = b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}).encode())
    payload = issuer.token().split(".")[1]
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def _tampered(issuer: Issuer) -> str:
    header, payload, signature = issuer.token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "mallory"
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def _signed_with_another_alg(issuer: Issuer, alg: str) -> str:
    """Signed by the issuer's key, whose JWK names no ``alg``, with an ``alg`` lamina does not allow."""
    issuer.keys[0] = RSAKey.generate_key(2048, {"kid": "key-1", "use": "sig"})
    return issuer.token(alg=alg)


BAD_TOKENS: dict[str, Callable[[Issuer], str]] = {
    "empty": lambda issuer: "",
    "not a JWT": lambda issuer: "opaque-token-value",
    "three garbage parts": lambda issuer: "abc.def.ghi",
    "not JSON inside": lambda issuer: f"{b64(b'{')}.{b64(b'[')}.{b64(b'x')}",
    "too long": lambda issuer: issuer.token(padding="x" * 40_000),
    "not ASCII": lambda issuer: issuer.token() + "é",
    "expired": lambda issuer: issuer.token(exp=int(time.time()) - 3600),
    "not yet valid": lambda issuer: issuer.token(nbf=int(time.time()) + 3600),
    "issued in the future": lambda issuer: issuer.token(iat=int(time.time()) + 3600),
    "without exp": lambda issuer: issuer.token(exp=None),
    "wrong audience": lambda issuer: issuer.token(aud="another-service"),
    "without audience": lambda issuer: issuer.token(aud=None),
    "wrong issuer": lambda issuer: issuer.token(iss="https://evil.example"),
    "tampered": _tampered,
    "alg none": _none,
    "HS256 keyed with the public key": _hs256_with_the_public_key,
    "unknown key": lambda issuer: issuer.token(make_key(kid="key-1")),
    "unknown kid": lambda issuer: issuer.token(make_key(kid="other")),
    "RS512, not in the allow-list": lambda issuer: _signed_with_another_alg(issuer, "RS512"),
    "encrypted, no decryption key": lambda issuer: _encrypt(issuer.token(), make_key("RSA-OAEP-256")),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_every_bad_token_is_refused_as_invalid_token_without_detail(
    issuer: Issuer, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    validator = TokenValidator(config(issuer))
    token = BAD_TOKENS[case](issuer)
    # Act
    with caplog.at_level(logging.DEBUG, logger="lamina.governance"):
        refused(validator, token)
    # Assert: the reason is logged for the operator, never the token
    assert "refused" in caplog.text
    if token:
        assert token not in caplog.text
        assert token.split(".")[-1] not in caplog.text or token.endswith(".")


@pytest.mark.parametrize("alg", ["none", "HS256", "hs512"])
def test_none_and_hmac_are_refused_in_the_configuration(alg: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^algorithms: .*refused"):
        IssuerConfig("https://idp.example", "https://idp.example/d", ("lamina",), algorithms=("RS256", alg))


def test_an_unknown_kid_is_fetched_once_and_rate_limited(issuer: Issuer) -> None:
    # the keys' clock is the test's, so that the machine's load cannot open the interval early
    now = [0.0]
    validator = TokenValidator(config(issuer, refetch_interval_s=60))
    validator.keys = IssuerKeys(validator.config, clock=lambda: now[0])
    validator.validate(issuer.token())
    assert validator.keys.fetches == 1
    rotated = make_key("ES256", kid="key-2")
    issuer.keys.append(rotated)
    # Act: a token of the new key makes one refetch, and passes
    assert validator.validate(issuer.token(rotated)).subject == "alice"
    assert validator.keys.fetches == 2
    # Act: unknown kids right after are refused without asking the issuer again
    now[0] += 59
    for n in range(5):
        refused(validator, issuer.token(make_key("ES256", kid=f"forged-{n}")))
    assert validator.keys.fetches == 2
    # ... until the interval has passed
    now[0] += 2
    refused(validator, issuer.token(make_key("ES256", kid="forged-late")))
    assert validator.keys.fetches == 3


def test_leeway_on_exp_nbf_and_iat(issuer: Issuer) -> None:
    now = time.time()
    validator = TokenValidator(config(issuer, leeway_s=60), clock=lambda: now)
    t = int(now)
    for claims in ({"exp": t - 30}, {"nbf": t + 30}, {"iat": t + 30}):
        validator.validate(issuer.token(**claims))
    for claims in ({"exp": t - 90}, {"nbf": t + 90}, {"iat": t + 90}):
        refused(validator, issuer.token(**claims))


def test_a_required_acr_refuses_a_lower_one(issuer: Issuer) -> None:
    validator = TokenValidator(config(issuer, required_acr=("eidas1",)))
    assert validator.validate(issuer.token(acr="eidas1")).acr == "eidas1"
    refused(validator, issuer.token(acr="eidas0"))
    refused(validator, issuer.token())


def test_a_validated_token_is_served_from_the_cache_until_exp(issuer: Issuer) -> None:
    now = [time.time()]
    validator = TokenValidator(config(issuer, leeway_s=0), clock=lambda: now[0])
    token = issuer.token(exp=int(now[0]) + 60)
    first = validator.validate(token)
    issuer.keys.clear()  # the issuer no longer vouches for it: only the cache can answer
    # Act
    again = validator.validate(token)
    # Assert
    assert again is first
    assert validator.verified == 1
    now[0] += 61
    refused(validator, token)
    assert validator.verified == 2


def test_the_cache_is_bounded(issuer: Issuer) -> None:
    validator = TokenValidator(config(issuer), cache_size=3)
    tokens = [issuer.token(jti=str(n)) for n in range(5)]
    for token in tokens:
        validator.validate(token)
    validator.validate(tokens[-1])
    assert validator.verified == 5
    validator.validate(tokens[0])  # pushed out: verified again
    assert validator.verified == 6


def test_concurrent_requests_fetch_the_keys_once(issuer: Issuer) -> None:
    validator = TokenValidator(config(issuer))
    tokens = [issuer.token(jti=str(n)) for n in range(64)]
    with ThreadPoolExecutor(8) as pool:
        subjects = list(pool.map(lambda token: validator.validate(token).subject, tokens))
    assert subjects == ["alice"] * 64
    assert validator.keys.fetches == 1


def _encrypt(signed: str, key: Any, alg: str = "RSA-OAEP-256") -> str:
    header = {"alg": alg, "enc": "A256GCM", "cty": "JWT", "kid": key.kid}
    return jwe.encrypt_compact(header, signed, key, algorithms=[alg, "A256GCM"])


def test_an_encrypted_token_wrapping_a_signed_one_is_accepted(issuer: Issuer) -> None:
    lamina_key = make_key("RSA-OAEP-256", kid="lamina-enc")
    validator = TokenValidator(config(issuer, decryption_keys=KeySet([lamina_key])))
    # Act
    claims = validator.validate(_encrypt(issuer.token(acr="eidas1"), lamina_key))
    # Assert
    assert claims.acr == "eidas1"
    # an encrypted token is no signature: plain claims inside are refused, and so are bad ones
    refused(validator, _encrypt(json.dumps({"iss": issuer.url, "aud": AUDIENCE, "sub": "x"}), lamina_key))
    refused(validator, _encrypt(_tampered(issuer), lamina_key))
    refused(validator, _encrypt(issuer.token(), make_key("RSA-OAEP-256", kid="lamina-enc")))


def test_rsa1_5_is_refused_for_encrypted_tokens(issuer: Issuer) -> None:
    with pytest.raises(ConfigurationError, match=r"^encryption_algorithms: RSA1_5"):
        config(issuer, encryption_algorithms=("RSA1_5", "A256GCM"))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_issuer_is_unavailable_not_invalid(issuer: Issuer) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    unreachable = config(issuer, discovery_url=f"{url}/.well-known/openid-configuration", timeout_s=2)
    validator = TokenValidator(unreachable)
    with pytest.raises(UnavailableError, match="did not answer"):
        validator.validate(issuer.token())


def test_a_discovery_document_of_another_issuer_is_not_believed(issuer: Issuer) -> None:
    issuer.discovery_issuer = "https://evil.example"
    with pytest.raises(UnavailableError, match="does not name the issuer"):
        TokenValidator(config(issuer)).validate(issuer.token())


def test_an_oversized_jwks_is_refused(issuer: Issuer) -> None:
    issuer.jwks_body = b" " * (MAX_DOCUMENT_BYTES + 1)
    with pytest.raises(UnavailableError, match="over"):
        TokenValidator(config(issuer)).validate(issuer.token())


def test_symmetric_keys_in_the_jwks_are_never_used(issuer: Issuer) -> None:
    """A JWKS is public: an ``oct`` key in it is a secret everyone has."""
    secret = b"0123456789abcdef0123456789abcdef"
    issuer.jwks_body = json.dumps({"keys": [{"kty": "oct", "kid": "shared", "k": b64(secret)}]}).encode()
    validator = TokenValidator(config(issuer, algorithms=("RS256",)))
    header = b64(json.dumps({"alg": "RS256", "kid": "shared"}).encode())
    refused(validator, f"{header}.{issuer.token().split('.')[1]}.{b64(secret)}")


def test_from_mapping_reads_a_lamina_toml_table(issuer: Issuer, tmp_path: Path) -> None:
    jwks = tmp_path / "lamina-enc.json"
    jwks.write_text(json.dumps(KeySet([make_key("RSA-OAEP-256", kid="enc")]).as_dict(private=True)))
    table = {
        "issuer": "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet",
        "discovery_url": "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet/.well-known/wallet-openid-configuration",
        "audience": "lamina-client",
        "required_acr": "eidas1",
        "leeway_s": 30,
        "decryption_jwks_file": str(jwks),
    }
    # Act
    read = IssuerConfig.from_mapping(table)
    # Assert
    assert read.audience == ("lamina-client",)
    assert read.required_acr == ("eidas1",)
    assert read.decryption_keys is not None
    assert "decryption_keys" not in repr(read)  # private keys never print


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"algorithms": ["RS256", "none"]}, "auth.algorithms"),
        ({"audience": []}, "auth.audience"),
        ({"discovery_url": "http://idp.example/.well-known/openid-configuration"}, "auth.discovery_url"),
        ({"leeway_s": 3600}, "auth.leeway_s"),
        ({"leeway": 30}, "auth.leeway"),
        ({"decryption_jwks_file": "/nonexistent/keys.json"}, "auth.decryption_jwks_file"),
    ],
)
def test_from_mapping_names_the_key_at_fault(change: dict[str, Any], field: str) -> None:
    table = {"issuer": "https://idp.example", "discovery_url": "https://idp.example/d", "audience": "lamina"}
    table |= change
    with pytest.raises(ConfigurationError, match=rf"^{field}: "):
        IssuerConfig.from_mapping(table)


def test_the_keys_are_never_fetched_through_a_redirect(issuer: Issuer) -> None:
    from lamina.governance.oidc import fetch_json

    assert json.loads(fetch_json(f"{issuer.url}/jwks", 5.0))["keys"]
    with pytest.raises(UnavailableError, match=r"redirected .*/moved \(HTTP 302\); set the address"):
        fetch_json(f"{issuer.url}/moved", 5.0)
    assert issuer.requests.count("/jwks") == 1  # the redirect was not followed
