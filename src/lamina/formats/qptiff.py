"""PerkinElmer (Akoya) QPTIFF: Vectra and Polaris multichannel fluorescence scans.

A QPTIFF is a TIFF whose every page carries a ``<PerkinElmer-QPI-ImageDescription>`` XML that
says what the page is (``<ImageType>``): the FullResolution pages (one per channel, or one RGB
page of a brightfield scan), then a Thumbnail, ReducedResolution pages (one per channel per
level, on tiled scans), an Overview (or Macro) and a Label. Each pyramid level becomes one
:class:`~lamina.formats.source.SourceImage` whose optical paths are the channels, in page order.

JPEG tiles (8-bit) are copied as stored; LZW, Deflate and uncompressed pages are decoded, tile
by tile, and lamina's writer re-encodes them losslessly. A stripped page is decoded in bands of
whole strips: a strip cannot be decoded in part, so the band of the tile row being written is
kept (two of them, for the 2x2 reads of a generated level) and each strip is read once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from defusedxml import ElementTree

from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats.images import TiffTiledImage, decoded_page
from lamina.formats.planes import STRIP_TILE, JoinedFrames, StripBands, page_tile
from lamina.formats.source import (
    Buffer,
    OpticalPath,
    Pixels,
    ReadObserver,
    SlideMetadata,
    SlideSource,
    SourceImage,
    SourceOptions,
    check_geometry,
)
from lamina.formats.tiff_common import (
    check_tiles_inside,
    level_spacing,
    open_tiff,
    pages_of,
    reading_page,
    require_spacing,
    resolution_spacing,
    sniff_tiff,
)
from lamina.model.enums import ImageFlavorValues
from lamina.model.geometry import SizeMm, SizePx
from lamina.model.slide import SlideIdentity

_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"
#: The tile of a stripped page, decoded from the strips that cover it.
#: JPEG and JPEG 2000 (TIFF Compression values): the pixels went through lossy compression.
_LOSSY = {7, 33003, 33005, 34712}
_VOLUME = {"fullresolution", "reducedresolution"}
_ASSOCIATED = {
    "thumbnail": ImageFlavorValues.THUMBNAIL,
    "overview": ImageFlavorValues.OVERVIEW,
    "macro": ImageFlavorValues.OVERVIEW,
    "label": ImageFlavorValues.LABEL,
}
#: A single-band filter's part number: centre / bandwidth (Semrock FF01-578/22-25, Chroma
#: ET480/40x). Multi-band (FF01-391/538/649) and long-pass (ET510LP) filters give no one wavelength.
_SINGLE_BAND = re.compile(r"^(?:[A-Za-z]+\d*-)?[A-Za-z]*(\d{3,4})/(\d{1,3})(?:-\d+)?[a-z]?$")


@dataclass(frozen=True)
class QpiDescription:
    """What one page's ``<PerkinElmer-QPI-ImageDescription>`` says (the fields lamina uses)."""

    image_type: str
    name: str | None = None
    color: tuple[int, int, int] | None = None
    excitation_nm: float | None = None
    emission_nm: float | None = None
    fluorescence: bool = False
    objective_power: float | None = None
    software: str | None = None
    camera: str | None = None
    slide_id: str | None = None
    barcode: str | None = None
    akoya: bool = False


def _text(root: Any, path: str) -> str | None:
    value = root.findtext(path)
    return value.strip() or None if value is not None else None


def _power(text: str | None) -> float | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[xX]?\s*", text or "")
    return float(match.group(1)) if match else None


def _color(text: str | None) -> tuple[int, int, int] | None:
    parts = (text or "").split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts):
        return None
    r, g, b = (min(255, int(part)) for part in parts)
    return r, g, b


def filter_wavelengths(filter_id: str | None) -> tuple[float | None, float | None]:
    """(excitation, emission) in nm from a FilterID such as ``FITC_Chroma:ET510LP Emission /
    Chroma:ET480/40x Excitation``: the centre of a single-band filter, else None (never a guess)."""
    found: dict[str, float | None] = {"excitation": None, "emission": None}
    for part in (filter_id or "").split(" / "):
        words = part.strip().split()
        if len(words) < 2 or words[-1].lower() not in found:
            continue
        number = words[-2].rsplit(":", 1)[-1]
        match = _SINGLE_BAND.match(number)
        if match and int(match.group(2)) < int(match.group(1)):
            found[words[-1].lower()] = float(match.group(1))
    return found["excitation"], found["emission"]


