"""3DHISTECH TIFF (exported by 3DHISTECH's slide software), read through opentile's 3DHistech tiler.

The levels are tiled pages (NewSubfileType 1 after the first), each with an Aperio-like
ImageDescription without a vendor prefix::

    68608x95232 (256x256) JPEG/RGB Q=80|Date = 29/12/2009|Time = 12:43:52|MPP = 0.2325|
    3dh_PixelSizeX = 0.2325|3dh_PixelSizeY = 0.2325|3dh_Filter = Default|3dh_Profile = ...

opentile recognises the file by ``3dh_PixelSizeX`` in page 0's description and takes the pixel
spacing from ``MPP`` (µm). The description is read with tifffile's Aperio parser, as the SVS
reader reads it; the date is written day first. The file has no label or overview.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import tifffile

from lamina.formats.opentile_base import OpenTileSource
from lamina.formats.source import SlideMetadata
from lamina.formats.svs import AperioDescription
from lamina.formats.tiff_common import sniff_tiff

MARKER = "3dh_PixelSizeX"
#: tifffile's parser reads descriptions that start with Aperio's name; 3DHISTECH omits it.
_PREFIX = "Aperio "


class HistechSource(OpenTileSource):
    format_name = "histech_tiff"
    display_name = "3DHISTECH TIFF"
    priority = 70
    opentile_format = "3dhistech"
    spacing_location = "no MPP in the ImageDescription"

    @classmethod
    def detect(cls, path: Path) -> bool:
        return sniff_tiff(path, lambda tiff: MARKER in (tiff.pages.first.description or ""), cls)

    def read_metadata(self, tiff: tifffile.TiffFile, tiler: Any) -> SlideMetadata:
        meta = super().read_metadata(tiff, tiler)
        described = AperioDescription.parse(tiff.pages.first.description or "", _PREFIX)
        return dataclasses.replace(
            meta,
            manufacturer=meta.manufacturer or "3DHISTECH",
            acquisition_datetime=meta.acquisition_datetime or described.acquired(day_first=True),
            description=described.header or None,
        )
