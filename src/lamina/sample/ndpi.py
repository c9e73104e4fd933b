"""Hamamatsu NDPI sample, laid out like a file from a NanoZoomer scanner.

NDPI is a TIFF whose levels are each stored as *one* JPEG (a single strip)
with restart markers; the private tag McuStarts (65426) lists the offset of
every restart interval, so readers can cut "stripes" (one MCU row, 8 pixels,
high and ``interval x 16`` pixels wide) out of the JPEG and assemble tiles
from them.
This writer reproduces that:

* one page per level, downsampled by 4 until the short side is at most 512;
  readers derive the stripe width from the MCU count, so every level must be
  whole 16x8 MCUs: level 0 is padded with glass background to a size that
  makes every level exact (the default 4096x3072 needs no padding),
  each a single-strip baseline JPEG (YCbCr 4:2:2, JFIF) with a restart
  interval of up to 32 MCUs that divides the MCU row, McuStarts, and
  XResolution/YResolution in pixels per centimetre;
* a macro page (SourceLens = -1) holding the overview photo, whose left part
  is the label, as on NDPI macros;
* Hamamatsu tags on every page: Make ``Hamamatsu``, Model, Software,
  DateTime, FileFormat (65420) = 1, SourceLens (65421, the magnification),
  X/Y/Z offsets from the slide centre (65422-65424, nm), SlideLabel (65427,
  the specimen ID) and ScannerSerialNumber (65442).

With ``focal_planes`` above one the file is a z-stack in the layout Bio-Formats' NDPIReader
reads: the whole pyramid of each focal plane in turn (here the plane at Z offset 0 first, then
the others nearest first), each page's ZOffsetFromSlideCenter (65424) in nm. Each plane is the
tissue blurred by its distance from focus and shifted by its side, so that planes differ;
``plane_levels`` keeps the other planes at the top levels only, to test readers against such files.

tifffile reports ``is_ndpi`` and exposes the stripes as tiles; opentile opens
it with its NDPI tiler and OpenSlide with its ``hamamatsu`` driver.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from lamina.sample._tiff import ASCII, FLOAT, LONG, RATIONAL, SHORT, SLONG, Page, TagValue, write_tiff
from lamina.sample.content import BACKGROUND, SlideContent, pyramid
from lamina.sample.identity import Identity

__all__ = ["MPP", "plane_offsets_nm", "write_ndpi"]

MPP = 0.2268
QUALITY = 80
_MAGNIFICATION = 40.0
_MCU_W, _MCU_H = 16, 8  # YCbCr 4:2:2
_MIN_SIDE = 512
_MAX_INTERVAL = 32
_SLIDE_WIDTH_CM = 7.5
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")


def _levels(pixels: NDArray[np.uint8]) -> list[NDArray[np.uint8]]:
    """Pyramid by 4, level 0 padded so that every level is exact and whole MCUs."""
    count, short = 1, min(pixels.shape[:2])
    while short > _MIN_SIDE:
        short, count = -(-short // 4), count + 1
    unit_h, unit_w = _MCU_H * 4 ** (count - 1), _MCU_W * 4 ** (count - 1)
    height, width = pixels.shape[:2]
    padded = np.empty((-(-height // unit_h) * unit_h, -(-width // unit_w) * unit_w, 3), np.uint8)
    padded[...] = BACKGROUND
    padded[:height, :width] = pixels
    return pyramid(padded, 4, _MIN_SIDE)[:count]


def _striped_jpeg(pixels: NDArray[np.uint8]) -> tuple[bytes, list[int]]:
    """Encode a level as one JPEG with restart markers; return it and McuStarts."""
    mcus_per_row = -(-pixels.shape[1] // _MCU_W)
    interval = max(d for d in range(1, _MAX_INTERVAL + 1) if mcus_per_row % d == 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(
        buffer, "JPEG", quality=QUALITY, subsampling=1, restart_marker_blocks=interval
    )
    data = buffer.getvalue()
    sos = data.index(b"\xff\xda")
    scan = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    starts = [scan] + [match.end() for match in _RESTART.finditer(data, scan)]
    expected = -(-pixels.shape[0] // _MCU_H) * (mcus_per_row // interval)
    if len(starts) != expected:
        raise RuntimeError(f"found {len(starts)} restart intervals, expected {expected}")
    return data, starts


def _tags(identity: Identity, magnification: float, per_cm: float) -> dict[int, tuple[int, TagValue]]:
    resolution = [(round(per_cm), 1)]  # readers such as opentile use the numerator only
    return {
        254: (LONG, [0]),
        271: (ASCII, "Hamamatsu"),
        272: (ASCII, "C13210"),
        282: (RATIONAL, resolution),
        283: (RATIONAL, resolution),
        296: (SHORT, [3]),  # centimetre
        305: (ASCII, "NDP.scan 3.4.0"),
        306: (ASCII, "2026:11:28 09:14:02"),
        65420: (LONG, [1]),
        65421: (FLOAT, [magnification]),
        65422: (SLONG, [-1_250_000]),
        65423: (SLONG, [310_000]),
        65424: (SLONG, [0]),
        65427: (ASCII, identity.specimen_id),
        65442: (ASCII, "C13210-01234"),
    }


def plane_offsets_nm(focal_planes: int, spacing_nm: int) -> list[int]:
    """The Z offsets of the planes in the order the file stores them: 0 (the nominal focus) first,
    then below and above it, nearest first (``[0, -s, s, -2s, 2s, ...]``), in nm."""
    steps = sorted(range(-(focal_planes // 2), focal_planes - focal_planes // 2), key=lambda k: (abs(k), k))
    return [k * spacing_nm for k in steps]


def _plane_pixels(pixels: NDArray[np.uint8], step: int) -> NDArray[np.uint8]:
    """Level 0 of the plane ``step`` spacings from focus: blurred by the distance, shifted by the side."""
    if step == 0:
        return pixels
    blurred = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.5 * abs(step)))
    return np.roll(np.asarray(blurred), 3 * step, axis=1)


def _level_pages(
    pixels: NDArray[np.uint8], identity: Identity, z_nm: int, count: int | None = None
) -> list[Page]:
    pages = []
    for index, level in enumerate(_levels(pixels)[:count]):
        scale = 4**index
        data, starts = _striped_jpeg(level)
        tags = _tags(identity, _MAGNIFICATION / scale, 1e4 / (MPP * scale))
        tags[65424] = (SLONG, [z_nm])
        tags[65426] = (LONG, starts)
        pages.append(Page(level.shape[1], level.shape[0], [data], 7, 6, tags=tags))
    return pages


def write_ndpi(
    path: Path,
    slide: SlideContent,
    identity: Identity,
    *,
    focal_planes: int = 1,
    plane_spacing_nm: int = 1000,
    plane_levels: int | None = None,
) -> Path:
    """Write a Hamamatsu NDPI file.

    Parameters
    ----------
    path : pathlib.Path
        Output file (``.ndpi``).
    slide : SlideContent
        Tissue and macro pixels (the label is part of the macro).
    identity : Identity
        The specimen ID is the NDPI SlideLabel.
    focal_planes : int, optional
        Focal planes (z-stack); 1, the default, writes one plane.
    plane_spacing_nm : int, optional
        The distance between neighbouring planes, in nm.
    plane_levels : int or None, optional
        How many of the largest levels hold every plane; the others hold the plane at focus
        only. ``None``: every level holds every plane.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    pages = []
    for z_nm in plane_offsets_nm(focal_planes, plane_spacing_nm):
        pixels = _plane_pixels(slide.pixels, z_nm // plane_spacing_nm)
        pages += _level_pages(pixels, identity, z_nm, None if z_nm == 0 else plane_levels)
    macro = np.asarray(slide.overview.convert("RGB"))
    buffer = io.BytesIO()
    Image.fromarray(macro).save(buffer, "JPEG", quality=QUALITY, subsampling=2)
    tags = _tags(identity, -1.0, macro.shape[1] / _SLIDE_WIDTH_CM)
    pages.append(Page(macro.shape[1], macro.shape[0], [buffer.getvalue()], 7, 6, tags=tags))
    write_tiff(path, pages, ndpi=True)
    return path
