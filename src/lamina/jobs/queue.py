"""The queue: a Procrastinate app on the catalog's PostgreSQL (the embedded SQLite catalog runs
the same task bodies in the server's own threads).

Every task is retried with exponential backoff (2, 4, 8, 16, 32 s) when it fails because a
service may come back (:class:`~lamina.errors.UnavailableError`: an S3 endpoint down, throttled,
a 5xx); any other failure is final and reported. A worker that dies mid-job (SIGKILL, a lost
host) leaves its job "doing" with a heartbeat that stops; a periodic task hands such jobs back to
the queue, so a job is never lost, and each task is written to be run again safely (the ingest
is idempotent by source content, moves and deletions check before they act).
"""

from __future__ import annotations

import asyncio
import logging
import threading

import procrastinate
from procrastinate import PsycopgConnector, RetryStrategy
from sqlalchemy.engine import make_url

from lamina.archive.priority import lower_priority
from lamina.config import Settings
from lamina.errors import ConfigurationError, UnavailableError

QUEUE = "lamina"
MAX_ATTEMPTS = 6
RETRY = RetryStrategy(max_attempts=MAX_ATTEMPTS, exponential_wait=2, retry_exceptions=[UnavailableError])
#: a worker whose heartbeat stopped this long ago is dead: its jobs go back to the queue
STALLED_AFTER_S = 60.0

log = logging.getLogger("lamina.jobs")


def queued(settings: Settings) -> bool:
    """True when jobs go through Procrastinate (a PostgreSQL catalog), False when in-process."""
    return make_url(settings.database_url).get_backend_name() == "postgresql"


def conninfo(database_url: str) -> str:
    """The libpq address of the catalog (SQLAlchemy's URL without its driver name)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def make_app(settings: Settings) -> procrastinate.App:
    """A Procrastinate app on the catalog's database, to queue jobs and follow them; a process
    that runs them registers lamina's tasks on it for its archive
    (:func:`lamina.jobs.tasks.register`)."""
    if not queued(settings):
        raise ConfigurationError(
            "separate workers need a PostgreSQL catalog (LAMINA_DATABASE_URL=postgresql+psycopg://...); "
            "the embedded SQLite catalog runs its jobs inside 'lamina serve' and 'lamina watch'"
        )
    return procrastinate.App(connector=PsycopgConnector(conninfo=conninfo(settings.database_url)))


class Worker:
    """Procrastinate workers in a thread of this process (``lamina serve``), stopped on close."""

    def __init__(
        self, app: procrastinate.App, concurrency: int = 1, name: str = "lamina", nice: int = 0
    ) -> None:
        self.app = app
        self.nice = nice
        self.concurrency = concurrency
        self.name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()

    async def _main(self) -> None:
        self._task = asyncio.current_task()
        # set before the flag is read (and stop() sets the flag before it reads the task): a stop
        # that comes before the task exists is seen here, one that comes after cancels it
        if self._stopping.is_set():
            return
        async with self.app.open_async():
            await self.app.run_worker_async(
                queues=[QUEUE],
                concurrency=self.concurrency,
                name=self.name,
                install_signal_handlers=False,
                stalled_worker_timeout=STALLED_AFTER_S,
                delete_jobs="successful",
            )

    def start(self) -> None:
        def run() -> None:
            lower_priority(self.nice)  # the jobs' threads, started from this one, inherit it
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._main())
            except asyncio.CancelledError:
                pass
            except Exception:  # a worker that stops must say so; the server goes on serving
                log.exception("the job worker stopped")
            finally:
                _close_loop(loop)

        self._thread = threading.Thread(target=run, name="lamina-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout_s)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close a worker's loop as ``asyncio.run`` does: what is still pending (the connection
    pool's own workers, after a cancel) is cancelled and awaited first, so that no coroutine is
    left to be collected after its loop is closed."""
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:  # closing must not fail the stop
        log.exception("closing the job worker's event loop")
    finally:
        loop.close()
