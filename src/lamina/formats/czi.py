"""Zeiss CZI, read through libCZI (pylibCZIrw): pixel-exact, every focal plane and channel.

A CZI holds subblocks (camera tiles, JPEG XR, zstd or uncompressed, often overlapping, with
their own pyramid) that libCZI composes into a plane at any rectangle. Since DICOM has no place
for JPEG XR or zstd and the subblocks are not on a regular grid, lamina asks libCZI for level 0,
one 512x512 tile of one plane at a time, and writes it losslessly (JPEG 2000): every pixel equals
what libCZI returns. The lower levels are computed by lamina from level 0 (libCZI's own pyramid
subblocks are not used). The slide is the bounding rectangle of all its scenes; what lies between
scenes is background (white for brightfield, black for fluorescence).

Pixel types: Bgr24 (brightfield, written as RGB), Gray8 and Gray16 (fluorescence: one optical
path per channel). Refused with the reason: other pixel types (Bgr48, Gray32Float...), time
series, several samples per channel with several channels.
"""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path
from typing import Any

import numpy as np

from lamina.errors import CorruptSourceError, MissingMetadataError, UnsupportedFormatError
from lamina.formats.source import (
    OpticalPath,
    Pixels,
    SlideMetadata,
    SlideSource,
    SourceImage,
    SourceOptions,
)
from lamina.model.enums import ImageFlavorValues, LossyImageCompressionMethodValues
from lamina.model.geometry import SizeMm, SizePx

MAGIC = b"ZISRAWFILE"
TILE = 512
#: pylibCZIrw's pixel types lamina reads: (samples per pixel, bits stored).
PIXEL_TYPES = {"Bgr24": (3, 8), "Gray8": (1, 8), "Gray16": (1, 16)}
_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"
#: Subblock compressions (DirectoryEntryDV.Compression) that lose pixels: JPEG, and JPEG XR, whose
#: lossless mode the directory does not tell apart (lamina says lossy, the safe side).
LOSSY_COMPRESSIONS = {
    1: LossyImageCompressionMethodValues.ISO_10918_1,
    4: LossyImageCompressionMethodValues.ISO_29199_2,
}
_SEGMENT = struct.Struct("<16sqq")
_ENTRY = struct.Struct("<2siqiiB5xi")  # DirectoryEntryDV without its dimension entries
_DIMENSION_SIZE = 20


