"""Crash safety: SIGKILL ingest, STOW-RS and deletion at many points; the archive must stay consistent.

Consistent means: every visible slide has all its objects, each matching its SHA-256, and the
audit chain verifies; after the orphan sweep the blob store holds exactly what the catalog
references, with no partial write left; and running the interrupted work again completes it,
once. Every campaign runs on both backends (``tests/backends.py``): SQLite with a folder, and
PostgreSQL with S3 (SeaweedFS), with a fresh catalog and store for each archive. The kill points
are spread over the measured duration of the work, with a seeded jitter. The default run kills at
a few points; the slow campaigns (``scripts/test --slow``) at 200 per operation and backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.blobstore.s3 import S3BlobStore
from lamina.archive.catalog import SlideRow
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.sweep import sweep
from lamina.config import Settings
from tests.backends import Backend
from tests.s3server import free_ports
from tests.signin import sign_in_process, signed
from tests.support import POSTGRES_URL, shared_file, tiled_svs_from

LAMINA = [sys.executable, "-m", "lamina"]
SLOW_POINTS = 200
#: the kill points of the default run, per operation and backend: a sample that keeps the run
#: short (a STOW-RS point starts the server twice)
DEFAULT_POINTS = {
    "ingest": {"sqlite-folder": 6, "postgresql-s3": 6},
    "stow": {"sqlite-folder": 1, "postgresql-s3": 1},
    "delete": {"sqlite-folder": 2, "postgresql-s3": 2},
}


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crash")
    return tiled_svs_from(shared_file("aperio/CMU-1-Small-Region.svs"), folder / "big.svs", (3, 2))


# -- the archives of a campaign --------------------------------------------------------------
class _Archives:
    """The archive homes of one campaign on a backend (:class:`tests.backends.Backend`): each
    with a fresh catalog and store, or a copy of a template's, and removed as soon as its kill
    point is checked (a slow campaign makes hundreds)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.envs: dict[str, dict[str, str]] = {}

    def env(self, home: Path, template: Path | None = None) -> dict[str, str]:
        """The settings that point the archive of ``home`` at its catalog and store, made on first
        use (as a copy of ``template``'s archive when given)."""
        if str(home) not in self.envs:
            if template is None:
                self.envs[str(home)] = self.backend.env(f"crash-{home.name}")
            else:
                self.envs[str(home)] = self.backend.copy(self.envs[str(template)], template, home)
        return self.envs[str(home)]

    def discard(self, home: Path) -> None:
        """Remove the home, and its database and its objects on PostgreSQL + S3."""
        shutil.rmtree(home, ignore_errors=True)
        env = self.envs.pop(str(home), {})
        if "LAMINA_DATABASE_URL" in env:
            admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    name = make_url(env["LAMINA_DATABASE_URL"]).database
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            finally:
                admin.dispose()
        if env.get("LAMINA_BLOB_URL", "").startswith("s3://") and self.backend.s3 is not None:
            store = S3BlobStore.from_url(env["LAMINA_BLOB_URL"], self.backend.s3.env(), check=False)
            pages = store.client.get_paginator("list_objects_v2").paginate(
                Bucket=store.bucket, Prefix=store.prefix
            )
            for key in [str(item["Key"]) for page in pages for item in page.get("Contents", [])]:
                store.client.delete_object(Bucket=store.bucket, Key=key)
            store.sweep_tmp(0)


def _env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "LAMINA_HOME": str(home), **extra}


def _points(points: int, seed: str) -> Iterator[tuple[int, float]]:
    """(index, fraction of the work's duration at which to kill): one point in each of ``points``
    equal spans, at a seeded random place in it."""
    rng = random.Random(seed)
    for index in range(points):
        yield index, (index + rng.random()) / points


class _Durations:
    """How long the work takes, from the campaign's complete runs (the reference, and each rerun
    that did the whole work): the kill points follow the machine's load as it changes."""

    def __init__(self, first: float) -> None:
        self.seen = [first]

    def add(self, seconds: float) -> None:
        self.seen.append(seconds)

    @property
    def typical(self) -> float:
        return statistics.median(self.seen[-15:])


def _work_of(result: dict[str, object]) -> float:
    """The work's own duration, as the command reports it in its JSON output."""
    return float(str(result["seconds"]))


def _report(
    operation: str,
    archives: _Archives,
    points: int,
    started: float,
    work: _Durations,
    outcomes: Counter[str],
) -> None:
    # shown with -s (or in the log of a failure): what the campaign hit
    seconds = time.perf_counter() - started
    summary = ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()))
    print(
        f"\n{operation} on {archives.name}: {points} kill points in {seconds:.0f} s, "
        f"the work taking {work.typical:.3f} s ({summary})"
    )


