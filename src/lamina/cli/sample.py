"""``lamina sample DEST``: synthetic but realistic slides in every format lamina reads."""

from __future__ import annotations

from pathlib import Path

import click

from lamina.cli.common import console, handle_errors


@click.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "formats", multiple=True, help="Only these formats (repeatable).")
@click.option("--seed", default=0, show_default=True, help="Same seed, same files.")
@handle_errors
def sample(dest: Path, formats: tuple[str, ...], seed: int) -> None:
    """Write sample slides and their manifest.csv into DEST."""
    from lamina.sample import write_samples

    try:
        files = write_samples(dest, list(formats) or None, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--format") from exc
    for item in files:
        console.print(f"{item.format:14} {item.path}", highlight=False)
    console.print(f"manifest: {dest / 'manifest.csv'}", highlight=False)
