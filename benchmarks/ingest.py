"""Ingest benchmark: ``lamina ingest`` against wsidicomizer, OrthancWSIDicomizer and ``cp``.

Usage::

    .venv/bin/python benchmarks/ingest.py [--format FMT] [--size-gb 1.5] [--runs 3] [--work DIR]
        [--keep] [--json] [--cache drop|warm] [--only PEER,...] [--lamina PATH] [--postgres URL]

With ``--format`` other than ``aperio_svs`` (the default, described here) the input is a file of
that format built by ``_formats.py`` (a Zeiss CZI, a Leica SCN, a Roche BIF...), and the peers are
lamina, wsidicomizer where it reads the format (with what it needs to read it), and ``cp`` +
``sha256sum``; for a pixel-exact format (lamina re-encodes every tile losslessly) also
wsidicomizer writing lossless JPEG 2000 (the same work as lamina's) and lamina writing JPEG at
quality 90 (``--lossy 90``, the same work as wsidicomizer's defaults). The goals then are the
issue's: for a tile-copy format lamina at least 1.5x faster than wsidicomizer and under 500 MB;
for a pixel-exact format at least as fast as wsidicomizer. Every peer's CPU time is measured too
(user + system of its process tree), and "cores" is CPU time / run time.

The default input is a synthetic Aperio SVS of about ``--size-gb`` GB with real JPEG tiles: the
level-0 tiles of ``CMU-1-Small-Region.svs`` repeated, copied as stored (never decoded), in a real
pyramid (levels downsampled by 4, 16 and 64, a thumbnail, a label and a macro image). It is built
once and kept in the work folder.

lamina runs twice: embedded (``lamina``: a SQLite catalog and a folder in ``LAMINA_HOME``) and as
the scaled deployment (``lamina-pg-s3``: a PostgreSQL catalog and an S3 bucket, see ``_scaled.py``:
SeaweedFS started on loopback for the benchmark, a fresh database and bucket prefix every run).

Each peer converts that file ``--runs`` times, runs interleaved, into a fresh output folder that is
deleted afterwards (unless ``--keep``). Before every run the page cache is dropped, so each peer
reads its input from disk; where that is not permitted the input is read once instead, so each peer
finds it in memory. After every run the dirty pages are flushed (``sync``) and timed: the figure
that counts is run + flush, the time until the output is on disk, whether or not the peer syncs
its own writes. The table gives medians; peak RSS is the highest over the runs.

Goals checked: lamina at least 1.5x faster than wsidicomizer; lamina within 1.5x the time of
``cp`` + ``sha256sum`` (reading, writing and hashing every byte once); lamina's peak RSS under
500 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openslide

from _common import (
    MB,
    command_version,
    drop_page_cache,
    format_table,
    log_tail,
    machine,
    median,
    megabytes,
    package_version,
    prepare_cache,
    run_measured,
    timed_sync,
    tree_size,
)
from _formats import FORMATS, ensure_input, input_files
from _scaled import DEFAULT_POSTGRES, ScaledDeployment, scaled_deployment
from _scaled import missing as scaled_missing
from _svs import check_svs, ensure_svs

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
DEFAULT_WORK = Path("/tmp/lamina-bench")

MPP = "0.499"
RATIO_GOAL = 1.5
PIXEL_EXACT_GOAL = 1.0
RSS_GOAL = 500 * MB
# Every peer copies the compressed tiles, so less output than this means a run did not finish.
MIN_OUTPUT_SHARE = 0.5
# A pixel-exact input is uncompressed: the peers' output is a fraction of it (lossless JPEG 2000
# about 40 %, JPEG about 6 %), so only an output this small means a run did not finish.
MIN_OUTPUT_SHARE_RAW = 0.01
SVS = "aperio_svs"
LOSSY_QUALITY = "90"  # wsidicomizer's default JPEG quality, for lamina-jpeg90


# --- the peers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A program converting (or copying) the input, as benchmarked.

    ``template`` is its command line, where ``{input}`` is the slide and ``{output}`` the fresh
    output folder of the run; ``home_env`` names an environment variable that receives that folder
    instead; ``make_output`` says whether the folder must exist before the run; ``scaled`` that it
    runs against the scaled deployment (a PostgreSQL database and an S3 prefix of its own per run,
    whose objects count as its output).
    """

    name: str
    template: tuple[str, ...]
    missing: str | None = None
    home_env: str | None = None
    make_output: bool = False
    scaled: bool = False

    def argv(self, source: Path, output: Path) -> list[str]:
        # {data}: the folder beside a slide that has one (MRXS)
        data = source.with_suffix("")
        return [part.format(input=source, output=output, data=data) for part in self.template]

    def env(self, output: Path) -> dict[str, str]:
        env = dict(os.environ)
        if self.home_env:
            env[self.home_env] = str(output)
        return env

    @property
    def command(self) -> str:
        prefix = f"{self.home_env}={{output}} " if self.home_env else ""
        if self.scaled:
            prefix += (
                "LAMINA_DATABASE_URL=postgresql+psycopg://.../{database} LAMINA_BLOB_URL=s3://{bucket}/{prefix}"
                " AWS_ENDPOINT_URL=http://127.0.0.1:{port} AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... "
            )
        return prefix + shlex.join(self.template)


