"""A lamina server with ``userinfo = true`` in [auth], behind a real OpenID provider (oidc-provider,
tests/oidc/provider.mjs) whose access tokens carry the ``acr`` only: the person and their places of
work (``SubjectNameID``, ``SubjectRefPro``) come from the provider's userinfo, signed then
encrypted to lamina's key, read when lamina's server exchanges the viewer's code. On the embedded
default only: the userinfo does not touch the catalog's backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import NamedTuple

import httpx
import pytest
from joserfc.jwk import KeySet

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.governance.registry import Registry
from lamina.sample import write_samples
from tests.api.test_signin_oidc import OTHER, PARIS, _toml
from tests.governance.test_oidc_provider import Provider, provider
from tests.governance.test_userinfo import sign_in
from tests.support import ingest_path, serving

__all__ = ["provider"]

CLIENT = "psc-userinfo-jwe"


class Node(NamedTuple):
    url: str
    archive: Archive
    studies: dict[str, str]  # lab -> the Study Instance UID of its slide


@pytest.fixture(scope="module")
def node(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("oidc-userinfo")
    home = root / "lamina-data"
    home.mkdir()
    secret, keys = root / "client-secret", root / "lamina-enc.json"
    secret.write_text(f"{CLIENT}-secret\n", encoding="utf-8")
    keys.write_text(json.dumps(KeySet([provider.decryption_key]).as_dict(private=True)), encoding="utf-8")
    table = _toml(provider).replace(
        'required_acr = ["eidas1"]\n',
        f'required_acr = ["eidas1"]\nuserinfo = true\ndecryption_jwks_file = "{keys}"\n',
    )
    table += (
        f'\n[auth.viewer]\nclient_id = "{CLIENT}"\nclient_secret_file = "{secret}"\nresource = "urn:lamina"\n'
    )
    (home / "lamina.toml").write_text(table, encoding="utf-8")
    settings = Settings.load(home, env={})
    assert settings.auth_issuer is not None and settings.auth_issuer.userinfo
    archive = Archive.open(settings)
    registry = Registry(archive.catalog)
    ingestor = Ingestor(archive.catalog, archive.store)
    studies = {}
    for seed, (lab, name) in enumerate(((PARIS, "Paris"), (OTHER, "Marseille"))):
        registry.add_tenant(lab, f"Anatomie pathologique, {name}")
        (sample,) = write_samples(root / lab, ["aperio_svs"], size=(512, 384), seed=seed)
        result = ingest_path(ingestor, sample.path, tenant=lab)
        assert result.status == "ingested", result.reason
        slide = archive.catalog.slide(result.slide_id or "")
        assert slide is not None
        studies[lab] = slide.study_instance_uid
    try:
        with serving(create_app(settings, archive), sign_in=False) as port:
            yield Node(f"http://127.0.0.1:{port}", archive, studies)
    finally:
        archive.close()


def _studies(node: Node, token: str) -> httpx.Response:
    return httpx.get(f"{node.url}/dicomweb/studies", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_the_roles_come_from_the_userinfo_read_at_the_sign_in(node: Node, provider: Provider) -> None:
    # Act: the viewer hands lamina the code; lamina exchanges it and reads the userinfo
    answer = httpx.post(f"{node.url}/auth/oidc/token", data=sign_in(provider.issuer, CLIENT), timeout=30)
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    found = _studies(node, token)
    # Assert: the pathologist of Paris sees Paris's case only, as the person of the userinfo
    assert found.status_code == 200, found.text
    assert {item["0020000D"]["Value"][0] for item in found.json()} == {node.studies[PARIS]}
    assert answer.json()["refresh_token"]  # the viewer can still renew


def test_a_token_whose_userinfo_the_provider_refuses_is_refused(node: Node, provider: Provider) -> None:
    """Exchanged without lamina (no userinfo read): lamina asks the userinfo with the token itself,
    which oidc-provider refuses (a token for lamina, not for userinfo): 401, no detail."""
    form = {**sign_in(provider.issuer, CLIENT), "client_id": CLIENT, "client_secret": f"{CLIENT}-secret"}
    token = httpx.post(
        f"{provider.issuer}/token", data={**form, "resource": "urn:lamina"}, timeout=10
    ).json()["access_token"]
    refused = _studies(node, token)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="lamina", error="invalid_token"'
    assert token not in refused.text and "userinfo" not in refused.text
