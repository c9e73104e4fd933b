"""3DHISTECH MRXS sample, laid out as OpenSlide's MIRAX reader (``openslide-vendor-mirax.c``) reads it.

A slide is ``NAME.mrxs`` (a small text file) and the folder ``NAME/`` beside it:

* ``Slidedat.ini``: ``[GENERAL]`` (SLIDE_ID, IMAGENUMBER_X/Y, CameraImageDivisionsPerSide = 1,
  OBJECTIVE_MAGNIFICATION, SLIDE_NAME), ``[HIERARCHICAL]`` (INDEXFILE, HIER_0 "Slide zoom level"
  with one section per zoom level, NONHIER_0 "VIMSLIDE_POSITION_BUFFER" and NONHIER_1 "Scan data
  layer" with the macro, label and preview), ``[DATAFILE]`` and one section per zoom level
  (IMAGE_FORMAT, DIGITIZER_WIDTH/HEIGHT, IMAGE_CONCAT_FACTOR 0 for level 0 and 1 above,
  MICROMETER_PER_PIXEL_X/Y, OVERLAP_X/Y, IMAGE_FILL_COLOR_BGR);
* ``Index.dat``: ``01.02`` and the slide id, then the pointers to the hierarchical records (one
  list of ``(image index, offset, length, file number)`` per zoom level, in pages of at most
  :data:`PAGE` entries) and to the non-hierarchical ones (position buffer, macro, label, preview);
* ``Data0000.dat`` holds the non-hierarchical records, ``Data0001.dat`` the camera images of
  level 0, ``Data0002.dat`` those of the other levels.

The camera images are :data:`IMAGE` pixels square on a grid of IMAGENUMBER_X x IMAGENUMBER_Y,
placed by the position buffer (9 bytes per camera position: a flag, x and y in level-0 pixels).
Without ``overlap`` they lie edge to edge and the slide's pixels are level 0 (padded with the
glass background to whole images). With ``overlap`` each camera image shares that many pixels
with its neighbours, as a real scan's do. Each level above 0 is, as 3DHISTECH writes it, the
previous level's images (edge to edge, overlap kept) halved and concatenated 2x2, until one
image holds the whole slide. Output is deterministic.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from lamina.sample._jpeg import encode_jpeg
from lamina.sample.content import BACKGROUND, SlideContent, pyramid
from lamina.sample.identity import Identity

__all__ = ["IMAGE", "MPP", "PAGE", "write_mrxs"]

IMAGE = 256
MPP = 0.2425
QUALITY = 80
PAGE = 256
_MAGNIFICATION = 20
_VERSION = "01.02"
_FILL_BGR = BACKGROUND[2] << 16 | BACKGROUND[1] << 8 | BACKGROUND[0]


@dataclass(frozen=True)
class _Record:
    file: int
    offset: int
    length: int


class _DataFiles:
    """The Data*.dat files, appended to in memory and written at the end."""

    def __init__(self, count: int) -> None:
        self.buffers = [bytearray() for _ in range(count)]

    def add(self, file: int, data: bytes) -> _Record:
        buffer = self.buffers[file]
        record = _Record(file, len(buffer), len(data))
        buffer += data
        return record


def _encode(pixels: NDArray[np.uint8], image_format: str) -> bytes:
    if image_format == "JPEG":
        return encode_jpeg(pixels, QUALITY)
    if image_format == "PNG":
        return bytes(imagecodecs.png_encode(np.ascontiguousarray(pixels), level=1))
    raise ValueError(f"image_format must be JPEG or PNG, not {image_format!r}")


def _jpeg(image: Image.Image) -> bytes:
    return encode_jpeg(np.asarray(image.convert("RGB")), QUALITY)


def _mosaic(pixels: NDArray[np.uint8], overlap: int) -> tuple[NDArray[np.uint8], int, int]:
    """The camera images of level 0, edge to edge, and how many there are across and down."""
    height, width = pixels.shape[:2]
    step = IMAGE - overlap
    across = max(1, -(-(width - overlap) // step))
    down = max(1, -(-(height - overlap) // step))
    canvas = np.empty(((down - 1) * step + IMAGE, (across - 1) * step + IMAGE, 3), np.uint8)
    canvas[...] = BACKGROUND
    canvas[:height, :width] = pixels[: canvas.shape[0], : canvas.shape[1]]
    if not overlap:
        return canvas, across, down
    mosaic = np.empty((down * IMAGE, across * IMAGE, 3), np.uint8)
    for y in range(down):
        for x in range(across):
            block = canvas[y * step : y * step + IMAGE, x * step : x * step + IMAGE]
            mosaic[y * IMAGE : (y + 1) * IMAGE, x * IMAGE : (x + 1) * IMAGE] = block
    return mosaic, across, down


def _block(level: NDArray[np.uint8], x: int, y: int) -> NDArray[np.uint8]:
    block = level[y * IMAGE : (y + 1) * IMAGE, x * IMAGE : (x + 1) * IMAGE]
    if block.shape[:2] == (IMAGE, IMAGE):
        return block
    out = np.empty((IMAGE, IMAGE, 3), np.uint8)
    out[...] = BACKGROUND
    out[: block.shape[0], : block.shape[1]] = block
    return out


def _index(slide_id: str, levels: list[list[tuple[int, _Record]]], nonhier: list[_Record]) -> bytes:
    """Index.dat: the version, the slide id, the two root pointers and the linked records."""
    out = bytearray((_VERSION + slide_id).encode("ascii"))
    roots = len(out)
    out += bytes(8)
    hier_table = len(out)
    out += bytes(4 * len(levels))
    nonhier_table = len(out)
    out += bytes(4 * len(nonhier))
    struct.pack_into("<ii", out, roots, hier_table, nonhier_table)
    for number, entries in enumerate(levels):
        head = len(out)
        out += struct.pack("<ii", 0, head + 8)
        pages = [entries[start : start + PAGE] for start in range(0, len(entries), PAGE)] or [[]]
        for page_number, page in enumerate(pages):
            start = len(out)
            following = start + 8 + 16 * len(page) if page_number + 1 < len(pages) else 0
            out += struct.pack("<ii", len(page), following)
            for image_index, record in page:
                out += struct.pack("<iiii", image_index, record.offset, record.length, record.file)
        struct.pack_into("<i", out, hier_table + 4 * number, head)
    for number, record in enumerate(nonhier):
        head = len(out)
        out += struct.pack("<ii", 0, head + 8)
        out += struct.pack("<iiiiiii", 1, 0, 0, 0, record.offset, record.length, record.file)
        struct.pack_into("<i", out, nonhier_table + 4 * number, head)
    return bytes(out)


def _slidedat(
    slide_id: str, identity: Identity, across: int, down: int, levels: int, image_format: str, overlap: int
) -> str:
    lines = [
        "[GENERAL]",
        "SLIDE_VERSION = 01.02",
        f"SLIDE_ID = {slide_id}",
        f"SLIDE_NAME = {identity.specimen_id}",
        "SLIDE_CREATIONDATETIME = 28/11/2026 09:14:02",
        "SLIDE_TYPE = Brightfield",
        f"IMAGENUMBER_X = {across}",
        f"IMAGENUMBER_Y = {down}",
        f"OBJECTIVE_MAGNIFICATION = {_MAGNIFICATION}",
        "CameraImageDivisionsPerSide = 1",
        "",
        "[HIERARCHICAL]",
        "INDEXFILE = Index.dat",
        "HIER_COUNT = 1",
        "HIER_0_NAME = Slide zoom level",
        f"HIER_0_COUNT = {levels}",
    ]
    for level in range(levels):
        lines += [
            f"HIER_0_VAL_{level} = ZoomLevel_{level}",
            f"HIER_0_VAL_{level}_SECTION = LAYER_0_LEVEL_{level}",
        ]
    lines += [
        "NONHIER_COUNT = 2",
        "NONHIER_0_NAME = VIMSLIDE_POSITION_BUFFER",
        "NONHIER_0_COUNT = 1",
        "NONHIER_0_VAL_0 = default",
        "NONHIER_0_VAL_0_SECTION = NONHIER_0_VAL_0",
        "NONHIER_1_NAME = Scan data layer",
        "NONHIER_1_COUNT = 3",
        "NONHIER_1_VAL_0 = ScanDataLayer_SlideThumbnail",
        "NONHIER_1_VAL_0_SECTION = SLIDE_THUMBNAIL",
        "NONHIER_1_VAL_1 = ScanDataLayer_SlideBarcode",
        "NONHIER_1_VAL_1_SECTION = SLIDE_BARCODE",
        "NONHIER_1_VAL_2 = ScanDataLayer_SlidePreview",
        "NONHIER_1_VAL_2_SECTION = SLIDE_PREVIEW",
        "",
        "[DATAFILE]",
        "FILE_COUNT = 3",
        *(f"FILE_{number} = Data{number:04d}.dat" for number in range(3)),
        "",
    ]
    for level in range(levels):
        scale = 2**level
        lines += [
            f"[LAYER_0_LEVEL_{level}]",
            f"IMAGE_FORMAT = {image_format}",
            f"IMAGE_FILL_COLOR_BGR = {_FILL_BGR}",
            f"DIGITIZER_WIDTH = {IMAGE}",
            f"DIGITIZER_HEIGHT = {IMAGE}",
            f"IMAGE_CONCAT_FACTOR = {1 if level else 0}",
            f"MICROMETER_PER_PIXEL_X = {MPP * scale:.6f}",
            f"MICROMETER_PER_PIXEL_Y = {MPP * scale:.6f}",
            f"OVERLAP_X = {overlap / scale:g}",
            f"OVERLAP_Y = {overlap / scale:g}",
            "",
        ]
    lines += [
        "[NONHIER_0_VAL_0]",
        "",
        "[SLIDE_THUMBNAIL]",
        "THUMBNAIL_IMAGE_TYPE = JPEG",
        "",
        "[SLIDE_BARCODE]",
        "BARCODE_IMAGE_TYPE = JPEG",
        "",
        "[SLIDE_PREVIEW]",
        "PREVIEW_IMAGE_TYPE = JPEG",
        "",
    ]
    return "\r\n".join(lines)


def write_mrxs(
    path: Path, slide: SlideContent, identity: Identity, *, image_format: str = "JPEG", overlap: int = 0
) -> Path:
    """Write a 3DHISTECH MRXS slide: ``path`` (``NAME.mrxs``) and the folder ``NAME/``.

    Parameters
    ----------
    path : pathlib.Path
        The ``.mrxs`` file; the folder beside it is created, its stale files replaced.
    slide : SlideContent
        Tissue (level 0), label and macro pixels.
    identity : Identity
        Whose slide it is: the specimen id is the slide's name.
    image_format : str, optional
        ``"JPEG"`` (default, as scanners write) or ``"PNG"`` camera images.
    overlap : int, optional
        Pixels each camera image shares with its neighbours (default 0: edge to edge).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not 0 <= overlap < IMAGE // 2:
        raise ValueError(f"overlap must be between 0 and {IMAGE // 2 - 1} pixels, not {overlap}")
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("Data*.dat"):
        stale.unlink()
    slide_id = hashlib.sha256(identity.specimen_id.encode()).hexdigest()[:32].upper()
    mosaic, across, down = _mosaic(slide.pixels, overlap)
    count = 1
    while (-(-across // 2 ** (count - 1)) > 1) or (-(-down // 2 ** (count - 1)) > 1):
        count += 1
    files = _DataFiles(3)
    levels: list[list[tuple[int, _Record]]] = []
    for level, pixels in enumerate(pyramid(mosaic, 2, 0)[:count]):
        concat = 2**level
        entries = []
        for y in range(-(-down // concat)):
            for x in range(-(-across // concat)):
                data = _encode(_block(pixels, x, y), image_format)
                entries.append((y * concat * across + x * concat, files.add(min(level, 1) + 1, data)))
        levels.append(entries)
    step = IMAGE - overlap
    positions = b"".join(
        struct.pack("<Bii", 1, x * step, y * step) for y in range(down) for x in range(across)
    )
    preview = slide.overview.copy()
    preview.thumbnail((slide.overview.width // 2, slide.overview.height // 2))
    nonhier = [files.add(0, positions)] + [
        files.add(0, _jpeg(image)) for image in (slide.overview, slide.label, preview)
    ]
    for number, buffer in enumerate(files.buffers):
        (folder / f"Data{number:04d}.dat").write_bytes(bytes(buffer))
    (folder / "Index.dat").write_bytes(_index(slide_id, levels, nonhier))
    text = _slidedat(slide_id, identity, across, down, count, image_format, overlap)
    (folder / "Slidedat.ini").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    path.write_bytes(f"[GENERAL]\r\nSLIDE_VERSION = 01.02\r\nSLIDE_ID = {slide_id}\r\n".encode("ascii"))
    return path