def _missing_executable(path: Path | str | None, what: str) -> str | None:
    """Say why ``what`` cannot run, or return ``None`` when ``path`` is an executable."""
    if path is None:
        return f"{what}: not on PATH"
    if not os.access(path, os.X_OK):
        return f"{what}: {path} is not an executable file"
    return None


def peers(lamina: Path, threads: int, postgres: str = DEFAULT_POSTGRES, fmt: str = SVS) -> list[Peer]:
    """The programs compared, in the order they run within each round."""
    if fmt != SVS:
        return format_peers(lamina, postgres, fmt)
    wsidicomizer = VENV_BIN / "wsidicomizer"
    orthanc = shutil.which("OrthancWSIDicomizer")
    copy = "{output}/copy.svs"
    lamina_missing = _missing_executable(lamina, "lamina (not installed yet?)")
    return [
        Peer(
            "lamina",
            (str(lamina), "ingest", "{input}", "--mpp", MPP),
            missing=lamina_missing,
            home_env="LAMINA_HOME",
        ),
        Peer(
            "lamina-pg-s3",
            (str(lamina), "ingest", "{input}", "--mpp", MPP),
            missing=lamina_missing or scaled_missing(postgres),
            home_env="LAMINA_HOME",
            scaled=True,
        ),
        Peer(
            "wsidicomizer",
            (str(wsidicomizer), "-i", "{input}", "-o", "{output}"),
            missing=_missing_executable(wsidicomizer, "wsidicomizer"),
        ),
        Peer(
            "OrthancWSIDicomizer",
            (
                orthanc or "OrthancWSIDicomizer",
                f"--threads={threads}",
                "--reencode=0",
                "--folder={output}",
                "{input}",
            ),
            missing=_missing_executable(orthanc, "OrthancWSIDicomizer"),
            make_output=True,
        ),
        Peer(
            "cp+sha256sum",
            ("sh", "-c", 'cp "$1" "$2" && sha256sum "$2"', "sh", "{input}", copy),
            make_output=True,
        ),
        Peer("cp", ("cp", "{input}", copy), make_output=True),
    ]


