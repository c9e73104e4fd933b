"""The synthetic Aperio SVS the ingest benchmark converts, built from a real Aperio file.

Level 0 repeats the first 8 x 12 level-0 tiles of ``CMU-1-Small-Region.svs``, copied as stored
(never decoded), with the same ``JPEGTables``. The levels downsampled by 4, 16 and 64 and the
thumbnail are the mosaic actually downsampled and re-encoded as Aperio does (RGB JPEG without
colour transform, components numbered 0, 1, 2, one shared ``JPEGTables`` per page); the label and
the macro image are copied from the real file. Page order and ``ImageDescription`` are Aperio's.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import openslide
import tifffile
from numpy.typing import NDArray
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SOURCE_SVS = REPO.parent / "shared" / "testdata" / "aperio" / "CMU-1-Small-Region.svs"
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
