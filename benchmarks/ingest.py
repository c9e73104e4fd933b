"""Ingest benchmark: ``lamina ingest`` against wsidicomizer, OrthancWSIDicomizer and ``cp``.

Usage::

    .venv/bin/python benchmarks/ingest.py [--size-gb 1.5] [--runs 3] [--work DIR] [--keep] [--json]
        [--cache drop|warm] [--only PEER,...] [--lamina PATH]

The input is a synthetic Aperio SVS of about ``--size-gb`` GB with real JPEG tiles: the level-0
tiles of ``CMU-1-Small-Region.svs`` repeated, copied as stored (never decoded), in a real pyramid
(levels downsampled by 4, 16 and 64, a thumbnail, a label and a macro image). It is built once and
kept in the work folder.

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
import json
import math
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import openslide
import tifffile
from numpy.typing import NDArray
from PIL import Image

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

REPO = Path(__file__).resolve().parents[1]
SOURCE_SVS = REPO.parent / "shared" / "testdata" / "aperio" / "CMU-1-Small-Region.svs"
VENV_BIN = REPO / ".venv" / "bin"
DEFAULT_WORK = Path("/tmp/lamina-bench")
GENERATOR_VERSION = 3  # bump when the synthetic file changes, so cached copies are rebuilt

TILE = 240
# The first 8 x 12 level-0 tiles of the source are all full tiles; their mosaic (1920 x 2880 px)
# divides exactly by 64, so every downsampled level of the repeated mosaic is itself periodic.
PERIOD_COLS, PERIOD_ROWS = 8, 12
DOWNSAMPLES = (4, 16, 64)
QUALITY = 30  # the source's tables are libjpeg quality 30, as its "Q=30" says
THUMBNAIL_SIDE = 1024
THUMBNAIL_ROWS_PER_STRIP = 16
ASPECT = 46000 / 32914  # width / height of the scan CMU-1-Small-Region was cut from
MPP = "0.499"
RATIO_GOAL = 1.5
RSS_GOAL = 500 * MB
# Every peer copies the compressed tiles, so less output than this means a run did not finish.
MIN_OUTPUT_SHARE = 0.5

APERIO = "Aperio Image Library v11.2.1 "
APERIO_FIELDS = (
    "AppMag = 20|StripeWidth = 2040|ScanScope ID = CPAPERIOCS|Filename = bench|Date = 12/29/09"
    "|Time = 09:59:15|User = b414003d-95c6-48b0-9369-8010ed517ba7|MPP = 0.4990|Left = 25.691574"
    "|Top = 23.449873|LineCameraSkew = -0.000424|LineAreaXOffset = 0.019265"
    "|LineAreaYOffset = -0.000313|Focus Offset = 0.000000|ImageID = 1004486"
    "|OriginalWidth = {width}|Originalheight = {height}|Filtered = 5"
    "|OriginalWidth = {width}|OriginalHeight = {height}"
)

SOI, EOI, SOF0, SOS, DQT, DHT = 0xD8, 0xD9, 0xC0, 0xDA, 0xDB, 0xC4
APP0, APP15 = 0xE0, 0xEF


# --- the synthetic slide ---------------------------------------------------------------------


@dataclass(frozen=True)
class StoredStrips:
    """A stripped page as stored in its file: compressed strips and what is needed to write them."""

    shape: tuple[int, int, int]
    rowsperstrip: int
    strips: tuple[bytes, ...]
    jpegtables: bytes | None
    description: str


@dataclass(frozen=True)
class SourceSlide:
    """What the synthetic slide is made of, taken from the real Aperio file."""

    jpegtables: bytes
    tiles: tuple[bytes, ...]  # PERIOD_ROWS x PERIOD_COLS level-0 tiles, row-major, as stored
    mosaic: NDArray[np.uint8]  # the same tiles decoded, (PERIOD_ROWS * TILE, PERIOD_COLS * TILE, 3)
    label: StoredStrips
    macro: StoredStrips

    @property
    def mean_tile_bytes(self) -> float:
        return sum(len(tile) for tile in self.tiles) / len(self.tiles)


@dataclass(frozen=True)
class Level:
    """One pyramid level of the synthetic slide: its size and its tiles in row-major order."""

    width: int
    height: int
    tiles: Sequence[bytes]
    jpegtables: bytes
    description: str


def read_segments(page: tifffile.TiffPage) -> tuple[bytes, ...]:
    """Return the compressed tiles or strips of a page, exactly as stored."""
    handle = page.parent.filehandle
    segments = []
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
        handle.seek(offset)
        segments.append(handle.read(count))
    return tuple(segments)


def read_source(path: Path) -> SourceSlide:
    """Read the tiles, their decoded mosaic, the label and the macro of the real Aperio file."""
    with tifffile.TiffFile(path) as tif:
        base = tif.pages.first
        if base.compression != tifffile.COMPRESSION.JPEG or base.jpegtables is None:
            raise ValueError(f"{path}: level 0 is not JPEG with shared tables, as Aperio writes it")
        columns = math.ceil(base.imagewidth / TILE)
        stored = read_segments(base)
        tiles = tuple(
            stored[row * columns + column] for row in range(PERIOD_ROWS) for column in range(PERIOD_COLS)
        )
        mosaic = base.asarray()[: PERIOD_ROWS * TILE, : PERIOD_COLS * TILE]
        associated = {
            _associated_kind(page.description): page
            for page in tif.pages[1:]
            if isinstance(page, tifffile.TiffPage)
        }
        return SourceSlide(
            jpegtables=bytes(base.jpegtables),
            tiles=tiles,
            mosaic=np.ascontiguousarray(mosaic),
            label=_stored_strips(associated["label"]),
            macro=_stored_strips(associated["macro"]),
        )


def _associated_kind(description: str) -> str:
    lines = description.splitlines()
    return lines[1].split()[0] if len(lines) > 1 and lines[1] else ""


def _stored_strips(page: tifffile.TiffPage) -> StoredStrips:
    height, width, samples = page.shape
    return StoredStrips(
        shape=(height, width, samples),
        rowsperstrip=page.rowsperstrip,
        strips=read_segments(page),
        jpegtables=bytes(page.jpegtables) if page.jpegtables else None,
        description=page.description,
    )


def split_jpeg(stream: bytes) -> tuple[bytes, bytes]:
    """Split an interchange JPEG into a tables-only stream and an abbreviated image stream.

    The tables (DQT, DHT) go to the first, as in a TIFF ``JPEGTables`` tag; the frame header and
    scan stay in the second, with the components numbered 0, 1, 2 as Aperio numbers them. APPn
    segments (JFIF, Adobe) are dropped, as Aperio writes none: the TIFF's RGB photometric tells
    readers that the JPEG data is RGB.
    """
    tables, image = [bytes([0xFF, SOI])], [bytes([0xFF, SOI])]
    numbers: dict[int, int] = {}
    position = 2
    while True:
        if stream[position] != 0xFF:
            raise ValueError(f"not a JPEG marker at byte {position}")
        marker = stream[position + 1]
        end = position + 2 + int.from_bytes(stream[position + 2 : position + 4], "big")
        segment = bytearray(stream[position:end])
        if marker == SOF0:
            for index in range(segment[9]):  # Nf components of 3 bytes from byte 10
                numbers[segment[10 + 3 * index]] = index
                segment[10 + 3 * index] = index
        if marker == SOS:
            for index in range(segment[4]):  # Ns selectors of 2 bytes from byte 5
                segment[5 + 2 * index] = numbers[segment[5 + 2 * index]]
            image.extend([bytes(segment), stream[end:]])
            break
        if marker in (DQT, DHT):
            tables.append(bytes(segment))
        elif not APP0 <= marker <= APP15:
            image.append(bytes(segment))
        position = end
    tables.append(bytes([0xFF, EOI]))
    return b"".join(tables), b"".join(image)


class SharedTablesEncoder:
    """Encodes RGB pixels as abbreviated JPEG streams sharing one ``JPEGTables``, like Aperio.

    Like Aperio's, the JPEG data is RGB with no colour transform and no chroma subsampling, with
    one quantisation table for the three components. Baseline libjpeg with a fixed quality and
    standard Huffman tables gives the same tables for every image, which is what lets a page store
    them once; this is checked, not assumed.
    """

    def __init__(self, quality: int) -> None:
        self.quality = quality
        self.tables: bytes | None = None

    def encode(self, pixels: NDArray[np.uint8]) -> bytes:
        stream = imagecodecs.jpeg8_encode(
            pixels,
            level=self.quality,
            colorspace="RGB",
            outcolorspace="RGB",
            subsampling="444",
            optimize=False,
        )
        tables, image = split_jpeg(bytes(stream))
        if self.tables is None:
            self.tables = tables
        elif tables != self.tables:
            raise RuntimeError("libjpeg produced different tables for two images of one page")
        return image


def downsample(pixels: NDArray[np.uint8], factor: int) -> NDArray[np.uint8]:
    """Return ``pixels`` reduced by ``factor`` on each axis by averaging (sides must divide)."""
    height, width, samples = pixels.shape
    blocks = pixels.reshape(height // factor, factor, width // factor, factor, samples)
    return np.asarray(blocks.mean(axis=(1, 3)).round(), dtype=np.uint8)


def periodic_crop(
    period: NDArray[np.uint8], top: int, left: int, height: int, width: int
) -> NDArray[np.uint8]:
    """Return a window of the infinite image made by repeating ``period`` in both directions."""
    rows = (top + np.arange(height)) % period.shape[0]
    columns = (left + np.arange(width)) % period.shape[1]
    return np.ascontiguousarray(period[rows[:, None], columns[None, :]])


def base_size(source: SourceSlide, target_bytes: float) -> tuple[int, int]:
    """Return the level-0 width and height whose tiles add up to about ``target_bytes``.

    Like a real scan, the sides are not multiples of the tile size: the last row and column of
    tiles are partly outside the image.
    """
    tile_count = max(1.0, target_bytes / source.mean_tile_bytes)
    columns = max(2, round(math.sqrt(tile_count * ASPECT)))
    rows = max(2, math.ceil(tile_count / columns))
    return columns * TILE - TILE // 3, rows * TILE - TILE // 5


def base_level(source: SourceSlide, width: int, height: int) -> Level:
    """Level 0: the source tiles repeated, as stored."""
    columns, rows = math.ceil(width / TILE), math.ceil(height / TILE)
    tiles = [
        source.tiles[(row % PERIOD_ROWS) * PERIOD_COLS + column % PERIOD_COLS]
        for row in range(rows)
        for column in range(columns)
    ]
    header = f"{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) JPEG/RGB Q={QUALITY}"
    fields = APERIO_FIELDS.format(width=width, height=height)
    return Level(width, height, tiles, source.jpegtables, f"{APERIO}\r\n{header}|{fields}")


def reduced_level(source: SourceSlide, base: Level, factor: int) -> Level:
    """A level downsampled by ``factor``: the mosaic reduced, then cut into re-encoded tiles.

    The level is periodic, so each distinct tile is encoded once and repeated.
    """
    period = downsample(source.mosaic, factor)
    width, height = base.width // factor, base.height // factor
    encoder = SharedTablesEncoder(QUALITY)
    encoded: dict[tuple[int, int], bytes] = {}
    tiles = []
    for row in range(math.ceil(height / TILE)):
        for column in range(math.ceil(width / TILE)):
            key = (row * TILE % period.shape[0], column * TILE % period.shape[1])
            if key not in encoded:
                encoded[key] = encoder.encode(periodic_crop(period, *key, TILE, TILE))
            tiles.append(encoded[key])
    assert encoder.tables is not None
    header = (
        f"{base.width}x{base.height} [0,0 {base.width}x{base.height}] ({TILE}x{TILE})"
        f" -> {width}x{height} JPEG/RGB Q={QUALITY}"
    )
    return Level(width, height, tiles, encoder.tables, f"{APERIO}\r\n{header}")


def thumbnail(source: SourceSlide, base: Level) -> StoredStrips:
    """The thumbnail page: the whole slide within 1024 px, in JPEG strips of 16 rows."""
    factor = DOWNSAMPLES[-1]
    small = periodic_crop(
        downsample(source.mosaic, factor), 0, 0, base.height // factor, base.width // factor
    )
    scale = min(1.0, THUMBNAIL_SIDE / max(small.shape[:2]))
    size = (max(1, round(small.shape[1] * scale)), max(1, round(small.shape[0] * scale)))
    pixels = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.LANCZOS))
    encoder = SharedTablesEncoder(QUALITY)
    strips = tuple(
        encoder.encode(np.ascontiguousarray(pixels[top : top + THUMBNAIL_ROWS_PER_STRIP]))
        for top in range(0, pixels.shape[0], THUMBNAIL_ROWS_PER_STRIP)
    )
    height, width = pixels.shape[:2]
    description = f"{APERIO}\n{base.width}x{base.height} -> {width}x{height} - |"
    return StoredStrips(
        shape=(height, width, 3),
        rowsperstrip=THUMBNAIL_ROWS_PER_STRIP,
        strips=strips,
        jpegtables=encoder.tables,
        description=description + APERIO_FIELDS.format(width=base.width, height=base.height),
    )


def _jpeg_arguments(jpegtables: bytes | None) -> dict[str, Any]:
    """tifffile arguments for pre-compressed JPEG with RGB photometric, as Aperio writes it."""
    return {
        "compression": "jpeg",
        "photometric": "rgb",
        "subsampling": (2, 2),
        "jpegtables": jpegtables,
        # Aperio's JPEG data is RGB with no colour transform, and its pages are tagged RGB (with a
        # YCbCrSubSampling tag of 2, 2 all the same); tifffile would otherwise tag them YCbCr.
        "compressionargs": {"outcolorspace": "RGB"},
    }


def write_level(tif: tifffile.TiffWriter, level: Level) -> None:
    """Append a tiled JPEG page whose tiles are written exactly as given."""
    tif.write(
        iter(level.tiles),
        shape=(level.height, level.width, 3),
        dtype=np.uint8,
        tile=(TILE, TILE),
        description=level.description,
        metadata=None,
        software=False,
        **_jpeg_arguments(level.jpegtables),
    )


def write_strips(tif: tifffile.TiffWriter, page: StoredStrips, subfiletype: int) -> None:
    """Append a stripped page (JPEG with tables, or LZW with predictor) as given."""
    if page.jpegtables is not None:
        codec = _jpeg_arguments(page.jpegtables)
    else:
        codec = {"compression": "lzw", "predictor": True, "photometric": "rgb"}
    tif.write(
        iter(page.strips),
        shape=page.shape,
        dtype=np.uint8,
        rowsperstrip=page.rowsperstrip,
        subfiletype=subfiletype,
        description=page.description,
        metadata=None,
        software=False,
        **codec,
    )


def build_svs(path: Path, size_gb: float, source_path: Path = SOURCE_SVS) -> None:
    """Write the synthetic Aperio SVS to ``path`` (through a temporary name, then renamed).

    Page order is Aperio's: level 0, thumbnail, reduced levels, label, macro.
    """
    source = read_source(source_path)
    # The reduced levels add about 1/f² of level 0 each; leave room for them.
    share = 1 + sum(1 / factor**2 for factor in DOWNSAMPLES)
    width, height = base_size(source, size_gb * 1e9 / share)
    base = base_level(source, width, height)
    reduced = [reduced_level(source, base, factor) for factor in DOWNSAMPLES]
    estimate = sum(len(tile) for level in (base, *reduced) for tile in level.tiles)
    partial = path.with_name(path.name + ".partial")
    with tifffile.TiffWriter(partial, bigtiff=estimate > 3.5e9) as tif:
        write_level(tif, base)
        write_strips(tif, thumbnail(source, base), subfiletype=0)
        for level in reduced:
            write_level(tif, level)
        write_strips(tif, source.label, subfiletype=1)
        write_strips(tif, source.macro, subfiletype=9)
    os.sync()
    partial.replace(path)


def check_svs(path: Path) -> dict[str, Any]:
    """Open the file with OpenSlide and tifffile, fail unless both see an Aperio pyramid."""
    with openslide.OpenSlide(path) as slide:
        vendor = slide.properties.get(openslide.PROPERTY_NAME_VENDOR)
        associated = sorted(slide.associated_images)
        if vendor != "aperio" or slide.level_count != 1 + len(DOWNSAMPLES):
            raise RuntimeError(f"{path}: OpenSlide sees vendor {vendor}, {slide.level_count} levels")
        if associated != ["label", "macro", "thumbnail"]:
            raise RuntimeError(f"{path}: OpenSlide sees associated images {associated}")
        for level in range(slide.level_count):
            region = np.asarray(slide.read_region((0, 0), level, (64, 64)))
            if region[..., :3].std() == 0:
                raise RuntimeError(f"{path}: level {level} reads as a flat colour")
        dimensions = [list(size) for size in slide.level_dimensions]
        mpp = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    with tifffile.TiffFile(path) as tif:
        if not tif.is_svs:
            raise RuntimeError(f"{path}: tifffile does not see an SVS file")
    return {
        "vendor": vendor,
        "levels": dimensions,
        "associated": associated,
        "mpp": mpp,
    }


def ensure_svs(work: Path, size_gb: float) -> Path:
    """Return the cached synthetic SVS of this size, building it first if needed."""
    path = work / f"aperio-jpeg-{size_gb:g}gb-v{GENERATOR_VERSION}.svs"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        print(f"building {path} from {SOURCE_SVS.name} ...", file=sys.stderr, flush=True)
        build_svs(path, size_gb)
    return path


# --- the peers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A program converting (or copying) the input, as benchmarked.

    ``template`` is its command line, where ``{input}`` is the slide and ``{output}`` the fresh
    output folder of the run; ``home_env`` names an environment variable that receives that folder
    instead; ``make_output`` says whether the folder must exist before the run.
    """

    name: str
    template: tuple[str, ...]
    missing: str | None = None
    home_env: str | None = None
    make_output: bool = False

    def argv(self, source: Path, output: Path) -> list[str]:
        return [part.format(input=source, output=output) for part in self.template]

    def env(self, output: Path) -> dict[str, str]:
        env = dict(os.environ)
        if self.home_env:
            env[self.home_env] = str(output)
        return env

    @property
    def command(self) -> str:
        prefix = f"{self.home_env}={{output}} " if self.home_env else ""
        return prefix + shlex.join(self.template)


