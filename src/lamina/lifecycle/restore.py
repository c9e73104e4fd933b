"""Reading a slide on the cold tier: its restore request, the restore job, and the check that the
protocols make before they read a slide.

A read of a cold slide (:func:`cold_check`) records one restore request for the slide (a
``job_reports`` row under :func:`~lamina.lifecycle.tiers.restore_key`, kind ``restore``: its
primary key makes it one per slide whichever process asks first, on SQLite and PostgreSQL alike),
queues the restore job when the request is new, and raises :class:`~lamina.errors.RestoringError`
(202 with ``Retry-After``) with the time left: the tier's ``restore_delay_s`` from the request,
then the copy at :data:`COPY_BYTES_PER_S`. A request that is already there queues nothing (a
restore queued or running is not queued twice), unless it is stale (:data:`STALE_AFTER_S` past
its expected end: its job was lost), when the job is queued again (harmless: a restore is
idempotent).

The restore job (:func:`restore_slide`) waits until ``requested_at + restore_delay_s`` (tape, or an
archive storage class, is not readable before; through the queue the job is scheduled at that
time rather than sleeping in a worker), then moves the slide to hot
(:meth:`~lamina.lifecycle.tiers.TierMover.move_slide`: copy, verify the SHA-256 of each object,
switch ``slides.tier`` with a ``tier-restore`` audit entry and the end of the request in one
transaction). The cold copy is kept: the slide returns to cold by its rule as a catalog switch
and a removal from the hot store. A restore that fails for good ends its request, so the next
read asks again.

Through the queue (a PostgreSQL catalog) the job is ``lamina:restore_slide`` with a queueing lock
and a lock per slide; with the embedded catalog it runs on a thread of the server's process.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
import sqlalchemy.exc
from sqlalchemy import delete, func, insert, select

from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.times import utc as _utc
from lamina.errors import NotFoundError, RestoringError, StorageError, UnavailableError
from lamina.lifecycle.rules import Tier
from lamina.lifecycle.tiers import Moved, TierMover, restore_key

if TYPE_CHECKING:
    import procrastinate

    from lamina.archive.archive import Archive

__all__ = [
    "COPY_BYTES_PER_S",
    "Request",
    "Restorer",
    "cold_check",
    "for_archive",
    "install",
    "request_restore",
    "restore_slide",
    "run_restore_job",
]

log = logging.getLogger("lamina.lifecycle")

#: The copy rate a Retry-After is estimated with (cold to hot, verified): 100 MB/s.
COPY_BYTES_PER_S = 100e6
#: A request this long past its expected end has lost its job: a read queues it again.
STALE_AFTER_S = 300.0
#: The shortest Retry-After given.
MIN_RETRY_S = 2
TASK = "lamina:restore_slide"
ACTOR = "lamina-restore"


@dataclass(frozen=True)
class Request:
    """A slide's restore request: when it was made, when its objects may be read (``ready_at``),
    its bytes, and whether this call made it (``created``)."""

    slide_id: str
    requested_at: dt.datetime
    ready_at: dt.datetime
    bytes: int
    created: bool = False

    def retry_after_s(self, now: dt.datetime | None = None) -> int:
        """Seconds until the slide should be back: what is left of the delay, then the copy."""
        now = now or dt.datetime.now(dt.UTC)
        left = max(0.0, (self.ready_at - now).total_seconds()) + self.bytes / COPY_BYTES_PER_S
        return max(MIN_RETRY_S, math.ceil(left))

    def stale(self, now: dt.datetime | None = None) -> bool:
        now = now or dt.datetime.now(dt.UTC)
        expected_end = self.ready_at + dt.timedelta(seconds=self.bytes / COPY_BYTES_PER_S + STALE_AFTER_S)
        return now > expected_end


def read_request(catalog: Catalog, slide_id: str) -> Request | None:
    """The slide's restore request, or None."""
    query = select(t.job_reports.c.created_at, t.job_reports.c.report).where(
        t.job_reports.c.job_key == restore_key(slide_id)
    )
    with catalog.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    detail = orjson.loads(row[1])
    return Request(
        slide_id, _utc(row[0]), dt.datetime.fromisoformat(str(detail["ready_at"])), int(detail["bytes"])
    )


def request_restore(
    catalog: Catalog, slide_id: str, delay_s: float, now: dt.datetime | None = None
) -> Request:
    """The slide's restore request: made now (``created``) unless there is one already."""
    now = now or dt.datetime.now(dt.UTC)
    with catalog.engine.connect() as conn:
        size = conn.execute(
            select(func.coalesce(func.sum(t.instances.c.bytes), 0)).where(t.instances.c.slide_id == slide_id)
        ).scalar_one()
    ready_at = now + dt.timedelta(seconds=delay_s)
    detail = {"slide": slide_id, "bytes": int(size), "ready_at": ready_at.isoformat()}
    try:
        with catalog.begin() as conn:
            conn.execute(
                insert(t.job_reports).values(
                    job_key=restore_key(slide_id),
                    kind="restore",
                    created_at=now,
                    report=orjson.dumps(detail).decode(),
                )
            )
    except sqlalchemy.exc.IntegrityError:  # another reader asked first
        found = read_request(catalog, slide_id)
        if found is not None:
            return found
        return request_restore(catalog, slide_id, delay_s, now)  # ended meanwhile: ask again
    return Request(slide_id, now, ready_at, int(size), created=True)


def end_request(catalog: Catalog, slide_id: str) -> None:
    with catalog.begin() as conn:
        conn.execute(delete(t.job_reports).where(t.job_reports.c.job_key == restore_key(slide_id)))


