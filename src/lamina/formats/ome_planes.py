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
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats.codec import damage
from lamina.formats.images import TiffTiledImage
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
#: The tile of a stripped page, decoded from the strips that cover it.
STRIP_TILE = 512
#: Bands of a stripped level kept decoded (the band being written, and one for the 2x2 reads of a
#: generated level, of any plane).
_BANDS_KEPT = 4
#: A strip decoded at once; a taller one (a whole plane in one strip) is refused, not read whole.
MAX_STRIP_BYTES = 256 << 20
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


class _Bands:
    """The stripped planes of a level, decoded in bands of whole strips (a few kept)."""

    def __init__(self, path: Path, fd: int, keyframe: tifffile.TiffPage, band: int, dtype: Any) -> None:
        self._path, self._fd, self._keyframe, self._band, self._dtype = path, fd, keyframe, band, dtype
        self._width, self._height = int(keyframe.imagewidth), int(keyframe.imagelength)
        self._samples = int(keyframe.samplesperpixel)
        self._rows = min(int(keyframe.rowsperstrip or self._height), self._height)
        strip_bytes = self._rows * self._width * self._samples * np.dtype(dtype).itemsize
        if strip_bytes > MAX_STRIP_BYTES:
            raise UnsupportedFormatError(
                path,
                f"page {keyframe.index} is stored in strips of {self._rows} rows ({strip_bytes >> 20} MB "
                "each): convert it to a tiled pyramid (e.g. bfconvert -tilex 512 -tiley 512)",
            )
        self._kept: OrderedDict[tuple[int, int], Pixels] = OrderedDict()
        self.observer: ReadObserver | None = None

    def band(self, page: tifffile.TiffPage | tifffile.TiffFrame, plane: int, index: int) -> Pixels:
        """Rows ``[index * band, (index + 1) * band)`` of ``page``, the last band padded with 0."""
        key = (plane, index)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        out = np.zeros((self._band, self._width, self._samples), self._dtype)
        top = index * self._band
        bottom = min(top + self._band, self._height)
        strips = -(-self._height // self._rows)
        if len(page.dataoffsets) != strips:
            raise CorruptSourceError(
                self._path,
                f"page {page.index} lists {len(page.dataoffsets)} strips, but {self._height} rows in strips "
                f"of {self._rows} make {strips}; {_DAMAGED}",
            )
        for strip in range(top // self._rows, -(-bottom // self._rows)):
            first = strip * self._rows
            rows = min(self._rows, self._height - first)
            pixels = _read_segment(self._path, self._fd, page, strip, self.observer)
            pixels = pixels.reshape(-1, self._width, self._samples)[:rows]
            lo, hi = max(first, top), min(first + rows, bottom)
            out[lo - top : hi - top] = pixels[lo - first : hi - first]
        self._kept[key] = out
        while len(self._kept) > _BANDS_KEPT:
            self._kept.popitem(last=False)
        return out


def _read_segment(
    path: Path,
    fd: int,
    page: tifffile.TiffPage | tifffile.TiffFrame,
    index: int,
    observer: ReadObserver | None,
) -> Pixels:
    """Tile or strip ``index`` of ``page`` read and decoded, or CorruptSourceError naming it."""
    offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
    data = os.pread(fd, count, offset)
    if len(data) != count:
        raise CorruptSourceError(path, f"truncated: segment {index} of page {page.index} ends past the end")
    if observer is not None:
        observer(path, offset, data)
    try:
        segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        return np.asarray(segment)
    except Exception as exc:
        raise CorruptSourceError(
            path, f"page {page.index}, segment {index} cannot be decoded: {damage(exc)}; {_DAMAGED}"
        ) from exc


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
        self._copied: list[_PlaneTiles] = []
        self._bands: _Bands | None = None
        if keyframe.is_tiled:
            self.tile_size = SizePx(int(keyframe.tilewidth), int(keyframe.tilelength))
            if int(keyframe.compression) == _JPEG and keyframe.dtype == np.uint8:
                copied = [_PlaneTiles(tiff, keyframe, page, spacing) for page in self._pages]
                if copied[0].encoding is not None:
                    self._copied = copied
                    self.encoding = copied[0].encoding
        else:
            self.tile_size = SizePx(STRIP_TILE, STRIP_TILE)
            self._bands = _Bands(self._path, fd, keyframe, STRIP_TILE, self.dtype)
        check_geometry(self._path, f"page {keyframe.index}", self.size, self.tile_size)
        if keyframe.is_tiled:
            for page in self._pages:
                check_geometry(
                    self._path, f"page {page.index}", self.size, self.tile_size, len(page.dataoffsets)
                )

    def set_observer(self, observer: ReadObserver) -> None:
        self.read_observer = observer
        for image in self._copied:
            image.read_observer = observer
        if self._bands is not None:
            self._bands.observer = observer

    def read_frame(self, index: int) -> bytes:
        if not self._copied:
            return super().read_frame(index)
        plane, at = divmod(index, self.grid.area)
        return self._copied[plane].read_frame(at)

    def frame_lengths(self) -> Sequence[int] | None:
        if not self._copied:
            return None
        lengths: list[int] = []
        for image in self._copied:
            found = image.frame_lengths()
            if found is None:
                return None
            lengths.extend(found)
        return lengths

    def iter_frame_parts(self) -> Iterator[Sequence[Buffer]]:
        if not self._copied:
            yield from super().iter_frame_parts()
            return
        for image in self._copied:
            yield from image.iter_frame_parts()

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        plane = z + c * self.focal_planes
        page = self._pages[plane]
        tw, th = self.tile_size.width, self.tile_size.height
        shape = (th, tw, self.samples_per_pixel)
        if self._bands is not None:
            tile = self._bands.band(page, plane, row)[:, col * tw : (col + 1) * tw]
            if tile.shape[1] == tw:
                return tile
            out = np.zeros(shape, self.dtype)
            out[:, : tile.shape[1]] = tile
            return out
        index = row * self.grid.width + col
        if not int(page.databytecounts[index]):
            return np.zeros(shape, self.dtype)
        observer = None if self._copied else self.read_observer  # copied frames tell it already
        segment = _read_segment(self._path, self._fd, page, index, observer)
        return segment.reshape(shape).astype(self.dtype, copy=False)
