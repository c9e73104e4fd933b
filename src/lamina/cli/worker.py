"""``lamina worker``: run queued jobs (ingest from watched folders and STOW-RS, fixity, repair)."""

from __future__ import annotations

import logging

import click

from lamina.cli.common import err_console, handle_errors


@click.command()
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=2, show_default=True, help="Jobs run at once."
)
@click.option("--name", default=None, help="The worker's name in the queue (default host and pid).")
@click.pass_context
@handle_errors
def worker(ctx: click.Context, concurrency: int, name: str | None) -> None:
    """Run the queued jobs of the catalog's PostgreSQL database until Ctrl-C or SIGTERM (the
    running jobs finish first). Start as many as needed, on any host that reaches the catalog
    and the blob store; nothing else is shared."""
    import os
    import socket

    from lamina.archive.archive import Archive
    from lamina.archive.priority import lower_priority
    from lamina.config import Settings
    from lamina.jobs import tasks
    from lamina.jobs.queue import QUEUE, STALLED_AFTER_S, make_app

    settings = Settings.load((ctx.find_root().obj or {}).get("home"))
    lower_priority(settings.background_nice)  # long work: a server on this host keeps the CPU first
    app = make_app(settings)  # refuses an embedded catalog with the reason
    archive = Archive.open(settings, on_damaged=lambda digest: tasks.queue_repair(app, digest))
    tasks.register(app, archive)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    swept = archive.incoming.sweep()
    if swept:
        logging.getLogger("lamina.jobs").warning("removed %d request spool(s) of ended processes", swept)
    with app.open():
        tasks.sweep_at_start(archive, app)
    label = name or f"{socket.gethostname()}-{os.getpid()}"
    err_console.print(f"lamina worker {label}: {concurrency} at a time (Ctrl-C to stop)", highlight=False)
    try:
        app.run_worker(
            queues=[QUEUE],
            concurrency=concurrency,
            name=label,
            stalled_worker_timeout=STALLED_AFTER_S,
            delete_jobs="successful",
        )
    finally:
        archive.close()
