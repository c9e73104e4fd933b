"""A lamina server configured, by lamina.toml's [auth] table, to trust a real OpenID provider
(oidc-provider on loopback, tests/oidc/provider.mjs): its Pro Santé Connect-shaped tokens open the
routes with the roles their claims give, in the labs this node serves; a token below the
required ``acr`` or tampered with is refused; the node's own tokens keep working beside."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.governance.issuer import LocalIssuer
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.sample import write_samples
from tests.backends import Backend
from tests.governance.test_claims import PSC_RULES
from tests.governance.test_oidc_provider import WALLET_DISCOVERY, Provider, provider
from tests.support import ingest_path, serving, shared_file

__all__ = ["provider"]

#: the labs of the provider's pathologist (tests/oidc/provider.mjs): pathologist in both,
#: lab admin in the first
LYON, PARIS = "690781810", "750712184"
OTHER = "130786049"  # a lab this node serves, where the provider's people hold no role


class Node(NamedTuple):
    base: str
    archive: Archive
    studies: dict[str, str]  # lab -> the Study Instance UID of its slide


def _toml(provider: Provider) -> str:
    # the rules of tests/governance/test_claims.py's PSC_RULES, as an operator writes them
    assert PSC_RULES["person"] == "SubjectNameID"
    return f"""
[auth]
issuer = "{provider.issuer}"
discovery_url = "{provider.issuer}{WALLET_DISCOVERY}"
audience = "lamina"
required_acr = ["eidas1"]

[auth.claims]
person = "SubjectNameID"

[[auth.claims.rules]]
kind = "pro_sante_connect"
roles = [
  {{when = {{codeProfession = "10", codeSavoirFaire = "SM01"}}, role = "pathologist"}},
  {{when = {{codeProfession = "10", codeRole = "FON-05"}}, role = "lab_admin"}},
  {{when = {{codeProfession = ["96", "97"]}}, role = "technician"}},
]
"""


@pytest.fixture(scope="module")
def node(
    provider: Provider, module_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    home = tmp_path_factory.mktemp("oidc-node") / "lamina-data"
    home.mkdir()
    (home / "lamina.toml").write_text(_toml(provider), encoding="utf-8")
    settings = Settings.load(home, env=module_backend.env("oidc"))
    assert settings.auth_issuer is not None and settings.auth_claims is not None
    archive = Archive.open(settings)
    registry = Registry(archive.catalog)
    studies = {}
    for lab, name in ((PARIS, "Paris"), (LYON, "Lyon"), (OTHER, "Marseille")):
        registry.add_tenant(lab, f"Anatomie pathologique, {name}")
    ingestor = Ingestor(archive.catalog, archive.store)
    (sample,) = write_samples(home.parent / "samples", ["aperio_svs"], size=(512, 384))
    for lab, source in ((PARIS, shared_file("aperio/CMU-1-Small-Region.svs")), (OTHER, sample.path)):
        result = ingest_path(ingestor, source, tenant=lab)
        assert result.status == "ingested", result.reason
        slide = archive.catalog.slide(result.slide_id or "")
        assert slide is not None
        studies[lab] = slide.study_instance_uid
    try:
        with serving(create_app(settings, archive), sign_in=False) as port:
            yield Node(f"http://127.0.0.1:{port}/dicomweb", archive, studies)
    finally:
        archive.close()


def _get(url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, timeout=30)


def _study_uids(answer: httpx.Response) -> set[str]:
    assert answer.status_code == 200, answer.text
    return {item["0020000D"]["Value"][0] for item in answer.json()}


def test_the_providers_pathologist_sees_the_slides_of_their_labs(node: Node, provider: Provider) -> None:
    token = provider.token("pathologist")
    study = node.studies[PARIS]
    # Act
    found = _study_uids(_get(f"{node.base}/studies", token))
    metadata = _get(f"{node.base}/studies/{study}/metadata", token)
    # Assert: Paris's case, read; nothing of a lab where the claims give no role
    assert found == {study}
    assert metadata.status_code == 200 and metadata.json()
    with node.archive.catalog.begin() as conn:
        from lamina.archive import audit

        reads = [entry for entry in audit.entries(conn, action="read") if entry.actor == "810000000001"]
    assert reads and reads[-1].detail["tenant"] == PARIS


def test_a_token_below_the_required_acr_is_refused(node: Node, provider: Provider) -> None:
    answer = _get(f"{node.base}/studies", provider.token("technician"))
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="lamina", error="invalid_token"'
    assert "acr" not in answer.text  # nothing that tells which check failed


def test_a_tampered_token_of_the_provider_is_refused(node: Node, provider: Provider) -> None:
    head, payload, signature = provider.token("pathologist").split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}AAAA"
    assert _get(f"{node.base}/studies", tampered).status_code == 401


def test_the_nodes_own_tokens_work_beside_the_providers(node: Node) -> None:
    Registry(node.archive.catalog).add_person("local-reader", OTHER, [Role.PATHOLOGIST])
    token = LocalIssuer.open(node.archive.settings.home).issue("local-reader")
    assert _study_uids(_get(f"{node.base}/studies", token)) == set(node.studies.values()) - {
        node.studies[PARIS]
    }


def test_the_auth_table_is_checked_when_settings_are_read(tmp_path: Path) -> None:
    home = tmp_path / "lamina-data"
    home.mkdir()
    (home / "lamina.toml").write_text(
        '[auth]\nissuer = "https://idp.example"\n'
        'discovery_url = "http://idp.example/x"\naudience = "lamina"\n',
        encoding="utf-8",
    )
    from lamina.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"\[auth\].*discovery_url"):
        Settings.load(home, env={})
