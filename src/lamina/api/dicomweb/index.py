"""What the DICOMweb routes need to find an instance fast: built from the catalog, cached.

A cached instance is confirmed in the catalog again once it is ``revalidate_s`` old, so that a
slide deleted by another process (another API host, ``lamina delete``) stops being served. The
confirmation is *stale while revalidate* and *single flight*: the frame asked for is answered from
the cache at once, while one query per series, for every cached instance of that series, runs in
the thread pool (``sop_instance_exists``: one indexed lookup of a handful of UIDs); an instance
the catalog no longer holds is dropped when the answer comes, so a deleted slide stops being
served within ``revalidate_s`` plus one query. Before, every frame of an instance due for its
confirmation went to the thread pool and queried the catalog until one of them had confirmed it:
the frame tails of a viewer doubled every 5 s.

When the confirmation fails (the catalog down or locked), the cached instances are still served
for ``stale_s`` more (a failure is logged, and retried at most once a second per series); past
that, a request for them waits on the catalog in the thread pool and fails with 503 while the
catalog cannot answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import anyio.to_thread
import numpy as np
import numpy.typing as npt
from sqlalchemy.exc import SQLAlchemyError

from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.errors import NotFoundError, UnavailableError
from lamina.lifecycle.serving import availability

_CACHED = 4096
#: After a failed confirmation, the next one of that series starts no sooner than this.
_RETRY_S = 1.0
#: A failed confirmation is logged at most this often.
_WARN_EVERY_S = 10.0
_log = logging.getLogger("lamina.api.index")
_opening = threading.Lock()


@dataclass
class IndexedInstance:
    """An instance ready to serve: where its object is and where each frame lies in it."""

    row: InstanceRow
    path: str | None  # the object's file, when the store has one
    offsets: npt.NDArray[np.uint64]
    lengths: npt.NDArray[np.uint32]
    #: when the catalog last confirmed the instance (monotonic seconds, taken before the query)
    checked_at: float = field(default_factory=time.monotonic, compare=False)
    _fd: int = field(default=-1, compare=False, repr=False)

    @property
    def transfer_syntax_uid(self) -> str:
        return self.row.transfer_syntax_uid

    def fd(self) -> int | None:
        """A descriptor open on the object's file for as long as the instance is referenced.

        It is closed when the last reference goes (the instance dropped from the index and no
        request reading it), never while a request may still ``pread`` it: a descriptor closed
        under a reader could be reused by another file before the read.
        """
        if self.path is None:
            return None
        if self._fd < 0:
            with _opening:
                if self._fd < 0:
                    fd = os.open(self.path, os.O_RDONLY)
                    weakref.finalize(self, os.close, fd)
                    self._fd = fd
        return self._fd

    def frame_span(self, number: int) -> tuple[int, int]:
        """(offset, length) of frame ``number`` (1-based)."""
        return self._spans[number - 1]

    @functools.cached_property
    def _spans(self) -> list[tuple[int, int]]:
        return list(zip(self.offsets.tolist(), self.lengths.tolist(), strict=True))


class InstanceIndex:
    """Instance lookups by (study, series, instance) UIDs, kept in a bounded LRU cache."""

    #: a cached instance is confirmed in the catalog again once this old (seconds)
    revalidate_s = 5.0
    #: how long past ``revalidate_s`` a cached instance is still served while no confirmation
    #: succeeds (the catalog down or slow); then every request for it waits on the catalog
    stale_s = 30.0

    def __init__(self, archive: Archive, size: int = _CACHED) -> None:
        self.archive = archive
        self._size = size
        self._cache: OrderedDict[str, IndexedInstance] = OrderedDict()
        self._series: dict[str, set[str]] = {}  # series UID -> its cached SOP Instance UIDs
        #: series UID -> when its next confirmation may start (inf: one is in flight)
        self._not_before: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._warned_at = -_WARN_EVERY_S
        #: confirmations that succeeded (one query per series each ``revalidate_s`` it is read)
        self.confirmations = 0

    def forget(self, sop: str) -> None:
        """Drop a cached instance (it was just stored again or replaced)."""
        with self._lock:
            self._drop(sop)

    def cached(self, study: str, series: str, sop: str) -> IndexedInstance | None:
        """The instance if it is cached, without a catalog query (for the event loop); None
        otherwise, and when no confirmation has succeeded for ``revalidate_s + stale_s``.

        An instance due for its confirmation is returned all the same: the caller that answers
        from it calls ``revalidate_in_background`` (a caller that goes on to ``get`` leaves the
        confirmation to it).
        """
        with self._lock:
            found = self._cache.get(sop)
            if found is None:
                return None
            self._cache.move_to_end(sop)
        if found.row.study_instance_uid != study or found.row.series_instance_uid != series:
            return None
        if time.monotonic() - found.checked_at > self.revalidate_s + self.stale_s:
            return None  # the routed handler asks the catalog, in a thread
        return found

    def revalidate_in_background(self, found: IndexedInstance) -> None:
        """When ``found`` is due for its confirmation and none of its series is in flight, start
        one in the thread pool (every cached instance of the series, one query). Call it on the
        event loop; it never waits."""
        now = time.monotonic()
        if now - found.checked_at <= self.revalidate_s:
            return
        series = found.row.series_instance_uid
        with self._lock:
            batch = self._claim(series, now)
        if batch:
            task = asyncio.get_running_loop().create_task(self._confirm_in_thread(series, batch))
            self._tasks.add(task)  # the loop keeps only a weak reference to its tasks
            task.add_done_callback(self._tasks.discard)

    def get(self, study: str, series: str, sop: str) -> IndexedInstance:
        """The instance, from the cache or the catalog; 404 when it is not in this archive, 410
        when its slide expired (:func:`lamina.lifecycle.serving.availability`).

        Blocking (a catalog query on a miss, and for a cached instance due for its confirmation
        when no other confirmation of its series is in flight): call it in the thread pool, never
        on the event loop. 503 when the catalog cannot say whether an instance unconfirmed for
        ``revalidate_s + stale_s`` is still there.
        """
        with self._lock:
            found = self._cache.get(sop)
            batch: list[str] = []
            if found is not None:
                self._cache.move_to_end(sop)
                now = time.monotonic()
                age = now - found.checked_at
                if age > self.revalidate_s + self.stale_s:
                    found = None  # too long unconfirmed: ask the catalog, and fail if it cannot say
                elif age > self.revalidate_s:
                    batch = self._claim(found.row.series_instance_uid, now)
        # one message whether the instance is absent or elsewhere: it may be another lab's
        missing = f"instance {sop} is not in series {series} of study {study}"
        if batch and found is not None:
            gone = self.confirm(found.row.series_instance_uid, batch)  # None: failed, served stale
            if gone is not None and sop in gone:
                self._absent(study, series, missing)
        if found is None:
            try:
                found = self._load(sop)
            except NotFoundError:
                self._absent(study, series, missing)
        if found.row.study_instance_uid != study or found.row.series_instance_uid != series:
            raise NotFoundError(missing)
        return found

    def _absent(self, study: str, series: str, missing: str) -> NoReturn:
        """410 when the series is an expired slide's (its instances deleted, its trace kept),
        else 404 with ``missing``."""
        availability(self.archive.catalog, study, series)
        raise NotFoundError(missing) from None

    def confirm(self, series: str, sops: Sequence[str]) -> set[str] | None:
        """Ask the catalog whether the cached instances ``sops`` of ``series`` are still there:
        those that are count as confirmed, the others are dropped. Blocking (one query). Ends
        the series' claim. The SOP Instance UIDs the catalog no longer holds; None when the
        query failed (logged; the instances are left as they were)."""
        started = time.monotonic()
        try:
            present = set(self.archive.catalog.sop_instance_exists(list(sops)))
        except Exception as exc:  # whatever the catalog raised: keep serving, bounded, and log
            self._failed(series, len(sops), exc)
            return None
        gone = set(sops) - present
        with self._lock:
            self.confirmations += 1
            self._not_before.pop(series, None)
            for sop in sops:
                entry = self._cache.get(sop)
                if entry is None:
                    continue
                if sop in present:
                    entry.checked_at = max(entry.checked_at, started)
                elif entry.checked_at < started:  # not loaded again since the query began
                    self._drop(sop)
        return gone

    async def _confirm_in_thread(self, series: str, sops: list[str]) -> None:
        try:
            await anyio.to_thread.run_sync(self.confirm, series, sops)
        finally:  # cancelled before a thread took it (the server stopping): free the claim
            with self._lock:
                if self._not_before.get(series) == float("inf"):
                    del self._not_before[series]

    def _claim(self, series: str, now: float) -> list[str]:
        """The cached instances of ``series`` to confirm, if no confirmation of it is in flight
        or waiting to be retried ([] otherwise); the caller must then call ``confirm``. Under
        the lock."""
        if self._not_before.get(series, 0.0) > now:
            return []
        self._not_before[series] = float("inf")
        return sorted(self._series.get(series, ()))

    def _failed(self, series: str, count: int, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self._not_before[series] = now + _RETRY_S
            warn = now - self._warned_at >= _WARN_EVERY_S
            if warn:
                self._warned_at = now
        if warn:
            # the driver's first line only: never the statement's parameters or a connection URL
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
            _log.warning(
                "could not confirm %d cached instance(s) of series %s in the catalog (%s: %s); "
                "they are served from the cache for at most %.0f s after their last confirmation",
                count,
                series,
                type(exc).__name__,
                reason,
                self.revalidate_s + self.stale_s,
            )

    def _load(self, sop: str) -> IndexedInstance:
        started = time.monotonic()
        try:
            row = self.archive.catalog.instance(sop)
        except SQLAlchemyError as exc:  # the catalog down or locked: 503, saying what to do
            raise UnavailableError(
                f"the catalog cannot be read to find instance {sop} ({type(exc).__name__}); "
                "try again, and check the catalog database if this lasts"
            ) from exc
        if row is None:
            with self._lock:
                self._drop(sop)  # an entry too long unconfirmed, now known gone
            raise NotFoundError(f"instance {sop} is not in this archive")
        found = IndexedInstance(
            row,
            self.archive.store.local_path(row.blob_sha256),
            np.frombuffer(row.frame_offsets, "<u8"),
            np.frombuffer(row.frame_lengths, "<u4"),
            checked_at=started,
        )
        with self._lock:
            self._drop(sop)
            self._cache[sop] = found
            self._series.setdefault(row.series_instance_uid, set()).add(sop)
            while len(self._cache) > self._size:
                self._drop(next(iter(self._cache)))
        return found

    def _drop(self, sop: str) -> None:
        """Under the lock. The descriptor closes when the last request using it is done."""
        dropped = self._cache.pop(sop, None)
        if dropped is None:
            return
        series = dropped.row.series_instance_uid
        members = self._series.get(series)
        if members is not None:
            members.discard(sop)
            if not members:
                del self._series[series]
                self._not_before.pop(series, None)
