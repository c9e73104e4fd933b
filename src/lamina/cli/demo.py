"""``lamina demo``: a ready archive with sample slides, for a first look."""

from __future__ import annotations

import click

from lamina.cli.common import console, handle_errors, open_archive


@click.command()
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve the archive at the end.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.pass_context
@handle_errors
def demo(ctx: click.Context, serve: bool, port: int) -> None:
    """Write sample slides, ingest them with their manifest, list them, and serve the archive
    (viewer and DICOMweb on http://127.0.0.1:8000/)."""
    from lamina.archive.discover import discover
    from lamina.archive.manifest import load_manifest
    from lamina.cli.slides import slides
    from lamina.sample import write_samples

    archive = open_archive(ctx)
    folder = archive.settings.home / "samples"
    if not (folder / "manifest.csv").exists():
        console.print(f"writing sample slides into {folder} ...")
        write_samples(folder)
    manifest = load_manifest(folder / "manifest.csv")
    receiver = archive.receiver()
    for candidate in discover([folder]):
        result = receiver.ingest(candidate, manifest)
        state = result.status if result.ok else f"failed: {result.reason}"
        console.print(f"{candidate.name:32} {result.format or '-':15} {state}", highlight=False)
    archive.close()
    ctx.invoke(slides)
    if serve:
        from lamina.cli.serve import serve as serve_command

        ctx.invoke(serve_command, host="127.0.0.1", port=port, dimse_port=None, ae_title="LAMINA")
