"""Aperio SVS (Leica): a TIFF whose tiles (JPEG or JPEG 2000) are copied as DICOM frames.

Layout: page 0 is the base level (tiled); page 1 the thumbnail (stripped); then the other
levels (tiled); then the label and the macro (overview), named in their ImageDescription.
The base page's ImageDescription carries ``key = value`` pairs (MPP, AppMag, ScanScope ID,
Date, Time, ...).
"""

from __future__ import annotations

import datetime as dt
from functools import cached_property
from pathlib import Path

import tifffile

from lamina.errors import CorruptSourceError
from lamina.formats.images import TiffTiledImage, decoded_page, require_8bit
from lamina.formats.source import (
    ImageFlavor,
    SlideMetadata,
    SlideSource,
    SourceImage,
    SourceOptions,
)
from lamina.formats.tiff_common import (
    check_tiles_inside,
    is_tiff,
    level_spacing,
    open_tiff,
    pages_of,
    require_spacing,
)
from lamina.model.geometry import SizeMm, SizePx
from lamina.model.slide import SlideIdentity


def parse_description(text: str) -> tuple[str, dict[str, str]]:
    """Split an Aperio ImageDescription into its header line and its ``key = value`` pairs."""
    header, _, rest = text.partition("|")
    values: dict[str, str] = {}
    for item in rest.split("|"):
        key, sep, value = item.partition("=")
        if sep:
            values.setdefault(key.strip(), value.strip())
    return header.strip(), values


class SvsSource(SlideSource):
    format_name = "aperio_svs"
    display_name = "Aperio SVS"
    priority = 80

    @classmethod
    def detect(cls, path: Path) -> bool:
        if not is_tiff(path):
            return False
        try:
            with tifffile.TiffFile(path) as tiff:
                return bool(pages_of(tiff)[0].description.startswith("Aperio"))
        except Exception:
            # a damaged SVS is still an SVS: claim it, so its error says what is wrong with it
            return path.suffix.lower() == ".svs"

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        self._tiff = open_tiff(path)
        pages = self._pages = pages_of(self._tiff)
        base = pages[0]
        if not base.is_tiled:
            raise CorruptSourceError(path, "the first page of an SVS must be tiled")
        _, self._values = parse_description(base.description)
        mpp = self._values.get("MPP")
        found = SizeMm.from_mpp(float(mpp)) if mpp else None
        base_size = SizePx(int(base.imagewidth), int(base.imagelength))
        spacing = require_spacing(path, found, options, "its ImageDescription has no MPP")
        self._levels = []
        self._associated = []
        for index, page in enumerate(pages):
            require_8bit(path, page)
            description = page.description or ""
            if index and _associated_name(description):
                self._associated.append(self._decoded(page, description))
            elif page.is_tiled:
                check_tiles_inside(path, self._tiff, page)
                size = SizePx(int(page.imagewidth), int(page.imagelength))
                self._levels.append(
                    TiffTiledImage(
                        self._tiff, page, ImageFlavor.VOLUME, level_spacing(spacing, base_size, size)
                    )
                )
            else:
                self._associated.append(self._decoded(page, description))
        self._levels.sort(key=lambda image: -image.size.area)

    def _decoded(self, page: tifffile.TiffPage, description: str) -> SourceImage:
        name = _associated_name(description)
        flavor = {"label": ImageFlavor.LABEL, "macro": ImageFlavor.OVERVIEW}.get(
            name or "", ImageFlavor.THUMBNAIL
        )
        try:
            return decoded_page(page, flavor)
        except Exception as exc:
            raise CorruptSourceError(self.path, f"{flavor.lower()} image unreadable ({exc})") from exc

    @cached_property
    def metadata(self) -> SlideMetadata:
        values = self._values
        header = self._pages[0].description.split("\n", 1)[0].strip()
        software = tuple(filter(None, [header.split("\r")[0].strip()]))
        return SlideMetadata(
            manufacturer="Aperio",
            model_name=values.get("ScanScope ID") and "ScanScope",
            device_serial_number=values.get("ScanScope ID"),
            software_versions=software,
            acquisition_datetime=_acquired(values.get("Date"), values.get("Time")),
            objective_power=_float(values.get("AppMag")),
            icc_profile=self._pages[0].iccprofile or None,
            description=header,
            identity=SlideIdentity(container_id=values.get("Barcode") or None),
        )

    def close(self) -> None:
        self._tiff.close()


def _associated_name(description: str) -> str | None:
    """'label' or 'macro' when the page's description names one (its second line)."""
    lines = description.splitlines()
    word = lines[1].split(" ", 1)[0].strip() if len(lines) > 1 else ""
    return word if word in ("label", "macro") else None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _acquired(date: str | None, time: str | None) -> dt.datetime | None:
    if not date:
        return None
    for fmt in ("%m/%d/%y %H:%M:%S", "%m/%d/%Y %H:%M:%S"):
        try:
            return dt.datetime.strptime(f"{date} {time or '00:00:00'}", fmt)
        except ValueError:
            continue
    return None
