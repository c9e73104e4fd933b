"""Aperio SVS (Leica): a TIFF whose tiles (JPEG or JPEG 2000) are copied as DICOM frames.

Layout: page 0 is the base level (tiled); page 1 the thumbnail (stripped); then the other
levels (tiled); then the label and the macro (overview), named in their ImageDescription.
The base page's ImageDescription carries ``key = value`` pairs after a header, read with
tifffile's ``svs_description_metadata`` (as opentile does)::

    Aperio Image Library v11.2.1 \r\n46000x32914 [...] (240x240) JPEG/RGB Q=30|AppMag = 20|
    ScanScope ID = CPAPERIOCS|Date = 12/29/09|Time = 09:59:15|Time Zone = GMT-05:00|MPP = 0.4990

``Date`` is month first (``12/29/09``, or ``07/24/2023`` on a GT450) and ``Time Zone``, when
the scanner writes it (``GMT+01:00``, ``GMT-0800``), is kept with the acquisition date-time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import tifffile
from tifffile.tifffile import svs_description_metadata

from lamina.errors import CorruptSourceError
from lamina.formats.codec import library_message
from lamina.formats.images import TiffTiledImage, decoded_page, require_8bit
from lamina.formats.source import SlideMetadata, SlideSource, SourceImage, SourceOptions
from lamina.formats.tiff_common import (
    check_tiles_inside,
    level_spacing,
    open_tiff,
    pages_of,
    reading_page,
    require_spacing,
    sniff_tiff,
)
from lamina.model.enums import ImageFlavorValues
from lamina.model.geometry import SizeMm, SizePx
from lamina.model.slide import SlideIdentity

#: How Aperio scanners write the time zone: GMT, then an offset with or without a colon.
_ZONE = re.compile(r"^(?:GMT|UTC)\s*(?:([+-])(\d{1,2}):?(\d{2})?)?$", re.IGNORECASE)


@dataclass(frozen=True)
class AperioDescription:
    """An Aperio-style ImageDescription: its header and its ``key = value`` pairs."""

    header: str
    values: dict[str, Any]
    text: str

    @classmethod
    def parse(cls, text: str, vendor_prefix: str = "") -> AperioDescription:
        """Read ``text`` with tifffile's parser. 3DHISTECH writes the same layout without the
        ``Aperio`` header tifffile looks for: its caller gives that prefix, removed again here."""
        values = dict(svs_description_metadata(vendor_prefix + text))
        header = str(values.pop("Header", ""))[len(vendor_prefix) :]
        return cls(header.strip(), values, text)

    def string(self, key: str) -> str | None:
        """The value as written. tifffile turns numbers into numbers (``Barcode = 0012`` into
        12), which would lose a barcode's leading zeros: such values are read again as text."""
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return value.strip() or None
        for item in self.text.split("|")[1:]:
            name, sep, raw = item.partition("=")
            if sep and name.strip() == key:
                return raw.strip() or None
        return str(value)

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    def acquired(self, day_first: bool = False) -> dt.datetime | None:
        """``Date`` and ``Time``, with ``Time Zone`` when given (an aware date-time)."""
        return acquisition_datetime(
            self.string("Date"), self.string("Time"), self.string("Time Zone"), day_first
        )


def acquisition_datetime(
    date: str | None, time: str | None, zone: str | None, day_first: bool = False
) -> dt.datetime | None:
    """A scanner's date and time (and time zone, when it says) as one date-time."""
    if not date:
        return None
    formats = ("%d/%m/%Y", "%d/%m/%y") if day_first else ("%m/%d/%y", "%m/%d/%Y")
    for fmt in formats:
        try:
            found = dt.datetime.strptime(f"{date} {time or '00:00:00'}", f"{fmt} %H:%M:%S")
        except ValueError:
            continue
        offset = time_zone(zone)
        return found.replace(tzinfo=offset) if offset is not None else found
    return None


