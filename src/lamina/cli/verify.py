"""``lamina verify``: re-read every stored object and check it against its SHA-256."""

from __future__ import annotations

import json
import sys

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lamina.archive.blobstore.replicated import ReplicatedBlobStore
from lamina.archive.fixity import FixityReport
from lamina.archive.fixity import verify as run_fixity
from lamina.archive.repair import RepairReport, repair
from lamina.cli.common import console, handle_errors, human_bytes, open_archive
from lamina.errors import ConfigurationError
from lamina.lifecycle.tiers import ColdTier


def _summary(report: FixityReport, home: str) -> Table:
    table = Table(title=f"fixity of {home}", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    rate = report.bytes / report.seconds if report.seconds > 0 else 0.0
    table.add_row("objects checked", str(report.checked))
    table.add_row("bytes read", human_bytes(report.bytes))
    table.add_row("missing", f"[bold red]{len(report.missing)}[/]" if report.missing else "0")
    table.add_row("corrupt", f"[bold red]{len(report.corrupt)}[/]" if report.corrupt else "0")
    table.add_row("orphaned", f"[yellow]{len(report.orphaned)}[/]" if report.orphaned else "0")
    table.add_row("seconds", f"{report.seconds:.1f}")
    table.add_row("read rate", f"{human_bytes(int(rate))}/s")
    return table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Objects read and hashed in parallel.",
)
@click.option(
    "--limit-mb-per-s",
    "limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Read at most this many MB (10^6 bytes) per second, all workers together.",
)
@click.option(
    "--repair",
    "do_repair",
    is_flag=True,
    help="Restore missing and corrupt objects from the replica store (LAMINA_REPLICA_URL), "
    "each after checking the replica copy's SHA-256.",
)
@click.pass_context
@handle_errors
def verify(ctx: click.Context, as_json: bool, workers: int, limit: float | None, do_repair: bool) -> None:
    """Re-read every stored object, recompute its SHA-256, and report missing, corrupt and
    orphaned objects. Exits 1 when anything is missing or corrupt (with --repair: when anything
    is still missing or corrupt after the repair)."""
    archive = open_archive(ctx)
    max_bytes = None if limit is None else max(1, int(limit * 1_000_000))
    show = not as_json and sys.stderr.isatty()
    repaired: RepairReport | None = None
    try:
        if do_repair and not isinstance(archive.store, ReplicatedBlobStore):
            raise ConfigurationError(
                "--repair needs a replica store to restore objects from: set LAMINA_REPLICA_URL "
                "(or replica_url in lamina.toml) to the replica's file:// or s3:// URL"
            )
        with Progress(
            TextColumn("verifying"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not show,
        ) as bar:
            task = bar.add_task("verify", total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            cold = ColdTier.open(archive.settings)
            report = run_fixity(
                archive.catalog,
                archive.store,
                workers=workers,
                max_bytes_per_s=max_bytes,
                progress=update,
                nice=archive.settings.background_nice,
                cold_store=cold.store if cold is not None else None,
            )
        if do_repair and isinstance(archive.store, ReplicatedBlobStore) and not report.ok:
            repaired = repair(report, archive.store, archive.catalog)
    finally:
        archive.close()
    ok = report.ok or (repaired is not None and repaired.ok)
    if as_json:
        output = report.as_dict()
        if do_repair:
            output["found_ok"] = report.ok
            output["ok"] = ok
            output["repair"] = (repaired or RepairReport()).as_dict()
        click.echo(json.dumps(output, indent=2))
    else:
        for row in report.problems():
            colour = "red" if row["problem"] == "missing" else "magenta"
            console.print(
                f"{row['slide_id'] or '-'}  {row['sop_instance_uid']}  {row['sha256']}  "
                f"[bold {colour}]{row['problem']}[/]",
                highlight=False,
                soft_wrap=True,
            )
        for digest in report.orphaned:
            console.print(f"-  -  {digest}  [yellow]orphaned[/]", highlight=False, soft_wrap=True)
        console.print(_summary(report, str(archive.settings.home)))
        if repaired is not None:
            _print_repair(repaired)
    if not ok:
        sys.exit(1)


def _print_repair(repaired: RepairReport) -> None:
    for digest in repaired.repaired:
        console.print(f"{digest}  [bold green]repaired[/] from the replica", highlight=False, soft_wrap=True)
    for item in repaired.unrepairable:
        console.print(
            f"{item.sha256}  [bold red]unrepairable[/] ({item.problem}): {item.reason}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"repaired {len(repaired.repaired)}, unrepairable {len(repaired.unrepairable)}")
