"""Vendor TIFF readers built on opentile: its tiles become DICOM frames as it hands them over.

opentile (https://github.com/imi-bigpicture/opentile) hands over compressed tiles without
decoding them: for NDPI it cuts tiles out of JPEG stripes losslessly at restart markers, for
Philips TIFF it fills sparse tiles with a blank tile, for 3DHISTECH TIFF it reads the native
tiles. Each opentile level becomes an :class:`OpenTileImage` whose frames are ``get_tile`` bytes
(plus an Adobe marker where RGB-coded JPEG needs one); labels, overviews and thumbnails are
decoded, being small. A vendor reader is a small subclass of :class:`OpenTileSource`.

A z-stack (an NDPI keeps one image per level and focal plane, tagged with its Z offset) becomes
one :class:`~lamina.formats.focal_stack.FocalStack` per level, planes lowest Z offset first, its
tiles copied as for one plane; SpacingBetweenSlices is the distance between the planes, which must
be even. Levels that lack some planes are left out: lamina computes them from the level above.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tifffile

from lamina.errors import CodecError, CorruptSourceError, SourceError, UnsupportedFormatError
from lamina.formats import codec
from lamina.formats.codec import library_message
from lamina.formats.focal_stack import FocalStack, plane_spacing_mm
from lamina.formats.images import DecodedImage
from lamina.formats.source import (
    FrameEncoding,
    Pixels,
    SlideMetadata,
    SlideSource,
    SourceImage,
    SourceOptions,
    TransferSyntax,
    check_geometry,
)
from lamina.formats.tiff_common import open_tiff, require_spacing
from lamina.model.enums import ImageFlavorValues, LossyImageCompressionMethodValues
from lamina.model.enums import PhotometricInterpretationValues as Photometric
from lamina.model.geometry import SizeMm, SizePx

_JPEG = 7
_JPEG2000 = {33003, 33004, 33005, 34712}
_LOSSY = {_JPEG, 33003, 33005, 34712}
_RGB = 2  # TIFF PhotometricInterpretation
_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"
_CONVERT = "convert it to DICOM with the vendor's software"
_TURBO = "install it (apt install libturbojpeg0, brew install jpeg-turbo) and retry"


def _describe(exc: BaseException) -> str:
    """What opentile, tifffile, the XML parser or a JPEG library found wrong, in words (their
    exception classes tell a user nothing)."""
    name = type(exc).__name__
    if name == "ParseError":  # xml.etree's, raised for the Philips XML
        return f"the XML metadata is damaged ({library_message(exc)})"
    if "defusedxml" in type(exc).__module__:
        return "the XML metadata declares entities or external references, which lamina refuses"
    if isinstance(exc, tifffile.TiffFileError | NotImplementedError):
        return library_message(exc)
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError):
        # the JPEG libraries (libjpeg-turbo, through PyTurboJPEG or PIL) report damage this way
        return f"the compressed data is damaged ({library_message(exc)})"
    return codec.damage(exc)


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Turn whatever opentile, tifffile or libjpeg-turbo raise into a one-line SourceError."""
    try:
        yield
    except SourceError:
        raise
    except Exception as exc:
        raise CorruptSourceError(path, f"{what} cannot be read: {_describe(exc)}; {_DAMAGED}") from exc


def open_tiler(path: Path, tile_size: int, expected: str, name: str) -> Any:
    """``OpenTile.open`` with clear errors; refuses a tiler of another format than ``expected``."""
    from opentile import OpenTile  # imported here: opentile takes half a second to import

    try:
        tiler = OpenTile.open(path, tile_size)
    except NotImplementedError as exc:
        raise UnsupportedFormatError(path, f"opentile cannot read it ({_describe(exc)}); {_CONVERT}") from exc
    except Exception as exc:
        if "turbojpeg" in str(exc).lower():  # a missing library, not a damaged file
            raise SourceError(path, f"{name} needs libjpeg-turbo ({library_message(exc)}); {_TURBO}") from exc
        raise CorruptSourceError(path, f"opentile cannot open it: {_describe(exc)}; {_DAMAGED}") from exc
    found = tiler.format.value
    if found != expected:
        tiler.close()
        raise UnsupportedFormatError(path, f"opentile reads this file as {found}, not as {name}")
    return tiler