def _missing_executable(path: Path | str | None, what: str) -> str | None:
    """Say why ``what`` cannot run, or return ``None`` when ``path`` is an executable."""
    if path is None:
        return f"{what}: not on PATH"
    if not os.access(path, os.X_OK):
        return f"{what}: {path} is not an executable file"
    return None


def peers(lamina: Path, threads: int) -> list[Peer]:
    """The programs compared, in the order they run within each round."""
    wsidicomizer = VENV_BIN / "wsidicomizer"
    orthanc = shutil.which("OrthancWSIDicomizer")
    copy = "{output}/copy.svs"
    return [
        Peer(
            "lamina",
            (str(lamina), "ingest", "{input}", "--mpp", MPP),
            missing=_missing_executable(lamina, "lamina (not installed yet?)"),
            home_env="LAMINA_HOME",
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


# --- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One run of one peer."""

    seconds: float
    flush_seconds: float
    peak_rss: int
    output_bytes: int

    @property
    def total_seconds(self) -> float:
        return self.seconds + self.flush_seconds


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


def run_once(peer: Peer, source: Path, output: Path, log: Path, cold: bool) -> Run | str:
    """Run a peer once into a fresh ``output``; return the run, or why it failed."""
    shutil.rmtree(output, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    if peer.make_output:
        output.mkdir()
    prepare_cache(cold, [source])
    measured = run_measured(peer.argv(source, output), log, env=peer.env(output))
    flush = timed_sync()
    if measured.returncode != 0:
        return f"exit status {measured.returncode}: {log_tail(log)} (log: {log})"
    written = tree_size(output)
    if written < source.stat().st_size * MIN_OUTPUT_SHARE:
        return (
            f"exit status 0 but only {megabytes(written)} MB written for a"
            f" {megabytes(source.stat().st_size)} MB input: the tiles were not all stored"
            f" (log: {log})"
        )
    return Run(measured.seconds, flush, measured.peak_rss, written)


def benchmark(
    candidates: Sequence[Peer], source: Path, work: Path, runs: int, cold: bool, keep: bool
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
            result = run_once(outcome.peer, source, output, work / "logs" / f"{name}-{index}.log", cold)
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


def goals(outcomes: Sequence[Outcome]) -> list[Goal]:
    """Check lamina's goals against wsidicomizer, the cp+sha256sum floor, and memory."""
    by_name = {outcome.peer.name: outcome for outcome in outcomes}
    lamina = by_name["lamina"]
    speedup = _time_ratio(by_name["wsidicomizer"], lamina)
    slowdown = _time_ratio(lamina, by_name["cp+sha256sum"])
    rss = lamina.peak_rss / MB if lamina.ok else None
    return [
        _goal("speed-up over wsidicomizer", f">= {RATIO_GOAL}x", speedup, "{:.2f}x", _at_least),
        _goal("time / cp+sha256sum time", f"<= {RATIO_GOAL}x", slowdown, "{:.2f}x", _at_most),
        _goal("peak RSS", f"< {RSS_GOAL / MB:.0f} MB", rss, "{:,.1f} MB", _below_rss),
    ]


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
        return [outcome.peer.name, status, "-", "-", "-", "-", "-", "-", "0"]
    total = outcome.median("total_seconds")
    return [
        outcome.peer.name,
        "ok",
        f"{total:.2f}",
        f"{outcome.median('seconds'):.2f}",
        f"{outcome.median('flush_seconds'):.2f}",
        f"{input_bytes / total / MB:,.1f}",
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
        f"input: {slide['path']} ({megabytes(slide['bytes'])} MB, levels {slide['levels']})",
        f"page cache: {report['cache']}",
        "",
    ]
    headers = [
        "peer",
        "status",
        "time s",
        "run s",
        "flush s",
        "MB/s",
        "peak RSS MB",
        "output MB",
        "runs",
    ]
    rows = [peer_row(outcome, slide["bytes"]) for outcome in outcomes]
    lines.append(format_table(headers, rows))
    lines.append("(time = run + flush to disk, median; MB/s = input size / time; 1 MB = 10^6 bytes)")
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
    parser.add_argument("--size-gb", type=float, default=1.5, help="size of the synthetic SVS (GB)")
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
    arguments = parser.parse_args(argv)
    if arguments.runs < 1 or arguments.size_gb <= 0:
        parser.error("--runs must be at least 1 and --size-gb positive")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    """Build or reuse the input, run the peers, print the table and the goals."""
    arguments = parse_arguments(argv)
    work = arguments.work.absolute()
    source = ensure_svs(work, arguments.size_gb)
    slide = check_svs(source)
    threads = len(os.sched_getaffinity(0))
    candidates = peers(arguments.lamina, threads)
    if arguments.only:
        wanted = {name.strip() for name in arguments.only.split(",")}
        candidates = [peer for peer in candidates if peer.name in wanted]
    cold, cache = cache_mode(arguments.cache)
    report = {
        "machine": machine(),
        "versions": versions(arguments.lamina),
        "input": {"path": str(source), "bytes": source.stat().st_size, **slide},
        "cache": cache,
        "runs": arguments.runs,
    }
    outcomes = benchmark(candidates, source, work, arguments.runs, cold, arguments.keep)
    checks = goals(_with_skipped(outcomes, peers(arguments.lamina, threads)))
    print(report_text(report, outcomes, checks))
    if arguments.json:
        print(json.dumps(report_json(report, outcomes, checks), indent=2))
    return 0


def _with_skipped(outcomes: Sequence[Outcome], every: Sequence[Peer]) -> list[Outcome]:
    """Outcomes for every peer, those left out by ``--only`` marked as not run."""
    ran = {outcome.peer.name: outcome for outcome in outcomes}
    return [ran.get(peer.name, Outcome(peer, failure="not run (--only)")) for peer in every]


if __name__ == "__main__":
    sys.exit(main())