def subblock_compressions(path: Path) -> set[int]:
    """The compressions of the file's subblocks, from its subblock directory (ZISRAWDIRECTORY),
    read with every count and position checked against the file's size."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(_SEGMENT.size + 80)
        if len(head) < _SEGMENT.size + 80:
            raise CorruptSourceError(path, f"the file header segment is cut short; {_DAMAGED}")
        (directory_at,) = struct.unpack_from("<q", head, _SEGMENT.size + 52)
        if not 0 < directory_at <= size - _SEGMENT.size - 128:
            raise CorruptSourceError(
                path, f"DirectoryPosition {directory_at} is outside the file ({size} bytes); {_DAMAGED}"
            )
        fh.seek(directory_at)
        segment = fh.read(_SEGMENT.size + 128)
        name, _, used = _SEGMENT.unpack_from(segment)
        if name.rstrip(b"\0") != b"ZISRAWDIRECTORY":
            raise CorruptSourceError(path, f"no subblock directory at byte {directory_at}; {_DAMAGED}")
        (count,) = struct.unpack_from("<i", segment, _SEGMENT.size)
        if not 0 <= count <= (size - directory_at) // _ENTRY.size:
            raise CorruptSourceError(
                path, f"the directory's EntryCount {count} does not fit the file; {_DAMAGED}"
            )
        data = fh.read(min(max(0, used - 128), size - directory_at))
    found: set[int] = set()
    at = 0
    for _ in range(count):
        if at + _ENTRY.size > len(data):
            raise CorruptSourceError(
                path, f"the subblock directory is cut short at entry {len(found)}; {_DAMAGED}"
            )
        schema, _, _, _, compression, _, dimensions = _ENTRY.unpack_from(data, at)
        if schema != b"DV" or not 0 <= dimensions <= 16:
            raise CorruptSourceError(
                path, f"subblock directory entry at byte {directory_at + 160 + at} is damaged; {_DAMAGED}"
            )
        found.add(compression)
        at += _ENTRY.size + dimensions * _DIMENSION_SIZE
    return found


def _library_error(path: Path, what: str, exc: Exception) -> CorruptSourceError:
    detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return CorruptSourceError(path, f"{what}: libCZI says {detail!r}; {_DAMAGED}")


class CziLevel(SourceImage):
    """Level 0 of a CZI: tiles of 512 asked of libCZI, one plane of one channel at a time."""

    def __init__(self, source: CziSource, x: int, y: int, size: SizePx, samples: int, bits: int) -> None:
        self._source = source
        self._origin = (x, y)
        self.flavor = ImageFlavorValues.VOLUME
        self.size = size
        self.tile_size = SizePx(min(TILE, size.width), min(TILE, size.height))
        self.samples_per_pixel = samples
        self.pixel_spacing = source.spacing
        self.encoding = None
        self.source_lossy = source.lossy_method is not None
        self.lossy_method = source.lossy_method
        self.lossy_ratio = source.lossy_ratio
        self.bits_stored = bits
        self.focal_planes = source.planes
        self.optical_paths = source.channels if samples == 1 else 1

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        tw, th = self.tile_size.width, self.tile_size.height
        left, top = col * tw, row * th
        width, height = min(tw, self.size.width - left), min(th, self.size.height - top)
        background = 255 if self.samples_per_pixel == 3 else 0
        out = np.full((th, tw, self.samples_per_pixel), background, self.dtype)
        roi = (self._origin[0] + left, self._origin[1] + top, width, height)
        plane = {"C": c, "Z": z, "T": 0}
        try:
            pixels = self._source.reader.read(
                roi=roi, plane=plane, background_pixel=(background / 255.0,) * 3
            )
        except Exception as exc:
            raise _library_error(
                self._source.path, f"tile ({col}, {row}) of focal plane {z + 1}, channel {c + 1}", exc
            ) from exc
        array = np.asarray(pixels)
        if array.shape[:2] != (height, width) or array.dtype != self.dtype:
            raise CorruptSourceError(
                self._source.path,
                f"tile ({col}, {row}): libCZI returned {array.shape} {array.dtype} for a region of "
                f"{width}x{height}; {_DAMAGED}",
            )
        if self.samples_per_pixel == 3:
            array = array[..., ::-1]  # Bgr24: blue first
        out[:height, :width] = array.reshape(height, width, self.samples_per_pixel)
        return out


class CziSource(SlideSource):
    format_name = "zeiss_czi"
    display_name = "Zeiss CZI"
    priority = 60
    suffixes = (".czi",)

    @classmethod
    def detect(cls, path: Path) -> bool:
        try:
            with path.open("rb") as fh:
                head = fh.read(len(MAGIC))
        except OSError:
            return False
        return head == MAGIC or cls.named_like(path)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        import pylibCZIrw.czi as pyczi

        with path.open("rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                raise UnsupportedFormatError(path, "not a CZI file (no ZISRAWFILE segment at its start)")
        try:
            self._context = pyczi.open_czi(str(path))
            self.reader: Any = self._context.__enter__()
            box = self.reader.total_bounding_box
            rect = self.reader.total_bounding_rectangle
            pixel_types = dict(self.reader.pixel_types)
            self._document = self.reader.metadata
        except CorruptSourceError:
            raise
        except Exception as exc:
            raise _library_error(path, "the file's directory or metadata cannot be read", exc) from exc
        try:
            self._open(box, rect, pixel_types, options)
        except BaseException:
            self.close()
            raise

    def _open(self, box: dict[str, tuple[int, int]], rect: Any, types: dict[int, str], options: Any) -> None:
        path = self.path
        span = {name: end - start for name, (start, end) in box.items()}
        if span.get("T", 1) > 1:
            raise UnsupportedFormatError(path, f"a time series of {span['T']} timepoints: a slide has one")
        found = set(types.values())
        if not found or not found <= set(PIXEL_TYPES) or len(found) > 1:
            names = ", ".join(sorted(found)) or "none"
            raise UnsupportedFormatError(
                path,
                f"pixel type {names}: lamina reads CZI of Bgr24, Gray8 or Gray16 (one type for all channels)",
            )
        samples, bits = PIXEL_TYPES[found.pop()]
        self.channels = max(1, span.get("C", 1))
        self.planes = max(1, span.get("Z", 1))
        if samples == 3 and self.channels > 1:
            raise UnsupportedFormatError(
                path, f"{self.channels} colour channels: lamina reads one RGB channel"
            )
        if rect.w <= 0 or rect.h <= 0:
            raise CorruptSourceError(path, f"the image is {rect.w}x{rect.h} pixels: {_DAMAGED}")
        scaling = self._scaling()
        spacing = options.pixel_spacing
        if spacing is None and scaling[0] and scaling[1]:
            spacing = SizeMm(scaling[0] * 1000.0, scaling[1] * 1000.0)
        if spacing is None:
            raise MissingMetadataError(path, "the CZI gives no pixel spacing (Scaling); give it with --mpp")
        self.spacing = spacing
        self._z_spacing_mm = scaling[2] * 1000.0 if scaling[2] else None
        methods = {LOSSY_COMPRESSIONS[c] for c in subblock_compressions(path) if c in LOSSY_COMPRESSIONS}
        self.lossy_method = max(methods) if methods else None
        raw = rect.w * rect.h * samples * (bits // 8) * self.channels * self.planes
        self.lossy_ratio = raw / max(1, path.stat().st_size) if methods else None
        self._levels = [CziLevel(self, rect.x, rect.y, SizePx(rect.w, rect.h), samples, bits)]
        self._metadata = self._read_metadata(samples)

    def _metadata_node(self, *keys: str) -> Any:
        node: Any = self._document
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node

    def _scaling(self) -> tuple[float | None, float | None, float | None]:
        """Metres per pixel along X, Y and Z (Scaling/Items/Distance), when the file says."""
        found: dict[str, float] = {}
        for item in _list(self._metadata_node("ImageDocument", "Metadata", "Scaling", "Items", "Distance")):
            if isinstance(item, dict) and item.get("@Id") in ("X", "Y", "Z"):
                value = _number(item.get("Value"))
                if value and value > 0:
                    found[str(item["@Id"])] = value
        return found.get("X"), found.get("Y"), found.get("Z")

    def _read_metadata(self, samples: int) -> SlideMetadata:
        info = ("ImageDocument", "Metadata", "Information")
        channels = _list(self._metadata_node(*info, "Image", "Dimensions", "Channels", "Channel"))
        shown = _list(
            self._metadata_node("ImageDocument", "Metadata", "DisplaySetting", "Channels", "Channel")
        )
        paths = []
        if samples == 1:
            for index in range(self.channels):
                channel = (
                    channels[index] if index < len(channels) and isinstance(channels[index], dict) else {}
                )
                display = shown[index] if index < len(shown) and isinstance(shown[index], dict) else {}
                name = channel.get("@Name") or display.get("@Name") or channel.get("Fluor")
                paths.append(
                    OpticalPath(
                        description=str(name)[:64] if name else None,
                        illumination_nm=_number(channel.get("ExcitationWavelength")),
                        emission_nm=_number(channel.get("EmissionWavelength")),
                        color=_argb(display.get("Color") or channel.get("Color")),
                        fluorescence=True,
                    )
                )
        objective = None
        for item in _list(self._metadata_node(*info, "Instrument", "Objectives", "Objective")):
            if isinstance(item, dict):
                objective = objective or _number(item.get("NominalMagnification"))
        microscope = None
        for item in _list(self._metadata_node(*info, "Instrument", "Microscopes", "Microscope")):
            if isinstance(item, dict):
                microscope = microscope or item.get("@Name") or item.get("System")
        software = self._metadata_node(*info, "Application", "Name")
        version = self._metadata_node(*info, "Application", "Version")
        acquired = _datetime(self._metadata_node(*info, "Image", "AcquisitionDateAndTime"))
        return SlideMetadata(
            manufacturer="Zeiss",
            model_name=str(microscope)[:64] if microscope else None,
            software_versions=(f"{software} {version or ''}".strip()[:64],) if software else (),
            acquisition_datetime=acquired,
            objective_power=objective,
            optical_paths=tuple(paths) if self.channels > 1 or samples == 1 else (),
            focal_plane_spacing_mm=self._z_spacing_mm,
        )

    @property
    def metadata(self) -> SlideMetadata:
        return self._metadata

    def close(self) -> None:
        context = getattr(self, "_context", None)
        if context is not None:
            self._context = None
            context.__exit__(None, None, None)


def _list(node: Any) -> list[Any]:
    if node is None:
        return []
    return list(node) if isinstance(node, list) else [node]


def _item(items: list[Any], index: int) -> dict[str, Any]:
    found = items[index] if index < len(items) else None
    return found if isinstance(found, dict) else {}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _argb(value: Any) -> tuple[int, int, int] | None:
    """``#AARRGGBB`` (Zeiss's display colour) as (r, g, b)."""
    text = str(value or "").lstrip("#")
    if len(text) not in (6, 8):
        return None
    try:
        number = int(text, 16)
    except ValueError:
        return None
    return (number >> 16) & 255, (number >> 8) & 255, number & 255


def _datetime(value: Any) -> dt.datetime | None:
    if not value:
        return None
    text = str(value).strip().replace("Z", "+00:00")
    if "." in text:  # Zeiss writes 7 decimals of a second; Python reads 6
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None
