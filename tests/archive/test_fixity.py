"""Fixity: every flipped byte and every deleted object is found; orphans are reported; the
bandwidth limit holds; ``lamina verify`` exits 1 on damage and 0 on a clean archive."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.fixity import TokenBucket, verify
from lamina.archive.ingest import Ingestor
from lamina.cli import cli
from lamina.config import Settings
from lamina.sample import write_samples
from tests.support import ingest_path, shared_file

SAMPLE_FORMATS = ("aperio_svs", "tiled_tiff", "dicom_wsi")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive home with four ingested slides (one real SVS, three samples), built once."""
    base = tmp_path_factory.mktemp("fixity")
    home = base / "home"
    samples = write_samples(base / "samples", SAMPLE_FORMATS, size=(1024, 768), seed=3)
    archive = Archive.open(Settings.load(home, env={}))
    try:
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
        for path in [shared_file("aperio/CMU-1-Small-Region.svs"), *(s.path for s in samples)]:
            result = ingest_path(ingestor, path)
            assert result.status == "ingested", result.reason
        assert archive.catalog.count_slides() == 4
    finally:
        archive.close()
    return home


@pytest.fixture
def home(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the pristine archive, free to damage."""
    copy = tmp_path / "home"
    shutil.copytree(pristine, copy)
    return copy


@pytest.fixture
def opened(home: Path) -> Iterator[Archive]:
    archive = Archive.open(Settings.load(home, env={}))
    yield archive
    archive.close()


def _flip_one_byte(path: Path, rng: random.Random) -> None:
    size = path.stat().st_size
    offset = rng.randrange(size)
    with path.open("r+b") as fh:
        fh.seek(offset)
        old = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([old ^ rng.randrange(1, 256)]))


def _add_orphan(archive: Archive, payload: bytes, age_s: float) -> str:
    with archive.store.writer() as writer:
        writer.write(payload)
        digest = writer.commit().sha256
    path = archive.store.local_path(digest)
    assert path is not None
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return digest


def _damage(archive: Archive, seed: int) -> tuple[set[str], set[str], str]:
    """Flip one random byte in two thirds of the objects, delete three others, add an old orphan
    (and a young one, which the grace period hides); return the expected sets."""
    rng = random.Random(seed)
    digests = sorted(archive.catalog.referenced_blobs())
    assert len(digests) >= 12, digests
    rng.shuffle(digests)
    deleted = set(digests[:3])
    corrupted = set(digests[3 : 3 + (2 * len(digests)) // 3])
    for digest in deleted:
        archive.store.delete(digest)
    for digest in corrupted:
        path = archive.store.local_path(digest)
        assert path is not None
        _flip_one_byte(Path(path), rng)
    orphan = _add_orphan(archive, rng.randbytes(5000), age_s=7200)
    _add_orphan(archive, rng.randbytes(3000), age_s=0)
    return deleted, corrupted, orphan


def _run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    env.update({"LAMINA_HOME": str(home), "COLUMNS": "200"})
    if "verify" in cli.commands:
        command = [sys.executable, "-m", "lamina", *args]
    else:  # until the command is registered in lamina.cli
        shim = (
            "from lamina.cli import cli; from lamina.cli.verify import verify; "
            "cli.add_command(verify); cli(prog_name='lamina')"
        )
        command = [sys.executable, "-c", shim, *args]
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
def test_every_flipped_byte_and_deleted_object_is_found(opened: Archive, seed: int) -> None:
    deleted, corrupted, orphan = _damage(opened, seed)
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
    young = _add_orphan(opened, b"young orphan", age_s=0)
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


def test_cli_exits_nonzero_and_lists_every_problem(home: Path) -> None:
    archive = Archive.open(Settings.load(home, env={}))
    try:
        deleted, corrupted, orphan = _damage(archive, seed=7)
    finally:
        archive.close()
    done = _run_cli(home, "verify", "--json", "--workers", "3")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert {m["sha256"] for m in report["missing"]} == deleted
    assert {c["sha256"] for c in report["corrupt"]} == corrupted
    assert report["orphaned"] == [orphan]
    assert all(row["slide_id"] and row["sop_instance_uid"] for row in report["problems"])
    text = _run_cli(home, "verify", "--limit-mb-per-s", "1000")
    assert text.returncode == 1, text.stderr
    assert "Traceback" not in text.stdout + text.stderr
    lines = text.stdout.splitlines()
    for digest in deleted:
        assert any(digest in line and "missing" in line for line in lines)
    for digest in corrupted:
        assert any(digest in line and "corrupt" in line for line in lines)
    assert any(orphan in line and "orphaned" in line for line in lines)
    assert "objects checked" in text.stdout


def test_cli_exits_zero_on_a_clean_archive(home: Path) -> None:
    done = _run_cli(home, "verify", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["checked"] > 0
    assert report["missing"] == report["corrupt"] == report["problems"] == []
    bad = _run_cli(home, "verify", "--workers", "0")
    assert bad.returncode == 2
