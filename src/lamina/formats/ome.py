"""OME-TIFF pyramids (Bio-Formats, QuPath, scanners' OME export): read as tiled TIFF.

The generic tiled-TIFF reader does the work (SubIFD pyramid, PhysicalSizeX/Y, ``label`` and
``macro`` images, and the refusal of z-stacks and fluorescence channels); this class claims OME
files before it so that the catalog records the format.
"""

from __future__ import annotations

from pathlib import Path

from lamina.formats.tiff import TiledTiffSource
from lamina.formats.tiff_common import sniff_tiff


class OmeTiffSource(TiledTiffSource):
    format_name = "ome_tiff"
    display_name = "OME-TIFF"
    priority = 20
    suffixes = (".ome.tif", ".ome.tiff", ".ome.tf2", ".ome.tf8", ".ome.btf")

    @classmethod
    def detect(cls, path: Path) -> bool:
        return sniff_tiff(path, lambda tiff: bool(tiff.is_ome), cls)