def restore_slide(
    mover: TierMover,
    slide_id: str,
    actor: str = ACTOR,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Moved | None:
    """Bring a cold slide back to hot (the module's docstring); None when it is not cold (done
    already, or moved by its rule meanwhile). Waits until its request's ``ready_at`` first."""
    catalog = mover.catalog
    slide = catalog.slide(slide_id)
    if slide is None:
        end_request(catalog, slide_id)
        raise NotFoundError(f"no slide {slide_id} on this node")
    if slide.tier != Tier.COLD.value or slide.expired_at is not None:
        end_request(catalog, slide_id)
        return None
    request = read_request(catalog, slide_id) or request_restore(
        catalog, slide_id, mover.cold.restore_delay_s
    )
    wait = (request.ready_at - dt.datetime.now(dt.UTC)).total_seconds()
    if wait > 0:  # the cold tier's objects are not readable before
        sleep(wait)
    return mover.move_slide(slide_id, Tier.HOT, actor, action="tier-restore")


def run_restore_job(archive: Archive, slide_id: str, actor: str = ACTOR, *, final: bool = True) -> None:
    """The body of ``lamina:restore_slide``: :func:`restore_slide` on ``archive``'s tiers. A
    failure ends the request (so that a read asks again), except one that is retried
    (:class:`UnavailableError` before the ``final`` attempt)."""
    mover = TierMover.for_archive(archive)
    if mover is None:
        end_request(archive.catalog, slide_id)
        raise StorageError(
            f"slide {slide_id} cannot be restored: no cold tier is configured "
            "(tiers.cold in lamina.toml, LAMINA_COLD_URL)"
        )
    try:
        moved = restore_slide(mover, slide_id, actor)
    except UnavailableError:
        if final:
            end_request(archive.catalog, slide_id)
        raise
    except Exception:
        end_request(archive.catalog, slide_id)
        raise
    if moved is not None:
        log.info("restored slide %s: %d object(s) copied, %.1f s", slide_id, moved.copied, moved.seconds)


class Restorer:
    """Queues restore jobs for ``archive``: through the queue of ``app`` (a PostgreSQL catalog),
    or on a thread of this process (``app`` None: the embedded catalog)."""

    def __init__(
        self, archive: Archive, mover: TierMover, app: procrastinate.App | None = None, actor: str = ACTOR
    ) -> None:
        self.archive = archive
        self.mover = mover
        self.app = app
        self.actor = actor
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def check(self, slide_id: str) -> None:
        """Raise :class:`RestoringError` for the cold slide ``slide_id``, its restore requested and
        queued once (the module's docstring)."""
        request = request_restore(self.archive.catalog, slide_id, self.mover.cold.restore_delay_s)
        if request.created or request.stale() or self.app is None:
            self.submit(slide_id, request.ready_at)
        seconds = request.retry_after_s()
        raise RestoringError(
            f"slide {slide_id} is on the cold tier and is being restored (asked at "
            f"{request.requested_at:%Y-%m-%d %H:%M:%S} UTC); ask again in {seconds} s",
            seconds,
        )

    def submit(self, slide_id: str, ready_at: dt.datetime) -> bool:
        """Queue the restore of ``slide_id``; False when one is queued or running already."""
        if self.app is not None:
            from procrastinate.exceptions import AlreadyEnqueued

            from lamina.jobs.queue import QUEUE

            key = restore_key(slide_id)
            task = self.app.configure_task(
                TASK, queue=QUEUE, queueing_lock=key, lock=key, schedule_at=ready_at
            )
            try:
                task.defer(slide_id=slide_id, actor=self.actor)
            except AlreadyEnqueued:
                return False
            return True
        with self._lock:
            running = self._threads.get(slide_id)
            if running is not None and running.is_alive():
                return False
            thread = threading.Thread(
                target=self._run, args=(slide_id,), name=f"lamina-restore-{slide_id}", daemon=True
            )
            self._threads[slide_id] = thread
            thread.start()
        return True

    def _run(self, slide_id: str) -> None:
        try:
            restore_slide(self.mover, slide_id, self.actor)
        except Exception as exc:  # the request ends: the next read asks again
            log.warning("restore of slide %s failed: %s", slide_id, exc)
            try:
                end_request(self.archive.catalog, slide_id)
            except Exception:
                log.exception("the restore request of slide %s was not ended", slide_id)

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for this process's restores (tests, shutdown)."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout_s)


_RESTORERS: weakref.WeakKeyDictionary[Catalog, Restorer] = weakref.WeakKeyDictionary()


def install(restorer: Restorer) -> None:
    """Make ``restorer`` the one :func:`cold_check` uses for its archive's catalog."""
    _RESTORERS[restorer.archive.catalog] = restorer


def installed(catalog: Catalog) -> Restorer | None:
    return _RESTORERS.get(catalog)


def cold_check(catalog: Catalog, slide_id: str, tier: str) -> None:
    """Before a slide is read: nothing for a hot slide; for a cold one, its restore requested
    and queued once, and :class:`RestoringError` (202 with ``Retry-After``). Blocking: one
    insert (or one indexed read) per opening of a cold slide, nothing for a hot one.

    :class:`StorageError` when this process has no restorer (no cold tier configured).
    """
    if tier != Tier.COLD.value:
        return
    restorer = _RESTORERS.get(catalog)
    if restorer is None:
        raise StorageError(
            f"slide {slide_id} is on the cold tier, but this server has no cold tier configured "
            "(tiers.cold in lamina.toml, LAMINA_COLD_URL) to restore it from"
        )
    restorer.check(slide_id)


def for_archive(archive: Archive, app: procrastinate.App | None = None) -> Restorer | None:
    """The restorer of ``archive``, installed for :func:`cold_check`; None without a cold tier."""
    mover = TierMover.for_archive(archive)
    if mover is None:
        return None
    restorer = Restorer(archive, mover, app)
    install(restorer)
    return restorer
