"""What ``lamina serve`` runs beside its requests, on both backends: the watched folders of its
settings, and the fixity check on its schedule with the repair of what it finds."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest

from lamina.api import create_app
from lamina.archive.archive import Archive
from lamina.archive.audit import entries
from lamina.archive.fixity import verify_one
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.sample import write_samples
from tests.backends import Backend
from tests.support import flip_one_byte, ingest_path, serving


def _wait(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_the_server_ingests_what_lands_in_its_watched_folders(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "scanner"
    folder.mkdir()
    write_samples(tmp_path / "src", ["aperio_svs"], size=(1024, 768), seed=11)
    served = settings.with_(watch=(folder,), watch_stable_s=0.3, verify_cron=None)
    with serving(create_app(served)):
        shutil.copy(tmp_path / "src" / "aperio_svs.svs", folder / "a.part")
        (folder / "a.part").rename(folder / "a.svs")
        _wait(lambda: (folder / "done" / "a.svs").exists(), 90, "the watched slide was not ingested")
    archive = Archive.open(settings)
    try:
        (slide,) = archive.catalog.slides()
        assert slide.source_path.endswith("a.svs")
        assert not (folder / "failed").exists()
    finally:
        archive.close()


def test_the_server_verifies_on_schedule_and_repairs_from_the_replica(
    backend: Backend, backend_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    home = tmp_path / "home"
    env = {**backend_env, "LAMINA_REPLICA_URL": backend.replica_url(home, request.node.name)}
    settings = Settings.load(home, env=env)
    archive = Archive.open(settings)
    try:
        write_samples(tmp_path / "src", ["aperio_svs"], size=(1024, 768), seed=12)
        result = ingest_path(Ingestor(archive.catalog, archive.store), tmp_path / "src" / "aperio_svs.svs")
        assert result.ok, result.reason
        digest = archive.catalog.instances(result.slide_id or "")[0].blob_sha256
        flip_one_byte(archive.store, digest, random.Random(12))
        assert not verify_one(archive.catalog, archive.store, digest).ok
        # every two seconds (croniter's sixth field), at most 50 MB/s
        served = settings.with_(verify_cron="* * * * * */2")
        with serving(create_app(served)):
            _wait(lambda: verify_one(archive.catalog, archive.store, digest).ok, 90, "not repaired")
        with archive.catalog.engine.connect() as conn:
            found = [(e.actor, e.action, e.entity) for e in entries(conn)]
        assert ("lamina-periodic", "verify", "blobstore") in found
        assert any(action == "repair" and entity == f"blob/{digest}" for _, action, entity in found)
    finally:
        archive.close()


def test_the_server_runs_the_care_lifecycle_on_its_schedule(settings: Settings, tmp_path: Path) -> None:
    import datetime as dt

    from lamina.archive.discover import discover
    from lamina.archive.manifest import load_manifest
    from lamina.governance.registry import Registry
    from lamina.lifecycle.reports import record_report

    archive = Archive.open(settings)
    try:
        write_samples(tmp_path / "src", ["aperio_svs"], size=(1024, 768), seed=13)
        manifest = load_manifest(tmp_path / "src" / "manifest.csv")
        (candidate,) = discover([tmp_path / "src" / "aperio_svs.svs"])
        result = Ingestor(archive.catalog, archive.store).ingest(candidate, manifest)
        assert result.ok, result.reason
        slide = archive.catalog.slide(result.slide_id or "")
        assert slide is not None and slide.accession_number
        Registry(archive.catalog).add_tenant("690781810", "HCL")
        # the report was validated 40 days ago: the default rule's 30 days are over
        issued = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
        record_report(
            archive.catalog, "690781810", slide.accession_number, "final", issued, source="cli", actor="lis"
        )
        served = settings.with_(verify_cron=None, lifecycle_cron="* * * * * */2")
        with serving(create_app(served)):
            _wait(lambda: archive.catalog.slide(slide.id).expired_at is not None, 90, "not expired")  # type: ignore[union-attr]
        with archive.catalog.engine.connect() as conn:
            found = [(e.actor, e.action) for e in entries(conn)]
        assert ("lamina-periodic", "expire") in found
    finally:
        archive.close()
