"""``lamina watch FOLDER``: ingest what scanners drop into a folder, then move it to done/ or failed/."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from lamina.archive.archive import Archive
from lamina.archive.discover import Candidate
from lamina.archive.ingest import IngestResult
from lamina.archive.manifest import load_manifest
from lamina.archive.watch import CLAIMS, DONE, FAILED, Claim, Signature, Watcher
from lamina.cli.common import console, err_console, handle_errors, open_archive
from lamina.jobs.queue import queued


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--stable-seconds",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="A slide is complete when its size and time have not changed for this long.",
)
@click.option(
    "--done-marker",
    help="A file NAME<marker> (e.g. '.done' for scan.svs.done) beside a slide says it is complete.",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV or JSON: identity (patient, case, specimen, stain, organ) per file or barcode.",
)
@click.option(
    "--interval", type=click.FloatRange(0.05), default=1.0, show_default=True, help="Seconds between scans."
)
@click.option(
    "--once", is_flag=True, help="Handle what is in the folder now (waiting until it is complete), then exit."
)
@click.pass_context
@handle_errors
def watch(
    ctx: click.Context,
    folder: Path,
    stable_seconds: float,
    done_marker: str | None,
    manifest: Path | None,
    interval: float,
    once: bool,
) -> None:
    """Watch FOLDER: ingest each complete slide, then move it to FOLDER/done/ (or FOLDER/failed/ with
    NAME.reason.txt). Several watchers may share one folder; each slide is ingested once.

    Ctrl-C stops after the slide being ingested. With --once, the exit status is 1 if a slide failed.
    """
    loaded = load_manifest(manifest) if manifest else None
    archive = open_archive(ctx)
    stop = threading.Event()
    failures = 0
    queue = _Queue(archive, folder, manifest) if queued(archive.settings) else None
    watcher = Watcher(
        archive, folder, stable_seconds, done_marker, loaded, submit=queue.submit if queue else None
    )

    def report(result: IngestResult) -> None:
        nonlocal failures
        relative = _relative(result.path, watcher.folder)
        if result.ok:
            console.print(
                f"[green]{result.status}[/] {relative} -> slide {result.slide_id}, moved to {DONE}/",
                highlight=False,
                soft_wrap=True,
            )
        else:
            failures += 1
            console.print(
                f"[red]failed[/] {relative}: {result.reason}; moved to {FAILED}/",
                highlight=False,
                soft_wrap=True,
            )

    def interrupted(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        stop.set()
        err_console.print("stopping after the current slide (Ctrl-C again to stop now)", highlight=False)

    previous = signal.signal(signal.SIGINT, interrupted)
    previous_term = signal.signal(signal.SIGTERM, interrupted)
    try:
        if once:
            while not stop.is_set():
                for result in watcher.scan_once():
                    report(result)
                if watcher.pending == 0 and (queue is None or not queue.in_flight(watcher.folder)):
                    break
                stop.wait(min(interval, max(stable_seconds / 4, 0.05)))
            if queue is not None:
                failures += queue.failed(watcher.folder)
        else:
            err_console.print(f"watching {watcher.folder} (Ctrl-C to stop)", highlight=False)
            watcher.run(stop, interval, report)
    except KeyboardInterrupt:
        err_console.print("stopped", highlight=False)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        if queue is not None:
            queue.close()
        archive.close()
    if once and failures:
        raise SystemExit(1)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.absolute().relative_to(folder))
    except ValueError:
        return str(path)


class _Queue:
    """Watching with a PostgreSQL catalog: each complete unit becomes a queued job, run by this
    process's own workers (``LAMINA_WORKERS``, default 1) or by ``lamina worker`` processes."""

    def __init__(self, archive: Archive, folder: Path, manifest: Path | None) -> None:
        from lamina.jobs import tasks
        from lamina.jobs.queue import Worker, make_app

        self.app = make_app(archive.settings)
        self.app.open()
        self._defer = tasks.watched_submitter(self.app, folder.absolute(), manifest)
        self._failed_before: set[Path] | None = None
        worker_app = make_app(archive.settings)
        tasks.register(worker_app, archive)
        self.worker = Worker(worker_app, archive.settings.workers, nice=archive.settings.background_nice)
        if archive.settings.workers > 0:
            self.worker.start()

    def submit(self, candidate: Candidate, signature: Signature, claim: Claim) -> None:
        self._defer(candidate, signature, claim)
        console.print(f"[cyan]queued[/] {candidate.name}", highlight=False, soft_wrap=True)

    def in_flight(self, folder: Path) -> bool:
        """Units claimed and not yet moved: their jobs are still to run."""
        if self._failed_before is None:
            self._failed_before = set(_reasons(folder))
        claims = folder / CLAIMS
        return claims.is_dir() and any(path.is_file() for path in claims.rglob("*.claim"))

    def failed(self, folder: Path) -> int:
        return len(set(_reasons(folder)) - (self._failed_before or set()))

    def close(self) -> None:
        self.worker.stop()
        self.app.close()


def _reasons(folder: Path) -> list[Path]:
    failed = folder / FAILED
    return list(failed.rglob("*.reason.txt")) if failed.is_dir() else []
