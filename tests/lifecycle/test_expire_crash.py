"""Crash safety of expiry: SIGKILL ``lamina lifecycle run`` at many points, on both deployments.

The campaign of :mod:`tests.archive.test_crash` (its archives, its seeded kill points spread over
the measured duration of the work, its reports), applied to ``lamina lifecycle run`` expiring
three slides whose care retention is over, beside a fourth under legal hold. After each kill:

- every slide is either whole (every instance row, every object there and matching its SHA-256,
  no trace) or expired (no instance row, one trace naming every object deleted, its JPEG
  thumbnail in the store and matching its digest, one ``expire`` audit entry): never half;
- every object the catalog references verifies (:func:`lamina.archive.fixity.verify`), and the
  audit chain verifies;
- running ``lamina lifecycle run`` again finishes the job: every due slide expired, once, the
  held slide whole; what is left unreferenced in the store is only what the killed run left (the
  objects of a slide it had expired but not yet removed, a thumbnail written before its slide's
  commit): the sweep's to remove, as after any crash; after the sweep the store holds exactly
  what the catalog references, with no partial write.

The default run kills at a few points; ``--slow`` at 200 per deployment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.fixity import verify
from lamina.archive.sweep import sweep
from lamina.config import Settings
from lamina.governance.registry import Registry
from lamina.lifecycle.marks import Marks, Target
from lamina.lifecycle.reports import record_report
from tests.archive.test_crash import LAMINA, SLOW_POINTS, _Archives, _Durations, _env, _points, _report
from tests.backends import Backend
from tests.support import ingest_case

LAB = "690781810"
T0 = dt.datetime(2026, 3, 2, 14, 0, tzinfo=dt.UTC)
#: after the default rule's 30 days of care retention: the reported slides are due
DUE = (T0 + dt.timedelta(days=40)).isoformat()
#: the kill points of the default run, per deployment
DEFAULT_POINTS = {"sqlite-folder": 2, "postgresql-s3": 1}
THUMBNAIL_SIDE = 1024  # the default rule's trace


def _sample(archive: Archive, root: Path, name: str, accession: str, seed: int) -> str:
    return ingest_case(
        archive.receiver().ingestor, root / name, seed=seed, tenant=LAB, size=(1536, 1024),
        patient_id=f"P{seed}", accession_number=accession, specimen_id=f"{accession}-A1",
    )  # fmt: skip


@dataclass(frozen=True)
class _Template:
    home: Path
    due: frozenset[str]  # reported final at T0: expired by a run at DUE
    held: str  # reported too, but under legal hold: stays whole


def _template(tmp_path: Path, archives: _Archives) -> _Template:
    """An archive with three slides due to expire and one held; every kill point starts from a copy."""
    home = tmp_path / "template"
    archive = Archive.open(Settings.load(home, env=archives.env(home)))
    try:
        Registry(archive.catalog).add_tenant(LAB, "HCL")
        ids = [_sample(archive, tmp_path / "samples", f"s{n}", f"A26-{n}", n) for n in range(1, 5)]
        for n in range(1, 5):
            record_report(archive.catalog, LAB, f"A26-{n}", "final", T0, source="cli", actor="lis")
        Marks(archive.catalog).hold(Target(slide=ids[3]), "court order 2026/123", "operator:test")
    finally:
        archive.close()
    return _Template(home, frozenset(ids[:3]), ids[3])


# -- the command ---------------------------------------------------------------------------------
def _command(now: str) -> list[str]:
    return [*LAMINA, "lifecycle", "run", "--now", now, "--json"]


#: ``lamina lifecycle run`` as ``python -m lamina`` runs it, once its modules are loaded (the
#: interpreter's start-up, a second or more on a loaded machine, would otherwise drown the work
#: in the kill points' timing): it says so on stderr, and the kill points are timed from there
_LOADED = b"lamina loaded"
_PRELOADED = (
    "import sys\n"
    "from lamina.cli import main\n"
    f"sys.stderr.buffer.write({_LOADED!r} + b'\\n')\n"
    "sys.stderr.flush()\n"
    "sys.argv[0] = 'lamina'\n"
    "main()\n"
)


def _start(home: Path, extra: dict[str, str], now: str) -> subprocess.Popen[bytes]:
    """The run, started: its work begins when this returns."""
    process = subprocess.Popen(
        [sys.executable, "-c", _PRELOADED, *_command(now)[len(LAMINA) :]],
        env=_env(home, extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    fd, seen, deadline = process.stderr.fileno(), b"", time.monotonic() + 120
    while _LOADED not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        assert chunk, f"lamina did not start: {seen.decode(errors='replace')}"
        seen += chunk
    return process


def _timed_run(home: Path, extra: dict[str, str], now: str) -> tuple[dict[str, object], float]:
    """The run to the end: its report, and the duration of its work (from its modules loaded)."""
    process = _start(home, extra, now)
    begun = time.perf_counter()
    out, err = process.communicate(timeout=300)
    seconds = time.perf_counter() - begun
    assert process.returncode == 0, f"the run must finish: {out!r} {err!r}"
    report = json.loads(out)
    assert isinstance(report, dict) and report["failed"] == [], report
    return report, seconds


def _run_and_kill(home: Path, extra: dict[str, str], kill_after: float) -> None:
    process = _start(home, extra, DUE)
    time.sleep(kill_after)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


# -- the invariants ------------------------------------------------------------------------------
def _sha256(archive: Archive, digest: str) -> str:
    hashed = hashlib.sha256()
    for chunk in archive.store.open(digest):
        hashed.update(chunk)
    return hashed.hexdigest()


@dataclass(frozen=True)
class _State:
    expired: frozenset[str]
    deleted: frozenset[str]  # the objects the expired slides' traces name
    unreferenced: frozenset[str]  # objects in the store the catalog does not reference


def _check(home: Path, extra: dict[str, str], template: _Template) -> _State:
    """Each slide whole or expired, never half; every referenced object verifies; the audit
    chain verifies. Returns what is expired and what the store holds beyond the catalog."""
    archive = Archive.open(Settings.load(home, env=extra))
    try:
        slides = {slide.id: slide for slide in archive.catalog.slides()}
        assert set(slides) == template.due | {template.held}, "expiry keeps every slide listed"
        with archive.catalog.engine.connect() as conn:
            traces = {row.slide_id: row for row in conn.execute(t.slide_traces.select()).all()}
            assert audit.verify(conn).ok
            expiries = Counter(entry.entity for entry in audit.entries(conn, action="expire"))
        expired, deleted = set(), set()
        for slide_id, slide in slides.items():
            rows = archive.catalog.instances(slide_id)
            if slide.expired_at is None:  # whole
                assert slide_id not in traces and expiries[f"slide/{slide_id}"] == 0, slide_id
                assert len(rows) == slide.instances > 0, f"slide {slide_id} misses instances"
                for row in rows:
                    assert _sha256(archive, row.blob_sha256) == row.blob_sha256, f"{slide_id}: damaged"
                continue
            # expired: the trace, and nothing else
            expired.add(slide_id)
            assert slide_id in template.due and rows == [], f"slide {slide_id} is half expired"
            trace = traces[slide_id]
            named = json.loads(trace.deleted)
            assert len(named) == slide.instances, f"the trace of {slide_id} misses objects"
            deleted |= {str(item["sha256"]) for item in named}
            assert trace.thumbnail_sha256 is not None
            assert _sha256(archive, trace.thumbnail_sha256) == trace.thumbnail_sha256
            picture = Image.open(io.BytesIO(b"".join(archive.store.open(trace.thumbnail_sha256))))
            assert picture.format == "JPEG" and max(picture.size) == THUMBNAIL_SIDE
            assert expiries[f"slide/{slide_id}"] == 1
        fixity = verify(archive.catalog, archive.store, workers=1, orphan_grace_s=0, actor="test")
        assert fixity.missing == [] and fixity.corrupt == [], fixity
        unreferenced = set(archive.store.iter_digests()) - archive.catalog.referenced_blobs()
        return _State(frozenset(expired), frozenset(deleted), frozenset(unreferenced))
    finally:
        archive.close()


def _swept(home: Path, extra: dict[str, str]) -> int:
    """Sweep; then the store holds exactly what the catalog references, and no partial write."""
    archive = Archive.open(Settings.load(home, env=extra))
    try:
        report = sweep(archive.catalog, archive.store, older_than_s=0)
        assert set(archive.store.iter_digests()) == archive.catalog.referenced_blobs()
        assert archive.store.sweep_tmp(0) == 0, "the sweep left partial writes"
        return len(report.orphans)
    finally:
        archive.close()


# -- the campaign --------------------------------------------------------------------------------
def _expire_campaign(tmp_path: Path, points: int, archives: _Archives) -> None:
    started = time.perf_counter()
    template = _template(tmp_path, archives)
    reference = tmp_path / "reference"
    extra = archives.env(reference, template.home)
    report, seconds = _timed_run(reference, extra, DUE)
    assert report["done"]["actions"] == {"expire": 3}, report  # type: ignore[index]
    assert report["skipped"] == [] and report["kept"] == [] and report["objects_left"] == 0, report
    assert _check(reference, extra, template).expired == template.due
    assert _swept(reference, extra) == 0
    work = _Durations(seconds)
    archives.discard(reference)
    outcomes: Counter[str] = Counter()
    for index, fraction in _points(points, f"expire/{archives.name}"):
        home = tmp_path / f"home-{index}"
        extra = archives.env(home, template.home)
        # kill points spread over the run's work, and a little past it
        _run_and_kill(home, extra, 1.1 * work.typical * fraction)
        crashed = _check(home, extra, template)
        # what nothing references after the kill: the objects of a slide expired but not yet
        # removed, a thumbnail written before its slide's commit
        left = crashed.unreferenced
        notes = [
            *(["objects left"] if left & crashed.deleted else []),
            *(["thumbnail left"] if left - crashed.deleted else []),
        ]
        outcomes[" + ".join([f"{len(crashed.expired)} expired", *notes])] += 1
        again, seconds = _timed_run(home, extra, DUE)
        assert again["done"]["actions"] == (  # type: ignore[index]
            {"expire": 3 - len(crashed.expired)} if crashed.expired != template.due else {}
        ), again
        if not crashed.expired:  # the whole work again
            work.add(seconds)
        final = _check(home, extra, template)
        assert final.expired == template.due
        # the run does not visit expired slides again (the plan skips them): what the killed one
        # left is the sweep's, and running again adds nothing to it. (The sweep has no command
        # nor schedule yet, docs/architecture.md: on a live node these objects stay, orphans
        # that lamina verify reports, until it has one or the run finishes removals itself.)
        assert final.unreferenced <= left, final.unreferenced - left
        assert _swept(home, extra) == len(final.unreferenced)
        archives.discard(home)
    _report("expiry", archives, points, started, work, outcomes)
    if points >= 20:  # the campaign hit before the first commit, between slides, and after the last
        expired = Counter[str]()
        for name, n in outcomes.items():
            expired[name.split(" ", 1)[0]] += n
        assert expired["0"] > 0 and expired["1"] + expired["2"] > 0 and expired["3"] > 0, outcomes


def test_sigkill_during_expiry_leaves_slides_whole_or_expired(tmp_path: Path, backend: Backend) -> None:
    _expire_campaign(tmp_path, DEFAULT_POINTS[backend.name], _Archives(backend))


@pytest.mark.slow
def test_expiry_sigkill_campaign_at_200_points(tmp_path: Path, backend: Backend) -> None:
    _expire_campaign(tmp_path, SLOW_POINTS, _Archives(backend))
