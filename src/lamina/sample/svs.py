"""Aperio SVS sample, laid out like a file from an Aperio ScanScope.

The layout follows real SVS files (for example OpenSlide's CMU-1):

========  ==============================  =====================================
page      content                         encoding
========  ==============================  =====================================
0         level 0, 240x240 tiles          "JPEG/RGB": JPEG without colour
                                          transform, shared JPEGTables,
                                          full Aperio description, ICC profile
1         thumbnail (fits in 1024x768)    stripped JPEG, 16 rows per strip
2 ...     levels downsampled by 4 until   as page 0, description
          the short side is <= 240        ``WxH [..] (240x240) -> wxh JPEG/RGB``
n - 1     label 387x463                   stripped LZW + horizontal predictor,
                                          NewSubfileType 1, ``label WxH``
n         macro 1280x431                  stripped JPEG, NewSubfileType 9,
                                          ``macro WxH``
========  ==============================  =====================================

Every JPEG tile or strip is an abbreviated stream (SOI, SOF0, SOS, data, EOI);
the quantisation and Huffman tables (one of each, shared by all components)
live in the JPEGTables tag, as Aperio does. Like Aperio's "JPEG/RGB", the
JPEG data are RGB (no YCbCr transform, 1x1 sampling) with component IDs 0, 1,
2 and no Adobe marker, PhotometricInterpretation is RGB and a (meaningless)
YCbCrSubSampling of 2, 2 is present: a reader that hands the tile plus tables
to a plain JPEG decoder without forcing RGB gets false colours, as with real
SVS files. All pages carry ImageDepth = 1, and no resolution tags (Aperio
stores the pixel size as ``MPP`` in the description).
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lamina.sample._jpeg import encode_strips, encode_tiles
from lamina.sample._tiff import ASCII, LONG, SHORT, UNDEFINED, Page, lzw_strips, write_tiff
from lamina.sample.content import SlideContent, pyramid, srgb_profile, thumbnail
from lamina.sample.identity import Identity

__all__ = ["APERIO_VERSION", "MPP", "TILE", "write_svs"]

APERIO_VERSION = "Aperio Image Library v12.0.15"
TILE = 240
QUALITY = 70
MPP = 0.4990
_JPEG, _LZW = 7, 5
_COMPONENT_IDS = b"\x00\x01\x02"
_STRIP_ROWS = 16
_THUMBNAIL_BOX = (1024, 768)


def _properties(identity: Identity, width: int, height: int, seed: int) -> str:
    rng = random.Random(f"svs-{seed}-{identity.specimen_id}")
    user = uuid.UUID(int=rng.getrandbits(128), version=4)
    fields = [
        ("AppMag", "20"),
        ("StripeWidth", "2040"),
        ("ScanScope ID", "SS1234"),
        ("Filename", identity.specimen_id),
        ("Date", "11/28/26"),
        ("Time", "09:14:02"),
        ("Time Zone", "GMT+01:00"),
        ("User", str(user)),
        ("MPP", f"{MPP:.4f}"),
        ("Left", f"{rng.uniform(20, 30):.6f}"),
        ("Top", f"{rng.uniform(15, 22):.6f}"),
        ("LineCameraSkew", "-0.000424"),
        ("LineAreaXOffset", "0.019265"),
        ("LineAreaYOffset", "-0.000313"),
        ("Focus Offset", "0.000000"),
        ("ImageID", str(rng.randint(1_000_000, 9_999_999))),
        ("OriginalWidth", str(width)),
        ("Originalheight", str(height)),
        ("Filtered", "5"),
        ("ICC Profile", "sRGB built-in"),
    ]
    return "".join(f"|{key} = {value}" for key, value in fields)


def _jpeg_page(pixels: NDArray[np.uint8], description: str, *, tiled: bool, icc: bytes | None = None) -> Page:
    height, width = pixels.shape[:2]
    if tiled:
        tables, segments = encode_tiles(pixels, TILE, QUALITY, "RGB", _COMPONENT_IDS)
    else:
        tables, segments = encode_strips(pixels, _STRIP_ROWS, QUALITY, "RGB", _COMPONENT_IDS)
    page = Page(
        width,
        height,
        segments,
        _JPEG,
        tile=TILE if tiled else None,
        rows_per_strip=None if tiled else _STRIP_ROWS,
        tags={
            254: (LONG, [0]),
            270: (ASCII, description),
            347: (UNDEFINED, tables),
            530: (SHORT, [2, 2]),
            32997: (LONG, [1]),
        },
    )
    if icc is not None:
        page.tags[34675] = (UNDEFINED, icc)
    return page


def write_svs(path: Path, slide: SlideContent, identity: Identity, seed: int = 0) -> Path:
    """Write an Aperio SVS file.

    Parameters
    ----------
    path : pathlib.Path
        Output file (``.svs``).
    slide : SlideContent
        Tissue, label and macro pixels.
    identity : Identity
        Patient and specimen; the specimen ID is the Aperio ``Filename``.
    seed : int, optional
        Seed for the scanner-specific values (ImageID, User, Left, Top).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    levels = pyramid(slide.pixels, 4, TILE)
    height, width = slide.pixels.shape[:2]
    geometry = f"{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE})"
    codec = f"JPEG/RGB Q={QUALITY}"
    properties = _properties(identity, width, height, seed)
    thumb = thumbnail(slide.pixels, _THUMBNAIL_BOX)
    thumb_size = f"{thumb.shape[1]}x{thumb.shape[0]}"
    pages = [
        _jpeg_page(
            slide.pixels,
            f"{APERIO_VERSION} \r\n{geometry} {codec}{properties}",
            tiled=True,
            icc=srgb_profile(),
        ),
        _jpeg_page(
            thumb,
            f"{APERIO_VERSION} \n{width}x{height} -> {thumb_size} - {properties}",
            tiled=False,
        ),
    ]
    for level in levels[1:]:
        size = f"{level.shape[1]}x{level.shape[0]}"
        description = f"{APERIO_VERSION} \r\n{geometry} -> {size} {codec}"
        pages.append(_jpeg_page(level, description, tiled=True))
    label = np.asarray(slide.label.convert("RGB"))
    label_rows = 7
    pages.append(
        Page(
            label.shape[1],
            label.shape[0],
            lzw_strips(label, label_rows),
            _LZW,
            rows_per_strip=label_rows,
            tags={
                254: (LONG, [1]),
                270: (ASCII, f"{APERIO_VERSION} \nlabel {label.shape[1]}x{label.shape[0]}"),
                317: (SHORT, [2]),
                32997: (LONG, [1]),
            },
        )
    )
    macro = np.asarray(slide.overview.convert("RGB"))
    macro_page = _jpeg_page(macro, f"{APERIO_VERSION} \nmacro {macro.shape[1]}x{macro.shape[0]}", tiled=False)
    macro_page.tags[254] = (LONG, [9])
    pages.append(macro_page)
    write_tiff(path, pages)
    return path