def format_peers(lamina: Path, postgres: str, fmt: str) -> list[Peer]:
    """The peers for an input of ``fmt`` (not SVS), in the order they run within each round.

    The file carries its own pixel spacing, so lamina gets no ``--mpp``. wsidicomizer gets what
    it needs to read the format (``InputFormat.wsidicomizer``), or is listed as not reading it.
    For a pixel-exact format two more peers do the other's work: wsidicomizer writing lossless
    JPEG 2000 (``--quality 0.5``: its command line reads 0 as "not given" and uses 80 dB, and
    rounds 0.5 down to 0, which is lossless), and lamina writing JPEG at wsidicomizer's default
    quality (``--lossy 90``).
    """
    spec = FORMATS[fmt]
    wsidicomizer = VENV_BIN / "wsidicomizer"
    copy = "{output}/copy" + spec.suffix
    lamina_missing = _missing_executable(lamina, "lamina (not installed yet?)")
    reads = spec.wsidicomizer is not None
    wsi_missing = _missing_executable(wsidicomizer, "wsidicomizer") if reads else f"does not read {fmt}"
    wsi_args = spec.wsidicomizer or ()
    ingest = (str(lamina), "ingest", "{input}")
    result = [
        Peer("lamina", ingest, missing=lamina_missing, home_env="LAMINA_HOME"),
        Peer(
            "lamina-pg-s3",
            ingest,
            missing=lamina_missing or scaled_missing(postgres),
            home_env="LAMINA_HOME",
            scaled=True,
        ),
        Peer(
            "wsidicomizer",
            (str(wsidicomizer), "-i", "{input}", "-o", "{output}", *wsi_args),
            missing=wsi_missing,
        ),
    ]
    if spec.kind == "pixel-exact":
        result += [
            Peer(
                "wsidicomizer-j2k-lossless",
                (
                    str(wsidicomizer),
                    "-i",
                    "{input}",
                    "-o",
                    "{output}",
                    *wsi_args,
                    "--format",
                    "jpeg2000",
                    "--quality",
                    "0.5",
                ),
                missing=wsi_missing,
            ),
            Peer(
                "wsidicomizer-htj2k-lossless",
                (
                    str(wsidicomizer),
                    "-i",
                    "{input}",
                    "-o",
                    "{output}",
                    *wsi_args,
                    "--format",
                    "htjpeg2000",
                    "--quality",
                    "0.5",
                ),
                missing=wsi_missing,
            ),
            Peer(
                "lamina-jpeg90",
                (*ingest, "--lossy", LOSSY_QUALITY),
                missing=lamina_missing,
                home_env="LAMINA_HOME",
            ),
            Peer(
                "lamina-j2k",
                (*ingest, "--lossless", "jpeg2000"),
                missing=lamina_missing,
                home_env="LAMINA_HOME",
            ),
        ]
    if spec.folder:  # the slide file and its data folder, every file hashed
        return [
            *result,
            Peer(
                "cp+sha256sum",
                (
                    "sh",
                    "-c",
                    'cp -r "$1" "$2" "$3"/ && find "$3" -type f -print0 | xargs -0 sha256sum',
                    "sh",
                    "{input}",
                    "{data}",
                    "{output}",
                ),
                make_output=True,
            ),
            Peer("cp", ("cp", "-r", "{input}", "{data}", "{output}/"), make_output=True),
        ]
    return [
        *result,
        Peer(
            "cp+sha256sum",
            ("sh", "-c", 'cp "$1" "$2" && sha256sum "$2"', "sh", "{input}", copy),
            make_output=True,
        ),
        Peer("cp", ("cp", "{input}", copy), make_output=True),
    ]


