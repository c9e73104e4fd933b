"""Generic tiled pyramidal TIFF and OME-TIFF: tiles copied when JPEG or JPEG 2000.

The pyramid is the first image series as tifffile sees it: reduced-resolution pages
(NewSubfileType 1) or SubIFDs. Series named ``label``, ``macro`` or ``thumbnail`` (OME-TIFF
from slide scanners) become the associated images. A TIFF that is not tiled, holds several
focal planes or fluorescence channels, or has no pixel spacing is refused with the reason; an
OME-TIFF with channels or focal planes is read by ``ome.py`` (``ome_planes.py``) instead.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import tifffile

from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats.images import TiffTiledImage, decoded_page, require_8bit
from lamina.formats.source import SlideMetadata, SlideSource, SourceImage, SourceOptions
from lamina.formats.tiff_common import (
    check_tiles_inside,
    is_tiff,
    level_spacing,
    open_tiff,
    pages_of,
    reading_page,
    require_spacing,
    resolution_spacing,
)
from lamina.formats.unsupported import not_yet
from lamina.model.enums import ImageFlavorValues
from lamina.model.geometry import SizeMm, SizePx

_ASSOCIATED = {
    "label": ImageFlavorValues.LABEL,
    "macro": ImageFlavorValues.OVERVIEW,
    "overview": ImageFlavorValues.OVERVIEW,
    "thumbnail": ImageFlavorValues.THUMBNAIL,
}


class TiledTiffSource(SlideSource):
    format_name = "tiled_tiff"
    display_name = "tiled pyramidal TIFF"
    priority = 10

    @classmethod
    def detect(cls, path: Path) -> bool:
        # any TIFF, even one tifffile cannot open (its refusal then says what is damaged), but not
        # one of a format lamina does not read yet (QPTIFF, SCN, BIF, VSI...): the registry names it
        return is_tiff(path) and not_yet(path) is None

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        self._tiff = open_tiff(path)
        try:
            self._open(path, options)
        except BaseException:
            self._tiff.close()
            raise

    def _open(self, path: Path, options: SourceOptions) -> None:
        tiff = self._tiff
        try:
            series = tiff.series[0]
            axes = series.axes
            levels = [level.keyframe for level in series.levels]
        except Exception as exc:
            raise CorruptSourceError(
                path,
                "its pages do not form an image series (their sizes or tags disagree); "
                "the file is damaged or truncated: copy it again from the scanner",
            ) from exc
        if axes not in ("YXS", "YX"):
            raise UnsupportedFormatError(
                path,
                f"image of shape {series.shape} (axes {axes}) is not a brightfield whole-slide "
                "image: lamina reads one RGB or grey plane per level, not z-stacks or channels",
            )
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
            with reading_page(path, page):
                self._levels.append(
                    TiffTiledImage(
                        tiff, page, ImageFlavorValues.VOLUME, level_spacing(spacing, base_size, size)
                    )
                )
        self._levels.sort(key=lambda image: -image.size.area)
        self._associated = self._associated_images(path)

    def _associated_images(self, path: Path) -> list[SourceImage]:
        images: list[SourceImage] = []
        for other in self._tiff.series[1:]:
            flavor = _ASSOCIATED.get((other.name or "").lower())
            if flavor is not None:
                page = other.keyframe
                with reading_page(path, page, f"the {flavor.lower()} image"):
                    images.append(decoded_page(page, flavor))
        return images

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
