"""Leica SCN (SCN400, SCN400F): a (Big)TIFF whose JPEG tiles are copied as DICOM frames.

Page 0's ImageDescription is an XML document (namespace
``http://www.leica-microsystems.com/scn/2010/10/01``, or the older ``2010/03/10``) that
describes a *collection* (the glass slide, ``sizeX``/``sizeY`` in nm, a base64 ``barcode``) of
*images*, each with its ``pixels/dimension`` list (``sizeX``, ``sizeY``, ``ifd``: the TIFF page,
``z``: the focal plane, ``c``: the channel) and its ``view`` (size and offset in the collection,
in nm). As in OpenSlide's ``leica`` reader:

* the macro (overview) is the image whose view is the whole collection; its largest dimension
  becomes the OVERVIEW image;
* the other image is the main image, whose dimensions (focal plane 0) are the pyramid levels,
  largest first: each a tiled page, its tiles copied as stored. Its pixel spacing is the view's
  size in nm over the dimension's size in pixels;
* its ``creationDate``, ``device`` (model, version), ``objective`` and the barcode are the
  slide's metadata.

What lamina refuses, each in one line: a slide with several main images (regions scanned apart:
OpenSlide composes them on one canvas of mostly empty glass, which DICOM's single total pixel
matrix per instance cannot hold without inventing the glass between them), a fluorescence scan
(its channels are separate pages lamina does not assemble yet), and a z-stack.

The XML is parsed with defusedxml (no entity expansion, no external entities) and only up to
:data:`MAX_XML_BYTES`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import tifffile
from defusedxml import ElementTree

from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats.images import TiffTiledImage, decoded_page, require_8bit
from lamina.formats.source import SlideMetadata, SlideSource, SourceOptions
from lamina.formats.tiff_common import open_tiff, pages_of, reading_page, sniff_tiff
from lamina.model.enums import ImageFlavorValues
from lamina.model.geometry import SizeMm, SizePx
from lamina.model.slide import SlideIdentity

NAMESPACES = (
    "http://www.leica-microsystems.com/scn/2010/10/01",
    "http://www.leica-microsystems.com/scn/2010/03/10",
)
#: A real SCN's XML is a few kilobytes; a description past this is not one (or is hostile).
MAX_XML_BYTES = 4 << 20
BRIGHTFIELD = "brightfield"
_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"


@dataclass(frozen=True)
class ScnDimension:
    """One ``pixels/dimension``: a page of the image at one resolution, plane and channel."""

    width: int
    height: int
    ifd: int
    z: int
    c: int


@dataclass(frozen=True)
class ScnImage:
    """One ``collection/image``: the macro or a scanned region."""

    name: str
    dimensions: tuple[ScnDimension, ...]
    view_nm: tuple[int, int]
    offset_nm: tuple[int, int]
    creation_date: str | None
    device_model: str | None
    device_version: str | None
    objective: str | None
    numerical_aperture: str | None
    illumination: str | None

    def is_macro(self, collection_nm: tuple[int, int]) -> bool:
        """OpenSlide's rule: the macro's view starts at 0 and covers the whole collection."""
        return self.offset_nm == (0, 0) and self.view_nm == collection_nm

    @property
    def brightfield(self) -> bool:
        return (self.illumination or "").strip() == BRIGHTFIELD

    def plane(self, z: int = 0, c: int = 0) -> list[ScnDimension]:
        """The dimensions of focal plane ``z`` and channel ``c``, largest first."""
        found = [d for d in self.dimensions if d.z == z and d.c == c]
        return sorted(found, key=lambda d: -d.width * d.height)


@dataclass(frozen=True)
class ScnDocument:
    """Page 0's XML: the collection and its images."""

    collection_nm: tuple[int, int]
    barcode: str | None
    images: tuple[ScnImage, ...]

    @property
    def macros(self) -> list[ScnImage]:
        return [image for image in self.images if image.is_macro(self.collection_nm)]

    @property
    def mains(self) -> list[ScnImage]:
        return [image for image in self.images if not image.is_macro(self.collection_nm)]


