"""``lamina export DEST``: slides as DICOM Part-10 files, one folder per slide."""

from __future__ import annotations

from pathlib import Path

import click

from lamina.cli.common import console, handle_errors, open_archive


@click.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--slide", "slide_ids", multiple=True, help="Slide id (repeatable); default all slides.")
@click.option(
    "--transfer-syntax",
    type=click.Choice(["stored", "jpeg2000"]),
    default="stored",
    show_default=True,
    help="stored: the files as the archive keeps them, byte for byte. jpeg2000: frames stored in "
    "JPEG-LS or HTJ2K lossless rewritten as JPEG 2000 lossless, pixels unchanged, for readers "
    "that take no other lossless codec (OpenSlide 4, and QuPath through it).",
)
@click.pass_context
@handle_errors
def export(ctx: click.Context, dest: Path, slide_ids: tuple[str, ...], transfer_syntax: str) -> None:
    """Export slides as DICOM files that any DICOM WSI viewer opens."""
    archive = open_archive(ctx)
    chosen = None if transfer_syntax == "stored" else transfer_syntax
    done = archive.export(dest, list(slide_ids) or None, transfer_syntax=chosen)
    archive.close()
    for item in done:
        console.print(f"{item.slide.id}: {len(item.files)} file(s) in {item.folder}", highlight=False)
