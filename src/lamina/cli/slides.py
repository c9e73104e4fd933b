"""``lamina slides``: the slides in the archive."""

from __future__ import annotations

import json

import click
from rich.table import Table

from lamina.archive.catalog import SlideRow
from lamina.cli.common import console, handle_errors, human_bytes, open_archive


def _barcode(slide: SlideRow) -> str | None:
    """The slide's barcode, or None when the source had none: DICOM requires a Container
    Identifier, so lamina then records the slide's own id there, which is no barcode."""
    return None if slide.container_id in ("", slide.id) else slide.container_id


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per slide.")
@click.pass_context
@handle_errors
def slides(ctx: click.Context, as_json: bool) -> None:
    """List the slides in the archive."""
    archive = open_archive(ctx)
    rows = archive.catalog.slides()
    archive.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": s.id,
                        "container_id": s.container_id,
                        "barcode": _barcode(s),
                        "tenant": s.tenant or None,
                        "format": s.format,
                        "levels": s.levels,
                        "instances": s.instances,
                        "study_uid": s.study_instance_uid,
                        "series_uid": s.series_instance_uid,
                        "bytes": s.bytes,
                        "source": s.source_path,
                        "source_blake3": s.source_blake3,
                        "identified": s.identified,
                        "patient_id": s.patient_id,
                        "accession_number": s.accession_number,
                        "specimen_id": s.specimen_id,
                        "stain": s.stain,
                        "organ": s.organ,
                        "width": s.width,
                        "height": s.height,
                        "mpp": s.mpp,
                        "lossy": s.lossy,
                        "created_at": s.created_at.isoformat(),
                    }
                    for s in rows
                ],
                indent=2,
            )
        )
        return
    table = Table(title=f"{len(rows)} slide(s) in {archive.settings.home}")
    for column in (
        "slide",
        "lab",
        "barcode",
        "patient",
        "case",
        "stain",
        "format",
        "size (px)",
        "levels",
        "stored",
    ):
        table.add_column(column)
    for s in rows:
        table.add_row(
            s.id,
            s.tenant or "-",
            _barcode(s) or "-",
            s.patient_id or "[yellow]unidentified[/]",
            s.accession_number or "-",
            s.stain or "-",
            s.format,
            f"{s.width}x{s.height}",
            str(s.levels),
            human_bytes(s.bytes),
        )
    console.print(table)
