"""OME-TIFF channels and focal planes: the OME-XML that describes them, and one pyramid level.

An OME-TIFF of a fluorescence scan or a z-stack stores one TIFF page per plane: its first image
series has axes such as ``CZYX``, ``ZCYX``, ``ZYX`` or ``CYX`` (tifffile's, with a time axis of
one point squeezed out), each pyramid level a SubIFD (or reduced page) of every plane. A level
becomes one :class:`~lamina.formats.source.SourceImage` whose optical paths are the channels (C)
and whose focal planes are Z, the plane of ``(z, c)`` found through the series' page order (the
OME ``TiffData`` elements, as tifffile reads them).

Tiles are read one at a time from the plane's page; a stripped page is decoded in bands of whole
strips (a strip cannot be decoded in part), a few bands kept for the whole level. 8-bit JPEG tiles
are copied as stored; other compressions are decoded and lamina's writer re-encodes them
losslessly.

The OME-XML (``<Pixels>``: PhysicalSize*, SignificantBits; ``<Channel>``: Name, wavelengths,
Color, IlluminationType; the objective's NominalMagnification; AcquisitionDate) gives the
:class:`~lamina.formats.source.SlideMetadata`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from lamina.formats.images import TiffTiledImage
from lamina.formats.planes import STRIP_TILE, JoinedFrames, StripBands, page_tile
from lamina.formats.source import (
    Buffer,
    OpticalPath,
    Pixels,
    ReadObserver,
    SourceImage,
    check_geometry,
)
from lamina.model.enums import ImageFlavorValues
from lamina.model.geometry import SizeMm, SizePx

_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"
#: Bands of a stripped level kept decoded (the band being written, and one for the 2x2 reads of a
#: generated level, of any plane).
_BANDS_KEPT = 4
#: The OME-XML read at most (it lists one TiffData per plane: a few MB for thousands of planes).
MAX_XML_BYTES = 64 << 20
_JPEG = 7
_LENGTH_MM = {"Å": 1e-7, "nm": 1e-6, "µm": 1e-3, "um": 1e-3, "mm": 1.0, "cm": 10.0, "m": 1e3}
_WAVELENGTH_NM = {"pm": 1e-3, "Å": 0.1, "nm": 1.0, "µm": 1e3, "um": 1e3, "mm": 1e6, "m": 1e9}


# --- the OME-XML ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OmePixels:
    """What the first image's OME-XML says (the fields lamina uses); every one optional."""

    spacing: SizeMm | None = None
    z_spacing_mm: float | None = None
    significant_bits: int | None = None
    channels: tuple[OpticalPath, ...] = ()
    #: Whether a channel says it is fluorescence (IlluminationType, an excitation wavelength).
    fluorescence: bool = False
    objective_power: float | None = None
    acquired: dt.datetime | None = None
    manufacturer: str | None = None
    model_name: str | None = None
    creator: str | None = None


def _parse(xml: str) -> Any:
    if len(xml) > MAX_XML_BYTES:
        return None
    try:
        from defusedxml import ElementTree
    except ImportError:  # pragma: no cover - defusedxml is a dependency
        import xml.etree.ElementTree as ElementTree
    try:
        return ElementTree.fromstring(xml)
    except Exception:
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: Any, name: str) -> list[Any]:
    return [child for child in element if _local(child.tag) == name]


def _first(element: Any, name: str) -> Any:
    found = _children(element, name)
    return found[0] if found else None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and np.isfinite(value) and value > 0 else None


def _length_mm(element: Any, name: str) -> float | None:
    value = _number(element.get(name))
    scale = _LENGTH_MM.get(element.get(f"{name}Unit", "µm"))
    return value * scale if value is not None and scale is not None else None


def _wavelength_nm(element: Any, name: str) -> float | None:
    value = _number(element.get(name))
    scale = _WAVELENGTH_NM.get(element.get(f"{name}Unit", "nm"))
    return value * scale if value is not None and scale is not None else None


def ome_color(text: str | None) -> tuple[int, int, int] | None:
    """OME's Color: a signed 32-bit integer of red, green, blue and alpha bytes, red highest."""
    try:
        number = int(text or "") & 0xFFFFFFFF
    except ValueError:
        return None
    return (number >> 24) & 255, (number >> 16) & 255, (number >> 8) & 255


