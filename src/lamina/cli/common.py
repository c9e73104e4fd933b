"""What the sub-commands share: opening the archive, printing errors as one line, sizes."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from lamina.archive.archive import Archive
from lamina.config import Settings
from lamina.errors import LaminaError

F = TypeVar("F", bound=Callable[..., Any])


def _console(stderr: bool = False) -> Console:
    """A terminal's own width; 140 columns when the output goes to a file or a pipe, so that
    tables in logs are not squeezed to 80."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 140
    return Console(stderr=stderr, width=width)


console = _console()
err_console = _console(stderr=True)


def open_archive(ctx: click.Context) -> Archive:
    home = (ctx.find_root().obj or {}).get("home")
    return Archive.open(Settings.load(home))


def handle_errors(func: F) -> F:
    """Expected errors print as one line on stderr and exit 2; no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LaminaError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
