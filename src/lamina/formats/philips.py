"""Philips TIFF (IntelliSite export), read through opentile's Philips tiler.

Levels are tiled JPEG pages with shared JPEGTables; opentile merges the tables into each tile and
fills sparse tiles (byte count 0, outside the scanned area) with a blank tile made from a real
one, so the frames are the scanner's data. Level sizes are the file's: Philips pads them to
whole tiles. Page 0's ImageDescription is the Philips DP XML: equipment, acquisition date-time,
pixel spacing (``DICOM_PIXEL_SPACING``, mm), the barcode (``PIM_DP_UFS_BARCODE``, base64) and,
in ``PIM_DP_SCANNED_IMAGES``, the label and macro as base64 JPEG, used when no TIFF page holds
them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile

from lamina.errors import CorruptSourceError
from lamina.formats.codec import damage
from lamina.formats.opentile_base import OpenTileSource, lossy_decoded
from lamina.formats.source import SlideMetadata, SourceImage
from lamina.formats.tiff_common import sniff_tiff
from lamina.model.enums import ImageFlavorValues
from lamina.model.slide import SlideIdentity

_JPEG = 7
_XML_IMAGES = {"LABELIMAGE": ImageFlavorValues.LABEL, "MACROIMAGE": ImageFlavorValues.OVERVIEW}


class PhilipsSource(OpenTileSource):
    format_name = "philips_tiff"
    display_name = "Philips TIFF"
    priority = 70
    opentile_format = "philips"
    spacing_location = "no DICOM_PIXEL_SPACING in the Philips XML"

    @classmethod
    def detect(cls, path: Path) -> bool:
        return sniff_tiff(path, lambda tiff: bool(tiff.is_philips), cls)

    def read_metadata(self, tiff: tifffile.TiffFile, tiler: Any) -> SlideMetadata:
        meta = super().read_metadata(tiff, tiler)
        self._scanned: list[dict[str, str]] = []
        xml = tiff.philips_metadata
        if not xml:
            return meta
        from defusedxml import ElementTree  # opentile's dependency; refuses entity expansion

        root = ElementTree.fromstring(xml)
        top = _attributes(root)
        self._scanned = [
            _attributes(obj) for obj in root.iter("DataObject") if obj.get("ObjectType") == "DPScannedImage"
        ]
        return dataclasses.replace(
            meta,
            model_name=meta.model_name or top.get("DICOM_MANUFACTURERS_MODEL_NAME") or None,
            identity=SlideIdentity(container_id=_barcode(top.get("PIM_DP_UFS_BARCODE", ""))),
        )

    def extra_associated(self, tiff: tifffile.TiffFile) -> Sequence[SourceImage]:
        images: list[SourceImage] = []
        for attributes in self._scanned:
            flavor = _XML_IMAGES.get(attributes.get("PIM_DP_IMAGE_TYPE", ""))
            data = attributes.get("PIM_DP_IMAGE_DATA")
            if flavor is None or not data or any(image.flavor is flavor for image in images):
                continue
            try:
                jpeg = base64.b64decode(data)
            except (ValueError, binascii.Error) as exc:
                raise CorruptSourceError(
                    self.path,
                    f"the {flavor.lower()} image in the Philips XML is not base64 text; "
                    "the file is damaged: copy it again from the scanner",
                ) from exc
            try:
                pixels = np.asarray(imagecodecs.jpeg8_decode(jpeg), np.uint8)
            except Exception as exc:  # imagecodecs' own error class
                raise CorruptSourceError(
                    self.path,
                    f"the {flavor.lower()} image in the Philips XML is not a readable JPEG "
                    f"({damage(exc)}); the file is damaged: copy it again from the scanner",
                ) from exc
            images.append(lossy_decoded(pixels, flavor, _JPEG, len(jpeg)))
        return images


def _attributes(element: Any) -> dict[str, str]:
    """The direct ``Attribute`` children of a Philips ``DataObject``, by name (first one wins)."""
    found: dict[str, str] = {}
    for attribute in element.findall("Attribute"):
        found.setdefault(str(attribute.get("Name", "")), (attribute.text or "").strip())
    return found


def _barcode(value: str) -> str | None:
    """Philips stores the barcode base64-encoded; a value that does not decode to text is kept."""
    if not value:
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return value
    return decoded if decoded.isprintable() and decoded.strip() else value