# --- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One run of one peer."""

    seconds: float
    flush_seconds: float
    peak_rss: int
    output_bytes: int
    cpu_seconds: float = 0.0

    @property
    def total_seconds(self) -> float:
        return self.seconds + self.flush_seconds

    @property
    def cores(self) -> float:
        """CPU time over run time: how many cores the peer kept busy on average."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0


@dataclass
class Outcome:
    """Everything measured for one peer."""

    peer: Peer
    runs: list[Run] = field(default_factory=list)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.peer.missing is None and bool(self.runs)

    def median(self, attribute: str) -> float:
        return median([float(getattr(run, attribute)) for run in self.runs])

    @property
    def peak_rss(self) -> int:
        return max(run.peak_rss for run in self.runs)


def children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(
    peer: Peer,
    source: Path,
    output: Path,
    log: Path,
    cold: bool,
    deployment: ScaledDeployment | None = None,
    min_share: float = MIN_OUTPUT_SHARE,
    files: Sequence[Path] = (),
) -> Run | str:
    """Run a peer once into a fresh ``output``; return the run, or why it failed.

    A scaled peer gets a fresh database and bucket prefix of ``deployment``, named after its
    output folder, dropped and emptied once its output is measured.
    """
    shutil.rmtree(output, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    if peer.make_output:
        output.mkdir()
    env = peer.env(output)
    if peer.scaled:
        if deployment is None:
            return "no scaled deployment (PostgreSQL + SeaweedFS) was started"
        deployment.prepare(output.name)
        env |= deployment.env(output.name)
    try:
        files = list(files) or [source]
        prepare_cache(cold, files)
        cpu_before = children_cpu()
        measured = run_measured(peer.argv(source, output), log, env=env)
        cpu = children_cpu() - cpu_before
        flush = timed_sync()
        if measured.returncode != 0:
            return f"exit status {measured.returncode}: {log_tail(log)} (log: {log})"
        written = tree_size(output)
        if peer.scaled:
            assert deployment is not None
            written += deployment.stored_bytes(output.name)
    finally:
        if peer.scaled and deployment is not None:
            deployment.cleanup(output.name)
    size = sum(path.stat().st_size for path in files)
    if written < size * min_share:
        return (
            f"exit status 0 but only {megabytes(written)} MB written for a"
            f" {megabytes(size)} MB input: the tiles were not all stored"
            f" (log: {log})"
        )
    return Run(measured.seconds, flush, measured.peak_rss, written, cpu)


def benchmark(
    candidates: Sequence[Peer],
    source: Path,
    work: Path,
    runs: int,
    cold: bool,
    keep: bool,
    deployment: ScaledDeployment | None = None,
    min_share: float = MIN_OUTPUT_SHARE,
    files: Sequence[Path] = (),
) -> list[Outcome]:
    """Run every available peer ``runs`` times, interleaved round by round."""
    outcomes = [Outcome(peer, failure=peer.missing) for peer in candidates]
    for index in range(1, runs + 1):
        for outcome in outcomes:
            if outcome.failure is not None:
                continue
            name = outcome.peer.name
            output = work / "out" / f"{name}-{index}"
            print(f"run {index}/{runs}: {name} ...", file=sys.stderr, flush=True)
            log = work / "logs" / f"{name}-{index}.log"
            result = run_once(outcome.peer, source, output, log, cold, deployment, min_share, files)
            if isinstance(result, str):
                outcome.failure = f"failed on run {index}: {result}"
            else:
                outcome.runs.append(result)
                print(f"  {result.total_seconds:.2f} s", file=sys.stderr, flush=True)
            if not keep:
                shutil.rmtree(output, ignore_errors=True)
    return outcomes


# --- reporting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """One goal, its measured value and whether it is met (``None``: not measurable here)."""

    name: str
    target: str
    value: str
    passed: bool | None


def goals(outcomes: Sequence[Outcome], fmt: str = SVS) -> list[Goal]:
    """Check lamina's goals against wsidicomizer, the cp+sha256sum floor, and memory."""
    if fmt != SVS:
        return format_goals(outcomes, fmt)
    by_name = {outcome.peer.name: outcome for outcome in outcomes}
    lamina = by_name["lamina"]
    scaled = by_name["lamina-pg-s3"]
    speedup = _time_ratio(by_name["wsidicomizer"], lamina)
    slowdown = _time_ratio(lamina, by_name["cp+sha256sum"])
    rss = lamina.peak_rss / MB if lamina.ok else None
    scaled_rss = scaled.peak_rss / MB if scaled.ok else None
    rss_target = f"< {RSS_GOAL / MB:.0f} MB"
    return [
        _goal("speed-up over wsidicomizer", f">= {RATIO_GOAL}x", speedup, "{:.2f}x", _at_least),
        _goal("time / cp+sha256sum time", f"<= {RATIO_GOAL}x", slowdown, "{:.2f}x", _at_most),
        _goal("peak RSS", rss_target, rss, "{:,.1f} MB", _below_rss),
        _goal("peak RSS on PostgreSQL + S3", rss_target, scaled_rss, "{:,.1f} MB", _below_rss),
    ]


