"""Crash safety: SIGKILL the ingest process at many points; the archive must stay consistent.

Consistent means: every visible slide has all its objects, each matching its SHA-256; after the
orphan sweep the blob store holds exactly what the catalog references; and running the
interrupted ingest again completes it. The default run kills at a few points; the slow
campaign (``scripts/test --slow``) at 200.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lamina.archive.archive import Archive
from lamina.archive.sweep import sweep
from lamina.config import Settings
from tests.support import shared_file, tiled_svs_from


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crash")
    return tiled_svs_from(shared_file("aperio/CMU-1-Small-Region.svs"), folder / "big.svs", (3, 2))


def _ingest(home: Path, slide: Path, kill_after: float | None) -> subprocess.CompletedProcess[str] | None:
    env = {**os.environ, "LAMINA_HOME": str(home)}
    command = [sys.executable, "-m", "lamina", "ingest", "--json", str(slide)]
    if kill_after is None:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return None


def _check_consistent(home: Path) -> tuple[int, int]:
    """Every visible slide complete and intact; returns (slides, leftovers swept)."""
    archive = Archive.open(Settings.load(home, env={}))
    try:
        slides = archive.catalog.slides()
        for slide in slides:
            rows = archive.catalog.instances(slide.id)
            assert len(rows) == slide.instances, f"slide {slide.id} misses instances"
            for row in rows:
                digest = hashlib.sha256()
                for chunk in archive.store.open(row.blob_sha256):
                    digest.update(chunk)
                assert digest.hexdigest() == row.blob_sha256, f"object {row.blob_sha256} is damaged"
        report = sweep(archive.catalog, archive.store, older_than_s=0)
        assert set(archive.store.iter_digests()) == archive.catalog.referenced_blobs()
        return len(slides), len(report.orphans) + report.partial_writes
    finally:
        archive.close()


def _campaign(tmp_path: Path, slide: Path, points: int) -> None:
    started = time.perf_counter()
    reference = _ingest(tmp_path / "reference", slide, None)
    assert reference is not None and reference.returncode == 0, reference
    total = time.perf_counter() - started
    work = json.loads(reference.stdout)[0]["seconds"]
    start_up = max(0.0, total - work)
    interrupted = 0
    for index in range(points):
        home = tmp_path / f"home-{index}"
        # kill points spread over the ingest itself (after the interpreter has started)
        _ingest(home, slide, start_up + work * (index + 0.5) / points)
        slides, leftovers = _check_consistent(home)
        assert slides in (0, 1)
        interrupted += leftovers > 0
        again = _ingest(home, slide, None)
        assert again is not None
        assert again.returncode == 0, f"re-running the interrupted ingest must finish it: {again.stdout}"
        assert _check_consistent(home)[0] == 1
    # the campaign must have hit the window where objects exist but the slide is not yet visible
    assert interrupted > 0


def test_sigkill_during_ingest_leaves_a_consistent_archive(tmp_path: Path, big_slide: Path) -> None:
    _campaign(tmp_path, big_slide, points=6)


@pytest.mark.slow
def test_sigkill_campaign_at_200_points(tmp_path: Path, big_slide: Path) -> None:
    _campaign(tmp_path, big_slide, points=200)
