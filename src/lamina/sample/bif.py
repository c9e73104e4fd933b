"""Roche (Ventana) BIF sample, laid out like a file from a Ventana scanner (the layout OpenSlide's
``ventana`` reader reads).

======  =========================  ==================================================
page    ImageDescription           content
======  =========================  ==================================================
0       ``Label_Image``            the slide's photo (label and glass), stripped JPEG;
                                   its XMP (tag 700) is the ``<iScan>`` element:
                                   ``Magnification``, ``ScanRes`` (µm per pixel),
                                   ``ScannerModel``, ``UnitNumber``, ``BuildVersion``,
                                   ``BuildDate``, ``Barcode1D``...
1       ``Thumbnail``              stripped JPEG
2 ...   ``level=N mag=M quality=Q``  the levels (by 2), tiled JPEG (YCbCr 4:2:0) with
                                   shared JPEGTables; level 0's XMP is ``<EncodeInfo>``:
                                   one AOI (``SlideStitchInfo/ImageInfo``,
                                   ``AoiOrigin/AOI0``) and a ``TileJointInfo`` per pair
                                   of neighbouring tiles, numbered from 1 in serpentine
                                   order from the bottom row, ``OverlapX``/``OverlapY``
======  =========================  ==================================================

The overlaps are 0 by default: the tiles then lie edge to edge, as in files written by the
scanner's own stitching. ``overlap`` writes tiles that overlap their neighbours by that many
pixels, as the raw tiles of a scan do: OpenSlide places each one ``tile - overlap`` pixels after
the previous, the later painted over the earlier. Software is ``ScanOutputManager ...``, which
tifffile's ``is_bif`` looks for. The attribute names follow OpenSlide's reader and the
descriptions of Roche's BIF specification found in other readers' notes; no real BIF was at
hand to compare with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lamina.sample._jpeg import encode_strips, encode_tiles
from lamina.sample._tiff import ASCII, LONG, SHORT, UNDEFINED, Page, TagValue, write_tiff
from lamina.sample.content import SlideContent, pyramid, thumbnail
from lamina.sample.identity import Identity

__all__ = ["MAGNIFICATION", "MPP", "TILE", "serpentine_number", "write_bif"]

TILE = 256
QUALITY = 90
MPP = 0.5
MAGNIFICATION = 20
SOFTWARE = "ScanOutputManager 1.1.0.15854"
_JPEG, _YCBCR = 7, 6
_STRIP_ROWS = 16


def serpentine_number(col: int, row: int, across: int, down: int) -> int:
    """The 1-based number BIF gives the tile at ``(col, row)`` (row 0 at the top): rows count
    from the bottom, every second one from the right (OpenSlide's ``get_tile_coordinates``)."""
    from_bottom = down - 1 - row
    position = col if from_bottom % 2 == 0 else across - 1 - col
    return from_bottom * across + position + 1


def iscan_xmp(identity: Identity, magnification: int, mpp: float) -> bytes:
    """The XMP of page 0: the scan's ``<iScan>`` element."""
    attributes = {
        "Mode": "brightfield",
        "ScannerModel": "VENTANA DP 200",
        "UnitNumber": "2000515",
        "BuildVersion": "1.1.0.15854",
        "BuildDate": "11/27/2019 11:6:28 AM",
        "UserName": "Operator",
        "Magnification": str(magnification),
        "ScanRes": f"{mpp}",
        "ScanWhitePoint": "235",
        "Z-layers": "1",
        "Z-spacing": "1",
        "Barcode1D": identity.specimen_id,
    }
    text = " ".join(f'{key}="{value}"' for key, value in attributes.items())
    return f'<?xml version="1.0" encoding="utf-8"?><Metadata><iScan {text}/></Metadata>'.encode()


def encode_info(across: int, down: int, overlap: int) -> bytes:
    """The XMP of level 0: one AOI of ``across`` x ``down`` tiles and their joints."""
    joints = []
    for row in range(down):
        for col in range(across):
            number = serpentine_number(col, row, across, down)
            if col + 1 < across:
                right = serpentine_number(col + 1, row, across, down)
                joints.append(("RIGHT", number, right, overlap, 0))
            if row > 0:  # the tile above this one
                up = serpentine_number(col, row - 1, across, down)
                joints.append(("UP", number, up, 0, overlap))
    joint_xml = "".join(
        f'<TileJointInfo FlagJoined="1" Confidence="100" Direction="{direction}" Tile1="{one}" '
        f'Tile2="{two}" OverlapX="{dx}" OverlapY="{dy}"/>'
        for direction, one, two, dx, dy in joints
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><EncodeInfo Ver="2">'
        '<AoiOrigin><AOI0 OriginX="0" OriginY="0"/></AoiOrigin>'
        f'<SlideStitchInfo><ImageInfo AOIScanned="1" AOIIndex="0" Width="{TILE}" Height="{TILE}" '
        f'NumRows="{down}" NumCols="{across}" Pos-X="0" Pos-Y="0">{joint_xml}</ImageInfo>'
        "</SlideStitchInfo></EncodeInfo>"
    ).encode()


def _overlapping(pixels: NDArray[np.uint8], overlap: int) -> NDArray[np.uint8]:
    """The tiles of a scan whose neighbours overlap by ``overlap`` pixels, laid edge to edge:
    tile (col, row) shows the pixels from ``col * (TILE - overlap)``."""
    step = TILE - overlap
    height, width = pixels.shape[:2]
    across = max(1, -(-(width - overlap) // step))
    down = max(1, -(-(height - overlap) // step))
    padded = np.pad(
        pixels, ((0, down * step + overlap - height), (0, across * step + overlap - width), (0, 0)), "edge"
    )
    out = np.empty((down * TILE, across * TILE, 3), np.uint8)
    for row in range(down):
        for col in range(across):
            block = padded[row * step : row * step + TILE, col * step : col * step + TILE]
            out[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE] = block
    return out


def _strip_page(pixels: NDArray[np.uint8], description: str, xmp: bytes | None) -> Page:
    tables, strips = encode_strips(pixels, _STRIP_ROWS, QUALITY)
    tags: dict[int, tuple[int, TagValue]] = {
        270: (ASCII, description),
        305: (ASCII, SOFTWARE),
        347: (UNDEFINED, tables),
        530: (SHORT, [2, 2]),
    }
    if xmp is not None:
        tags[700] = (UNDEFINED, xmp)
    height, width = pixels.shape[:2]
    return Page(width, height, strips, _JPEG, _YCBCR, rows_per_strip=_STRIP_ROWS, tags=tags)


def write_bif(path: Path, slide: SlideContent, identity: Identity, overlap: int = 0) -> Path:
    """Write a Roche (Ventana) BIF file.

    Parameters
    ----------
    path : pathlib.Path
        Output file (``.bif``).
    slide : SlideContent
        Tissue and macro pixels (the macro is the ``Label_Image``).
    identity : Identity
        The specimen ID is the ``Barcode1D``.
    overlap : int, optional
        Pixels by which neighbouring level-0 tiles overlap (0: edge to edge).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    tissue = slide.pixels if not overlap else _overlapping(slide.pixels, overlap)
    levels = pyramid(tissue, 2, TILE) if not overlap else [tissue]
    macro = np.asarray(slide.overview.convert("RGB"))
    pages = [
        _strip_page(macro, "Label_Image", iscan_xmp(identity, MAGNIFICATION, MPP)),
        _strip_page(thumbnail(slide.pixels, (1024, 768)), "Thumbnail", None),
    ]
    across, down = -(-tissue.shape[1] // TILE), -(-tissue.shape[0] // TILE)
    for index, level in enumerate(levels):
        height, width = level.shape[:2]
        tables, tiles = encode_tiles(level, TILE, QUALITY)
        mag = MAGNIFICATION / 2**index
        tags: dict[int, tuple[int, TagValue]] = {
            254: (LONG, [0]),
            270: (ASCII, f"level={index} mag={mag:g} quality={QUALITY}"),
            305: (ASCII, SOFTWARE),
            347: (UNDEFINED, tables),
            530: (SHORT, [2, 2]),
        }
        if index == 0:
            tags[700] = (UNDEFINED, encode_info(across, down, overlap))
        pages.append(Page(width, height, tiles, _JPEG, _YCBCR, tile=TILE, tags=tags))
    write_tiff(path, pages)
    return path