# -- the invariants --------------------------------------------------------------------------
@dataclass(frozen=True)
class _State:
    slides: list[SlideRow]
    swept: int  # orphans and partial writes the sweep removed


def _check_consistent(home: Path, extra: dict[str, str], swept: bool = True) -> _State:
    """Every visible slide complete and intact, the audit chain whole; then (``swept``) the sweep,
    after which the store holds exactly what the catalog references."""
    archive = Archive.open(Settings.load(home, env=extra))
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
        with archive.catalog.engine.connect() as conn:
            check = audit.verify(conn)
            assert check.ok, f"audit entry {check.first_bad}: {check.reason}"
        if not swept:
            return _State(slides, 0)
        report = sweep(archive.catalog, archive.store, older_than_s=0)
        assert set(archive.store.iter_digests()) == archive.catalog.referenced_blobs()
        assert archive.store.sweep_tmp(0) == 0, "the sweep left partial writes"
        return _State(slides, len(report.orphans) + report.partial_writes)
    finally:
        archive.close()


def _audit_entries(home: Path, extra: dict[str, str], slide_id: str, action: str) -> int:
    archive = Archive.open(Settings.load(home, env=extra))
    try:
        with archive.catalog.engine.connect() as conn:
            return len(audit.entries(conn, slide=slide_id, action=action))
    finally:
        archive.close()