def time_zone(text: str | None) -> dt.timezone | None:
    """``GMT+01:00``, ``GMT-0800``, ``GMT+9`` or ``GMT`` as a time zone; None when unreadable or
    outside the offsets DICOM allows (-12:00 to +14:00)."""
    match = _ZONE.match((text or "").strip())
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    if sign is None:
        return dt.UTC
    offset = dt.timedelta(hours=int(hours), minutes=int(minutes or 0))
    offset = -offset if sign == "-" else offset
    if not dt.timedelta(hours=-12) <= offset <= dt.timedelta(hours=14):
        return None
    return dt.timezone(offset)


class SvsSource(SlideSource):
    format_name = "aperio_svs"
    display_name = "Aperio SVS"
    priority = 80
    suffixes = (".svs",)

    @classmethod
    def detect(cls, path: Path) -> bool:
        return sniff_tiff(path, lambda tiff: tiff.pages.first.description.startswith("Aperio"), cls)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        self._tiff = open_tiff(path)
        try:
            self._open(path, options)
        except BaseException:
            self._tiff.close()
            raise

    def _open(self, path: Path, options: SourceOptions) -> None:
        pages = self._pages = pages_of(self._tiff)
        base = pages[0]
        if not base.is_tiled:
            raise CorruptSourceError(path, "the first page of an SVS must be tiled")
        try:
            self._description = AperioDescription.parse(base.description)
        except ValueError as exc:  # tifffile refuses a description without the Aperio header
            raise CorruptSourceError(
                path, f"page 0's ImageDescription is not Aperio's ({library_message(exc)})"
            ) from exc
        mpp = self._description.number("MPP")
        found = SizeMm.from_mpp(mpp) if mpp else None
        base_size = SizePx(int(base.imagewidth), int(base.imagelength))
        spacing = require_spacing(path, found, options, "its ImageDescription has no MPP")
        for index, page in enumerate(pages):
            require_8bit(path, page)
            description = page.description or ""
            if index and _associated_name(description):
                self._associated.append(self._decoded(page, description))
            elif page.is_tiled:
                check_tiles_inside(path, self._tiff, page)
                size = SizePx(int(page.imagewidth), int(page.imagelength))
                with reading_page(path, page):
                    self._levels.append(
                        TiffTiledImage(
                            self._tiff,
                            page,
                            ImageFlavorValues.VOLUME,
                            level_spacing(spacing, base_size, size),
                        )
                    )
            else:
                self._associated.append(self._decoded(page, description))
        self._levels.sort(key=lambda image: -image.size.area)

    def _decoded(self, page: tifffile.TiffPage, description: str) -> SourceImage:
        name = _associated_name(description)
        flavor = {"label": ImageFlavorValues.LABEL, "macro": ImageFlavorValues.OVERVIEW}.get(
            name or "", ImageFlavorValues.THUMBNAIL
        )
        with reading_page(self.path, page, f"the {flavor.lower()} image"):
            return decoded_page(page, flavor)

    @cached_property
    def metadata(self) -> SlideMetadata:
        described = self._description
        header = described.header.split("\n", 1)[0].strip()
        serial = described.string("ScanScope ID")
        return SlideMetadata(
            manufacturer="Aperio",
            model_name="ScanScope" if serial else None,
            device_serial_number=serial,
            software_versions=_software(header),
            acquisition_datetime=described.acquired(),
            objective_power=described.number("AppMag"),
            icc_profile=self._pages[0].iccprofile or None,
            description=header,
            identity=SlideIdentity(container_id=described.string("Barcode")),
        )

    def close(self) -> None:
        self._tiff.close()


def _software(header: str) -> tuple[str, ...]:
    return tuple(filter(None, [header.split("\r")[0].strip()]))


def _associated_name(description: str) -> str | None:
    """'label' or 'macro' when the page's description names one (its second line)."""
    lines = description.splitlines()
    word = lines[1].split(" ", 1)[0].strip() if len(lines) > 1 else ""
    return word if word in ("label", "macro") else None