def _datetime(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    text = text.strip().replace("Z", "+00:00")
    if "." in text:  # OME allows any fraction of a second; Python reads 6 digits
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{tail[len(digits) :]}"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def _channel(element: Any) -> tuple[OpticalPath, bool]:
    excitation = _wavelength_nm(element, "ExcitationWavelength")
    said = (element.get("IlluminationType") or "").lower() == "epifluorescence" or excitation is not None
    name = element.get("Name") or element.get("Fluor") or None
    path = OpticalPath(
        description=name,
        illumination_nm=excitation,
        emission_nm=_wavelength_nm(element, "EmissionWavelength"),
        color=ome_color(element.get("Color")) if element.get("Color") is not None else None,
    )
    return path, said


def read_ome_pixels(xml: str) -> OmePixels:
    """The first image's pixels, channels and acquisition, from an OME-XML document."""
    root = _parse(xml)
    image = _first(root, "Image") if root is not None else None
    pixels = _first(image, "Pixels") if image is not None else None
    if pixels is None:
        return OmePixels()
    x, y = _length_mm(pixels, "PhysicalSizeX"), _length_mm(pixels, "PhysicalSizeY")
    bits = pixels.get("SignificantBits")
    channels = [_channel(element) for element in _children(pixels, "Channel")]
    objective, manufacturer, model = _instrument(root, image)
    date = _first(image, "AcquisitionDate")
    return OmePixels(
        spacing=SizeMm(x, y if y is not None else x) if x is not None else None,
        z_spacing_mm=_length_mm(pixels, "PhysicalSizeZ"),
        significant_bits=int(bits) if bits and bits.isdigit() else None,
        channels=tuple(path for path, _ in channels),
        fluorescence=any(said for _, said in channels),
        objective_power=objective,
        acquired=_datetime(date.text) if date is not None else None,
        manufacturer=manufacturer,
        model_name=model,
        creator=root.get("Creator") or None,
    )


def _instrument(root: Any, image: Any) -> tuple[float | None, str | None, str | None]:
    """(NominalMagnification of the image's objective, the microscope's Manufacturer and Model)."""
    settings = _first(image, "ObjectiveSettings")
    wanted = settings.get("ID") if settings is not None else None
    instruments = _children(root, "Instrument")
    power = None
    for instrument in instruments:
        for objective in _children(instrument, "Objective"):
            if wanted is None or objective.get("ID") == wanted:
                power = _number(objective.get("NominalMagnification"))
                break
        if power is not None:
            break
    microscope = _first(instruments[0], "Microscope") if instruments else None
    if microscope is None:
        return power, None, None
    return power, microscope.get("Manufacturer") or None, microscope.get("Model") or None


# --- one pyramid level -----------------------------------------------------------------------------


class _PlaneTiles(TiffTiledImage):
    """The JPEG tiles of one plane, copied as stored (the keyframe says how they are encoded)."""

    def __init__(
        self,
        tiff: tifffile.TiffFile,
        keyframe: tifffile.TiffPage,
        page: tifffile.TiffPage | tifffile.TiffFrame,
        spacing: SizeMm,
    ) -> None:
        super().__init__(tiff, keyframe, ImageFlavorValues.VOLUME, spacing)
        self._offsets, self._counts = page.dataoffsets, page.databytecounts
        self._tables = page.jpegtables or self._tables


class OmePlanesLevel(SourceImage):
    """One pyramid level: a page per (focal plane, channel), frames in TILED_FULL order."""

    def __init__(
        self,
        tiff: tifffile.TiffFile,
        keyframe: tifffile.TiffPage,
        pages: Sequence[tifffile.TiffPage | tifffile.TiffFrame],
        focal_planes: int,
        spacing: SizeMm,
        bits_stored: int,
    ) -> None:
        """``pages`` in frame order: the focal planes of the first channel, then the next...;
        ``keyframe`` the page whose tags they share."""
        self._path = Path(tiff.filehandle.path)
        self._pages = list(pages)
        self.flavor = ImageFlavorValues.VOLUME
        self.size = SizePx(int(keyframe.imagewidth), int(keyframe.imagelength))
        self.samples_per_pixel = int(keyframe.samplesperpixel)
        self.pixel_spacing = spacing
        self.focal_planes = focal_planes
        self.optical_paths = len(self._pages) // focal_planes
        self.bits_stored = bits_stored
        self.encoding = None
        self.source_lossy = int(keyframe.compression) in (_JPEG, 33003, 33005, 34712)
        self._fd = fd = tiff.filehandle.fileno()
        self._copied = JoinedFrames(())
        self._bands: StripBands | None = None
        if keyframe.is_tiled:
            self.tile_size = SizePx(int(keyframe.tilewidth), int(keyframe.tilelength))
            if int(keyframe.compression) == _JPEG and keyframe.dtype == np.uint8:
                copied = [_PlaneTiles(tiff, keyframe, page, spacing) for page in self._pages]
                if copied[0].encoding is not None:
                    self._copied = JoinedFrames(copied)
                    self.encoding = copied[0].encoding
        else:
            self.tile_size = SizePx(STRIP_TILE, STRIP_TILE)
            self._bands = StripBands(
                self._path, fd, keyframe, self._pages, STRIP_TILE, self.dtype, _BANDS_KEPT
            )
        check_geometry(self._path, f"page {keyframe.index}", self.size, self.tile_size)
        if keyframe.is_tiled:
            for page in self._pages:
                check_geometry(
                    self._path, f"page {page.index}", self.size, self.tile_size, len(page.dataoffsets)
                )

    def set_observer(self, observer: ReadObserver) -> None:
        self.read_observer = observer
        for image in self._copied.images:
            image.read_observer = observer
        if self._bands is not None:
            self._bands.observer = observer

    def read_frame(self, index: int) -> bytes:
        if not self._copied.images:
            return super().read_frame(index)
        return self._copied.read_frame(index, self.grid.area)

    def frame_lengths(self) -> Sequence[int] | None:
        return self._copied.frame_lengths() if self._copied.images else None

    def iter_frame_parts(self) -> Iterator[Sequence[Buffer]]:
        if not self._copied.images:
            return super().iter_frame_parts()
        return self._copied.iter_frame_parts()

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        plane = z + c * self.focal_planes
        observer = None if self._copied.images else self.read_observer  # copied frames tell it already
        return page_tile(
            self, self._path, self._fd, self._pages[plane], plane, col, row, self._bands, observer
        )
