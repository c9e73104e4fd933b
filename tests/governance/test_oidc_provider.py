"""Tokens from a real OpenID provider: oidc-provider (npm, OpenID Certified) on loopback, run by
tests/oidc/provider.mjs. Its access tokens, shaped like Pro Santé Connect's, validate through the
non-standard discovery path and map to FINESS and roles; its key rotation is followed without a
restart, through one refetch; its encrypted (nested JWE) tokens are opened with lamina's key."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any, NamedTuple

import httpx
import pytest
from joserfc.jwk import KeySet, RSAKey

from lamina.errors import AuthenticationError, UnavailableError
from lamina.governance.claims import ClaimsMapping, Membership
from lamina.governance.oidc import IssuerConfig
from lamina.governance.roles import Role
from lamina.governance.tokens import TokenValidator
from tests.governance.test_claims import PSC_RULES
from tests.support import REPO, need

SCRIPT = REPO / "tests" / "oidc" / "provider.mjs"
WALLET_DISCOVERY = "/.well-known/wallet-openid-configuration"


class Provider(NamedTuple):
    issuer: str
    #: lamina's private key, to which the provider encrypts "urn:lamina:encrypted" tokens
    decryption_key: RSAKey

    def token(self, client: str, resource: str = "urn:lamina") -> str:
        answer = httpx.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", "scope": "slides:read", "resource": resource},
            auth=(client, f"{client}-secret"),
            timeout=10,
        )
        answer.raise_for_status()
        token: str = answer.json()["access_token"]
        return token

    def config(self, **overrides: Any) -> IssuerConfig:
        fields: dict[str, Any] = {
            "issuer": self.issuer,
            "discovery_url": self.issuer + WALLET_DISCOVERY,
            "audience": ("lamina",),
        }
        return IssuerConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    need(shutil.which("node") is not None, "Node.js (node)")
    need((REPO / "node_modules" / "oidc-provider").is_dir(), "the npm package oidc-provider")
    key = RSAKey.generate_key(2048, {"kid": "lamina-enc", "use": "enc", "alg": "RSA-OAEP-256"})
    environment = {**os.environ, "LAMINA_TEST_ENC_JWK": json.dumps(key.as_dict(private=False))}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            ["node", str(SCRIPT)], cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=log
        )
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 30)
            line = process.stdout.readline() if ready else b""
            if not line:
                log.seek(0)
                pytest.fail(f"oidc-provider did not start: {log.read().decode(errors='replace')[-2000:]}")
            yield Provider(json.loads(line)["issuer"], key)
        finally:
            process.terminate()
            process.wait(10)


def test_a_pro_sante_connect_shaped_token_gives_the_person_and_their_labs(provider: Provider) -> None:
    validator = TokenValidator(provider.config(required_acr=("eidas1",)))
    mapping = ClaimsMapping.from_mapping(PSC_RULES)
    # Act
    claims = validator.validate(provider.token("pathologist"))
    identity = mapping.identity(claims)
    # Assert
    assert claims.issuer == provider.issuer
    assert claims.acr == "eidas1"
    assert identity.person == "810000000001"
    assert identity.memberships == (
        Membership("690781810", Role.PATHOLOGIST),
        Membership("750712184", Role.LAB_ADMIN),
        Membership("750712184", Role.PATHOLOGIST),
    )


def test_a_token_without_the_required_acr_is_refused(provider: Provider) -> None:
    token = provider.token("technician")
    with pytest.raises(AuthenticationError) as caught:
        TokenValidator(provider.config(required_acr=("eidas1",))).validate(token)
    assert caught.value.error == "invalid_token"
    # the same token, where no acr is required: a technician of one lab
    claims = TokenValidator(provider.config()).validate(token)
    identity = ClaimsMapping.from_mapping(PSC_RULES).identity(claims)
    assert identity.memberships == (Membership("750712184", Role.TECHNICIAN),)


def test_a_tampered_real_token_or_one_for_another_audience_is_refused(provider: Provider) -> None:
    token = provider.token("pathologist")
    header, payload, signature = token.split(".")
    for config, presented in [
        (provider.config(), f"{header}.{payload[:-4]}AAAA.{signature}"),
        (provider.config(audience=("another-service",)), token),
    ]:
        with pytest.raises(AuthenticationError) as caught:
            TokenValidator(config).validate(presented)
        assert caught.value.error == "invalid_token"


def test_a_provider_that_is_not_the_issuer_configured_is_not_believed(provider: Provider) -> None:
    """Its discovery document names another issuer: no key of it is used (503, not 401: the
    settings are wrong, not the token)."""
    with pytest.raises(UnavailableError, match="does not name the issuer"):
        TokenValidator(provider.config(issuer="https://psc.example")).validate(provider.token("pathologist"))


def test_key_rotation_is_followed_without_a_restart(provider: Provider) -> None:
    validator = TokenValidator(provider.config())
    before = provider.token("pathologist")
    validator.validate(before)
    assert validator.keys.fetches == 1
    # Act: the provider makes a new key current, while lamina runs on
    kid = httpx.post(f"{provider.issuer}/admin/rotate", timeout=10).json()["kid"]
    after = provider.token("pathologist")
    claims = validator.validate(after)
    # Assert: one refetch, and the old key still works for the tokens it signed
    assert json.loads(_segment(after, 0))["kid"] == kid
    assert claims["SubjectNameID"] == "810000000001"
    assert validator.keys.fetches == 2
    assert TokenValidator(provider.config()).validate(before)["SubjectNameID"] == "810000000001"


def test_an_encrypted_token_is_opened_with_laminas_key(provider: Provider) -> None:
    token = provider.token("pathologist", resource="urn:lamina:encrypted")
    assert token.count(".") == 4  # a JWE
    validator = TokenValidator(provider.config(decryption_keys=KeySet([provider.decryption_key])))
    # Act
    claims = validator.validate(token)
    # Assert
    assert claims["SubjectNameID"] == "810000000001"
    with pytest.raises(AuthenticationError):
        TokenValidator(provider.config()).validate(token)


def _segment(token: str, index: int) -> bytes:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
