"""Generic tiled pyramidal TIFF and OME-TIFF: tiles copied when JPEG or JPEG 2000.

The pyramid is the first image series as tifffile sees it: reduced-resolution pages
(NewSubfileType 1) or SubIFDs. Series named ``label``, ``macro`` or ``thumbnail`` (OME-TIFF
from slide scanners) become the associated images. A TIFF that is not tiled, holds several
focal planes or fluorescence channels, or has no pixel spacing is refused with the reason.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import tifffile

from lamina.errors import UnsupportedFormatError
from lamina.formats.images import TiffTiledImage, decoded_page, require_8bit
from lamina.formats.source import ImageFlavor, SlideMetadata, SlideSource, SourceOptions
from lamina.formats.tiff_common import (
    check_tiles_inside,
    is_tiff,
    level_spacing,
    open_tiff,
    pages_of,
    require_spacing,
    resolution_spacing,
)
from lamina.model.geometry import SizeMm, SizePx

_ASSOCIATED = {
    "label": ImageFlavor.LABEL,
    "macro": ImageFlavor.OVERVIEW,
    "overview": ImageFlavor.OVERVIEW,
    "thumbnail": ImageFlavor.THUMBNAIL,
}
#: TIFF-family formats with their own layout that this reader must not misread as a plain
#: pyramid: the ones lamina reads are claimed first by their own readers; the others are
#: refused until a reader for them exists.
_OTHER_VENDORS = {
    "is_qpi": "PerkinElmer QPTIFF",
    "is_scn": "Leica SCN",
    "is_bif": "Roche BIF",
}


class TiledTiffSource(SlideSource):
    format_name = "tiled_tiff"
    display_name = "tiled pyramidal TIFF"
    priority = 10

    @classmethod
    def detect(cls, path: Path) -> bool:
        return is_tiff(path)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        self._tiff = tiff = open_tiff(path)
        for flag, name in _OTHER_VENDORS.items():
            if getattr(tiff, flag, False):
                raise UnsupportedFormatError(path, f"{name} files are not supported yet")
        series = tiff.series[0]
        axes = series.axes
        if axes not in ("YXS", "YX"):
            raise UnsupportedFormatError(
                path,
                f"image of shape {series.shape} (axes {axes}) is not a brightfield whole-slide "
                "image: lamina reads one RGB or grey plane per level, not z-stacks or channels",
            )
        levels = [level.keyframe for level in series.levels]
        base = levels[0]
        require_8bit(path, base)
        if not base.is_tiled:
            raise UnsupportedFormatError(
                path,
                f"not a tiled pyramidal TIFF (page 0 is {base.imagewidth}x{base.imagelength} "
                "in strips); convert it to a tiled pyramid (e.g. vips tiffsave --tile --pyramid)",
            )
        spacing = require_spacing(
            path, self._file_spacing(base), options, "no OME PhysicalSize nor resolution tags"
        )
        base_size = SizePx(int(base.imagewidth), int(base.imagelength))
        self._levels = []
        for page in levels:
            if not page.is_tiled:
                continue
            check_tiles_inside(path, tiff, page)
            size = SizePx(int(page.imagewidth), int(page.imagelength))
            self._levels.append(
                TiffTiledImage(tiff, page, ImageFlavor.VOLUME, level_spacing(spacing, base_size, size))
            )
        self._levels.sort(key=lambda image: -image.size.area)
        self._associated = []
        for other in tiff.series[1:]:
            flavor = _ASSOCIATED.get((other.name or "").lower())
            if flavor is not None:
                self._associated.append(decoded_page(other.keyframe, flavor))

    def _file_spacing(self, base: tifffile.TiffPage) -> SizeMm | None:
        if self._tiff.is_ome and self._tiff.ome_metadata:
            spacing = _ome_spacing(self._tiff.ome_metadata)
            if spacing is not None:
                return spacing
        return resolution_spacing(base)

    @cached_property
    def metadata(self) -> SlideMetadata:
        page = pages_of(self._tiff)[0]
        software = page.tags.valueof("Software")
        return SlideMetadata(
            manufacturer=page.tags.valueof("Make") or None,
            model_name=page.tags.valueof("Model") or None,
            software_versions=(str(software),) if software else (),
            icc_profile=page.iccprofile or None,
        )

    def close(self) -> None:
        self._tiff.close()


def _ome_spacing(xml: str) -> SizeMm | None:
    """PhysicalSizeX/Y of the first OME Pixels element, in µm unless a unit says otherwise."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("Pixels"):
            x, y = element.get("PhysicalSizeX"), element.get("PhysicalSizeY")
            unit = element.get("PhysicalSizeXUnit", "µm")
            scale = {"µm": 1e-3, "um": 1e-3, "nm": 1e-6, "mm": 1.0}.get(unit)
            if x and y and scale:
                return SizeMm(float(x) * scale, float(y) * scale)
            return None
    return None
