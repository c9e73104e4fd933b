"""The STOW-RS job and its spool, through the real queue (PostgreSQL), on a folder store and on S3:
the job removes its whole spool when it ends, stored or failed; what a kill leaves is swept, at a
worker's or a server's start and by the periodic job; a spool whose job is to run is never
removed. The report of a request answered 202 is kept for LAMINA_JOB_REPORTS_KEEP_DAYS."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import procrastinate
import pytest

from lamina.api import create_app
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.receive.jobspool import JobSpools
from lamina.config import Settings
from lamina.jobs import tasks
from lamina.jobs.queue import QUEUE, Worker, make_app
from lamina.jobs.runtime import Jobs
from lamina.sample import write_samples
from tests.backends import Backend
from tests.signin import signed
from tests.support import lamina_env, serving

LAMINA = str(Path(sys.executable).parent / "lamina")

#: What an API process runs for a STOW-RS request up to the queue, then is killed (SIGKILL).
_KILLED_AFTER_SPOOLING = """
import os, signal, sys, uuid
from pathlib import Path
from lamina.api import create_app
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.config import Settings
from lamina.jobs.runtime import Jobs
archive = Archive.open(Settings.load())
jobs = Jobs(archive)
key = uuid.uuid4().hex
jobs._spool(key, [Path(name) for name in sys.argv[1:]])
print(key, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # before the job is queued
"""


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A small slide exported as DICOM instances (what a STOW-RS request carries)."""
    folder = tmp_path_factory.mktemp("instances")
    write_samples(folder / "sources", ["aperio_svs"], size=(1024, 768), seed=21)
    source = Archive.open(Settings.load(folder / "source", env={}))
    try:
        [candidate] = discover([folder / "sources"])
        result = Ingestor(source.catalog, source.store).ingest(candidate)
        assert result.ok, result.reason
        [exported] = source.export(folder / "export", [result.slide_id or ""])
        return exported.files
    finally:
        source.close()


@pytest.fixture(params=["folder", "s3"])
def queued(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    """An archive on a PostgreSQL catalog (so a queue) and the store of the parameter."""
    backend = Backend.open("postgresql-s3", request)
    env = {"LAMINA_DATABASE_URL": backend.database_url(), "LAMINA_VERIFY_CRON": "off"}
    if request.param == "s3":
        assert backend.s3 is not None
        env |= {"LAMINA_BLOB_URL": backend.store_url(request.node.name), **backend.s3.env()}
    archive = Archive.open(Settings.load(tmp_path / "home", env=env))
    try:
        yield archive
    finally:
        archive.close()
        backend.close()


@pytest.fixture
def app(queued: Archive) -> Iterator[procrastinate.App]:
    """The queue, opened as an API process opens it."""
    opened = make_app(queued.settings).open()
    try:
        yield opened
    finally:
        opened.close()


def _spool(archive: Archive, files: list[Path]) -> tuple[str, list[str]]:
    """The instances copied into a new job spool, as an API process does before it queues."""
    key = uuid.uuid4().hex
    spool = JobSpools.of(archive.settings).open(key)
    digests = []
    for path in files:
        with spool.writer() as writer:
            writer.write(path.read_bytes())
            digests.append(writer.commit().sha256)
    return key, digests


def _queue(app: procrastinate.App, key: str, digests: list[str]) -> int:
    task = app.configure_task("lamina:store_instances", queue=QUEUE)
    return int(task.defer(job_key=key, digests=digests, study=None, actor="dicomweb"))


def _gone(archive: Archive, key: str) -> bool:
    """Nothing of the spool is left: no object, partial write or upload, and no folder."""
    spools = JobSpools.of(archive.settings)
    folder_gone = spools.folder is None or not (spools.folder / key).exists()
    return folder_gone and key not in spools.newest_writes()


def _status(app: procrastinate.App, job_id: int) -> str | None:
    found = app.job_manager.list_jobs(id=job_id)
    return found[0].status if found else None  # a job that succeeded is deleted


def _wait(condition: object, what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _run_jobs(archive: Archive) -> Worker:
    worker_app = make_app(archive.settings)
    tasks.register(worker_app, archive)
    worker = Worker(worker_app)
    worker.start()
    return worker


def test_a_job_removes_its_whole_spool_when_it_ends_stored_or_failed(
    queued: Archive, app: procrastinate.App, instances: list[Path]
) -> None:
    # Arrange: one request whose instances are all there, one whose job fails for good (a part
    # missing from its spool: not a failure to retry)
    stored_key, stored_digests = _spool(queued, instances)
    failing_key, failing_digests = _spool(queued, instances[:1])
    stored = _queue(app, stored_key, stored_digests)
    failing = _queue(app, failing_key, [*failing_digests, "0" * 64])
    assert not _gone(queued, stored_key) and not _gone(queued, failing_key)
    # Act
    worker = _run_jobs(queued)
    try:
        _wait(lambda: _status(app, stored) is None and _status(app, failing) == "failed", "jobs not run")
    finally:
        worker.stop()
    # Assert: the slide is stored, and neither job left anything of its spool (no empty folders)
    assert queued.catalog.count_slides() == 1
    assert _gone(queued, stored_key) and _gone(queued, failing_key)
    spools = JobSpools.of(queued.settings)
    assert spools.folder is None or list(spools.folder.iterdir()) == []


def test_a_kill_between_spooling_and_queueing_leaves_a_spool_the_sweep_removes(
    queued: Archive, app: procrastinate.App, instances: list[Path]
) -> None:
    # Arrange: an API process killed once it has spooled a request, before it queued the job;
    # a request queued whose job has not run yet (no worker), spooled as long ago
    live_key, live_digests = _spool(queued, instances[:2])
    live = _queue(app, live_key, live_digests)
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_SPOOLING, *map(str, instances[:2])],
        env=lamina_env(queued.settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    killed_key = killed.stdout.strip()
    assert set(JobSpools.of(queued.settings).newest_writes()) == {live_key, killed_key}
    assert killed_key not in tasks.stow_job_statuses(app)
    killed_at = JobSpools.of(queued.settings).newest_writes()[killed_key]
    time.sleep(6.0)
    # a request spooling now (its job not queued yet) is not what a kill left: the sweep's age
    # bound lies halfway between the two spools' newest writes as the store lists them (S3 drops
    # the second from LastModified), which leaves the sweep over 2 s to list and read the queue
    # on a busy machine before its cutoff would reach the newer spool
    spooling_key, _ = _spool(queued, instances[:1])
    spooling_at = JobSpools.of(queued.settings).newest_writes()[spooling_key]
    assert spooling_at - killed_at >= 5.0
    recent = time.time() - (killed_at + spooling_at) / 2
    # Act
    removed = tasks.sweep_jobs(queued, lambda: tasks.stow_job_statuses(app), older_than_s=recent)
    # Assert
    assert removed.spools == [killed_key] and _gone(queued, killed_key)
    assert set(JobSpools.of(queued.settings).newest_writes()) == {live_key, spooling_key}
    # the live job's spool is never removed, however old; once it has run, it is gone
    swept = tasks.sweep_jobs(queued, lambda: tasks.stow_job_statuses(app), older_than_s=0)
    assert swept.spools == [spooling_key]
    assert _status(app, live) == "todo" and not _gone(queued, live_key)
    worker = _run_jobs(queued)
    try:
        _wait(lambda: _status(app, live) is None, "the queued job did not run")
    finally:
        worker.stop()
    assert _gone(queued, live_key) and queued.catalog.count_slides() == 1


def _cancelled(archive: Archive, app: procrastinate.App, files: list[Path]) -> str:
    """The spool of a job that will never run: queued, then cancelled (as an operator may)."""
    key, digests = _spool(archive, files)
    assert app.job_manager.cancel_job_by_id(_queue(app, key, digests))
    assert tasks.stow_job_statuses(app)[key] == "cancelled"
    return key


def test_the_sweep_runs_at_a_servers_and_a_workers_start_and_periodically(
    queued: Archive, app: procrastinate.App, instances: list[Path]
) -> None:
    # a server's start (what lamina serve runs beside its requests)
    key = _cancelled(queued, app, instances[:1])
    server = Jobs(queued)
    try:
        server.start()
    finally:
        server.close()
    assert _gone(queued, key)
    # the periodic job, registered with every process that runs jobs
    worker_app = make_app(queued.settings)
    tasks.register(worker_app, queued)
    [periodic] = [
        task
        for (name, _), task in worker_app.periodic_registry.periodic_tasks.items()
        if name == "lamina:sweep_jobs"
    ]
    assert periodic.cron == tasks.SWEEP_CRON
    key = _cancelled(queued, app, instances[:1])
    with worker_app.open():
        periodic.task(timestamp=int(time.time()))
    assert _gone(queued, key)
    # a lamina worker's start
    key = _cancelled(queued, app, instances[:1])
    log = queued.settings.home / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [LAMINA, "worker", "--concurrency", "1"],
            env=lamina_env(queued.settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    said = "removed 1 job spool(s) that no job will read"
    try:
        # the log line comes after the removal: wait for both (a worker at background priority
        # on a busy machine may be stopped between the two otherwise)
        _wait(
            lambda: _gone(queued, key) and said in log.read_text(),
            f"lamina worker did not sweep: {log.read_text()}",
            60,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert said in log.read_text()


def _multipart(files: list[Path], boundary: str = "lamina-test") -> bytes:
    parts = [
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
        for path in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _reports(archive: Archive) -> set[str]:
    with archive.catalog.engine.connect() as conn:
        return {row.job_key for row in conn.execute(t.job_reports.select())}


def test_the_report_of_a_request_answered_202_is_kept_for_the_days_set_then_swept(
    queued: Archive, instances: list[Path]
) -> None:
    # Arrange: a STOW-RS request that answers 202 at once, its job going on in the server
    server = Archive.open(queued.settings.with_(stow_wait_s=0.0))
    with serving(create_app(server.settings, server)) as port:
        answer = signed.post(
            f"http://127.0.0.1:{port}/dicomweb/studies",
            content=_multipart(instances),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=lamina-test'},
            timeout=120,
        )
        assert answer.status_code == 202 and "still being stored" in answer.headers["warning"]
        _wait(lambda: len(_reports(queued)) == 1, "the job wrote no report")
    server.close()
    assert queued.catalog.count_slides() == 1
    # Act, assert: within LAMINA_JOB_REPORTS_KEEP_DAYS (7 by default) the sweep keeps it
    assert tasks.sweep_jobs(queued, dict).reports == 0 and len(_reports(queued)) == 1
    one_second = Archive.open(queued.settings.with_(job_reports_keep_days=1 / 86400))
    try:
        time.sleep(1.5)
        assert tasks.sweep_jobs(one_second, dict).reports == 1
    finally:
        one_second.close()
    assert _reports(queued) == set()
