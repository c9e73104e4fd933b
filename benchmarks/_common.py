"""Helpers shared by the benchmarks: run a command and measure it, medians, tables, the machine.

Every benchmark in this folder runs lamina and its peers side by side on the same input and prints a
table and the ratios to its goals. These helpers keep the measuring identical for all of them:

- :func:`run_measured` runs one command and returns its wall time and the peak resident memory of
  its whole process tree;
- :func:`prepare_cache` puts the page cache in a known state before a run (dropped, or the input
  read once), and :func:`timed_sync` measures the time to flush what a run left in memory;
- :func:`format_table`, :func:`median`, :func:`megabytes` print the figures;
- :func:`machine` and :func:`command_version` record where and with what they were measured.

Sizes are decimal: 1 MB = 1,000,000 bytes, as in "MB/s".
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

MB = 1_000_000
POLL_SECONDS = 0.02
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
GNU_TIME = Path("/usr/bin/time")


@dataclass(frozen=True)
class Measurement:
    """One run of one command.

    Parameters
    ----------
    seconds
        Wall time from the start of the process to its exit.
    peak_rss
        Peak resident memory of the process tree, in bytes: the larger of the highest sum of the
        RSS of the process and all its descendants (sampled every ``POLL_SECONDS``) and, where GNU
        ``time`` is installed, the kernel's peak for the largest single process, which catches
        spikes shorter than the sampling interval.
    returncode
        The exit status; negative for a process killed by a signal.
    """

    seconds: float
    peak_rss: int
    returncode: int


class _TreeRssSampler(threading.Thread):
    """Samples the summed RSS of a process's tree until stopped.

    With ``include_root`` false the root itself (a measuring wrapper) is left out.
    """

    def __init__(self, pid: int, interval: float, include_root: bool) -> None:
        super().__init__(daemon=True)
        self._pid = pid
        self._interval = interval
        self._include_root = include_root
        self._stopped = threading.Event()
        self.peak = 0

    def run(self) -> None:
        try:
            root = psutil.Process(self._pid)
        except psutil.NoSuchProcess:
            return
        while True:
            self.peak = max(self.peak, tree_rss(root, self._include_root))
            if self._stopped.wait(self._interval):
                return

    def stop(self) -> None:
        self._stopped.set()
        self.join()


def tree_rss(root: psutil.Process, include_root: bool = True) -> int:
    """Return the summed RSS, in bytes, of the living descendants of ``root`` (and of ``root``)."""
    try:
        processes = root.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0
    if include_root:
        processes.insert(0, root)
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_measured(
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> Measurement:
    """Run ``argv`` to completion, its output going to ``log``, and measure it.

    The kernel's peak RSS is read through GNU ``time`` rather than from this process's own
    ``wait4``: a child forked from Python starts with Python's memory, and Linux keeps that
    high-water mark across ``exec``, so it would count this script's memory as the command's.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    rss_file = log.with_name(log.name + ".maxrss")
    wrapped = GNU_TIME.is_file() and os.access(GNU_TIME, os.X_OK)
    command = [str(GNU_TIME), "-q", "-f", "%M", "-o", str(rss_file), *argv] if wrapped else argv
    with log.open("wb") as sink:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        sampler = _TreeRssSampler(process.pid, poll_seconds, include_root=not wrapped)
        sampler.start()
        returncode = process.wait()
        seconds = time.perf_counter() - start
        sampler.stop()
    kernel_peak = _read_maxrss(rss_file) if wrapped else 0
    return Measurement(seconds, max(sampler.peak, kernel_peak), returncode)


def _read_maxrss(path: Path) -> int:
    """Return the peak RSS in bytes that GNU ``time -f %M`` wrote (kilobytes), or 0."""
    try:
        lines = path.read_text().split()
        path.unlink()
    except OSError:
        return 0
    return int(lines[-1]) * 1024 if lines and lines[-1].isdigit() else 0


def log_tail(log: Path, lines: int = 5) -> str:
    """Return the last ``lines`` non-empty lines of a log file, joined by `` | ``."""
    try:
        text = log.read_text("utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "(empty log)"


def drop_page_cache() -> str | None:
    """Flush dirty pages and drop the page cache; return why it failed, or ``None`` on success."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError as exc:
        return f"{DROP_CACHES}: {exc.strerror or exc}"
    return None


def warm_read(path: Path, chunk: int = 8 * 1024 * 1024) -> None:
    """Read ``path`` once, so that the next reader finds it in the page cache."""
    buffer = bytearray(chunk)
    with path.open("rb", buffering=0) as stream:
        while stream.readinto(buffer):
            pass


def prepare_cache(cold: bool, inputs: Iterable[Path]) -> None:
    """Before a run: drop the page cache (``cold``) or read every input once (warm).

    Either way dirty pages left by the previous run are flushed first, so that a run never pays
    for writing back its predecessor's output.
    """
    if cold:
        failure = drop_page_cache()
        if failure is not None:
            raise OSError(failure)
        return
    os.sync()
    for path in inputs:
        warm_read(path)


def timed_sync() -> float:
    """Flush every dirty page to disk and return the seconds it took."""
    start = time.perf_counter()
    os.sync()
    return time.perf_counter() - start


def tree_size(path: Path) -> int:
    """Return the total size in bytes of the regular files under ``path`` (or of ``path``)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            entry = Path(folder, name)
            if entry.is_file() and not entry.is_symlink():
                total += entry.stat().st_size
    return total


def median(values: Sequence[float]) -> float:
    """Return the median of a non-empty sequence."""
    return float(statistics.median(values))


def megabytes(size: float) -> str:
    """Format a size in bytes as decimal megabytes with a thousands separator."""
    return f"{size / MB:,.1f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return a plain-text table; columns whose cells all look numeric are right-aligned."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    numeric = [
        all(_looks_numeric(row[index]) for row in rows) and bool(rows) for index in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _looks_numeric(cell: str) -> bool:
    stripped = cell.replace(",", "").replace(".", "").replace("×", "").strip()
    return stripped.isdigit() or cell.strip() in {"", "-"}


def command_version(argv: Sequence[str]) -> str:
    """Return the first line a ``--version``-style command prints, or why there is none."""
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    lines = [line.strip() for line in (completed.stdout + completed.stderr).splitlines()]
    first = next((line for line in lines if line), "no output")
    if completed.returncode != 0:
        return f"unknown (exit status {completed.returncode}: {first})"
    return first


def package_version(name: str) -> str:
    """Return the installed version of a Python distribution, or ``"not installed"``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """Describe the machine the figures come from."""
    memory = psutil.virtual_memory().total
    return {
        "cpu": _cpu_model(),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu_count": str(os.cpu_count()),
        "memory": f"{memory / 2**30:.1f} GiB",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
