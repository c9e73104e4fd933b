"""The ``lamina`` command as a user runs it: exit codes, tables, JSON, one-line errors; on both
backends (SQLite and a folder in the home, PostgreSQL and S3 through the environment)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import openslide
import pytest
from wsidicom import WsiDicom

from tests.support import shared_file

LAMINA = [sys.executable, "-m", "lamina"]


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(backend_env: dict[str, str]) -> Run:
    """``run(home, *args)``: ``lamina ARGS`` on the archive of ``home``, its catalog and store on
    the test's backend (SQLite and a folder in the home, or PostgreSQL and S3)."""

    def lamina(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LAMINA_HOME": str(home), "COLUMNS": "200", **backend_env}
        return subprocess.run(
            [*LAMINA, *args], capture_output=True, text=True, env=env, timeout=300, check=False
        )

    return lamina


def test_ingest_reports_each_file_and_exits_nonzero_when_one_fails(tmp_path: Path, run: Run) -> None:
    folder = tmp_path / "scanner"
    folder.mkdir()
    shutil.copy(shared_file("aperio/CMU-1-Small-Region.svs"), folder)
    shutil.copy(shared_file("tiff-nonwsi/kidney-48-5.tif"), folder)
    done = run(tmp_path / "home", "ingest", str(folder))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "kidney-48-5.tif: not a tiled pyramidal TIFF" in done.stdout
    assert "CMU-1-Small-Region.svs" in done.stdout and "ingested" in done.stdout
    again = run(tmp_path / "home", "ingest", "--json", str(folder / "CMU-1-Small-Region.svs"))
    assert again.returncode == 0
    (summary,) = json.loads(again.stdout)
    assert summary["status"] == "duplicate"
    assert {"path", "status", "slide_id", "format", "levels", "bytes", "seconds", "reason"} <= summary.keys()


def test_slides_json_and_export_open_in_wsidicom_and_openslide(tmp_path: Path, run: Run) -> None:
    home = tmp_path / "home"
    assert run(home, "ingest", str(shared_file("aperio/CMU-1-Small-Region.svs"))).returncode == 0
    listed = run(home, "slides", "--json")
    assert listed.returncode == 0
    (slide,) = json.loads(listed.stdout)
    for key in (
        "id",
        "container_id",
        "format",
        "levels",
        "instances",
        "study_uid",
        "series_uid",
        "bytes",
        "source",
    ):
        assert key in slide, key
    assert slide["format"] == "aperio_svs" and slide["levels"] == 5 and slide["instances"] == 8
    assert slide["identified"] is False
    exported = run(home, "export", str(tmp_path / "out"), "--slide", slide["id"])
    assert exported.returncode == 0, exported.stderr
    folder = tmp_path / "out" / slide["id"]
    assert len(list(folder.glob("*.dcm"))) == 8
    assert len(WsiDicom.open(folder).levels) == 5
    assert openslide.OpenSlide(sorted(folder.glob("*.dcm"))[0]).level_count == 5


def test_errors_are_one_line_that_say_the_fix(tmp_path: Path, run: Run) -> None:
    bad_manifest = tmp_path / "m.csv"
    bad_manifest.write_text("file,patient_id,colour\na.svs,P1,blue\n")
    done = run(tmp_path / "home", "ingest", "--manifest", str(bad_manifest), str(tmp_path))
    assert done.returncode == 2
    assert "unknown column 'colour'" in done.stderr
    assert "Traceback" not in done.stderr
    missing = run(tmp_path / "home", "export", str(tmp_path / "x"), "--slide", "nope")
    assert missing.returncode == 2 and "no slide 'nope'" in missing.stderr
    no_mpp = run(tmp_path / "home", "ingest", str(shared_file("aperio/tcga-cr-7395-01a-01-ts1.svs")))
    assert no_mpp.returncode == 1 and "--mpp" in no_mpp.stdout


def test_unreachable_catalog_or_store_says_what_without_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "LAMINA_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    catalog = subprocess.run(
        [*LAMINA, "slides"],
        env={**env, "LAMINA_DATABASE_URL": "postgresql+psycopg://bob:s3cret@127.0.0.1:1/lamina"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert catalog.returncode == 2
    assert "127.0.0.1:1" in catalog.stderr and "LAMINA_DATABASE_URL" in catalog.stderr
    assert "s3cret" not in catalog.stderr + catalog.stdout
    store = subprocess.run(
        [*LAMINA, "slides"],
        env={
            **env,
            "LAMINA_BLOB_URL": "s3://bucket/prefix",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
            "AWS_ACCESS_KEY_ID": "key",
            "AWS_SECRET_ACCESS_KEY": "topsecret",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert store.returncode == 2
    assert "http://127.0.0.1:1" in store.stderr and "AWS_ENDPOINT_URL" in store.stderr
    assert "topsecret" not in store.stderr + store.stdout


def test_a_lossy_quality_out_of_range_names_the_option(lamina_here: Run, tmp_path: Path) -> None:
    done = lamina_here("ingest", "--lossy", "0", str(tmp_path / "slide.svs"))
    assert done.returncode == 2
    assert "--lossy" in done.stderr and "1<=x<=100" in done.stderr
