"""What the sub-commands share: opening the archive, printing errors as one line, sizes."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from lamina.archive.archive import Archive
from lamina.config import Settings
from lamina.errors import LaminaError, quote_name

F = TypeVar("F", bound=Callable[..., Any])


def _console(stderr: bool = False) -> Console:
    """A terminal's own width; 140 columns when the output goes to a file or a pipe, so that
    tables in logs are not squeezed to 80."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 140
    return Console(stderr=stderr, width=width)


console = _console()
err_console = _console(stderr=True)


def operator() -> str:
    """Who acts, for the audit log: the CLI acts on the local node as its operator (the account
    that holds the data folder), named by the system's user name."""
    import getpass

    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return f"operator:uid-{os.getuid()}"


def open_archive(ctx: click.Context) -> Archive:
    home = (ctx.find_root().obj or {}).get("home")
    return Archive.open(Settings.load(home))


def handle_errors(func: F) -> F:
    """Expected errors print as one line on stderr and exit 2; no traceback.

    Library warnings (pydicom's ``UserWarning: The value length (65) exceeds ...`` on a file it
    reads) go to logging, not to the terminal: lamina's one-line account of each file is what a
    user reads; a server's log (``lamina serve``, ``lamina worker``) keeps them.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings_logged():
            try:
                return func(*args, **kwargs)
            except LaminaError as exc:
                err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                sys.exit(2)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def warnings_logged() -> Iterator[None]:
    """Route ``warnings`` to the ``py.warnings`` logger while a command runs. Without a handler
    configured (``lamina ingest``), they stop there; with one (a server's), they are logged."""
    logger = logging.getLogger("py.warnings")
    quiet = logging.NullHandler()
    logger.addHandler(quiet)  # keeps logging's last-resort handler from printing them
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        logger.removeHandler(quiet)


def shown(name: object) -> str:
    """A file name as console markup: quoted when it holds a newline or another control character
    (so that its line stays one line), and escaped (a name like ``[red]a.svs`` is not markup)."""
    return escape(quote_name(name))


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