def _nominal(ratio: float) -> float:
    """The power of two a level's downsampling ratio is meant to be (sizes are rounded)."""
    nominal = 2.0 ** round(math.log2(ratio)) if ratio > 0 else ratio
    return nominal if nominal and abs(ratio / nominal - 1) < 0.05 else ratio


def _uint8(pixels: Any) -> Pixels:
    """Decoded pixels as a ``(rows, columns, samples)`` uint8 array."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        raise CodecError(f"it decodes to {array.dtype} samples; lamina reads 8-bit slides")
    array = array.reshape(array.shape[-3:] if array.ndim > 3 else array.shape)
    return array[..., None] if array.ndim == 2 else array


def _as_tile(pixels: Any, shape: tuple[int, int, int]) -> Pixels:
    """Decoded pixels of exactly ``shape``: padded with white, or cropped."""
    array = _uint8(pixels)
    if array.shape == shape:
        return array
    out = np.full(shape, 255, np.uint8)
    rows, cols = min(shape[0], array.shape[0]), min(shape[1], array.shape[1])
    out[:rows, :cols] = array[:rows, :cols, : shape[2]]
    return out


class OpenTileImage(SourceImage):
    """One opentile level; ``read_frame`` returns its ``get_tile`` bytes, never re-encoded."""

    def __init__(self, path: Path, image: Any, name: str, pixel_spacing: SizeMm) -> None:
        self._path, self._image, self._name = path, image, name
        self.flavor = ImageFlavorValues.VOLUME
        self.size = SizePx(int(image.image_size.width), int(image.image_size.height))
        self.tile_size = SizePx(int(image.tile_size.width), int(image.tile_size.height))
        self.samples_per_pixel = int(image.samples_per_pixel)
        self.pixel_spacing = pixel_spacing
        check_geometry(path, name, self.size, self.tile_size)
        self.encoding: FrameEncoding | None = None
        self._mark_rgb = False
        compression = int(image.compression)
        self.source_lossy = compression in _LOSSY
        if compression in _JPEG2000:
            with reading(path, f"the first tile of {name}"):
                self.encoding = codec.j2k_encoding(codec.j2k_info(self._tile(0, 0)))
            self.source_lossy = self.encoding.transfer_syntax is TransferSyntax.JPEG_2000
        elif compression == _JPEG:
            with reading(path, f"the first tile of {name}"):
                self._jpeg_encoding(codec.jpeg_info(self._tile(0, 0)), int(image.photometric_interpretation))

    def _jpeg_encoding(self, info: codec.JpegInfo, photometric: int) -> None:
        rgb = info.rgb_coded or (
            # A TIFF that says RGB and holds a 3-component JPEG without an Adobe marker stores
            # R, G, B (TIFF TechNote 2), whatever its component ids say.
            photometric == _RGB and len(info.components) == 3 and not info.subsampled
        )
        # Tell every decoder that the components are RGB, not YCbCr, with an Adobe marker.
        self._mark_rgb = rgb and info.adobe_transform is None
        encoding = codec.jpeg_encoding(info)
        if (info.width, info.height) != (self.tile_size.width, self.tile_size.height):
            encoding = None  # a DICOM frame is a whole tile; re-encode instead
        if encoding is not None and rgb:
            encoding = FrameEncoding(encoding.transfer_syntax, Photometric.RGB, encoding.lossy_method)
        self.encoding = encoding

    def _tile(self, col: int, row: int) -> bytes:
        with reading(self._path, f"tile ({col}, {row}) of {self._name}"):
            return bytes(self._image.get_tile((col, row)))

    def _wrap(self, tile: bytes) -> bytes:
        return codec.merge_jpeg_tables(None, tile, True) if self._mark_rgb else tile

    def read_frame(self, index: int) -> bytes:
        row, col = divmod(index, self.grid.width)
        return self._wrap(self._tile(col, row))

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        shape = (self.tile_size.height, self.tile_size.width, self.samples_per_pixel)
        frame = self.read_frame(row * self.grid.width + col) if self.encoding is not None else b""
        with reading(self._path, f"tile ({col}, {row}) of {self._name}"):
            if self.encoding is not None:  # decode what the DICOM frame holds
                return _as_tile(codec.decode(frame, self.encoding, (shape[1], shape[0])), shape)
            return _as_tile(self._image.get_decoded_tile((col, row)), shape)


def decoded_associated(path: Path, image: Any, flavor: ImageFlavorValues) -> DecodedImage:
    """A label, overview or thumbnail from opentile, decoded whole (they are small)."""
    width, height = int(image.image_size.width), int(image.image_size.height)
    across, down = int(image.tiled_size.width), int(image.tiled_size.height)
    rows = [[(col, row) for col in range(across)] for row in range(down)]
    with reading(path, f"the {flavor.lower()} image"):
        tiles = [[_uint8(image.get_decoded_tile(at)) for at in row] for row in rows]
        pixels = np.concatenate([np.concatenate(row, axis=1) for row in tiles])
        if pixels.shape[0] < height or pixels.shape[1] < width:
            raise CodecError(
                f"it decodes to {pixels.shape[1]}x{pixels.shape[0]} pixels, not {width}x{height}"
            )
        stored = sum(len(image.get_tile(at)) for row in rows for at in row)
    return lossy_decoded(pixels[:height, :width], flavor, int(image.compression), stored)


def lossy_decoded(pixels: Pixels, flavor: ImageFlavorValues, compression: int, stored: int) -> DecodedImage:
    """Decoded pixels, with what their compression did to them (DICOM records it on re-encoding)."""
    image = DecodedImage(pixels, flavor, None, compression in _LOSSY)
    if image.source_lossy:
        image.lossy_method = (
            LossyImageCompressionMethodValues.ISO_10918_1
            if compression == _JPEG
            else LossyImageCompressionMethodValues.ISO_15444_1
        )
        image.lossy_ratio = pixels.size / stored if stored else None
    return image


class OpenTileSource(SlideSource):
    """A slide read through an opentile tiler. Subclasses set the class variables below."""

    #: ``TiffFormat`` value of the tiler opentile must choose for the file.
    opentile_format: ClassVar[str]
    #: Where the file keeps its pixel spacing, for the error when it has none.
    spacing_location: ClassVar[str] = "the file gives no pixel spacing"
    #: Tile size asked of opentile; only formats without native tiles (NDPI) use it.
    tile_request: ClassVar[int] = 512

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        # tifffile first: it refuses a truncated file (tiles or IFDs past the end) with a
        # clear reason, where opentile would fail later, tile by tile.
        tiff = open_tiff(path)
        try:
            self._tiler = open_tiler(path, self.tile_request, self.opentile_format, self.display_name)
            try:
                with reading(path, "the metadata"):
                    self._metadata = self.read_metadata(tiff, self._tiler)
                self._levels = self._open_levels()
                self._associated = self._open_associated(tiff)
            except BaseException:
                self._tiler.close()
                raise
        finally:
            tiff.close()

    def _open_levels(self) -> list[SourceImage]:
        with reading(self.path, "the pyramid levels"):
            found = sorted(self._tiler.levels, key=lambda lv: -lv.image_size.width * lv.image_size.height)
            spacing = found[0].pixel_spacing if found else None
            file_spacing = SizeMm(float(spacing.width), float(spacing.height)) if spacing else None
            groups: dict[tuple[int, int], list[Any]] = {}
            for level in found:  # sorted() is stable: a size's images stay in file order
                size = (int(level.image_size.width), int(level.image_size.height))
                groups.setdefault(size, []).append(level)
            planes = {size: [float(image.focal_plane) for image in images] for size, images in groups.items()}
        if not found:
            raise CorruptSourceError(self.path, f"opentile finds no pyramid level; {_DAMAGED}")
        bits = {int(lv.bit_depth) for lv in found} - {8}
        if bits:
            raise UnsupportedFormatError(self.path, f"{bits.pop()}-bit samples: lamina reads 8-bit slides")
        base = require_spacing(self.path, file_spacing, self.options, self.spacing_location)
        width = int(found[0].image_size.width)
        if len(groups) == len(found):
            return [
                OpenTileImage(self.path, level, f"level {index}", self._spacing(base, width, level))
                for index, level in enumerate(found)
            ]
        return self._open_stacks(list(groups.values()), list(planes.values()), base)

    def _spacing(self, base: SizeMm, width: int, level: Any) -> SizeMm:
        return base.scaled(_nominal(width / int(level.image_size.width)))

    def _open_stacks(
        self, groups: list[list[Any]], planes: list[list[float]], base: SizeMm
    ) -> list[SourceImage]:
        """A z-stack: the images of each size are the focal planes of one level.

        The levels that hold every plane of the largest one become :class:`FocalStack` images,
        down to the first that lacks some: it and those below are left out, and lamina computes
        them, every plane kept, from the smallest level read (z-stack NDPIs keep every plane at
        every level, the layout Bio-Formats reads; tifffile already leaves out levels whose planes
        are not the top level's)."""
        offsets = sorted(planes[0])
        width = int(groups[0][0].image_size.width)
        for images, zs in zip(groups, planes, strict=True):
            if len(set(zs)) != len(zs):
                size = images[0].image_size
                raise UnsupportedFormatError(
                    self.path,
                    f"{len(images)} images of {size.width}x{size.height} pixels, at Z offsets "
                    f"{', '.join(f'{z:g}' for z in zs)} µm, make one pyramid level: "
                    "images of one focal plane repeat, and lamina cannot tell which to read",
                )
        if len(offsets) == 1:
            raise UnsupportedFormatError(
                self.path,
                f"its largest level has one focal plane but smaller ones have several "
                f"({sum(map(len, groups))} images make {len(groups)} pyramid levels): {_CONVERT}",
            )
        spacing = plane_spacing_mm(self.path, offsets)
        self._metadata = dataclasses.replace(self._metadata, focal_plane_spacing_mm=spacing)
        stacks: list[SourceImage] = []
        for index, (images, zs) in enumerate(zip(groups, planes, strict=True)):
            if sorted(zs) != offsets:
                break  # this level and those below are computed by lamina, every plane kept
            ordered = sorted(zip(zs, images, strict=True), key=lambda pair: pair[0])
            level_spacing = self._spacing(base, width, images[0])
            stacks.append(
                FocalStack(
                    [
                        OpenTileImage(
                            self.path, image, f"level {index}, focal plane at {z:g} µm", level_spacing
                        )
                        for z, image in ordered
                    ]
                )
            )
        return stacks

    def _open_associated(self, tiff: tifffile.TiffFile) -> list[SourceImage]:
        with reading(self.path, "the associated images"):
            groups = [
                (ImageFlavorValues.LABEL, self.opentile_labels(self._tiler)),
                (ImageFlavorValues.OVERVIEW, list(self._tiler.overviews)),
                (ImageFlavorValues.THUMBNAIL, list(self._tiler.thumbnails)),
            ]
        images: list[SourceImage] = [
            decoded_associated(self.path, found[0], flavor) for flavor, found in groups if found
        ]
        have = {image.flavor for image in images}
        return images + [image for image in self.extra_associated(tiff) if image.flavor not in have]

    def opentile_labels(self, tiler: Any) -> list[Any]:
        """The label images opentile offers (NDPI crops its label out of the overview)."""
        return list(tiler.labels)

    def extra_associated(self, tiff: tifffile.TiffFile) -> Sequence[SourceImage]:
        """Associated images opentile does not read (Philips keeps some in its XML)."""
        return ()

    def read_metadata(self, tiff: tifffile.TiffFile, tiler: Any) -> SlideMetadata:
        """What opentile parsed; subclasses add what it leaves out (barcode, model, ...)."""
        meta = tiler.metadata
        return SlideMetadata(
            manufacturer=meta.scanner_manufacturer or None,
            model_name=meta.scanner_model or None,
            device_serial_number=meta.scanner_serial_number or None,
            software_versions=tuple(str(v) for v in meta.scanner_software_versions or ()),
            acquisition_datetime=meta.aquisition_datetime,
            objective_power=max(float(meta.magnification or 0), 0.0) or None,
            icc_profile=tiler.icc_profile or tiff.pages.first.iccprofile or None,
        )

    @property
    def metadata(self) -> SlideMetadata:
        return self._metadata

    def close(self) -> None:
        self._tiler.close()
