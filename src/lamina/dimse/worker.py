"""Ingest of released associations, one at a time, on a thread of its own.

The association's thread only seals its spool and hands it over, so a peer never waits for a
conversion. Each series of the spool is one candidate for :class:`~lamina.archive.ingest.Ingestor`,
which validates, repairs and writes the slide atomically, and reports a resend as a duplicate.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from lamina.archive.discover import Candidate
from lamina.archive.ingest import IngestOptions, Ingestor, IngestResult
from lamina.dimse.spool import Spool

log = logging.getLogger("lamina.dimse")

IngestListener = Callable[[IngestResult], None]


class IngestWorker:
    """A queue of sealed spools and the thread that ingests them.

    Parameters
    ----------
    ingestor
        Writes into the served archive.
    listener
        Called with each series' result (after it is logged), e.g. to show progress.
    """

    def __init__(self, ingestor: Ingestor, listener: IngestListener | None = None) -> None:
        self._ingestor = ingestor
        self._listener = listener
        self._queue: queue.Queue[Spool | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="lamina-dimse-ingest", daemon=True)
        self._thread.start()

    def submit(self, spool: Spool) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(spool)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted spool is ingested; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self) -> None:
        """Finish the spool in hand; spools still queued stay sealed on disk for the next start."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(None)
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        while (spool := self._queue.get()) is not None:
            try:
                if not self._stopping.is_set():
                    self._ingest(spool)
            except Exception as exc:  # the thread must outlive one bad spool; it stays for a restart
                log.error("DIMSE spool %s not ingested: %s: %s", spool.id, type(exc).__name__, exc)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
        with self._idle:
            self._pending = 0  # what was still queued waits on disk, sealed, for the next start
            self._idle.notify_all()

    def _ingest(self, spool: Spool) -> None:
        options = IngestOptions(actor=f"dimse:{spool.calling_ae_title}")
        for series, files in spool.series().items():
            result = self._ingestor.ingest(Candidate(files[0], files), options=options)
            where = f"series {series} from {spool.calling_ae_title!r} ({len(files)} objects)"
            if result.status == "ingested":
                log.info(
                    "%s: ingested as slide %s, %d levels, %d instances",
                    where,
                    result.slide_id,
                    result.levels,
                    result.instances,
                )
            elif result.status == "duplicate":
                log.info("%s: duplicate of slide %s, nothing stored", where, result.slide_id)
            else:
                log.warning("%s: not ingested: %s", where, result.reason)
            if self._listener is not None:
                self._listener(result)
        spool.discard()
