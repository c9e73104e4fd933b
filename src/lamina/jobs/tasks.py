"""The task bodies, the same in a ``lamina worker`` process and in the embedded server.

Each takes its archive and plain JSON arguments (paths, digests, keys); on its last attempt
(``final``) a task reports a failure instead of raising it for a retry. :func:`register` binds
them to a Procrastinate app for one archive: the process that runs the jobs opens its archive
and registers, so no task looks for an archive or for settings of its own.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import procrastinate
from sqlalchemy import delete, insert

from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.discover import Candidate
from lamina.archive.fixity import verify
from lamina.archive.manifest import load_manifest
from lamina.archive.receive.jobspool import JobSpools
from lamina.archive.sweep import SPOOL_GRACE_S, sweep_job_reports, sweep_job_spools
from lamina.archive.watch import Claim, Watcher
from lamina.config import Settings
from lamina.errors import LaminaError, UnavailableError
from lamina.jobs.queue import MAX_ATTEMPTS, QUEUE, RETRY, STALLED_AFTER_S
from lamina.lifecycle.tiers import ColdTier

log = logging.getLogger("lamina.jobs")


def _final(context: procrastinate.JobContext) -> bool:
    job = context.job
    return job is None or job.attempts + 1 >= MAX_ATTEMPTS


# -- STOW-RS ------------------------------------------------------------------------------------


def store_instances(
    archive: Archive,
    *,
    job_key: str,
    digests: list[str],
    study: str | None,
    actor: str,
    final: bool,
    tenant: str = "",
) -> list[dict[str, Any]]:
    """Receive the spooled instances of one STOW-RS request (their SHA-256 in its job spool,
    :mod:`lamina.archive.receive.jobspool`) and record the outcome per instance under
    ``job_key``. The job's spool is removed whole when the job ends: stored, or failed for good
    (any failure but :class:`UnavailableError` before the last attempt, which is retried)."""
    spools = JobSpools.of(archive.settings)
    try:
        report = _store_spooled(archive, spools, job_key, digests, study, actor, final, tenant)
    except UnavailableError:
        if final:
            _remove_spool(spools, job_key)
        raise
    except Exception:  # not retried (RETRY retries UnavailableError only): the job has failed
        _remove_spool(spools, job_key)
        raise
    _remove_spool(spools, job_key)
    return report


def _store_spooled(
    archive: Archive,
    spools: JobSpools,
    job_key: str,
    digests: list[str],
    study: str | None,
    actor: str,
    final: bool,
    tenant: str = "",
) -> list[dict[str, Any]]:
    spool = spools.open(job_key)
    with archive.incoming.request() as folder:
        files = []
        for index, digest in enumerate(digests):
            path = folder / f"{index:06d}.dcm"
            with path.open("wb") as out:
                for chunk in spool.open(digest):
                    out.write(chunk)
            files.append(path)
        receipt = archive.receiver().receive(files, study=study, actor=actor, final=final, tenant=tenant)
    report = [outcome.as_dict() for outcome in receipt.outcomes]
    with archive.catalog.begin() as conn:
        conn.execute(delete(t.job_reports).where(t.job_reports.c.job_key == job_key))
        conn.execute(
            insert(t.job_reports).values(
                job_key=job_key,
                kind="stow",
                created_at=dt.datetime.now(dt.UTC),
                report=orjson.dumps(report).decode(),
            )
        )
    return report


def _remove_spool(spools: JobSpools, job_key: str) -> None:
    try:
        spools.remove(job_key)
    except LaminaError as exc:
        # sweep_job_spools removes it later: at its next run once the job has failed, an hour
        # after its last write once the job has succeeded (and left the queue)
        log.warning("the spool of job %s was not removed: %s", job_key, exc)


# -- the sweep of what jobs leave ---------------------------------------------------------------

#: How often a process that runs jobs sweeps what jobs leave behind (and once at its start).
SWEEP_CRON = "*/15 * * * *"


def stow_job_statuses(app: procrastinate.App) -> dict[str, str]:
    """The status of every STOW-RS job in the queue, by its job key (its spool's name)."""
    found = {}
    for job in app.job_manager.list_jobs(task="lamina:store_instances", queue=QUEUE):
        key = (job.task_kwargs or {}).get("job_key")
        if isinstance(key, str) and job.status is not None:
            found[key] = job.status
    return found


@dataclass(frozen=True)
class JobSweep:
    """What :func:`sweep_jobs` removed: the keys of job spools, and how many job reports."""

    spools: list[str]
    reports: int


def sweep_jobs(
    archive: Archive, statuses: Callable[[], Mapping[str, str]], older_than_s: float = SPOOL_GRACE_S
) -> JobSweep:
    """Remove the job spools no job will read again (:func:`~lamina.archive.sweep.sweep_job_spools`,
    a spool without a job once its newest write is ``older_than_s`` old), and the job reports
    older than the archive's ``job_reports_keep_days``. ``statuses`` reads the queue
    (:func:`stow_job_statuses`); a process without one (the embedded catalog) gives none."""
    removed = sweep_job_spools(JobSpools.of(archive.settings), statuses, older_than_s)
    if removed:
        log.warning("removed %d job spool(s) that no job will read: %s", len(removed), ", ".join(removed))
    days = archive.settings.job_reports_keep_days
    reports = sweep_job_reports(archive.catalog, days * 86400)
    if reports:
        log.info("removed %d job report(s) that no request took, older than %g days", reports, days)
    return JobSweep(removed, reports)


def sweep_at_start(archive: Archive, app: procrastinate.App | None) -> None:
    """:func:`sweep_jobs` once, as a process that runs jobs starts; ``app`` an opened app of the
    queue (None without one). A failure is logged, not raised: housekeeping never stops a start,
    and the periodic sweep tries again."""
    try:
        sweep_jobs(archive, (lambda: stow_job_statuses(app)) if app is not None else dict)
    except Exception as exc:  # S3 or the queue unreachable: the reason, never a URL with a secret
        reason = str(exc) if isinstance(exc, LaminaError) else type(exc).__name__
        log.warning("what jobs left behind was not swept at start (%s); swept again later", reason)


# -- watched folders ----------------------------------------------------------------------------


def ingest_watched(
    archive: Archive,
    *,
    folder: str,
    path: str,
    members: list[str],
    signature: list[list[Any]],
    claim: list[str],
    manifest: str | None,
    final: bool,
) -> str:
    """Ingest one claimed unit of a watched folder and move it to done/ or failed/."""
    watcher = Watcher(archive, Path(folder), manifest=load_manifest(Path(manifest)) if manifest else None)
    candidate = Candidate(Path(path), tuple(Path(member) for member in members))
    sig = tuple((str(name), int(size), int(mtime)) for name, size, mtime in signature)
    result = watcher.process(candidate, sig, Claim(Path(claim[0]), claim[1]), final=final)
    if result is None:
        return "skipped (handled elsewhere)"
    log.info("%s %s: %s", result.status, path, result.slide_id or result.reason)
    return str(result.status)


def watched_submitter(app: procrastinate.App, folder: Path, manifest: Path | None) -> Any:
    """The Watcher's ``submit``: defer the ingest of a claimed unit (``app`` need not have the
    tasks registered: jobs are queued by name, on lamina's queue)."""

    def submit(candidate: Candidate, signature: Any, claim: Claim) -> None:
        app.configure_task("lamina:ingest_watched", queue=QUEUE, queueing_lock=str(candidate.path)).defer(
            folder=str(folder),
            path=str(candidate.path),
            members=[str(member) for member in candidate.members],
            signature=[list(item) for item in signature],
            claim=[str(claim.path), claim.token],
            manifest=str(manifest) if manifest else None,
        )

    return submit


# -- fixity and repair --------------------------------------------------------------------------


def verify_and_queue_repairs(
    archive: Archive, limit_mb_s: float, on_damaged: Callable[[str], None]
) -> dict[str, int]:
    """A fixity run at ``limit_mb_s``; every missing or corrupt object is handed to ``on_damaged``."""
    limit = max(1, int(limit_mb_s * 1_000_000)) if limit_mb_s > 0 else None
    cold = ColdTier.open(archive.settings)
    report = verify(
        archive.catalog,
        archive.store,
        max_bytes_per_s=limit,
        actor="lamina-periodic",
        nice=archive.settings.background_nice,
        cold_store=cold.store if cold is not None else None,
    )
    for digest in [*(m.sha256 for m in report.missing), *(c.sha256 for c in report.corrupt)]:
        on_damaged(digest)
    return {"checked": report.checked, "missing": len(report.missing), "corrupt": len(report.corrupt)}


def run_lifecycle(archive: Archive) -> dict[str, object]:
    """The care lifecycle now (:func:`lamina.lifecycle.run.run`), with the cold tier when one is
    configured; what was done, for the log."""
    from lamina.lifecycle.run import run
    from lamina.lifecycle.tiers import TierMover

    mover = TierMover.for_archive(archive)
    report = run(
        archive.catalog,
        archive.store,
        dt.datetime.now(dt.UTC),
        "lamina-periodic",
        mover=mover,
        cold_store=mover.cold.store if mover is not None else None,
    )
    return {**report.done.as_dict(), "failed": len(report.failed), "review": len(report.review)}


def pushes(settings: Settings) -> bool:
    """Whether this node pushes slides of interest on a schedule: a site with an archive."""
    return bool(settings.push_cron and settings.role == "site" and settings.exchange.archive_url)


def run_push(archive: Archive) -> dict[str, object]:
    """``lamina push`` now (:class:`lamina.exchange.push.Pusher`): the count of each status."""
    from collections import Counter

    from lamina.exchange.push import Pusher

    with Pusher(archive, actor="lamina-periodic") as pusher:
        return dict(Counter(result.status for result in pusher.run()))


def queue_repair(app: procrastinate.App, sha256: str) -> None:
    """Queue the repair of one object, once however many times it is found damaged meanwhile."""
    task = app.configure_task("lamina:repair_object", queue=QUEUE, queueing_lock=f"repair:{sha256}")
    task.defer(sha256=sha256)


# -- the tasks of one archive -------------------------------------------------------------------


def register(app: procrastinate.App, archive: Archive) -> None:
    """lamina's tasks on ``app``, run on ``archive`` (each app its own: a task is bound to the app
    it is registered on), and the periodic jobs: fixity at the archive's ``verify_cron``, stalled
    jobs back to the queue, the sweep of what jobs leave (:func:`sweep_jobs`, at ``SWEEP_CRON``)."""

    @app.task(name="lamina:store_instances", queue=QUEUE, retry=RETRY, pass_context=True)
    def store_instances_job(
        context: procrastinate.JobContext,
        job_key: str,
        digests: list[str],
        study: str | None,
        actor: str,
        tenant: str = "",
    ) -> None:
        report = store_instances(
            archive,
            job_key=job_key,
            digests=digests,
            study=study,
            actor=actor,
            final=_final(context),
            tenant=tenant,
        )
        failed = sum(1 for item in report if item.get("failure_reason") is not None)
        log.info("stored job %s: %d instances, %d failed", job_key, len(report) - failed, failed)

    @app.task(name="lamina:ingest_watched", queue=QUEUE, retry=RETRY, pass_context=True)
    def ingest_watched_job(context: procrastinate.JobContext, /, **kwargs: Any) -> None:
        try:
            ingest_watched(archive, final=_final(context), **kwargs)
        except UnavailableError as exc:
            attempt = (context.job.attempts if context.job else 0) + 1
            log.warning(
                "%s not ingested yet (attempt %d of %d): %s; retried with backoff",
                kwargs.get("path"),
                attempt,
                MAX_ATTEMPTS,
                exc,
            )
            raise

    @app.task(name="lamina:repair_object", queue=QUEUE, retry=RETRY)
    def repair_object_job(sha256: str) -> None:
        archive.repair(sha256)

    @app.task(name="lamina:restore_slide", queue=QUEUE, retry=RETRY, pass_context=True)
    def restore_slide_job(context: procrastinate.JobContext, slide_id: str, actor: str) -> None:
        from lamina.lifecycle.restore import run_restore_job

        run_restore_job(archive, slide_id, actor, final=_final(context))

    @app.periodic(cron="* * * * *", periodic_id="requeue_stalled")
    @app.task(name="lamina:requeue_stalled", queue=QUEUE, pass_context=False)
    async def requeue_stalled(timestamp: int) -> None:
        stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER_S)
        for job in stalled:
            log.warning("job %s (%s) lost its worker; queued again", job.id, job.task_name)
            await app.job_manager.retry_job(job)

    @app.periodic(cron=SWEEP_CRON, periodic_id="sweep_jobs")
    @app.task(name="lamina:sweep_jobs", queue=QUEUE, pass_context=False)
    def periodic_sweep(timestamp: int) -> None:
        sweep_jobs(archive, lambda: stow_job_statuses(app))

    settings = archive.settings
    if settings.lifecycle_cron:

        @app.periodic(cron=settings.lifecycle_cron, periodic_id="lifecycle")
        @app.task(name="lamina:lifecycle", queue=QUEUE, queueing_lock="lifecycle")
        def periodic_lifecycle(timestamp: int) -> None:
            log.info("periodic lifecycle: %s", run_lifecycle(archive))

    if pushes(settings):
        assert settings.push_cron is not None

        @app.periodic(cron=settings.push_cron, periodic_id="push")
        @app.task(name="lamina:push", queue=QUEUE, queueing_lock="push")
        def periodic_push(timestamp: int) -> None:
            log.info("periodic push: %s", run_push(archive))

    if settings.verify_cron:

        @app.periodic(cron=settings.verify_cron, periodic_id="verify")
        @app.task(name="lamina:verify", queue=QUEUE)
        def periodic_verify(timestamp: int) -> None:
            counts = verify_and_queue_repairs(
                archive, settings.verify_limit_mb_s, lambda digest: queue_repair(app, digest)
            )
            log.info("periodic fixity: %s", counts)
