"""OME-TIFF pyramids (Bio-Formats, QuPath, scanners' OME export): read as tiled TIFF.

The generic tiled-TIFF reader does the work (SubIFD pyramid, PhysicalSizeX/Y, ``label`` and
``macro`` images, and the refusal of z-stacks and fluorescence channels); this class claims OME
files before it so that the catalog records the format.
"""

from __future__ import annotations

from pathlib import Path

import tifffile

from lamina.formats.tiff import TiledTiffSource
from lamina.formats.tiff_common import is_tiff


class OmeTiffSource(TiledTiffSource):
    format_name = "ome_tiff"
    display_name = "OME-TIFF"
    priority = 20

    @classmethod
    def detect(cls, path: Path) -> bool:
        if not is_tiff(path):
            return False
        try:
            with tifffile.TiffFile(path) as tiff:
                return bool(tiff.is_ome)
        except Exception:
            return False
