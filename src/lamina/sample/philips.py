"""Philips TIFF sample, laid out like an export from Philips IntelliSite (IMS).

Layout, following real Philips TIFF exports (e.g. OpenSlide's Philips-1):

* Software ``Philips DP v1.0``; page 0's ImageDescription is the Philips DP
  XML (``<DataObject ObjectType="DPUfsImport">``) with DICOM-named attributes:
  manufacturer, device serial number, acquisition date-time, the barcode
  (``PIM_DP_UFS_BARCODE``, base64 of the specimen ID), and in
  ``PIM_DP_SCANNED_IMAGES`` the ``WSI`` image with one
  ``PixelDataRepresentation`` (``DICOM_PIXEL_SPACING`` in mm, padded
  columns and rows) per level, then the ``LABELIMAGE`` and ``MACROIMAGE``
  as base64 JPEG in ``PIM_DP_IMAGE_DATA``.
* Pages 0..n-1: the levels, downsampled by 2 until the short side fits in one
  tile, 512x512 JPEG tiles (YCbCr 4:2:0, PhotometricInterpretation YCbCr,
  shared JPEGTables). As in Philips files, ImageWidth/ImageLength of every
  level are padded up to whole tiles (padding is white) and the reduced
  levels' descriptions read ``level=N mag=M quality=80``.
* Two stripped JPEG pages described ``Label`` and ``Macro``, as some Philips
  exports also carry them outside the XML.

tifffile reports ``is_philips``; opentile and OpenSlide (vendor ``philips``)
open it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from lamina.sample._jpeg import encode_jpeg, encode_strips, encode_tiles
from lamina.sample._tiff import ASCII, LONG, SHORT, UNDEFINED, Page, write_tiff
from lamina.sample.content import SlideContent, pyramid
from lamina.sample.identity import Identity

__all__ = ["MPP", "TILE", "philips_xml", "write_philips_tiff"]

TILE = 512
MPP = 0.25
QUALITY = 80
_JPEG, _YCBCR = 7, 6
_MAGNIFICATION = 40.0
# (name, group, element, PMS value representation)
_ATTRIBUTES = {
    "DICOM_ACQUISITION_DATETIME": ("0x0008", "0x002A", "IString"),
    "DICOM_DEVICE_SERIAL_NUMBER": ("0x0018", "0x1000", "IString"),
    "DICOM_MANUFACTURER": ("0x0008", "0x0070", "IString"),
    "DICOM_MANUFACTURERS_MODEL_NAME": ("0x0008", "0x1090", "IString"),
    "DICOM_SOFTWARE_VERSIONS": ("0x0018", "0x1020", "IStringArray"),
    "PIM_DP_UFS_BARCODE": ("0x301D", "0x1002", "IString"),
    "PIM_DP_UFS_INTERFACE_VERSION": ("0x301D", "0x1001", "IString"),
    "PIM_DP_SCANNED_IMAGES": ("0x301D", "0x1003", "IDataObjectArray"),
    "PIM_DP_IMAGE_TYPE": ("0x301D", "0x1004", "IString"),
    "PIM_DP_IMAGE_DATA": ("0x301D", "0x1005", "IString"),
    "PIM_DP_IMAGE_ROWS": ("0x301D", "0x1006", "IUInt32"),
    "PIM_DP_IMAGE_COLUMNS": ("0x301D", "0x1007", "IUInt32"),
    "DICOM_BITS_ALLOCATED": ("0x0028", "0x0100", "IUInt16"),
    "DICOM_BITS_STORED": ("0x0028", "0x0101", "IUInt16"),
    "DICOM_HIGH_BIT": ("0x0028", "0x0102", "IUInt16"),
    "DICOM_PIXEL_REPRESENTATION": ("0x0028", "0x0103", "IUInt16"),
    "DICOM_LOSSY_IMAGE_COMPRESSION": ("0x0028", "0x2110", "IString"),
    "DICOM_LOSSY_IMAGE_COMPRESSION_METHOD": ("0x0028", "0x2114", "IStringArray"),
    "DICOM_PHOTOMETRIC_INTERPRETATION": ("0x0028", "0x0004", "IString"),
    "DICOM_PIXEL_SPACING": ("0x0028", "0x0030", "IDoubleArray"),
    "DICOM_SAMPLES_PER_PIXEL": ("0x0028", "0x0002", "IUInt16"),
    "PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE": ("0x1001", "0x8B01", "IDataObjectArray"),
    "PIIM_PIXEL_DATA_REPRESENTATION_NUMBER": ("0x1001", "0x8B02", "IUInt16"),
    "PIIM_DP_PIXEL_DATA_REPRESENTATION_POSITION": ("0x101D", "0x100B", "IDoubleArray"),
    "PIIM_PIXEL_DATA_REPRESENTATION_ROWS": ("0x2001", "0x115D", "IUInt32"),
    "PIIM_PIXEL_DATA_REPRESENTATION_COLUMNS": ("0x2001", "0x115E", "IUInt32"),
}


def _attribute(name: str, value: str, depth: int) -> str:
    group, element, kind = _ATTRIBUTES[name]
    tabs = "\t" * depth
    return (
        f'{tabs}<Attribute Name="{name}" Group="{group}" Element="{element}" '
        f'PMSVR="{kind}">{value}</Attribute>\n'
    )


def _array(items: list[str]) -> str:
    return " ".join(f"&quot;{escape(item)}&quot;" for item in items)


def _objects(name: str, objects: list[str], depth: int) -> str:
    group, element, kind = _ATTRIBUTES[name]
    tabs = "\t" * depth
    return (
        f'{tabs}<Attribute Name="{name}" Group="{group}" Element="{element}" PMSVR="{kind}">\n'
        f"{tabs}\t<Array>\n{''.join(objects)}{tabs}\t</Array>\n{tabs}</Attribute>\n"
    )


def _object(kind: str, body: str, depth: int) -> str:
    tabs = "\t" * depth
    return f'{tabs}<DataObject ObjectType="{kind}">\n{body}{tabs}</DataObject>\n'


def _jpeg_base64(image: Image.Image) -> str:
    jpeg = encode_jpeg(np.asarray(image.convert("RGB")), QUALITY)
    return base64.b64encode(jpeg).decode("ascii")


def philips_xml(
    identity: Identity,
    padded_sizes: list[tuple[int, int]],
    label: Image.Image,
    macro: Image.Image,
) -> str:
    """Build the Philips DP XML of page 0.

    Parameters
    ----------
    identity : Identity
        The specimen ID is the slide barcode.
    padded_sizes : list of tuple of int
        ``(columns, rows)`` of each level as stored (padded to whole tiles).
    label, macro : PIL.Image.Image
        Embedded as base64 JPEG.

    Returns
    -------
    str
        The XML document.
    """
    levels = []
    for number, (columns, rows) in enumerate(padded_sizes):
        spacing = f"{MPP * 2**number / 1000:g}"
        body = (
            _attribute("DICOM_PIXEL_SPACING", _array([spacing, spacing]), 7)
            + _attribute("PIIM_DP_PIXEL_DATA_REPRESENTATION_POSITION", _array(["0"] * 3), 7)
            + _attribute("PIIM_PIXEL_DATA_REPRESENTATION_COLUMNS", str(columns), 7)
            + _attribute("PIIM_PIXEL_DATA_REPRESENTATION_NUMBER", str(number), 7)
            + _attribute("PIIM_PIXEL_DATA_REPRESENTATION_ROWS", str(rows), 7)
        )
        levels.append(_object("PixelDataRepresentation", body, 6))
    base = f"{MPP / 1000:g}"
    wsi = (
        _attribute("PIM_DP_IMAGE_TYPE", "WSI", 4)
        + _attribute("DICOM_BITS_ALLOCATED", "8", 4)
        + _attribute("DICOM_BITS_STORED", "8", 4)
        + _attribute("DICOM_HIGH_BIT", "7", 4)
        + _attribute("DICOM_LOSSY_IMAGE_COMPRESSION", "01", 4)
        + _attribute("DICOM_LOSSY_IMAGE_COMPRESSION_METHOD", _array(["PHILIPS_TIFF_1_0"]), 4)
        + _attribute("DICOM_PHOTOMETRIC_INTERPRETATION", "RGB", 4)
        + _attribute("DICOM_PIXEL_REPRESENTATION", "0", 4)
        + _attribute("DICOM_PIXEL_SPACING", _array([base, base]), 4)
        + _attribute("DICOM_SAMPLES_PER_PIXEL", "3", 4)
        + _objects("PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE", levels, 4)
        + _attribute("PIM_DP_IMAGE_COLUMNS", str(padded_sizes[0][0]), 4)
        + _attribute("PIM_DP_IMAGE_ROWS", str(padded_sizes[0][1]), 4)
    )
    images = [_object("DPScannedImage", wsi, 3)]
    for kind, image in (("LABELIMAGE", label), ("MACROIMAGE", macro)):
        body = _attribute("PIM_DP_IMAGE_DATA", _jpeg_base64(image), 4) + _attribute(
            "PIM_DP_IMAGE_TYPE", kind, 4
        )
        images.append(_object("DPScannedImage", body, 3))
    barcode = base64.b64encode(identity.specimen_id.encode("ascii")).decode("ascii")
    root = (
        _attribute("DICOM_ACQUISITION_DATETIME", "20261128091402.000000", 1)
        + _attribute("DICOM_DEVICE_SERIAL_NUMBER", "FMT0417", 1)
        + _attribute("DICOM_MANUFACTURER", "PHILIPS", 1)
        + _attribute("DICOM_MANUFACTURERS_MODEL_NAME", "UFS Scanner", 1)
        + _attribute("DICOM_SOFTWARE_VERSIONS", _array(["1.8.6824", "20180906_R51"]), 1)
        + _objects("PIM_DP_SCANNED_IMAGES", images, 1)
        + _attribute("PIM_DP_UFS_BARCODE", barcode, 1)
        + _attribute("PIM_DP_UFS_INTERFACE_VERSION", "5.0", 1)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        f'<DataObject ObjectType="DPUfsImport">\n{root}</DataObject>\n'
    )


def _padded(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    height, width = pixels.shape[:2]
    pad_h, pad_w = -height % TILE, -width % TILE
    return np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=255)


def _page(pixels: NDArray[np.uint8], description: str, tiled: bool, subfile: int) -> Page:
    if tiled:
        tables, segments = encode_tiles(pixels, TILE, QUALITY)
    else:
        tables, segments = encode_strips(pixels, pixels.shape[0], QUALITY)
    return Page(
        pixels.shape[1],
        pixels.shape[0],
        segments,
        _JPEG,
        _YCBCR,
        tile=TILE if tiled else None,
        rows_per_strip=None if tiled else pixels.shape[0],
        tags={
            254: (LONG, [subfile]),
            270: (ASCII, description),
            305: (ASCII, "Philips DP v1.0"),
            347: (UNDEFINED, tables),
            530: (SHORT, [2, 2]),
        },
    )


def write_philips_tiff(path: Path, slide: SlideContent, identity: Identity) -> Path:
    """Write a Philips TIFF file.

    Parameters
    ----------
    path : pathlib.Path
        Output file (``.tiff``).
    slide : SlideContent
        Tissue, label and macro pixels.
    identity : Identity
        The specimen ID is the barcode in the XML.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    levels = [_padded(level) for level in pyramid(slide.pixels, 2, TILE)]
    sizes = [(level.shape[1], level.shape[0]) for level in levels]
    xml = philips_xml(identity, sizes, slide.label, slide.overview)
    pages = [_page(levels[0], xml, tiled=True, subfile=0)]
    for number, level in enumerate(levels[1:], start=1):
        description = f"level={number} mag={_MAGNIFICATION / 2**number:g} quality={QUALITY}"
        pages.append(_page(level, description, tiled=True, subfile=1))
    for name, image in (("Label", slide.label), ("Macro", slide.overview)):
        pages.append(_page(np.asarray(image.convert("RGB")), name, tiled=False, subfile=1))
    write_tiff(path, pages)
    return path