def format_goals(outcomes: Sequence[Outcome], fmt: str) -> list[Goal]:
    """The issue's goals for an input of ``fmt``: against wsidicomizer (for a pixel-exact format
    both against its defaults and against its lossless JPEG 2000, lamina's own work), memory, and
    the time over cp+sha256sum (reported, no target)."""
    by_name = {outcome.peer.name: outcome for outcome in outcomes}
    lamina = by_name["lamina"]
    rss = lamina.peak_rss / MB if lamina.ok else None
    rss_target = f"< {RSS_GOAL / MB:.0f} MB"
    floor = _time_ratio(lamina, by_name["cp+sha256sum"])
    reported = Goal("lamina time / cp+sha256sum time", "(reported)", "n/a", None)
    if floor is not None:
        reported = Goal(reported.name, reported.target, f"{floor:.2f}x", None)
    if FORMATS[fmt].kind == "tile-copy":
        speedup = _time_ratio(by_name["wsidicomizer"], lamina)
        checks = [
            _goal("speed-up over wsidicomizer", f">= {RATIO_GOAL}x", speedup, "{:.2f}x", _at_least),
            _goal("peak RSS", rss_target, rss, "{:,.1f} MB", _below_rss),
        ]
    else:
        # lamina's default lossless codec there is JPEG-LS (decision 0011), which wsidicomizer
        # does not write: its faster lossless option is the peer
        fastest = min(
            (
                by_name[name]
                for name in ("wsidicomizer-j2k-lossless", "wsidicomizer-htj2k-lossless")
                if name in by_name and by_name[name].ok
            ),
            key=lambda outcome: outcome.median("total_seconds"),
            default=by_name["wsidicomizer-j2k-lossless"],
        )
        lossless = _time_ratio(fastest, lamina)
        default = _time_ratio(by_name["wsidicomizer"], lamina)
        lossy = _time_ratio(by_name["wsidicomizer"], by_name["lamina-jpeg90"])
        target = f">= {PIXEL_EXACT_GOAL:g}x"
        checks = [
            _goal(
                "speed-up over wsidicomizer, both lossless (its faster of JPEG 2000 and HTJ2K)",
                target,
                lossless,
                "{:.2f}x",
                _pixel_exact,
            ),
            # lossless against lossy, and the lossy option: reported, not the goal
            Goal(
                "lamina speed-up over wsidicomizer's defaults (JPEG q90, lossy)",
                "(reported)",
                f"{default:.2f}x" if default is not None else "n/a",
                None,
            ),
            Goal(
                "lamina --lossy 90 speed-up over wsidicomizer (both JPEG q90)",
                "(reported)",
                f"{lossy:.2f}x" if lossy is not None else "n/a",
                None,
            ),
            Goal(
                "lamina --lossless jpeg2000 speed-up over wsidicomizer lossless JPEG 2000 (same codec)",
                "(reported)",
                f"{ratio:.2f}x"
                if "lamina-j2k" in by_name
                and (ratio := _time_ratio(by_name["wsidicomizer-j2k-lossless"], by_name["lamina-j2k"]))
                else "n/a",
                None,
            ),
            _goal("peak RSS", rss_target, rss, "{:,.1f} MB", _below_rss),
        ]
    if "lamina-pg-s3" in by_name and by_name["lamina-pg-s3"].ok:
        scaled_rss = by_name["lamina-pg-s3"].peak_rss / MB
        checks.append(_goal("peak RSS on PostgreSQL + S3", rss_target, scaled_rss, "{:,.1f} MB", _below_rss))
    return [*checks, reported]


def _pixel_exact(value: float) -> bool:
    return value >= PIXEL_EXACT_GOAL


def _time_ratio(numerator: Outcome, denominator: Outcome) -> float | None:
    """Median time of one peer over another's, or ``None`` unless both ran."""
    if not (numerator.ok and denominator.ok):
        return None
    return numerator.median("total_seconds") / denominator.median("total_seconds")


def _at_least(value: float) -> bool:
    return value >= RATIO_GOAL


def _at_most(value: float) -> bool:
    return value <= RATIO_GOAL


def _below_rss(value: float) -> bool:
    return value * MB < RSS_GOAL


def _goal(name: str, target: str, value: float | None, shown: str, met: Callable[[float], bool]) -> Goal:
    if value is None:
        return Goal(f"lamina {name}", target, "n/a", None)
    return Goal(f"lamina {name}", target, shown.format(value), met(value))


def peer_row(outcome: Outcome, input_bytes: int) -> list[str]:
    """One table row: medians of total, run and flush time, throughput, peak RSS, output size."""
    if not outcome.ok:
        status = "unavailable" if outcome.peer.missing else "failed"
        return [outcome.peer.name, status, "-", "-", "-", "-", "-", "-", "-", "-", "0"]
    total = outcome.median("total_seconds")
    return [
        outcome.peer.name,
        "ok",
        f"{total:.2f}",
        f"{outcome.median('seconds'):.2f}",
        f"{outcome.median('flush_seconds'):.2f}",
        f"{input_bytes / total / MB:,.1f}",
        f"{outcome.median('cpu_seconds'):.1f}",
        f"{outcome.median('cores'):.2f}",
        megabytes(outcome.peak_rss),
        megabytes(outcome.median("output_bytes")),
        str(len(outcome.runs)),
    ]


