"""A small file system of its own for a test (a tmpfs of a given size), to fill a disk for real."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support import need


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None and shutil.which("umount") is not None


@contextlib.contextmanager
def small_disk(folder: Path, size_bytes: int) -> Iterator[Path]:
    """``folder`` as a tmpfs of ``size_bytes`` while the context lasts (needs root: skipped on a
    user's machine, a failure under CI=true)."""
    need(_can_mount(), "root (to mount a small tmpfs)")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    need(mounted.returncode == 0, f"a tmpfs mount ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Fill the file system of ``folder`` with a ballast file until ``leave_bytes`` are free."""
    ballast = folder / "ballast"
    free = shutil.disk_usage(folder).free
    with ballast.open("wb") as out:
        remaining = max(0, free - leave_bytes)
        block = b"\0" * (1 << 20)
        while remaining > 0:
            remaining -= out.write(block[: min(len(block), remaining)])
    return ballast


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free
