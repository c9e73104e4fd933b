"""The ingest benchmark's inputs in the formats other than Aperio SVS (``ingest.py --format``).

Each input is built once per size and kept in the work folder. Generating gigabytes of synthetic
tissue and compressing it would take longer than the benchmark, so, as ``_svs.py`` does for SVS,
every input repeats a small real-looking pattern: the top-left 2048 x 2048 pixels of
``CMU-1-Small-Region.svs`` (real H&E tissue), decoded once. Tiled formats encode the pattern's
tiles once per level and repeat them; levels whose pattern is smaller than a tile are encoded
whole (they are small).

* ``zeiss_czi``: pylibCZIrw's ``create_czi``, 512 x 512 Bgr24 subblocks edge to edge,
  **uncompressed** (the writer has no JPEG XR; zstd would let a 1 GB file hold several times the
  pixels, and uncompressed is what every CZI reader reads), level 0 only (no pyramid subblocks).
  Its metadata gets what wsidicomizer's CZI source requires and pylibCZIrw's writer leaves out
  (acquisition time, microscope, objective, the channel's ``Fluor``): the XML is rewritten into
  a new metadata segment at the end of the file and the file header pointed at it.
* ``leica_scn``: the layout of ``lamina.sample.scn`` (SCN400: macro page with the XML, then the
  main image's levels by 4, 512 x 512 JPEG tiles at quality 80, YCbCr 4:2:0, shared tables).
* ``roche_bif``: the layout of ``lamina.sample.bif`` (Label_Image, Thumbnail, levels by 2,
  256 x 256 JPEG tiles at quality 90, ``EncodeInfo`` with tiles edge to edge: no overlap).
* ``mirax_mrxs``: the layout of ``lamina.sample.mrxs`` (``.mrxs`` and its folder, 256 x 256 JPEG
  camera images at quality 80 on a grid, no overlap, levels by 2 concatenated 2 x 2).

Those modules' private helpers (``_page``, ``_strip_page``, ``_index``, ``_slidedat``...) are
used as they are, so the inputs follow the sample writers; only the pixels come from elsewhere.
Sizes: each level's distinct tiles are encoded first, and the grid is chosen so that the file
comes to ``size_gb`` within about 1 %.
"""

from __future__ import annotations

import math
import re
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import tifffile
from numpy.typing import NDArray
from PIL import Image

from _svs import SOURCE_SVS, periodic_crop

GENERATOR_VERSION = 2  # bump when an input changes, so cached copies are rebuilt
PATTERN_SIDE = 2048
ASPECT = 4 / 3  # width / height of level 0


@dataclass(frozen=True)
class InputFormat:
    """A format the benchmark can build an input of.

    ``kind`` is ``tile-copy`` (lamina copies the stored tiles) or ``pixel-exact`` (lamina decodes
    and re-encodes losslessly); ``wsidicomizer`` the extra arguments wsidicomizer needs to read
    it, or ``None`` where it cannot (``wsidicomizer_note`` says why); ``folder``: the slide is
    the file and the folder of the same name beside it (MRXS).
    """

    name: str
    suffix: str
    kind: str
    build: Callable[[Path, float], None]
    check: Callable[[Path], dict[str, Any]]
    wsidicomizer: tuple[str, ...] | None
    wsidicomizer_note: str
    description: str
    folder: bool = False


# --- the pattern -----------------------------------------------------------------------------


def pattern() -> NDArray[np.uint8]:
    """The repeated tissue: the top-left 2048 x 2048 RGB pixels of CMU-1-Small-Region.svs."""
    with tifffile.TiffFile(SOURCE_SVS) as tif:
        pixels = tif.pages.first.asarray()
    if min(pixels.shape[:2]) < PATTERN_SIDE:
        raise RuntimeError(f"{SOURCE_SVS}: level 0 is smaller than {PATTERN_SIDE} pixels")
    return np.ascontiguousarray(pixels[:PATTERN_SIDE, :PATTERN_SIDE, :3])


