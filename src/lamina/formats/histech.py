"""3DHISTECH TIFF (exported by 3DHISTECH's slide software), read through opentile's 3DHistech tiler.

The levels are tiled pages (NewSubfileType 1 after the first), each with an Aperio-like
ImageDescription without a vendor prefix::

    68608x95232 (256x256) JPEG/RGB Q=80|Date = 29/12/2009|Time = 12:43:52|MPP = 0.2325|
    3dh_PixelSizeX = 0.2325|3dh_PixelSizeY = 0.2325|3dh_Filter = Default|3dh_Profile = ...

opentile recognises the file by ``3dh_PixelSizeX`` in page 0's description and takes the pixel
spacing from ``MPP`` (µm). The date is written day first. The file has no label or overview.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import tifffile

from lamina.formats.opentile_base import OpenTileSource, sniff_tiff
from lamina.formats.source import SlideMetadata

MARKER = "3dh_PixelSizeX"


class HistechSource(OpenTileSource):
    format_name = "histech_tiff"
    display_name = "3DHISTECH TIFF"
    priority = 70
    opentile_format = "3dhistech"
    spacing_location = "no MPP in the ImageDescription"

    @classmethod
    def detect(cls, path: Path) -> bool:
        return bool(sniff_tiff(path, lambda tiff: MARKER in (tiff.pages.first.description or "")))

    def read_metadata(self, tiff: tifffile.TiffFile, tiler: Any) -> SlideMetadata:
        meta = super().read_metadata(tiff, tiler)
        header, values = parse_description(tiff.pages.first.description or "")
        return dataclasses.replace(
            meta,
            manufacturer=meta.manufacturer or "3DHISTECH",
            acquisition_datetime=meta.acquisition_datetime
            or _acquired(values.get("Date"), values.get("Time")),
            description=header or None,
        )


def parse_description(text: str) -> tuple[str, dict[str, str]]:
    """Split the description into its header (size, tiles, compression) and ``key = value`` pairs."""
    header, _, rest = text.partition("|")
    values: dict[str, str] = {}
    for item in rest.split("|"):
        key, sep, value = item.partition("=")
        if sep:
            values.setdefault(key.strip(), value.strip())
    return header.strip(), values


def _acquired(date: str | None, time: str | None) -> dt.datetime | None:
    if not date:
        return None
    try:
        return dt.datetime.strptime(f"{date} {time or '00:00:00'}", "%d/%m/%Y %H:%M:%S")
    except ValueError:
        return None