def parse_description(path: Path, page: tifffile.TiffPage) -> QpiDescription:
    """The page's QPI XML, or CorruptSourceError naming the page when it is not one."""
    xml = page.description
    try:
        root = ElementTree.fromstring(xml)
    except Exception as exc:
        raise CorruptSourceError(
            path, f"page {page.index}: its PerkinElmer XML description cannot be parsed; {_DAMAGED}"
        ) from exc
    image_type = _text(root, "ImageType")
    if root.tag != "PerkinElmer-QPI-ImageDescription" or image_type is None:
        raise CorruptSourceError(
            path,
            f"page {page.index}: its description is not a PerkinElmer QPI one (no ImageType); {_DAMAGED}",
        )
    profile = root.find("ScanProfile/root")
    mode = _text(profile, "Mode") if profile is not None else None
    power = _power(_text(root, "Objective"))
    if power is None and profile is not None:
        power = _power(_text(profile, "ScanResolution/Magnification"))
    excitation, emission = filter_wavelengths(_text(root, "Responsivity/Filter/FilterID"))
    software = _text(root, "AcquisitionSoftware")
    return QpiDescription(
        image_type=image_type,
        name=_text(root, "Name"),
        color=_color(_text(root, "Color")),
        excitation_nm=excitation,
        emission_nm=emission,
        fluorescence=bool(mode and "fluor" in mode.lower()),
        objective_power=power,
        software=software,
        camera=_text(root, "CameraName"),
        slide_id=_text(root, "SlideID"),
        barcode=_text(root, "Barcode"),
        akoya="akoya" in xml.lower(),
    )


class QptiffLevel(SourceImage):
    """One pyramid level: one page per channel (or one RGB page), frames channel after channel."""

    def __init__(
        self,
        tiff: tifffile.TiffFile,
        pages: Sequence[tifffile.TiffPage],
        spacing: SizeMm,
    ) -> None:
        self._path = Path(tiff.filehandle.path)
        self._pages = list(pages)
        first = self._pages[0]
        self.flavor = ImageFlavorValues.VOLUME
        self.size = SizePx(int(first.imagewidth), int(first.imagelength))
        self.samples_per_pixel = int(first.samplesperpixel)
        self.pixel_spacing = spacing
        self.optical_paths = len(self._pages)
        self.bits_stored = int(first.bitspersample)
        self.source_lossy = int(first.compression) in _LOSSY
        self.encoding = None
        self._copied = JoinedFrames(())
        self._bands: StripBands | None = None
        self._fd = fd = tiff.filehandle.fileno()
        if first.is_tiled:
            self.tile_size = SizePx(int(first.tilewidth), int(first.tilelength))
            tiled = [TiffTiledImage(tiff, page, self.flavor, spacing) for page in self._pages]
            encodings = {image.encoding for image in tiled}
            if None not in encodings and len(encodings) == 1 and self.bits_stored == 8:
                # JPEG (or JPEG 2000) tiles, the same for every channel: copied as stored
                self._copied = JoinedFrames(tiled)
                self.encoding = tiled[0].encoding
            self.source_lossy = any(image.source_lossy for image in tiled)
        else:
            self.tile_size = SizePx(STRIP_TILE, STRIP_TILE)
            # two bands a channel: the one being written, and the one the 2x2 reads ask again
            self._bands = StripBands(
                self._path, fd, first, self._pages, STRIP_TILE, self.dtype, 2 * len(self._pages)
            )
        check_geometry(self._path, f"page {first.index}", self.size, self.tile_size)

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
        observer = None if self._copied.images else self.read_observer  # copied frames tell it already
        return page_tile(self, self._path, self._fd, self._pages[c], c, col, row, self._bands, observer)


