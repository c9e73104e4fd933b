"""``lamina export DEST``: slides as DICOM Part-10 files, one folder per slide."""

from __future__ import annotations

from pathlib import Path

import click

from lamina.cli.common import console, handle_errors, open_archive


@click.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--slide", "slide_ids", multiple=True, help="Slide id (repeatable); default all slides.")
@click.pass_context
@handle_errors
def export(ctx: click.Context, dest: Path, slide_ids: tuple[str, ...]) -> None:
    """Export slides as DICOM files that any DICOM WSI viewer opens."""
    archive = open_archive(ctx)
    done = archive.export(dest, list(slide_ids) or None)
    archive.close()
    for item in done:
        console.print(f"{item.slide.id}: {len(item.files)} file(s) in {item.folder}", highlight=False)
