"""The viewer signs in at a real OpenID provider (oidc-provider on loopback, tests/oidc/provider.mjs)
by authorization code with PKCE, as a pathologist does at Pro Santé Connect.

The lamina server trusts the provider by lamina.toml's [auth] table (the test_signin_oidc node's)
and holds the viewer's client in [auth.viewer], its secret in a file. Headless Chromium
(``tests/viewer/signin_oidc.mjs``) clicks "Sign in with ...", logs in at the provider's form, comes
back to the worklist of the person's lab; the token is renewed when asked, before a request near
its expiry and by the timer; signing out ends the provider's session; a renewal the provider
refuses and an answer whose state was changed bring back the form. The provider's access tokens
live :data:`ACCESS_TTL` seconds, so that the renewals come within the test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import select
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from joserfc.jwk import RSAKey

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.config import Settings
from lamina.governance.registry import Registry
from lamina.sample import write_samples
from tests.api.test_signin_oidc import OTHER, PARIS, _toml
from tests.governance.test_oidc_provider import SCRIPT, Provider
from tests.support import REPO, need, serving
from tests.viewer.test_viewer import _ingest, _run, compose

#: The provider's access-token lifetime here: the page renews it within 30 s of its expiry
ACCESS_TTL = 36
#: The provider's account of the pathologist (PARIS: lab admin and pathologist, Lyon: pathologist)
LOGIN = "pathologist"
PERSON = "810000000001"


class ViewerProvider(NamedTuple):
    provider: Provider
    secret: str  # the viewer's client secret


class Node(NamedTuple):
    url: str  # http://127.0.0.1:PORT
    accessions: dict[str, str]  # lab -> the accession number of its case


@pytest.fixture(scope="module")
def viewer_provider() -> Iterator[ViewerProvider]:
    need(shutil.which("node") is not None, "Node.js (node)")
    need((REPO / "node_modules" / "oidc-provider").is_dir(), "the npm package oidc-provider")
    secret = secrets.token_urlsafe(24)
    environment = {
        **os.environ,
        "LAMINA_TEST_ACCESS_TTL": str(ACCESS_TTL),
        "LAMINA_TEST_VIEWER_SECRET": secret,
    }
    environment.pop("LAMINA_TEST_ENC_JWK", None)
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
            key = RSAKey.generate_key(2048)  # unused here: no encrypted token is asked for
            yield ViewerProvider(Provider(json.loads(line)["issuer"], key), secret)
        finally:
            process.terminate()
            process.wait(10)


@pytest.fixture(scope="module")
def node(viewer_provider: ViewerProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """On the embedded default only (SQLite and a folder): a browser's sign-in at the provider
    does not touch the catalog's backend, whose every route the other tests run on both."""
    root = tmp_path_factory.mktemp("oidc-viewer")
    home = root / "lamina-data"
    home.mkdir()
    secret_file = root / "viewer-secret"
    secret_file.write_text(viewer_provider.secret + "\n", encoding="utf-8")
    secret_file.chmod(0o600)
    (home / "lamina.toml").write_text(
        _toml(viewer_provider.provider)
        + f"""
[auth.viewer]
client_id = "lamina-viewer"
client_secret_file = "{secret_file}"
scope = "openid"
resource = "urn:lamina"
""",
        encoding="utf-8",
    )
    settings = Settings.load(home, env={})
    assert settings.auth_viewer is not None and settings.auth_viewer.client_secret == viewer_provider.secret
    archive = Archive.open(settings)
    registry = Registry(archive.catalog)
    registry.add_tenant(PARIS, "Anatomie pathologique, Paris")
    registry.add_tenant(OTHER, "Anatomie pathologique, Marseille")
    accessions = {}
    # Paris's slide large enough that its full-resolution tiles are fetched at 40x only
    for lab, seed, size in ((PARIS, 3, (2048, 1536)), (OTHER, 5, (1024, 768))):
        write_samples(root / lab, ["tiled_tiff"], size=size, seed=seed)
        (slide,) = _ingest(archive, root / lab, tenant=lab)  # with the manifest's case
        assert slide.accession_number
        accessions[lab] = slide.accession_number
    assert accessions[PARIS] != accessions[OTHER]
    try:
        with serving(compose(create_app(settings, archive)), sign_in=False) as port:
            yield Node(f"http://127.0.0.1:{port}", accessions)
    finally:
        archive.close()


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_the_viewer_signs_in_at_the_provider_renews_and_signs_out(
    node: Node, viewer_provider: ViewerProvider, tmp_path: Path
) -> None:
    issuer = viewer_provider.provider.issuer
    config = httpx.get(f"{node.url}/auth/viewer-config", timeout=10).json()
    assert config["provider"]["authorization_endpoint"] == f"{issuer}/auth"
    started = time.monotonic()
    # Act
    seen: dict[str, Any] = _run(
        "signin_oidc.mjs",
        tmp_path,
        url=node.url,
        issuer=issuer,
        login=LOGIN,
        password="any password: the provider's development form",
        accession=node.accessions[PARIS],
        other_lab_accession=node.accessions[OTHER],
    )

    # Assert: the sign-in form offers the provider, beside the password
    host = urllib.parse.urlsplit(issuer).netloc
    assert seen["form"] == {"button": f"Sign in with {host}", "password": 1}
    # the authorization request: code, this client, PKCE S256, state and nonce, the resource
    asked = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(seen["authorize"][0]).query))
    assert asked["response_type"] == "code" and asked["client_id"] == "lamina-viewer"
    assert asked["redirect_uri"] == f"{node.url}/"
    assert asked["code_challenge_method"] == "S256" and asked["resource"] == "urn:lamina"
    assert len(asked["state"]) >= 43 and len(asked["nonce"]) >= 43 and asked["state"] != asked["nonce"]
    assert "client_secret" not in seen["authorize"][0]
    # the code exchanged through lamina with the verifier of that challenge; no secret from the page
    code_exchange = seen["exchanges"][0]
    assert code_exchange["status"] == 200, code_exchange
    form = code_exchange["form"]
    assert form["grant_type"] == "authorization_code" and form["redirect_uri"] == f"{node.url}/"
    assert (
        43 <= len(form["code_verifier"]) <= 128
        and _challenge(form["code_verifier"]) == asked["code_challenge"]
    )
    assert not any("client_secret" in exchange["form"] for exchange in seen["exchanges"])
    # back: the worklist of the person's lab only, the page asked for, no code left in the address
    signed_in = seen["signed_in"]
    assert signed_in["accessions"] == [node.accessions[PARIS]]
    assert seen["other_lab"]["status"] == 200 and seen["other_lab"]["accessions"] == []
    assert "code=" not in signed_in["href"] and "state=" not in signed_in["href"]
    assert signed_in["href"] == f"{node.url}/#/?AccessionNumber="
    assert signed_in["account"] == LOGIN  # the id token's subject
    # the tokens in sessionStorage only (no PKCE leftovers), none in localStorage or a cookie
    assert list(signed_in["session"]) == ["lamina.session"] and signed_in["local"] == {}
    assert signed_in["cookie"] == ""
    kept = signed_in["session_object"]
    assert kept["refreshToken"] and kept["idToken"] and kept["lifetimeMs"] == ACCESS_TTL * 1000
    # the provider's token opens lamina's routes (a real token, for lab PARIS only)
    bearer = {"Authorization": f"Bearer {signed_in['token']}"}
    assert httpx.get(f"{node.url}/dicomweb/studies", headers=bearer, timeout=10).status_code == 200

    # renewed when asked: a new token, kept and sent
    tokens = seen["tokens"]
    assert seen["asked"] == seen["asked_kept"] != tokens[0]
    assert seen["after_asked"] == {
        "status": 200,
        "authorization": f"Bearer {seen['asked']}",
        "accessions": [node.accessions[PARIS]],
    }
    # a request within 30 s of the expiry: renewed first, sent with the new token
    near = seen["near_expiry"]
    assert near["waited_ms"] > (ACCESS_TTL - 30) * 1000
    assert near["after"] != near["before"]
    assert near["search"]["authorization"] == f"Bearer {near['after']}" and near["search"]["status"] == 200
    # left alone: the timer renews at about 80% of the lifetime
    timer = seen["timer"]
    assert timer["after"] != timer["before"]
    assert 0.6 * ACCESS_TTL * 1000 < timer["waited_ms"] < ACCESS_TTL * 1000, timer
    # a slide open during a renewal: its next tiles carry the new token
    tiles = seen["tiles"]
    assert tiles["api"] and {r["authorization"] for r in tiles["api"]} == {f"Bearer {tiles['token']}"}, tiles
    assert all(r["status"] == 200 for r in tiles["api"])
    assert len(set(tokens)) == 5
    refreshes = [e for e in seen["exchanges"] if e["form"]["grant_type"] == "refresh_token"]
    assert len(refreshes) >= 4 and all(e["status"] == 200 for e in refreshes[:4])
    # every DICOMweb request carried one of the tab's tokens, in its header only
    sent = {f"Bearer {token}" for token in tokens}
    first_session = [r for r in seen["api"] if r["authorization"] in sent]
    assert first_session and all(r["status"] == 200 for r in first_session)
    assert not [url for url in seen["urls"] for token in tokens if token in url]

    # signed out: at the provider's end-session endpoint, then the form, nothing kept
    end_session = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(seen["end_session"]).query))
    assert end_session["post_logout_redirect_uri"] == f"{node.url}/" and end_session["id_token_hint"]
    assert seen["signed_out"]["session"] == {} and seen["signed_out"]["token"] is None
    # signed in again (a login again at the provider), then a renewal refused: the form again
    assert seen["again"] == [node.accessions[PARIS]]
    assert seen["refused_renewal"] == "SignInRequired"
    assert "expired" in (seen["after_refused"]["notice"] or "")
    assert seen["after_refused"]["storage"]["session"] == {}
    refused = [
        e for e in seen["exchanges"] if e["form"]["grant_type"] == "refresh_token" and e["status"] != 200
    ]
    assert [e["status"] for e in refused] == [400]
    # an answer whose state was changed: refused, the code never exchanged, the address cleaned
    forged = seen["forged"]
    assert "state does not match" in (forged["notice"] or ""), forged
    assert forged["exchanges"] == 0 and forged["storage"]["session"] == {}
    assert "code=" not in forged["href"] and "state=" not in forged["href"]
    # nothing went wrong on lamina's pages but the refusal asked for (the provider's pages ask for
    # web fonts and a favicon they cannot have here: not lamina's)
    assert not [e for e in seen["errors"] if e.startswith("page error")], seen["errors"]
    on_lamina = [e for e in seen["console"] if e["page"].startswith(node.url)]
    assert [e["url"] for e in on_lamina] == [f"{node.url}/auth/oidc/token"], on_lamina
    assert time.monotonic() - started < 280