class QptiffSource(SlideSource):
    format_name = "perkinelmer_qptiff"
    display_name = "PerkinElmer QPTIFF"
    priority = 60
    suffixes = (".qptiff",)

    @classmethod
    def detect(cls, path: Path) -> bool:
        return sniff_tiff(path, lambda tiff: bool(tiff.is_qpi), cls)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        #: The associated images not written (see the end of ``_open``).
        self._tiff = open_tiff(path)
        try:
            self._open(path, options)
        except BaseException:
            self._tiff.close()
            raise

    def _open(self, path: Path, options: SourceOptions) -> None:
        tiff = self._tiff
        levels: dict[tuple[int, int], list[tifffile.TiffPage]] = {}
        described: dict[int, QpiDescription] = {}
        associated: list[tuple[tifffile.TiffPage, ImageFlavorValues]] = []
        for page in pages_of(tiff):
            with reading_page(path, page):
                description = parse_description(path, page)
                kind = description.image_type.lower()
                if kind in _VOLUME:
                    check_tiles_inside(path, tiff, page)
                    described[page.index] = description
                    levels.setdefault((int(page.imagewidth), int(page.imagelength)), []).append(page)
                elif kind in _ASSOCIATED:
                    check_tiles_inside(path, tiff, page)
                    associated.append((page, _ASSOCIATED[kind]))
        if not levels:
            raise UnsupportedFormatError(path, "the QPTIFF has no FullResolution page: no image to convert")
        groups = sorted(
            levels.values(), key=lambda pages: -int(pages[0].imagewidth) * int(pages[0].imagelength)
        )
        base = groups[0]
        self._check_base(path, base)
        spacing = require_spacing(path, resolution_spacing(base[0]), options, "no resolution tags on page 0")
        base_size = SizePx(int(base[0].imagewidth), int(base[0].imagelength))
        self._levels = []
        for pages in groups:
            # a level that lacks a channel (or differs in kind) is left out: lamina computes levels
            if len(pages) != len(base) or any(self._kind(page) != self._kind(base[0]) for page in pages):
                continue
            size = SizePx(int(pages[0].imagewidth), int(pages[0].imagelength))
            with reading_page(path, pages[0]):
                self._levels.append(QptiffLevel(tiff, pages, level_spacing(spacing, base_size, size)))
        images: list[SourceImage] = []
        for page, flavor in associated:
            if any(image.flavor is flavor for image in images):
                continue
            with reading_page(path, page, f"the {flavor.lower()} image"):
                images.append(decoded_page(page, flavor))
        # an RGB image of a multichannel scan gets its own brightfield optical path in the DICOM
        # (dicom_modules.image_optical_paths)
        self._associated = images
        self._metadata = self._read_metadata([described[page.index] for page in base])

    @staticmethod
    def _kind(page: tifffile.TiffPage) -> tuple[Any, ...]:
        return (page.dtype, int(page.samplesperpixel), bool(page.is_tiled))

    def _check_base(self, path: Path, base: Sequence[tifffile.TiffPage]) -> None:
        first = base[0]
        samples, bits = int(first.samplesperpixel), int(first.bitspersample)
        if first.dtype not in (np.uint8, np.uint16) or bits not in (8, 16):
            raise UnsupportedFormatError(
                path,
                f"{first.dtype} samples (page {first.index}): lamina reads 8-bit and unsigned 16-bit "
                "QPTIFF channels, not unmixed (float) components",
            )
        if samples == 3 and (len(base) > 1 or bits != 8):
            raise UnsupportedFormatError(
                path, f"page {first.index}: several RGB pages at full resolution; lamina reads one"
            )
        if samples not in (1, 3) or (samples == 3 and int(first.planarconfig) != 1):
            raise UnsupportedFormatError(
                path, f"page {first.index}: {samples} samples per pixel; lamina reads grey channels or RGB"
            )
        for page in base[1:]:
            if self._kind(page) != self._kind(first):
                raise CorruptSourceError(
                    path,
                    f"page {page.index} is a channel of the full resolution but its samples differ from "
                    f"page {first.index}'s; {_DAMAGED}",
                )

    def _read_metadata(self, channels: Sequence[QpiDescription]) -> SlideMetadata:
        first = channels[0]
        grey = int(self._levels[0].samples_per_pixel) == 1
        # the scan profile (its Mode) is written on the first channel's page only: it is the scan's
        fluorescence = any(channel.fluorescence for channel in channels)
        paths = tuple(
            OpticalPath(
                description=channel.name,
                illumination_nm=channel.excitation_nm,
                emission_nm=channel.emission_nm,
                color=channel.color,
                fluorescence=fluorescence,
            )
            for channel in channels
        )
        return SlideMetadata(
            manufacturer="Akoya Biosciences" if any(channel.akoya for channel in channels) else "PerkinElmer",
            model_name=first.camera,
            software_versions=(first.software,) if first.software else (),
            objective_power=first.objective_power,
            description=first.slide_id,
            identity=SlideIdentity(container_id=first.barcode or first.slide_id),
            optical_paths=paths if grey else (),
        )

    @property
    def metadata(self) -> SlideMetadata:
        return self._metadata

    def observe_reads(self, observer: ReadObserver) -> None:
        super().observe_reads(observer)
        for image in self._levels:
            if isinstance(image, QptiffLevel):
                image.set_observer(observer)

    def close(self) -> None:
        self._tiff.close()