# -- ingest ----------------------------------------------------------------------------------
def _ingest(
    home: Path, slide: Path, kill_after: float | None, extra: dict[str, str]
) -> subprocess.CompletedProcess[str] | None:
    command = [*LAMINA, "ingest", "--json", str(slide)]
    if kill_after is None:
        return subprocess.run(
            command, env=_env(home, extra), capture_output=True, text=True, timeout=300, check=False
        )
    process = subprocess.Popen(
        command, env=_env(home, extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(kill_after)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return None


def _timed_ingest(home: Path, slide: Path, extra: dict[str, str]) -> tuple[dict[str, object], float]:
    """Ingest to the end: the result, and the whole run's duration."""
    begun = time.perf_counter()
    done = _ingest(home, slide, None, extra)
    total = time.perf_counter() - begun
    assert done is not None
    assert done.returncode == 0, f"the ingest must finish: {done.stdout} {done.stderr}"
    (result,) = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result, total


def _ingest_campaign(tmp_path: Path, slide: Path, points: int, archives: _Archives) -> None:
    started = time.perf_counter()
    result, total = _timed_ingest(tmp_path / "reference", slide, archives.env(tmp_path / "reference"))
    work, start_up = _Durations(_work_of(result)), _Durations(total - _work_of(result))
    archives.discard(tmp_path / "reference")
    outcomes: Counter[str] = Counter()
    for index, fraction in _points(points, f"ingest/{archives.name}"):
        home = tmp_path / f"home-{index}"
        extra = archives.env(home)
        # kill points spread over the ingest itself (after the interpreter has started)
        _ingest(home, slide, max(0.0, start_up.typical) + work.typical * fraction, extra)
        state = _check_consistent(home, extra)
        assert len(state.slides) in (0, 1)
        outcomes["visible" if state.slides else "leftovers" if state.swept else "nothing"] += 1
        result, total = _timed_ingest(home, slide, extra)
        # the start-up is learnt from every rerun (a duplicate's too), so that one slow reference
        # run on a loaded machine cannot push every kill point past the end of the work
        start_up.add(total - _work_of(result))
        if result["status"] == "ingested":
            work.add(_work_of(result))
        (done,) = _check_consistent(home, extra).slides
        assert _audit_entries(home, extra, done.id, "ingest") == 1
        archives.discard(home)
    _report("ingest", archives, points, started, work, outcomes)
    # the campaign must have hit the window where objects exist but the slide is not yet visible
    assert outcomes["leftovers"] > 0


def test_sigkill_during_ingest_leaves_a_consistent_archive(
    tmp_path: Path, big_slide: Path, backend: Backend
) -> None:
    _ingest_campaign(tmp_path, big_slide, DEFAULT_POINTS["ingest"][backend.name], _Archives(backend))


@pytest.mark.slow
def test_sigkill_campaign_at_200_points(tmp_path: Path, big_slide: Path, backend: Backend) -> None:
    _ingest_campaign(tmp_path, big_slide, SLOW_POINTS, _Archives(backend))


# -- STOW-RS ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Upload:
    """A STOW-RS request body: a slide's instances as multipart/related parts."""

    body: bytes
    content_type: str
    sop_instance_uids: frozenset[str]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, big_slide: Path) -> list[Path]:
    """The big slide as DICOM Part-10 files, as another archive would send it."""
    folder = tmp_path_factory.mktemp("exported")
    source = Archive.open(Settings.load(folder / "source", env={}))
    try:
        (candidate,) = discover([big_slide])
        result = Ingestor(source.catalog, source.store).ingest(candidate)
        return source.export(folder / "export", [result.slide_id or ""])[0].files
    finally:
        source.close()


@pytest.fixture(scope="module")
def stow_upload(exported: list[Path]) -> _Upload:
    boundary = uuid.uuid4().hex
    parts = [
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
        for path in exported
    ]
    uids = frozenset(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in exported)
    return _Upload(
        b"".join(parts) + f"--{boundary}--\r\n".encode(),
        f'multipart/related; type="application/dicom"; boundary={boundary}',
        uids,
    )


class _Server:
    """``lamina serve`` in a process of its own, on a free port."""

    def __init__(self, home: Path, extra: dict[str, str]) -> None:
        self.log = home.parent / f"{home.name}-serve.log"
        for _ in range(3):  # another process may take the free port first
            self.port = free_ports(1)[0]
            with self.log.open("ab") as out:
                self.process = subprocess.Popen(
                    [*LAMINA, "serve", "--port", str(self.port)],
                    env=_env(home, extra),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            if self._ready():
                sign_in_process(Settings.load(home, env=_env(home, extra)), self.port)
                return
        pytest.fail(f"lamina serve did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def _ready(self) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(httpx.TransportError):
                signed.get(f"{self.url}/studies", timeout=5)
                return True
            time.sleep(0.05)
        self.kill()
        return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicomweb"

    def post(self, upload: _Upload) -> httpx.Response:
        return signed.post(
            f"{self.url}/studies",
            content=upload.body,
            headers={"Content-Type": upload.content_type, "Accept": "application/dicom+json"},
            timeout=300,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def _post_and_kill(server: _Server, upload: _Upload, kill_after: float) -> None:
    """Send the request on a thread; SIGKILL the server ``kill_after`` seconds into it."""
    thread = threading.Thread(target=_post_quietly, args=(server, upload), daemon=True)
    thread.start()
    time.sleep(kill_after)
    server.kill()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the request did not end with the server"


def _post_quietly(server: _Server, upload: _Upload) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server dies under it: no answer is expected
        server.post(upload)


def _check_stored_once(home: Path, extra: dict[str, str], upload: _Upload, slides: list[SlideRow]) -> None:
    """The slide posted is there once, with every instance posted and nothing else."""
    (slide,) = slides
    archive = Archive.open(Settings.load(home, env=extra))
    try:
        uids = {row.sop_instance_uid for row in archive.catalog.instances(slide.id)}
    finally:
        archive.close()
    assert uids == upload.sop_instance_uids


def _stow_campaign(tmp_path: Path, upload: _Upload, points: int, archives: _Archives) -> None:
    started = time.perf_counter()
    reference = tmp_path / "reference"
    extra = archives.env(reference)
    server = _Server(reference, extra)
    try:
        begun = time.perf_counter()
        answer = server.post(upload)
        work = _Durations(time.perf_counter() - begun)
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    _check_stored_once(reference, extra, upload, _check_consistent(reference, extra).slides)
    archives.discard(reference)
    outcomes: Counter[str] = Counter()
    for index, fraction in _points(points, f"stow/{archives.name}"):
        home = tmp_path / f"home-{index}"
        extra = archives.env(home)
        # kill points spread over the request, and a little past its answer (the slide visible)
        _post_and_kill(_Server(home, extra), upload, 1.1 * work.typical * fraction)
        state = _check_consistent(home, extra)
        if state.slides:  # visible, so whole
            _check_stored_once(home, extra, upload, state.slides)
        outcomes["visible" if state.slides else "leftovers" if state.swept else "nothing"] += 1
        server = _Server(home, extra)
        try:
            begun = time.perf_counter()
            again = server.post(upload)
            if not state.slides:  # the whole work again
                work.add(time.perf_counter() - begun)
        finally:
            server.stop()
        assert again.status_code == 200, f"sending again must store the slide: {again.text}"
        slides = _check_consistent(home, extra).slides
        _check_stored_once(home, extra, upload, slides)
        assert _audit_entries(home, extra, slides[0].id, "ingest") == 1
        archives.discard(home)
    _report("STOW-RS", archives, points, started, work, outcomes)
    if points >= 20:
        assert outcomes["leftovers"] > 0 and outcomes["visible"] > 0, outcomes


def test_sigkill_during_stow_leaves_a_consistent_archive(
    tmp_path: Path, stow_upload: _Upload, backend: Backend
) -> None:
    _stow_campaign(tmp_path, stow_upload, DEFAULT_POINTS["stow"][backend.name], _Archives(backend))


@pytest.mark.slow
def test_stow_sigkill_campaign_at_200_points(tmp_path: Path, stow_upload: _Upload, backend: Backend) -> None:
    _stow_campaign(tmp_path, stow_upload, SLOW_POINTS, _Archives(backend))


# -- deletion --------------------------------------------------------------------------------
def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout: float = 120) -> None:
    """Read the process's stderr until ``marker`` appears (the confirmation prompt)."""
    assert process.stderr is not None
    fd, seen = process.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        assert chunk, f"lamina delete did not ask for confirmation: {seen.decode(errors='replace')}"
        seen += chunk


def _delete(home: Path, extra: dict[str, str], slide_id: str) -> subprocess.Popen[bytes]:
    """``lamina delete`` started and confirmed: it is deleting when this returns."""
    process = subprocess.Popen(
        [*LAMINA, "delete", slide_id, "--reason", "crash campaign", "--json"],
        env=_env(home, extra),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # answering the prompt starts the deletion: the kill points are timed from there
    _read_until(process, b"[y/N]: ")
    assert process.stdin is not None
    process.stdin.write(b"y\n")
    process.stdin.flush()
    return process


def _delete_to_the_end(home: Path, extra: dict[str, str], slide_id: str) -> dict[str, object]:
    command = [*LAMINA, "delete", slide_id, "--reason", "crash campaign", "--json", "--yes"]
    done = subprocess.run(
        command, env=_env(home, extra), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert isinstance(result, dict) and result["error"] is None, result
    return result


def _template(tmp_path: Path, archives: _Archives, exported: list[Path]) -> tuple[Path, str, str]:
    """An archive with the slide to delete and one to keep; every kill point starts from a copy.
    The slide to delete comes as DICOM files (no pyramid level to compute: quick on S3 too)."""
    home = tmp_path / "template"
    archive = Archive.open(Settings.load(home, env=archives.env(home)))
    try:
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=home)
        ids = []
        for candidate in discover([exported[0].parent, shared_file("aperio-synthetic/small.svs")]):
            result = ingestor.ingest(candidate)
            assert result.slide_id is not None and result.status == "ingested", result.reason
            ids.append(result.slide_id)
    finally:
        archive.close()
    return home, ids[0], ids[1]


def _delete_campaign(tmp_path: Path, exported: list[Path], points: int, archives: _Archives) -> None:
    started = time.perf_counter()
    template, gone, kept = _template(tmp_path, archives, exported)
    reference = tmp_path / "reference"
    extra = archives.env(reference, template)
    work = _Durations(_work_of(_delete_to_the_end(reference, extra, gone)))
    assert [s.id for s in _check_consistent(reference, extra).slides] == [kept]
    archives.discard(reference)
    outcomes: Counter[str] = Counter()
    for index, fraction in _points(points, f"delete/{archives.name}"):
        home = tmp_path / f"home-{index}"
        extra = archives.env(home, template)
        process = _delete(home, extra, gone)
        # kill points spread over the deletion and as long again after it (the output, the exit)
        time.sleep(2 * work.typical * fraction)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        # half the points sweep first; the other half check that deleting again removes what
        # the interrupted deletion left, without a sweep
        sweep_first = index % 2 == 0
        state = _check_consistent(home, extra, swept=sweep_first)
        ids = {s.id for s in state.slides}
        assert ids in ({gone, kept}, {kept}), "the slide must be either whole or gone"
        after = _delete_to_the_end(home, extra, gone)
        if gone in ids:
            outcome = "before the commit"
            assert after["status"] == "deleted"
            work.add(_work_of(after))
        else:
            assert after["status"] == "already deleted"
            left = state.swept if sweep_first else int(str(after["objects_removed"]))
            outcome = "objects left" if left else "done"
        outcomes[outcome] += 1
        final = _check_consistent(home, extra)
        assert [s.id for s in final.slides] == [kept]
        if not sweep_first:
            assert final.swept == 0, "deleting again must remove what the interrupted deletion left"
        assert _audit_entries(home, extra, gone, "delete") == 1
        archives.discard(home)
    _report("deletion", archives, points, started, work, outcomes)
    if points >= 20:
        assert outcomes["before the commit"] > 0 and outcomes["done"] + outcomes["objects left"] > 0


def test_sigkill_during_delete_leaves_a_consistent_archive(
    tmp_path: Path, exported: list[Path], backend: Backend
) -> None:
    _delete_campaign(tmp_path, exported, DEFAULT_POINTS["delete"][backend.name], _Archives(backend))


@pytest.mark.slow
def test_delete_sigkill_campaign_at_200_points(
    tmp_path: Path, exported: list[Path], backend: Backend
) -> None:
    _delete_campaign(tmp_path, exported, SLOW_POINTS, _Archives(backend))
