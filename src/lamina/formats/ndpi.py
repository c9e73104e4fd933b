"""Hamamatsu NDPI (NanoZoomer), read through opentile's NDPI tiler.

An NDPI level is one JPEG with restart markers, not tiles. opentile cuts square tiles out of it
losslessly (whole restart intervals, headers rewritten), so the DICOM frames are the scanner's
compressed data, never re-encoded. lamina asks for 512x512; opentile makes that a power-of-two
multiple of the file's narrowest stripe (512 when a stripe is 256 or 512 pixels wide).
The macro page is the overview; opentile crops the label out of its left part. Metadata comes
from the Hamamatsu tags: Make, Model, Software, DateTime, SourceLens (magnification),
ScannerSerialNumber, and SlideLabel, which lamina takes as the slide's barcode. Pixel spacing
comes from XResolution/YResolution (pixels per centimetre).

A z-stack keeps a whole pyramid per focal plane, each page tagged with its ZOffsetFromSlideCenter
(nm): the pages of one level become one instance with every plane, lowest Z offset first, their
tiles copied (see :mod:`lamina.formats.focal_stack`), and SpacingBetweenSlices is the distance
between planes. Levels stored for some planes only are computed by lamina from the level above,
every plane kept; planes not evenly spaced are refused, DICOM's TILED_FULL holding one spacing.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Any

import tifffile

from lamina.errors import CorruptSourceError
from lamina.formats.opentile_base import OpenTileSource
from lamina.formats.source import SlideMetadata, SourceOptions
from lamina.formats.tiff_common import sniff_tiff
from lamina.model.slide import SlideIdentity


class NdpiSource(OpenTileSource):
    format_name = "hamamatsu_ndpi"
    display_name = "Hamamatsu NDPI"
    priority = 70
    opentile_format = "ndpi"
    spacing_location = "no XResolution/YResolution in centimetres"
    tile_request = 512
    suffixes = (".ndpi",)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        check_first_directory(path)  # claimed by name when no page could be read: say why
        super().__init__(path, options)

    @classmethod
    def detect(cls, path: Path) -> bool:
        # a truncated NDPI may not open at all: it is claimed by its name to report the damage
        return sniff_tiff(path, lambda tiff: bool(tiff.is_ndpi), cls)

    def opentile_labels(self, tiler: Any) -> list[Any]:
        # NDPI has no label page; opentile crops it out of the macro (overview) image
        return [tiler.get_label()] if tiler.overviews else []

    def read_metadata(self, tiff: tifffile.TiffFile, tiler: Any) -> SlideMetadata:
        meta = super().read_metadata(tiff, tiler)
        tags = tiff.pages.first.ndpi_tags or {}
        label = str(tags.get("SlideLabel") or "").strip()
        return dataclasses.replace(
            meta,
            manufacturer=meta.manufacturer or "Hamamatsu",
            identity=SlideIdentity(container_id=label or None),
        )


def check_first_directory(path: Path) -> None:
    """Refuse a file cut before its first image directory (tifffile then just finds no page)."""
    with path.open("rb") as fh:
        head, size = fh.read(16), fh.seek(0, 2)
    big, order = head[2:4] in (b"+\x00", b"\x00+"), "<" if head[:2] == b"II" else ">"
    field = head[8:16] if big else head[4:8]
    complete = len(field) == (8 if big else 4)
    first = struct.unpack(order + ("Q" if big else "I"), field)[0] if complete else size
    if first >= size:
        raise CorruptSourceError(
            path,
            f"truncated: the first image directory is at byte {first} but the file has {size} bytes; "
            "copy the file again from the scanner",
        )