def _strip(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(node: Any, name: str) -> Any:
    return next((child for child in node if _strip(child.tag) == name), None)


def _text(node: Any, *names: str) -> str | None:
    for name in names:
        node = _child(node, name) if node is not None else None
    text = node.text if node is not None else None
    return text.strip() or None if text else None


def _int(path: Path, node: Any, name: str, where: str) -> int:
    value = node.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CorruptSourceError(
            path, f"the SCN XML's {where} has no integer {name} ({value!r}); {_DAMAGED}"
        ) from None


def parse_scn(path: Path, xml: str) -> ScnDocument:
    """Page 0's ImageDescription as an :class:`ScnDocument`; CorruptSourceError when it is not one."""
    if len(xml) > MAX_XML_BYTES:
        raise CorruptSourceError(
            path, f"page 0's ImageDescription is {len(xml)} bytes, not a Leica SCN XML; {_DAMAGED}"
        )
    try:
        root = ElementTree.fromstring(xml)
    except Exception as exc:
        raise CorruptSourceError(path, f"page 0's Leica SCN XML cannot be parsed; {_DAMAGED}") from exc
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    collection = _child(root, "collection")
    if _strip(root.tag) != "scn" or namespace not in NAMESPACES or collection is None:
        raise CorruptSourceError(path, f"page 0's XML is not a Leica SCN collection; {_DAMAGED}")
    size = (_int(path, collection, "sizeX", "collection"), _int(path, collection, "sizeY", "collection"))
    images = []
    for number, node in enumerate(child for child in collection if _strip(child.tag) == "image"):
        where = f"image {number}"
        view = _child(node, "view")
        pixels = _child(node, "pixels")
        if view is None or pixels is None:
            raise CorruptSourceError(path, f"the SCN XML's {where} has no view or no pixels; {_DAMAGED}")
        dimensions = tuple(
            ScnDimension(
                _int(path, dim, "sizeX", f"{where}'s dimension"),
                _int(path, dim, "sizeY", f"{where}'s dimension"),
                _int(path, dim, "ifd", f"{where}'s dimension"),
                int(dim.get("z") or 0),
                int(dim.get("c") or 0),
            )
            for dim in pixels
            if _strip(dim.tag) == "dimension"
        )
        device = _child(node, "device")
        images.append(
            ScnImage(
                name=node.get("name") or where,
                dimensions=dimensions,
                view_nm=(
                    _int(path, view, "sizeX", f"{where}'s view"),
                    _int(path, view, "sizeY", f"{where}'s view"),
                ),
                offset_nm=(
                    _int(path, view, "offsetX", f"{where}'s view"),
                    _int(path, view, "offsetY", f"{where}'s view"),
                ),
                creation_date=_text(node, "creationDate"),
                device_model=device.get("model") if device is not None else None,
                device_version=device.get("version") if device is not None else None,
                objective=_text(node, "scanSettings", "objectiveSettings", "objective"),
                numerical_aperture=_text(node, "scanSettings", "illuminationSettings", "numericalAperture"),
                illumination=_text(node, "scanSettings", "illuminationSettings", "illuminationSource"),
            )
        )
    return ScnDocument(size, _barcode(collection, namespace), tuple(images))


def _barcode(collection: Any, namespace: str) -> str | None:
    """The 2010/10/01 namespace stores the barcode base64 in an element; the older one as an
    attribute, kept as written (as OpenSlide does: whether it is encoded is not known)."""
    coded = _text(collection, "barcode")
    if coded is None:
        return collection.get("barcode") or None
    try:
        return base64.b64decode(coded, validate=True).decode("utf-8").strip() or None
    except (binascii.Error, UnicodeDecodeError):
        return coded


def _acquired(text: str | None) -> dt.datetime | None:
    """``2010-10-08T11:38:47.34Z`` (ISO 8601) as a date-time; None when unreadable."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def _power(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if value > 0 else None


class ScnSource(SlideSource):
    format_name = "leica_scn"
    display_name = "Leica SCN"
    suffixes = (".scn",)

    @classmethod
    def detect(cls, path: Path) -> bool:
        return sniff_tiff(path, lambda tiff: tiff.is_scn, cls)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        self._tiff = open_tiff(path)
        try:
            self._open(path)
        except BaseException:
            self._tiff.close()
            raise

    def _open(self, path: Path) -> None:
        pages = pages_of(self._tiff)
        self._document = document = parse_scn(path, pages[0].description or "")
        mains = document.mains
        if not mains:
            raise CorruptSourceError(path, f"the SCN XML lists no main image, only the macro; {_DAMAGED}")
        if any(not image.brightfield for image in mains):
            raise UnsupportedFormatError(
                path, "a fluorescence Leica SCN: lamina reads brightfield SCN slides (one RGB page per level)"
            )
        if len(mains) > 1:
            raise UnsupportedFormatError(
                path,
                f"a Leica SCN of {len(mains)} regions scanned apart: lamina reads SCN slides of one "
                "scanned region; export each region from Leica's software and ingest them one by one",
            )
        self._main = main = mains[0]
        if any(d.z != 0 for d in main.dimensions) or any(d.c != 0 for d in main.dimensions):
            raise UnsupportedFormatError(
                path, "a Leica SCN z-stack or multi-channel scan: lamina reads SCN slides of one plane"
            )
        self._icc: bytes | None = None
        for dimension in main.plane():
            page = self._page(pages, dimension, "a level of the main image")
            self._icc = self._icc or page.iccprofile or None
            if not page.is_tiled:
                raise CorruptSourceError(path, f"page {page.index}, a level of the main image, is not tiled")
            spacing = SizeMm(
                main.view_nm[0] / dimension.width * 1e-6, main.view_nm[1] / dimension.height * 1e-6
            )
            with reading_page(path, page):
                self._levels.append(TiffTiledImage(self._tiff, page, ImageFlavorValues.VOLUME, spacing))
        macros = [image for image in document.macros if image.brightfield and image.plane()]
        if macros:
            page = self._page(pages, macros[0].plane()[0], "the macro image")
            with reading_page(path, page, "the overview image"):
                self._associated.append(decoded_page(page, ImageFlavorValues.OVERVIEW))

    def _page(self, pages: list[tifffile.TiffPage], dimension: ScnDimension, what: str) -> tifffile.TiffPage:
        if not 0 <= dimension.ifd < len(pages):
            raise CorruptSourceError(
                self.path,
                f"the SCN XML places {what} in TIFF directory {dimension.ifd}, but the file has "
                f"{len(pages)}; {_DAMAGED}",
            )
        page = pages[dimension.ifd]
        require_8bit(self.path, page)
        found = SizePx(int(page.imagewidth), int(page.imagelength))
        if found != SizePx(dimension.width, dimension.height):
            raise CorruptSourceError(
                self.path,
                f"page {page.index} ({what}) is {found} pixels, but the SCN XML says "
                f"{dimension.width}x{dimension.height}; {_DAMAGED}",
            )
        return page

    @cached_property
    def metadata(self) -> SlideMetadata:
        main = self._main
        model = (main.device_model or "").split(";")[0].strip() or None
        versions = tuple(v.strip() for v in (main.device_version or "").split(";") if v.strip())
        return SlideMetadata(
            manufacturer="Leica",
            model_name=model,
            software_versions=versions,
            acquisition_datetime=_acquired(main.creation_date),
            objective_power=_power(main.objective),
            icc_profile=self._icc,
            identity=SlideIdentity(container_id=self._document.barcode),
            extra={"numerical_aperture": main.numerical_aperture} if main.numerical_aperture else {},
        )

    def close(self) -> None:
        self._tiff.close()
