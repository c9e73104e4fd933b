"""Fixity: every flipped byte and every deleted object is found; orphans are reported; the
bandwidth limit holds; ``lamina verify`` exits 1 on damage and 0 on a clean archive. On both
backends: a folder, where the damage is done to the files, and S3, where it is done to the keys."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from lamina.archive import audit, sweep
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.fixity import TokenBucket, verify
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.sample import write_samples
from tests.backends import Backend
from tests.support import flip_one_byte, ingest_path, lamina_env, lose_object, shared_file

SAMPLE_FORMATS = ("aperio_svs", "tiled_tiff", "dicom_wsi")
GRACE_S = 3600.0  # verify's default orphan grace period


@dataclass(frozen=True)
class Located:
    """An archive's home and the settings (variables) that point at its catalog and store."""

    home: Path
    env: dict[str, str]

    def settings(self) -> Settings:
        return Settings.load(self.home, env=self.env)


@pytest.fixture(scope="module")
def pristine(module_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Located:
    """An archive with four ingested slides (one real SVS, three samples), built once per backend."""
    base = tmp_path_factory.mktemp("fixity")
    located = Located(base / "home", module_backend.env("fixity-pristine"))
    samples = write_samples(base / "samples", SAMPLE_FORMATS, size=(1024, 768), seed=3)
    archive = Archive.open(located.settings())
    try:
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
        for path in [shared_file("aperio/CMU-1-Small-Region.svs"), *(s.path for s in samples)]:
            result = ingest_path(ingestor, path)
            assert result.status == "ingested", result.reason
        assert archive.catalog.count_slides() == 4
    finally:
        archive.close()
    return located


@pytest.fixture
def located(pristine: Located, module_backend: Backend, tmp_path: Path) -> Located:
    """A private copy of the pristine archive (home, catalog and objects), free to damage."""
    return Located(tmp_path / "home", module_backend.copy(pristine.env, pristine.home, tmp_path / "home"))


@pytest.fixture
def opened(located: Located) -> Iterator[Archive]:
    archive = Archive.open(located.settings())
    yield archive
    archive.close()


def _add_orphan(archive: Archive, payload: bytes) -> str:
    with archive.store.writer() as writer:
        writer.write(payload)
        return writer.commit().sha256


def _old_and_young_orphans(archive: Archive, rng: random.Random) -> tuple[str, float]:
    """Two orphans written a second apart; returns the first and a time at which it is past the
    grace period and the second is not. S3 gives objects its own LastModified (to the second),
    which cannot be set back, so the sweep's clock is pinned to that time instead."""
    old = _add_orphan(archive, rng.randbytes(5000))
    written = archive.store.modified_at(old)
    assert written is not None
    time.sleep(max(0.0, written + 1.05 - time.time()))
    young = _add_orphan(archive, rng.randbytes(3000))
    young_written = archive.store.modified_at(young)
    assert young_written is not None and young_written >= written + 1
    return old, young_written - 0.5 + GRACE_S


def _pin_sweep_clock(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    """The sweep sees the time module with ``time()`` pinned to ``now``."""
    monkeypatch.setattr(sweep, "time", types.SimpleNamespace(**{**vars(time), "time": lambda: now}))


def _damage(archive: Archive, seed: int) -> tuple[set[str], set[str], str, float]:
    """Flip one random byte in two thirds of the objects, delete three others, add an old orphan
    and a young one (which the grace period hides); return the expected sets, the old orphan and
    the sweep's clock (see :func:`_old_and_young_orphans`)."""
    rng = random.Random(seed)
    digests = sorted(archive.catalog.referenced_blobs())
    assert len(digests) >= 12, digests
    rng.shuffle(digests)
    deleted = set(digests[:3])
    corrupted = set(digests[3 : 3 + (2 * len(digests)) // 3])
    for digest in deleted:
        lose_object(archive.store, digest)
    for digest in corrupted:
        flip_one_byte(archive.store, digest, rng)
    orphan, now = _old_and_young_orphans(archive, rng)
    return deleted, corrupted, orphan, now


def _run_cli(
    located: Located, *args: str, sweep_clock: float | None = None
) -> subprocess.CompletedProcess[str]:
    """``lamina ARGS`` on the archive; with ``sweep_clock``, the sweep's clock pinned to it."""
    command = [sys.executable, "-m", "lamina", *args]
    if sweep_clock is not None:
        shim = (
            "import time, types, lamina.archive.sweep as sweep; "
            f"sweep.time = types.SimpleNamespace(**{{**vars(time), 'time': lambda: {sweep_clock!r}}}); "
            "from lamina.cli import cli; cli(prog_name='lamina')"
        )
        command = [sys.executable, "-c", shim, *args]
    env = lamina_env(located.settings())
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_a_clean_archive_verifies_and_is_audited(opened: Archive) -> None:
    referenced = opened.catalog.referenced_blobs()
    report = verify(opened.catalog, opened.store, workers=3)
    assert report.ok
    assert (report.missing, report.corrupt, report.orphaned) == ([], [], [])
    assert report.checked == len(referenced)
    assert report.bytes == sum(opened.store.size(d) for d in referenced)
    with opened.catalog.begin() as conn:
        last = conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq.desc()).limit(1)).mappings().one()
        assert audit.verify(conn).first_bad is None
    assert last["action"] == "verify"
    assert json.loads(last["detail"]) == {
        "checked": len(referenced),
        "bytes": report.bytes,
        "missing": 0,
        "corrupt": 0,
        "orphaned": 0,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_flipped_byte_and_deleted_object_is_found(
    opened: Archive, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    deleted, corrupted, orphan, now = _damage(opened, seed)
    _pin_sweep_clock(monkeypatch, now)
    progress: list[tuple[int, int]] = []
    report = verify(opened.catalog, opened.store, workers=4, progress=lambda d, n: progress.append((d, n)))
    assert not report.ok
    assert {m.sha256 for m in report.missing} == deleted
    assert {c.sha256 for c in report.corrupt} == corrupted
    assert report.orphaned == [orphan]
    for item in report.corrupt:
        assert item.reads_as is not None and item.reads_as != item.sha256
        assert item.size == item.expected_size and item.error is None
    for refs in [*(m.references for m in report.missing), *(c.references for c in report.corrupt)]:
        assert refs and all(ref.slide_id for ref in refs)
    # one problem row per damaged instance, each naming its slide
    problems = report.problems()
    assert {row["sha256"] for row in problems if row["problem"] == "missing"} == deleted
    assert {row["sha256"] for row in problems if row["problem"] == "corrupt"} == corrupted
    assert progress and progress[-1][0] == report.bytes
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    with opened.catalog.begin() as conn:
        detail = conn.execute(
            select(t.audit_log.c.detail).order_by(t.audit_log.c.seq.desc()).limit(1)
        ).scalar_one()
    counts = json.loads(detail)
    assert (counts["missing"], counts["corrupt"], counts["orphaned"]) == (len(deleted), len(corrupted), 1)


def test_orphans_within_the_grace_period_are_reported_only_when_asked(opened: Archive) -> None:
    young = _add_orphan(opened, b"young orphan")
    assert verify(opened.catalog, opened.store).orphaned == []
    report = verify(opened.catalog, opened.store, orphan_grace_s=0)
    assert report.orphaned == [young]
    assert report.ok  # an orphan is not damage


def test_the_bandwidth_limit_slows_the_run(opened: Archive) -> None:
    total = sum(opened.store.size(d) for d in opened.catalog.referenced_blobs())
    free = verify(opened.catalog, opened.store, workers=4)
    rate = total // 2  # about two seconds of reading, whatever the number of workers
    limited = verify(opened.catalog, opened.store, workers=4, max_bytes_per_s=rate)
    assert limited.ok and limited.bytes == total
    assert limited.seconds >= 0.95 * total / rate
    assert limited.seconds > free.seconds


def test_the_token_bucket_is_shared_by_threads() -> None:
    bucket = TokenBucket(400_000)

    def reader() -> None:
        for _ in range(20):
            bucket.take(5_000)

    started = time.perf_counter()
    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - started >= 0.95 * (4 * 20 * 5_000) / 400_000
    with pytest.raises(ValueError, match="at least 1 byte/s"):
        TokenBucket(0)


def test_verify_rejects_no_workers(opened: Archive) -> None:
    with pytest.raises(ValueError, match="workers"):
        verify(opened.catalog, opened.store, workers=0)


def test_cli_exits_nonzero_and_lists_every_problem(located: Located) -> None:
    archive = Archive.open(located.settings())
    try:
        deleted, corrupted, orphan, now = _damage(archive, seed=7)
    finally:
        archive.close()
    done = _run_cli(located, "verify", "--json", "--workers", "3", sweep_clock=now)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert {m["sha256"] for m in report["missing"]} == deleted
    assert {c["sha256"] for c in report["corrupt"]} == corrupted
    assert report["orphaned"] == [orphan]
    assert all(row["slide_id"] and row["sop_instance_uid"] for row in report["problems"])
    text = _run_cli(located, "verify", "--limit-mb-per-s", "1000", sweep_clock=now)
    assert text.returncode == 1, text.stderr
    assert "Traceback" not in text.stdout + text.stderr
    lines = text.stdout.splitlines()
    for digest in deleted:
        assert any(digest in line and "missing" in line for line in lines)
    for digest in corrupted:
        assert any(digest in line and "corrupt" in line for line in lines)
    assert any(orphan in line and "orphaned" in line for line in lines)
    assert "objects checked" in text.stdout


def test_cli_exits_zero_on_a_clean_archive(located: Located) -> None:
    done = _run_cli(located, "verify", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["checked"] > 0
    assert report["missing"] == report["corrupt"] == report["problems"] == []
    bad = _run_cli(located, "verify", "--workers", "0")
    assert bad.returncode == 2
