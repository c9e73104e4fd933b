"""``lamina ingest PATH...``: scanner output into the archive, with a progress bar per file."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions, IngestResult, IngestStatus
from lamina.archive.manifest import load_manifest
from lamina.cli.common import console, handle_errors, human_bytes, open_archive, shown
from lamina.errors import RequestError
from lamina.formats.codec import LOSSLESS_CODECS
from lamina.governance.model import check_finess
from lamina.governance.registry import Registry
from lamina.model.geometry import SizeMm


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV or JSON: identity (patient, case, specimen, stain, organ) per file or barcode.",
)
@click.option(
    "--mpp", type=click.FloatRange(0.01, 100), help="Micrometres per pixel, for files that lack it."
)
@click.option(
    "--tenant",
    default=None,
    help="The lab (FINESS number) the slides belong to; default the node's only lab.",
)
@click.option(
    "--lossy",
    "lossy_quality",
    type=click.IntRange(1, 100),
    help="Write the pixels lamina must re-encode (LZW, uncompressed, PNG...) as JPEG at this "
    "quality instead of lossless JPEG 2000; recorded in each instance (LossyImageCompression, "
    "ratio, method). Tiles copied as stored are never re-encoded.",
)
@click.option(
    "--lossless",
    type=click.Choice(LOSSLESS_CODECS),
    default=None,
    help="The codec of the pixels lamina re-encodes losslessly: JPEG-LS, 5 times faster than "
    "JPEG 2000 and a little smaller, or JPEG 2000, the one OpenSlide 4 reads. Default: "
    "lossless_codec of lamina.toml, else JPEG-LS for a slide whose pyramid is re-encoded and "
    "JPEG 2000 for the few frames re-encoded beside copied tiles.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
@handle_errors
def ingest(
    ctx: click.Context,
    paths: tuple[Path, ...],
    manifest: Path | None,
    mpp: float | None,
    tenant: str | None,
    lossy_quality: int | None,
    lossless: str | None,
    as_json: bool,
) -> None:
    """Ingest slide files or folders (recursively) as DICOM WSI.

    Exit status 0 only if every slide was ingested or was an exact duplicate.
    """
    loaded = load_manifest(manifest) if manifest else None
    archive = open_archive(ctx)
    try:
        owner = _tenant(archive, tenant)
    except BaseException:
        archive.close()
        raise
    receiver = archive.receiver()
    options = IngestOptions(
        pixel_spacing=SizeMm.from_mpp(mpp) if mpp else None,
        tenant=owner,
        lossy_quality=lossy_quality,
        lossless=lossless,
    )
    results: list[IngestResult] = []
    candidates = discover(paths)
    show = not as_json and sys.stderr.isatty()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show,
    ) as bar:
        for candidate in candidates:
            task = bar.add_task(candidate.name[:40], total=None)

            def update(done: int, total: int, task: TaskID = task) -> None:
                bar.update(task, completed=done, total=max(total, done))

            result = receiver.ingest(candidate, loaded, options, update)
            bar.remove_task(task)
            results.append(result)
            if not as_json:
                _line(result)
    archive.close()
    if as_json:
        click.echo(json.dumps([_as_dict(result) for result in results], indent=2))
    else:
        console.print(_table(results))
    if not all(result.ok for result in results):
        sys.exit(1)


def _as_dict(result: IngestResult) -> dict[str, object]:
    data = asdict(result)
    data["path"] = str(result.path)
    data["status"] = str(result.status)
    data["seconds"] = round(result.seconds, 3)
    return data


def _line(result: IngestResult) -> None:
    if result.status is IngestStatus.FAILED:
        reason = escape(result.reason or "")
        console.print(f"[red]failed[/] {shown(result.path)}: {reason}", highlight=False, soft_wrap=True)
    elif result.repairs:
        console.print(
            f"[yellow]repaired[/] {shown(result.path)}: added {', '.join(result.repairs)}", highlight=False
        )


def _table(results: list[IngestResult]) -> Table:
    table = Table(title=f"{len(results)} file(s)")
    for column in ("slide", "file", "format", "levels", "size", "time", "result"):
        table.add_column(column, justify="right" if column in ("levels", "size", "time") else "left")
    for r in results:
        colour = {IngestStatus.INGESTED: "green", IngestStatus.DUPLICATE: "cyan"}.get(r.status, "red")
        unidentified = r.status is IngestStatus.INGESTED and r.slide_id and not r.identified
        status = "ingested (unidentified)" if unidentified else str(r.status)
        table.add_row(
            r.slide_id or "-",
            shown(r.name),
            r.format or "-",
            str(r.levels or "-"),
            human_bytes(r.bytes) if r.bytes else "-",
            f"{r.seconds:.2f} s",
            f"[{colour}]{status}[/]",
        )
    return table


def _tenant(archive: Archive, given: str | None) -> str:
    """The lab the slides go to: the one named, else the node's only lab ("" on a node without
    labs); a node with several must be told."""
    registry = Registry(archive.catalog)
    if given is not None:
        return registry.tenant(check_finess(given, "--tenant")).finess
    labs = registry.tenants()
    if len(labs) > 1:
        names = ", ".join(lab.finess for lab in labs)
        raise RequestError(
            "--tenant", f"this node serves {len(labs)} labs ({names}): name the one the slides belong to"
        )
    return labs[0].finess if labs else ""