def report_text(report: dict[str, Any], outcomes: Sequence[Outcome], checks: list[Goal]) -> str:
    """The readable report: machine, input, table of peers, problems, goals, commands."""
    slide = report["input"]
    lines = [
        "machine: " + ", ".join(f"{key} {value}" for key, value in report["machine"].items()),
        "versions: "
        + ", ".join(
            value if value.startswith(key) else f"{key} {value}" for key, value in report["versions"].items()
        ),
        f"input: {report['format']}: {report['description']}",
        f"input file: {slide['path']} ({megabytes(slide['bytes'])} MB{slide.get('files', '')},"
        f" levels {slide['levels']})",
        f"page cache: {report['cache']}",
        f"load average (1, 5, 15 min): {report.get('load', 'not measured')}",
        "",
    ]
    headers = [
        "peer",
        "status",
        "time s",
        "run s",
        "flush s",
        "MB/s",
        "CPU s",
        "cores",
        "peak RSS MB",
        "output MB",
        "runs",
    ]
    rows = [peer_row(outcome, slide["bytes"]) for outcome in outcomes]
    lines.append(format_table(headers, rows))
    lines.append(
        "(time = run + flush to disk, median; MB/s = input size / time; 1 MB = 10^6 bytes;"
        " CPU = user + system of the process tree; cores = CPU / run time)"
    )
    by_name = {outcome.peer.name: outcome for outcome in outcomes}
    if "lamina" in by_name and "lamina-pg-s3" in by_name:
        ratio = _time_ratio(by_name["lamina-pg-s3"], by_name["lamina"])
        if ratio is not None:
            lines.append(
                f"lamina-pg-s3 / lamina: {ratio:.2f}x the time (peak RSS of lamina's processes only, not of"
                " PostgreSQL or SeaweedFS; output = the objects in the bucket)"
            )
    for outcome in outcomes:
        if not outcome.ok:
            lines.append(f"{outcome.peer.name}: {outcome.failure or 'no runs'}")
    lines.append("")
    goal_rows = [
        [
            goal.name,
            goal.target,
            goal.value,
            {True: "PASS", False: "FAIL", None: "n/a"}[goal.passed],
        ]
        for goal in checks
    ]
    lines.append(format_table(["goal", "target", "measured", "result"], goal_rows))
    lines.append("")
    lines.extend(f"{outcome.peer.name}: {outcome.peer.command}" for outcome in outcomes)
    return "\n".join(lines)


def report_json(report: dict[str, Any], outcomes: Sequence[Outcome], checks: list[Goal]) -> dict[str, Any]:
    """The same figures as JSON, with every run."""
    size = report["input"]["bytes"]
    peers_json: dict[str, Any] = {}
    for outcome in outcomes:
        entry: dict[str, Any] = {
            "status": "ok" if outcome.ok else ("unavailable" if outcome.peer.missing else "failed"),
            "reason": outcome.failure,
            "command": outcome.peer.command,
            "runs": [
                {
                    "seconds": run.seconds,
                    "flush_seconds": run.flush_seconds,
                    "peak_rss_bytes": run.peak_rss,
                    "output_bytes": run.output_bytes,
                    "cpu_seconds": run.cpu_seconds,
                }
                for run in outcome.runs
            ],
        }
        if outcome.ok:
            total = outcome.median("total_seconds")
            entry |= {
                "median_seconds": total,
                "median_run_seconds": outcome.median("seconds"),
                "median_flush_seconds": outcome.median("flush_seconds"),
                "mb_per_s": size / total / MB,
                "median_cpu_seconds": outcome.median("cpu_seconds"),
                "peak_rss_bytes": outcome.peak_rss,
                "output_bytes": outcome.median("output_bytes"),
            }
        peers_json[outcome.peer.name] = entry
    goals_json = [goal.__dict__ for goal in checks]
    return {**report, "peers": peers_json, "goals": goals_json}


def versions(lamina: Path) -> dict[str, str]:
    """Versions of every peer and of the libraries the synthetic file is made with."""
    lamina_version = (
        command_version([str(lamina), "--version"]) if os.access(lamina, os.X_OK) else "not installed"
    )
    return {
        "lamina": lamina_version,
        "wsidicomizer": package_version("wsidicomizer"),
        "wsidicom": package_version("wsidicom"),
        "opentile": package_version("opentile"),
        "OrthancWSIDicomizer": command_version(["OrthancWSIDicomizer", "--version"]),
        "cp": command_version(["cp", "--version"]),
        "sha256sum": command_version(["sha256sum", "--version"]),
        "tifffile": package_version("tifffile"),
        "openslide": openslide.__library_version__,
        "pylibCZIrw": package_version("pylibCZIrw"),
        "czifile": package_version("czifile"),
    }


