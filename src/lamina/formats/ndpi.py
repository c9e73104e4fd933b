"""Hamamatsu NDPI (NanoZoomer), read through opentile's NDPI tiler.

An NDPI level is one JPEG with restart markers, not tiles. opentile cuts square tiles out of it
losslessly (whole restart intervals, headers rewritten), so the DICOM frames are the scanner's
compressed data, never re-encoded. lamina asks for 512x512; opentile makes that a power-of-two
multiple of the file's narrowest stripe (512 when a stripe is 256 or 512 pixels wide).
The macro page is the overview; opentile crops the label out of its left part. Metadata comes
from the Hamamatsu tags: Make, Model, Software, DateTime, SourceLens (magnification),
ScannerSerialNumber, and SlideLabel, which lamina takes as the slide's barcode. Pixel spacing
comes from XResolution/YResolution (pixels per centimetre).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import tifffile

from lamina.formats.opentile_base import OpenTileSource, sniff_tiff
from lamina.formats.source import SlideMetadata
from lamina.model.slide import SlideIdentity


class NdpiSource(OpenTileSource):
    format_name = "hamamatsu_ndpi"
    display_name = "Hamamatsu NDPI"
    priority = 70
    opentile_format = "ndpi"
    spacing_location = "no XResolution/YResolution in centimetres"
    tile_request = 512

    @classmethod
    def detect(cls, path: Path) -> bool:
        found = sniff_tiff(path, lambda tiff: bool(tiff.is_ndpi))
        if found is None:
            # a truncated NDPI may not open at all: claim it by name to report the damage
            return path.suffix.lower() == ".ndpi"
        return found

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
