"""``lamina demo``: two labs, a pathologist each, who sign in on the sign-in page's endpoint with
the password the demo prints and see only their lab's slides."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.cli.demo import DEMO_LABS
from lamina.config import Settings
from tests.cli.conftest import Run
from tests.support import serving


@pytest.fixture
def backend_env() -> dict[str, str]:
    """The embedded default only (SQLite and a folder): the demo is the embedded default's first run;
    the registry they read and write is tested on both backends in tests/governance, and the
    same commands reach PostgreSQL + S3 through the same code."""
    return {}


def _sign_in(base: str, person: str, password: str) -> str:
    answer = httpx.post(
        f"{base}/auth/token",
        data={"grant_type": "password", "username": person, "password": password},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def test_the_demo_shows_two_labs_each_seeing_its_own_slides(
    lamina: Run, tmp_path: Path, backend_env: dict[str, str]
) -> None:
    # Act: the demo, twice (the second run keeps what the first made)
    first = lamina("demo", "--no-serve")
    second = lamina("demo", "--no-serve")

    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    home = tmp_path / "home"
    kept = json.loads((home / "demo-sign-in.json").read_text("utf-8"))
    assert (home / "demo-sign-in.json").stat().st_mode & 0o077 == 0
    for _, _, person in DEMO_LABS:
        # the sign-in is printed, the same on both runs
        assert f"{person}" in first.stdout and kept[person] in first.stdout and kept[person] in second.stdout
    assert "duplicate" in second.stdout  # nothing stored twice
    settings = Settings.load(home, env=dict(backend_env))
    archive = Archive.open(settings)
    try:
        by_lab: dict[str, set[str]] = {}
        for slide in archive.catalog.slides():
            by_lab.setdefault(slide.tenant, set()).add(slide.study_instance_uid)
        assert set(by_lab) == {finess for finess, _, _ in DEMO_LABS}
        with serving(create_app(settings, archive), sign_in=False) as port:
            base = f"http://127.0.0.1:{port}"
            seen = {}
            for finess, _, person in DEMO_LABS:
                token = _sign_in(base, person, kept[person])
                answer = httpx.get(
                    f"{base}/dicomweb/studies", headers={"Authorization": f"Bearer {token}"}, timeout=30
                )
                assert answer.status_code == 200, answer.text
                seen[finess] = {item["0020000D"]["Value"][0] for item in answer.json()}
            wrong = httpx.post(
                f"{base}/auth/token",
                data={"grant_type": "password", "username": DEMO_LABS[0][2], "password": "not-the-password"},
                timeout=30,
            )
    finally:
        archive.close()
    # Assert: each pathologist sees exactly their lab's cases
    assert seen == by_lab
    assert wrong.status_code == 401
    assert os.environ.get("LAMINA_HOME") != str(home)  # the test's own home, not the user's