def cache_mode(requested: str) -> tuple[bool, str]:
    """Decide between dropping the page cache before each run and reading the input instead."""
    if requested == "warm":
        return False, "warm: the input is read once before each run (--cache warm)"
    failure = drop_page_cache()
    if failure is None:
        return True, "dropped before each run (sync; echo 3 > /proc/sys/vm/drop_caches): cold input"
    return (
        False,
        f"warm: cannot drop the page cache ({failure}); the input is read once before each run",
    )


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--format",
        choices=(SVS, *FORMATS),
        default=SVS,
        help="the input's format (default aperio_svs; the others are built by _formats.py)",
    )
    parser.add_argument("--size-gb", type=float, default=1.5, help="size of the synthetic input (GB)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each peer; medians are shown")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="cache and scratch folder")
    parser.add_argument("--keep", action="store_true", help="keep every output folder")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--cache",
        choices=("drop", "warm"),
        default="drop",
        help="drop the page cache before each run (default, falls back to warm) or read the input",
    )
    parser.add_argument("--only", default=None, help="comma-separated peers to run (default: all)")
    parser.add_argument("--lamina", type=Path, default=VENV_BIN / "lamina", help="lamina command")
    parser.add_argument(
        "--postgres",
        default=DEFAULT_POSTGRES,
        help="PostgreSQL server where lamina-pg-s3 gets a fresh database each run",
    )
    arguments = parser.parse_args(argv)
    if arguments.runs < 1 or arguments.size_gb <= 0:
        parser.error("--runs must be at least 1 and --size-gb positive")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    """Build or reuse the input, run the peers, print the table and the goals."""
    arguments = parse_arguments(argv)
    work = arguments.work.absolute()
    fmt = arguments.format
    if fmt == SVS:
        source = ensure_svs(work, arguments.size_gb)
        slide = check_svs(source)
        description = "synthetic Aperio SVS, CMU-1-Small-Region's JPEG tiles repeated (_svs.py)"
        min_share = MIN_OUTPUT_SHARE
    else:
        spec = FORMATS[fmt]
        source = ensure_input(fmt, work, arguments.size_gb)
        slide = spec.check(source)
        reads = f"reads it {spec.wsidicomizer_note}" if spec.wsidicomizer is not None else "does not read it"
        description = f"{spec.description} ({spec.kind}; wsidicomizer {reads})"
        min_share = MIN_OUTPUT_SHARE if spec.kind == "tile-copy" else MIN_OUTPUT_SHARE_RAW
    files = input_files(fmt, source)
    if len(files) > 1:
        folder = source.with_suffix("").name
        slide["files"] = f" in {len(files)} files: the slide file and its folder {folder}/"
    threads = len(os.sched_getaffinity(0))
    candidates = peers(arguments.lamina, threads, arguments.postgres, fmt)
    if arguments.only:
        wanted = {name.strip() for name in arguments.only.split(",")}
        candidates = [peer for peer in candidates if peer.name in wanted]
    cold, cache = cache_mode(arguments.cache)
    report = {
        "machine": machine(),
        "versions": versions(arguments.lamina),
        "format": fmt,
        "description": description,
        "input": {"path": str(source), "bytes": sum(path.stat().st_size for path in files), **slide},
        "cache": cache,
        "runs": arguments.runs,
    }
    load_before = _load()
    with contextlib.ExitStack() as stack:
        deployment = None
        if any(peer.scaled and peer.missing is None for peer in candidates):
            deployment = stack.enter_context(scaled_deployment(work, arguments.postgres))
            report["versions"] |= deployment.versions()
        outcomes = benchmark(
            candidates, source, work, arguments.runs, cold, arguments.keep, deployment, min_share, files
        )
    report["load"] = f"{load_before} before the runs, {_load()} after"
    every = peers(arguments.lamina, threads, arguments.postgres, fmt)
    checks = goals(_with_skipped(outcomes, every), fmt)
    print(report_text(report, outcomes, checks))
    if arguments.json:
        print(json.dumps(report_json(report, outcomes, checks), indent=2))
    return 0


def _load() -> str:
    """The machine's load averages, which say whether other work shared it during the runs."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _with_skipped(outcomes: Sequence[Outcome], every: Sequence[Peer]) -> list[Outcome]:
    """Outcomes for every peer, those left out by ``--only`` marked as not run."""
    ran = {outcome.peer.name: outcome for outcome in outcomes}
    return [ran.get(peer.name, Outcome(peer, failure="not run (--only)")) for peer in every]


if __name__ == "__main__":
    sys.exit(main())
