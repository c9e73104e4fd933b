"""What a server process runs beside its requests: job workers, watched folders, the periodic
fixity check, the sweep of request spools left by processes that are gone; and the hand-over of
received instances to the queue."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from anyio.to_thread import run_sync
from sqlalchemy import delete, select

from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.priority import lower_priority
from lamina.archive.receive import Outcome, examine
from lamina.archive.watch import Watcher
from lamina.errors import StorageError
from lamina.jobs import tasks
from lamina.jobs.queue import QUEUE, Worker, make_app, queued
from lamina.lifecycle import restore

log = logging.getLogger("lamina.jobs")
_ENDED = {"failed", "cancelled", "aborted"}


class Jobs:
    """The jobs of one server process on ``archive``: queued (PostgreSQL) or in-process."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.settings = archive.settings
        self.queued = queued(self.settings)
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.worker: Worker | None = None
        if self.queued:
            self.app = make_app(self.settings)
            self.app.open()
            archive.on_damaged = self.queue_repair
        # reads of cold slides queue their restore (lamina.lifecycle.restore.cold_check)
        restore.for_archive(archive, self.app if self.queued else None)

    # -- background work ------------------------------------------------------------------------

    def start(self) -> None:
        swept = self.archive.incoming.open()
        if swept:
            log.warning("removed %d request spool(s) of processes that ended without removing them", swept)
        tasks.sweep_at_start(self.archive, self.app if self.queued else None)
        if self.queued and self.settings.workers > 0:
            app = make_app(self.settings)
            tasks.register(app, self.archive)
            self.worker = Worker(app, self.settings.workers, nice=self.settings.background_nice)
            self.worker.start()
        if not self.queued and self.settings.verify_cron:
            self._thread(self._periodic_verify, "lamina-verify")
        if not self.queued and self.settings.lifecycle_cron:
            self._thread(self._periodic_lifecycle, "lamina-lifecycle")
        if not self.queued and tasks.pushes(self.settings):
            self._thread(self._periodic_push, "lamina-push")
        for folder in self.settings.watch:
            self._thread(lambda folder=folder: self._watch(folder), f"lamina-watch-{folder.name}")

    def close(self) -> None:
        self.stop.set()
        if self.worker is not None:
            self.worker.stop()
        if self.queued:
            self.app.close()

    def _thread(self, target: object, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self.threads.append(thread)

    def watcher(self, folder: Path, manifest: Path | None = None) -> Watcher:
        from lamina.archive.manifest import load_manifest

        submit = tasks.watched_submitter(self.app, folder, manifest) if self.queued else None
        loaded = load_manifest(manifest) if manifest else None
        return Watcher(self.archive, folder, self.settings.watch_stable_s, manifest=loaded, submit=submit)

    def _watch(self, folder: Path) -> None:
        lower_priority(self.settings.background_nice)
        watcher = self.watcher(folder)
        log.info("watching %s", folder)
        while not self.stop.is_set():
            try:
                watcher.run(self.stop, 1.0)
            except Exception:
                log.exception("watching %s failed; again in 10 s", folder)
                self.stop.wait(10)

    def _periodic(self, cron_line: str, what: str, work: Callable[[], object]) -> None:
        """Run ``work`` at each time of ``cron_line`` until the server stops, logging what it did
        (or why it failed: the next time runs all the same)."""
        from croniter import croniter

        lower_priority(self.settings.background_nice)
        cron = croniter(cron_line, time.time())
        while not self.stop.wait(max(0.0, cron.get_next(float) - time.time())):
            try:
                log.info("periodic %s: %s", what, work())
            except Exception:
                log.exception("periodic %s failed", what)

    def _periodic_verify(self) -> None:
        assert self.settings.verify_cron is not None
        self._periodic(
            self.settings.verify_cron,
            "fixity",
            lambda: tasks.verify_and_queue_repairs(
                self.archive, self.settings.verify_limit_mb_s, self.archive.on_damaged
            ),
        )

    def _periodic_lifecycle(self) -> None:
        assert self.settings.lifecycle_cron is not None
        self._periodic(self.settings.lifecycle_cron, "lifecycle", lambda: tasks.run_lifecycle(self.archive))

    def _periodic_push(self) -> None:
        assert self.settings.push_cron is not None
        self._periodic(self.settings.push_cron, "push", lambda: tasks.run_push(self.archive))

    def queue_repair(self, sha256: str) -> None:
        tasks.queue_repair(self.app, sha256)

    # -- instances received through the queue ---------------------------------------------------

    async def store(
        self, files: list[Path], study: str | None, tenant: str = "", actor: str = "dicomweb"
    ) -> list[Outcome] | None:
        """Copy the instances (Part-10 files) to the spool store, queue their job, wait for its
        report: an outcome per instance, in order (None after ``stow_wait_s``: the job goes on,
        the client gets 202). Instances refused at once get no job."""
        outcomes = await run_sync(lambda: [examine(path, study) for path in files])
        keep = [path for path, outcome in zip(files, outcomes, strict=True) if outcome.ok]
        if not keep:
            return outcomes
        job_key = uuid.uuid4().hex
        digests = await run_sync(self._spool, job_key, keep)
        arguments: dict[str, Any] = {
            "job_key": job_key,
            "digests": digests,
            "study": study,
            "actor": actor,
            "tenant": tenant,
        }
        defer = self.app.configure_task("lamina:store_instances", queue=QUEUE).defer
        job_id = await run_sync(lambda: defer(**arguments))
        deadline = time.monotonic() + self.settings.stow_wait_s
        checked = time.monotonic()
        while True:
            report = await run_sync(self._take_report, job_key)
            if report is not None:
                stored = iter(Outcome.from_dict(item) for item in report)
                return [next(stored) if outcome.ok else outcome for outcome in outcomes]
            if time.monotonic() - checked > 2:
                checked = time.monotonic()
                found = await run_sync(lambda: self.app.job_manager.list_jobs(id=job_id))
                status = found[0].status if found else None
                if status in _ENDED or (status is None and await run_sync(self._gone, job_key)):
                    raise StorageError(
                        f"the storing job {job_id} ended without storing the instances ({status or 'gone'}); "
                        "see the worker's log and send them again"
                    )
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)

    def _spool(self, job_key: str, files: list[Path]) -> list[str]:
        digests = []
        spool = self.archive.spool(job_key)
        for path in files:
            with spool.writer() as writer, path.open("rb") as source:
                while chunk := source.read(8 << 20):
                    writer.write(chunk)
                digests.append(writer.commit().sha256)
        return digests

    def _take_report(self, job_key: str) -> list[dict[str, object]] | None:
        with self.archive.catalog.begin() as conn:
            query = select(t.job_reports.c.report).where(t.job_reports.c.job_key == job_key)
            row = conn.execute(query).first()
            if row is None:
                return None
            conn.execute(delete(t.job_reports).where(t.job_reports.c.job_key == job_key))
        loaded = orjson.loads(row[0])
        return loaded if isinstance(loaded, list) else []

    def _gone(self, job_key: str) -> bool:
        """The job is no longer in the queue (finished and removed) and left no report."""
        query = select(t.job_reports.c.job_key).where(t.job_reports.c.job_key == job_key)
        with self.archive.catalog.engine.connect() as conn:
            return conn.execute(query).first() is None