def reduced(period: NDArray[np.uint8], factor: int) -> NDArray[np.uint8]:
    """The pattern reduced by ``factor`` (a power of 2 dividing its side), averaging boxes."""
    if factor == 1:
        return period
    return np.asarray(Image.fromarray(period).reduce(factor))


def repeated_tiles(
    period: NDArray[np.uint8], width: int, height: int, tile: int, quality: int
) -> tuple[bytes, list[bytes]]:
    """JPEG tiles (shared tables) of the image that repeats ``period``, row-major.

    Where the period is a whole number of tiles only its tiles are encoded, and the list holds
    the same ``bytes`` objects again and again (no memory per repeat)."""
    from lamina.sample._jpeg import encode_tiles

    side = period.shape[0]
    if side % tile == 0:
        tables, unique = encode_tiles(period, tile, quality)
        n = side // tile
        across, down = math.ceil(width / tile), math.ceil(height / tile)
        return tables, [unique[(row % n) * n + col % n] for row in range(down) for col in range(across)]
    return encode_tiles(periodic_crop(period, 0, 0, height, width), tile, quality)


def pyramid_sizes(width: int, height: int, factor: int, min_size: int) -> list[tuple[int, int]]:
    """Level sizes as ``lamina.sample.content.pyramid`` makes them (floor, down to one tile)."""
    sizes = [(width, height)]
    while min(sizes[-1]) > min_size and min(sizes[-1]) >= factor:
        sizes.append((sizes[-1][0] // factor, sizes[-1][1] // factor))
    return sizes


def pyramid_bytes_per_tile(
    tiles_of: Callable[[int], list[bytes]], factor: int, tile: int, levels: int = 8
) -> float:
    """What one level-0 tile costs in the file with its share of the lower levels: the mean
    size of each level's distinct tiles (``tiles_of(level)``, encoded while the level's pattern
    is at least a tile; the last mean after that) weighted by the level's share of the tiles."""
    total, mean = 0.0, 0.0
    for level in range(levels):
        if PATTERN_SIDE // factor**level >= tile:
            tiles = tiles_of(level)
            mean = sum(map(len, tiles)) / len(tiles)
        total += mean / factor ** (2 * level)
    return total


def grid_for(target_bytes: float, bytes_per_tile: float, step: int) -> tuple[int, int]:
    """Tiles across and down (multiples of ``step``, about 4:3) adding up to ``target_bytes``."""
    count = max(1.0, target_bytes / bytes_per_tile)
    across = max(step, round(math.sqrt(count * ASPECT) / step) * step)
    down = max(step, round(count / across / step) * step)
    return across, down


def _sample_slide() -> tuple[Any, Any]:
    """The identity and the macro / label photos of lamina's sample slide 0."""
    from lamina.sample.content import make_slide
    from lamina.sample.identity import make_identity

    identity = make_identity(0, 0)
    return identity, make_slide(identity, (1024, 768), 0)


# --- Leica SCN -------------------------------------------------------------------------------


def build_scn(path: Path, size_gb: float) -> None:
    """A Leica SCN400-layout file of about ``size_gb`` GB (see ``lamina.sample.scn``)."""
    from lamina.sample import scn
    from lamina.sample._tiff import LONG, RATIONAL, SHORT, UNDEFINED, Page, TagValue, write_tiff

    period = pattern()

    def tiles_of(level: int) -> list[bytes]:
        small = reduced(period, 4**level)
        return repeated_tiles(small, small.shape[1], small.shape[0], scn.TILE, scn.QUALITY)[1]

    per_tile = pyramid_bytes_per_tile(tiles_of, 4, scn.TILE)
    across, down = grid_for(size_gb * 1e9, per_tile, PATTERN_SIDE // scn.TILE)
    sizes = pyramid_sizes(across * scn.TILE, down * scn.TILE, 4, scn.TILE)
    identity, slide = _sample_slide()
    macro = np.asarray(slide.overview.convert("RGB"))
    macro_size = (macro.shape[1], macro.shape[0])
    per_macro_pixel = scn.SLIDE_WIDTH_NM // macro_size[0]
    collection = (macro_size[0] * per_macro_pixel, macro_size[1] * per_macro_pixel)
    xml = scn.scn_xml(identity.specimen_id, macro_size, sizes, collection)
    pages = [scn._page(macro, xml, None)]
    for index, (width, height) in enumerate(sizes):
        level_tables, tiles = repeated_tiles(reduced(period, 4**index), width, height, scn.TILE, scn.QUALITY)
        per_cm = round(1e7 / (scn.NM_PER_PIXEL * 4**index) * 1000)
        tags: dict[int, tuple[int, TagValue]] = {
            254: (LONG, [0]),
            282: (RATIONAL, [(per_cm, 1000)]),
            283: (RATIONAL, [(per_cm, 1000)]),
            296: (SHORT, [3]),
            347: (UNDEFINED, level_tables),
            530: (SHORT, [2, 2]),
        }
        pages.append(Page(width, height, tiles, 7, 6, tile=scn.TILE, tags=tags))
    write_tiff(path, pages)


def check_scn(path: Path) -> dict[str, Any]:
    return _check_openslide(path, "leica")


# --- Roche BIF -------------------------------------------------------------------------------


def build_bif(path: Path, size_gb: float) -> None:
    """A Roche (Ventana) BIF of about ``size_gb`` GB, tiles edge to edge (see ``lamina.sample.bif``)."""
    from lamina.sample import bif
    from lamina.sample._tiff import ASCII, LONG, SHORT, UNDEFINED, Page, TagValue, write_tiff
    from lamina.sample.content import thumbnail

    period = pattern()

    def tiles_of(level: int) -> list[bytes]:
        small = reduced(period, 2**level)
        return repeated_tiles(small, small.shape[1], small.shape[0], bif.TILE, bif.QUALITY)[1]

    # level 0's EncodeInfo has two TileJointInfo elements of about 118 bytes per tile
    per_tile = pyramid_bytes_per_tile(tiles_of, 2, bif.TILE) + 2 * 118
    across, down = grid_for(size_gb * 1e9, per_tile, PATTERN_SIDE // bif.TILE)
    sizes = pyramid_sizes(across * bif.TILE, down * bif.TILE, 2, bif.TILE)
    identity, slide = _sample_slide()
    macro = np.asarray(slide.overview.convert("RGB"))
    smallest = periodic_crop(reduced(period, 2 ** (len(sizes) - 1)), 0, 0, sizes[-1][1], sizes[-1][0])
    pages = [
        bif._strip_page(macro, "Label_Image", bif.iscan_xmp(identity, bif.MAGNIFICATION, bif.MPP)),
        bif._strip_page(thumbnail(smallest, (1024, 768)), "Thumbnail", None),
    ]
    for index, (width, height) in enumerate(sizes):
        level_tables, tiles = repeated_tiles(reduced(period, 2**index), width, height, bif.TILE, bif.QUALITY)
        tags: dict[int, tuple[int, TagValue]] = {
            254: (LONG, [0]),
            270: (ASCII, f"level={index} mag={bif.MAGNIFICATION / 2**index:g} quality={bif.QUALITY}"),
            305: (ASCII, bif.SOFTWARE),
            347: (UNDEFINED, level_tables),
            530: (SHORT, [2, 2]),
        }
        if index == 0:
            tags[700] = (UNDEFINED, bif.encode_info(across, down, 0))
        pages.append(Page(width, height, tiles, 7, 6, tile=bif.TILE, tags=tags))
    write_tiff(path, pages)


def check_bif(path: Path) -> dict[str, Any]:
    return _check_openslide(path, "ventana")


def _check_openslide(path: Path, vendor: str) -> dict[str, Any]:
    """Fail unless OpenSlide opens ``path`` as ``vendor`` with a pyramid of non-flat levels."""
    with openslide.OpenSlide(path) as slide:
        found = slide.properties.get(openslide.PROPERTY_NAME_VENDOR)
        if found != vendor or slide.level_count < 2:
            raise RuntimeError(f"{path}: OpenSlide sees vendor {found}, {slide.level_count} levels")
        x = int(slide.properties.get(openslide.PROPERTY_NAME_BOUNDS_X, 0))
        y = int(slide.properties.get(openslide.PROPERTY_NAME_BOUNDS_Y, 0))
        region = np.asarray(slide.read_region((x, y), 0, (256, 256)))
        if region[..., :3].std() == 0:
            raise RuntimeError(f"{path}: level 0 reads as a flat colour")
        width = int(slide.properties.get(openslide.PROPERTY_NAME_BOUNDS_WIDTH, slide.dimensions[0]))
        height = int(slide.properties.get(openslide.PROPERTY_NAME_BOUNDS_HEIGHT, slide.dimensions[1]))
        return {
            "vendor": found,
            "levels": [[round(width / ds), round(height / ds)] for ds in slide.level_downsamples],
            "associated": sorted(slide.associated_images),
            "mpp": slide.properties.get(openslide.PROPERTY_NAME_MPP_X),
        }


# --- 3DHistech MRXS ------------------------------------------------------------------------


def build_mrxs(path: Path, size_gb: float) -> None:
    """A 3DHistech MRXS of about ``size_gb`` GB: ``path`` and its folder, laid out as
    ``lamina.sample.mrxs`` writes one (256 x 256 JPEG camera images at quality 80 on a grid, no
    overlap; each level the previous one's images halved and concatenated 2x2), the Data files
    written as the images are made instead of in memory."""
    from lamina.sample import mrxs
    from lamina.sample._jpeg import encode_jpeg

    period = pattern()
    side = mrxs.IMAGE
    unique = _mrxs_images(period, 0, side, mrxs.QUALITY)

    def tiles_of(level: int) -> list[bytes]:
        return list(_mrxs_images(period, level, side, mrxs.QUALITY).values())

    per_image = pyramid_bytes_per_tile(tiles_of, 2, side) + 16 + 9  # Index.dat entry, position
    across, down = grid_for(size_gb * 1e9, per_image, PATTERN_SIDE // side)
    count = 1
    while -(-across // 2 ** (count - 1)) > 1 or -(-down // 2 ** (count - 1)) > 1:
        count += 1
    identity, slide = _sample_slide()
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    handles = [(folder / f"Data{number:04d}.dat").open("wb") for number in range(3)]
    try:

        def add(file: int, data: bytes) -> Any:
            handle = handles[file]
            record = mrxs._Record(file, handle.tell(), len(data))
            handle.write(data)
            return record

        levels = []
        for level in range(count):
            concat = 2**level
            images = unique if level == 0 else _mrxs_images(period, level, side, mrxs.QUALITY)
            n = max(1, PATTERN_SIDE // concat // side)
            entries = []
            for y in range(-(-down // concat)):
                for x in range(-(-across // concat)):
                    record = add(min(level, 1) + 1, images[(x % n, y % n)])
                    entries.append((y * concat * across + x * concat, record))
            levels.append(entries)
        positions = b"".join(
            struct.pack("<Bii", 1, x * side, y * side) for y in range(down) for x in range(across)
        )
        preview = slide.overview.copy()
        preview.thumbnail((slide.overview.width // 2, slide.overview.height // 2))
        nonhier = [add(0, positions)] + [
            add(0, encode_jpeg(np.asarray(image.convert("RGB")), mrxs.QUALITY))
            for image in (slide.overview, slide.label, preview)
        ]
    finally:
        for handle in handles:
            handle.close()
    slide_id = "BENCH" + f"{across:05d}{down:05d}".rjust(27, "0")
    (folder / "Index.dat").write_bytes(mrxs._index(slide_id, levels, nonhier))
    text = mrxs._slidedat(slide_id, identity, across, down, count, "JPEG", 0)
    (folder / "Slidedat.ini").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    path.write_bytes(f"[GENERAL]\r\nSLIDE_VERSION = 01.02\r\nSLIDE_ID = {slide_id}\r\n".encode("ascii"))


def _mrxs_images(
    period: NDArray[np.uint8], level: int, side: int, quality: int
) -> dict[tuple[int, int], bytes]:
    """The distinct camera images of a level, by (x, y) modulo the level's pattern in images."""
    from lamina.sample._jpeg import encode_jpeg

    small = reduced(period, 2**level)
    n = max(1, small.shape[0] // side)
    return {
        (x, y): encode_jpeg(periodic_crop(small, y * side, x * side, side, side), quality)
        for y in range(n)
        for x in range(n)
    }


def check_mrxs(path: Path) -> dict[str, Any]:
    return _check_openslide(path, "mirax")


# --- Zeiss CZI -------------------------------------------------------------------------------

CZI_TILE = 512
CZI_MPP = 0.2195
_SEGMENT = struct.Struct("<16sqq")
_METADATA_POSITION = _SEGMENT.size + 60  # FileHeaderSegmentData.MetadataPosition
_IMAGE_EXTRA = (
    "<AcquisitionDateAndTime>2026-11-28T09:14:02.5400000Z</AcquisitionDateAndTime>"
    '<MicroscopeRef Id="Microscope:1"/>'
    '<ObjectiveSettings><ObjectiveRef Id="Objective:1"/></ObjectiveSettings>'
)
_INSTRUMENT = (
    '<Instrument><Microscopes><Microscope Id="Microscope:1" Name="Axioscan 7"/></Microscopes>'
    '<Objectives><Objective Id="Objective:1" Name="Plan-Apochromat 20x/0.8">'
    "<NominalMagnification>20</NominalMagnification><LensNA>0.8</LensNA></Objective>"
    "</Objectives></Instrument>"
)


def build_czi(path: Path, size_gb: float) -> None:
    """An uncompressed Bgr24 CZI of about ``size_gb`` GB of 512 x 512 subblocks edge to edge."""
    import pylibCZIrw.czi as pyczi

    bgr = np.ascontiguousarray(pattern()[..., ::-1])
    n = PATTERN_SIDE // CZI_TILE
    tiles = [
        np.ascontiguousarray(bgr[r * CZI_TILE : (r + 1) * CZI_TILE, c * CZI_TILE : (c + 1) * CZI_TILE])
        for r in range(n)
        for c in range(n)
    ]
    across, down = grid_for(size_gb * 1e9, CZI_TILE * CZI_TILE * 3, 1)
    path.unlink(missing_ok=True)
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for row in range(down):
            for col in range(across):
                writer.write(
                    tiles[(row % n) * n + col % n],
                    location=(col * CZI_TILE, row * CZI_TILE),
                    plane={"C": 0, "Z": 0, "T": 0},
                )
        writer.write_metadata(document_name=path.stem, scale_x=CZI_MPP * 1e-6, scale_y=CZI_MPP * 1e-6)
    complete_czi_metadata(path)


def complete_czi_metadata(path: Path) -> None:
    """Add the acquisition time, microscope and objective to the CZI's metadata XML.

    The new XML goes into a metadata segment appended to the file (aligned to 32 bytes, as
    segments are), and the file header's MetadataPosition is pointed at it; the old segment
    stays, unreferenced."""
    with path.open("r+b") as fh:
        fh.seek(_METADATA_POSITION)
        (position,) = struct.unpack("<q", fh.read(8))
        fh.seek(position)
        name, _, _ = _SEGMENT.unpack(fh.read(_SEGMENT.size))
        if name.rstrip(b"\0") != b"ZISRAWMETADATA":
            raise RuntimeError(f"{path}: no metadata segment at byte {position}")
        xml_size, _attachments = struct.unpack("<ii", fh.read(8))
        fh.seek(position + _SEGMENT.size + 256)
        xml = fh.read(xml_size).decode("utf-8")
        xml = re.sub(r"</PixelType></Image>", "</PixelType>" + _IMAGE_EXTRA + "</Image>", xml, count=1)
        xml = xml.replace("</Information>", _INSTRUMENT + "</Information>", 1)
        xml = xml.replace("</Channel>", "<Fluor>TL Brightfield</Fluor></Channel>", 1)
        data = xml.encode("utf-8")
        used = 256 + len(data)
        allocated = -(-used // 32) * 32
        end = fh.seek(0, 2)
        start = -(-end // 32) * 32
        fh.write(b"\0" * (start - end))
        fh.write(_SEGMENT.pack(b"ZISRAWMETADATA", allocated, used))
        fh.write(struct.pack("<ii", len(data), 0) + b"\0" * 248 + data + b"\0" * (allocated - used))
        fh.seek(_METADATA_POSITION)
        fh.write(struct.pack("<q", start))


def check_czi(path: Path) -> dict[str, Any]:
    """Fail unless libCZI opens the CZI as one Bgr24 plane of non-flat pixels."""
    import pylibCZIrw.czi as pyczi

    with pyczi.open_czi(str(path)) as czi:
        box = czi.total_bounding_rectangle
        kinds = set(czi.pixel_types.values())
        region = czi.read(roi=(box.x, box.y, 256, 256), plane={"C": 0})
        if kinds != {"Bgr24"} or region.std() == 0:
            raise RuntimeError(f"{path}: libCZI sees pixel types {kinds} or a flat colour")
        metadata = czi.raw_metadata
    if "AcquisitionDateAndTime" not in metadata:
        raise RuntimeError(f"{path}: the metadata lacks what wsidicomizer needs")
    return {"vendor": "zeiss", "levels": [[box.w, box.h]], "associated": [], "mpp": str(CZI_MPP)}


# --- the formats -----------------------------------------------------------------------------

FORMATS: dict[str, InputFormat] = {
    "zeiss_czi": InputFormat(
        "zeiss_czi",
        ".czi",
        "pixel-exact",
        build_czi,
        check_czi,
        ("--add-missing-levels",),
        "with its CZI source (czifile), with --add-missing-levels since the CZI has no pyramid"
        " and lamina writes one; JPEG q90 by default",
        "Zeiss CZI, 512x512 Bgr24 subblocks edge to edge, uncompressed, level 0 only",
    ),
    "leica_scn": InputFormat(
        "leica_scn",
        ".scn",
        "tile-copy",
        build_scn,
        check_scn,
        ("--source", "openslide"),
        "through OpenSlide (decoded and re-encoded as JPEG)",
        "Leica SCN400 layout, 512x512 JPEG tiles (q80), levels by 4, a macro",
    ),
    "roche_bif": InputFormat(
        "roche_bif",
        ".bif",
        "tile-copy",
        build_bif,
        check_bif,
        ("--source", "openslide"),
        "through OpenSlide (decoded and re-encoded as JPEG); its default, tiffslide, finds no"
        " pixel spacing in a BIF",
        "Roche BIF, 256x256 JPEG tiles (q90) edge to edge, levels by 2, label and thumbnail",
    ),
    "mirax_mrxs": InputFormat(
        "mirax_mrxs",
        ".mrxs",
        "tile-copy",
        build_mrxs,
        check_mrxs,
        ("--source", "openslide"),
        "through OpenSlide (decoded and re-encoded as JPEG)",
        "3DHistech MRXS, 256x256 JPEG camera images (q80) on a grid (no overlap), levels by 2"
        " concatenated 2x2, macro, label and preview",
        folder=True,
    ),
}


def input_files(name: str, path: Path) -> list[Path]:
    """The input's files: ``path``, and for a slide with a data folder every file in it."""
    if name in FORMATS and FORMATS[name].folder:
        return [path, *sorted(item for item in path.with_suffix("").iterdir() if item.is_file())]
    return [path]


def ensure_input(name: str, work: Path, size_gb: float) -> Path:
    """Return the cached input of this format and size, building it first if needed."""
    spec = FORMATS[name]
    path = work / f"{name}-{size_gb:g}gb-v{GENERATOR_VERSION}{spec.suffix}"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        print(f"building {path} ...", file=sys.stderr, flush=True)
        if spec.folder:  # the file is written last: its presence says the folder is complete
            shutil.rmtree(path.with_suffix(""), ignore_errors=True)
            spec.build(path, size_gb)
            return path
        partial = path.with_name(path.stem + ".partial" + spec.suffix)
        spec.build(partial, size_gb)
        partial.replace(path)
    return path
