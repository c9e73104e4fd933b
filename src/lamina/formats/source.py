"""The one seam a new slide format implements.

A format is a subclass of :class:`SlideSource`, registered under the entry-point group
``lamina.formats`` (see ``pyproject.toml``). Every source has the same constructor,
``Source(path, options)``, so the registry never needs a per-format branch.

Required members of a source
----------------------------
``format_name``
    A stable identifier stored in the catalog (``aperio_svs``, ``dicom_wsi``, ...). Never rename one.
``detect(path)``
    A class method: ``True`` when this reader claims the file. The contract, the same for every
    reader: it reads only the file's head (magic bytes, a DICOM preamble, the first TIFF
    directory and its tags), never raises, and never opens the images. A file that looks damaged
    is claimed when its head or its name (``suffixes``) says it is this format, so that opening
    it gives a reason that says what is wrong with it rather than "not a slide format".
``suffixes``
    The extensions the format's files carry (``(".svs",)``); empty when they tell nothing.

The constructor opens the file and checks it: everything a user can meet is raised as a
:class:`~lamina.errors.SourceError` (``CorruptSourceError`` for a damaged file, with the page,
level, tile or tag at fault; ``UnsupportedFormatError``; ``MissingMetadataError``), never as an
exception of a reader library. Images raise the same when a tile cannot be read.
``levels``
    The VOLUME images, largest first, as :class:`SourceImage`.
``associated``
    LABEL, OVERVIEW and THUMBNAIL images, when the file has them.
``metadata``
    A :class:`SlideMetadata`: equipment, magnification, ICC profile, identity found in the file.
``files``
    Every file that makes up the slide (an MRXS has many); their digest identifies the source.

Required members of an image
----------------------------
``flavor``, ``size``, ``tile_size``, ``samples_per_pixel``, ``pixel_spacing``, ``encoding``,
``source_lossy``, ``decode_tile(col, row, z, c)``.

Focal planes and channels
-------------------------
An image of a z-stack or of a fluorescence scan has ``focal_planes`` and ``optical_paths`` above
one (the slide's :attr:`SlideMetadata.optical_paths` describe the channels). Its frames are in
DICOM's TILED_FULL order (PS3.3 C.7.6.17.3): column fastest, then row, then focal plane, then
optical path, so frame ``index`` is ``col + row * columns + z * tiles + c * tiles * planes``.
``bits_stored`` is 8, or up to 16 for the grey samples of a fluorescence camera (``uint16``);
the DICOM says 16 for any of 9 to 16 (the VL WSI IOD enumerates BitsStored 8 and 16).

Optional speed-ups of an image
------------------------------
``frame_lengths()``
    The byte length of every encoded frame without reading them; lets the writer put an
    Extended Offset Table before the pixel data and stream frames in one pass.
``iter_frames()``
    The encoded frames in TILED_FULL order (row by row). Only meaningful when ``encoding`` is
    not ``None``; the default reads them one at a time through ``read_frame``.
``iter_frame_parts()``
    The same frames, each as a few buffers whose concatenation is the frame (a shared JPEG
    header, then a view of the tile as read): lets the writer hash and ``writev`` them with no
    copy in Python. The default wraps ``iter_frames``.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydicom import uid

from lamina.errors import CorruptSourceError
from lamina.model.enums import (
    ImageFlavorValues,
    LossyImageCompressionMethodValues,
    PhotometricInterpretationValues,
)
from lamina.model.geometry import SizeMm, SizePx
from lamina.model.slide import SlideIdentity

#: A tile's samples: uint8, or uint16 for the grey samples of a fluorescence camera.
Pixels = npt.NDArray[Any]
_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"
ReadObserver = Callable[[Path, int, bytes], None]
Buffer = bytes | bytearray | memoryview


class TransferSyntax(StrEnum):
    """The transfer syntaxes of the frames lamina copies, decodes or writes (pydicom's UIDs)."""

    EXPLICIT_VR_LITTLE_ENDIAN = uid.ExplicitVRLittleEndian
    JPEG_BASELINE_8BIT = uid.JPEGBaseline8Bit
    JPEG_LS_LOSSLESS = uid.JPEGLSLossless
    JPEG_2000_LOSSLESS = uid.JPEG2000Lossless
    JPEG_2000 = uid.JPEG2000
    HTJ2K_LOSSLESS = uid.HTJ2KLossless

    @property
    def encapsulated(self) -> bool:
        return self is not TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN


@dataclass(frozen=True, init=False)
class FrameEncoding:
    """How the frames that a source hands over are encoded, in DICOM terms.

    Strings are accepted for each field (a catalog row's values) and become the enums.
    """

    transfer_syntax: TransferSyntax
    #: Of the encoded stream: YBR_FULL_422, RGB, YBR_ICT, ...
    photometric_interpretation: PhotometricInterpretationValues
    #: LossyImageCompressionMethod when the stream is lossy.
    lossy_method: LossyImageCompressionMethodValues | None = None

    def __init__(
        self,
        transfer_syntax: TransferSyntax | str,
        photometric_interpretation: PhotometricInterpretationValues | str,
        lossy_method: LossyImageCompressionMethodValues | str | None = None,
    ) -> None:
        object.__setattr__(self, "transfer_syntax", TransferSyntax(transfer_syntax))
        object.__setattr__(
            self, "photometric_interpretation", PhotometricInterpretationValues(photometric_interpretation)
        )
        method = None if lossy_method is None else LossyImageCompressionMethodValues(lossy_method)
        object.__setattr__(self, "lossy_method", method)


@dataclass(frozen=True)
class SourceOptions:
    """What the user told lamina about the file; the same for every format."""

    pixel_spacing: SizeMm | None = None  # --mpp, or the manifest's
    #: All files of a multi-file slide found together (the instances of a DICOM series).
    members: tuple[Path, ...] = ()


@dataclass(frozen=True)
class OpticalPath:
    """One channel of a scan, as DICOM's Optical Path Sequence item describes it (PS3.3 C.8.12.5).

    A brightfield scan has one, with no values; each fluorescence channel has its own."""

    #: OpticalPathDescription: the channel's name as the scanner gives it ("DAPI", "C405").
    description: str | None = None
    #: IlluminationWaveLength in nm: the excitation.
    illumination_nm: float | None = None
    #: The emission's wavelength in nm (kept in the description; DICOM has no attribute for it
    #: outside a filter's pass band).
    emission_nm: float | None = None
    #: The colour the scanner shows the channel in (sRGB), written as the optical path's palette.
    color: tuple[int, int, int] | None = None
    fluorescence: bool = False


@dataclass(frozen=True)
class SlideMetadata:
    """What the file says about the scan. Everything optional: nothing is invented."""

    manufacturer: str | None = None
    model_name: str | None = None
    device_serial_number: str | None = None
    software_versions: tuple[str, ...] = ()
    acquisition_datetime: dt.datetime | None = None
    objective_power: float | None = None
    icc_profile: bytes | None = None
    description: str | None = None
    identity: SlideIdentity = field(default_factory=SlideIdentity)
    # DICOM sources: the UIDs to keep (never re-invented for an existing object)
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    #: The channels, in the order of the images' optical path index (empty: one brightfield path).
    optical_paths: tuple[OpticalPath, ...] = ()
    #: The distance between focal planes of a z-stack, in mm (SpacingBetweenSlices).
    focal_plane_spacing_mm: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_geometry(path: Path, where: str, size: SizePx, tile: SizePx, tiles: int | None = None) -> None:
    """Refuse an image whose size or tile size has a zero side (a damaged tag: the image would be
    empty and its pyramid endless), or whose stored tiles do not fill its grid."""
    if min(size.width, size.height, tile.width, tile.height) <= 0:
        raise CorruptSourceError(
            path, f"{where} is {size} pixels in tiles of {tile}: a size of zero; {_DAMAGED}"
        )
    grid = size.tiles(tile)
    if tiles is not None and tiles != grid.area:
        raise CorruptSourceError(
            path,
            f"{where} stores {tiles} tiles, but {size} pixels in tiles of {tile} make {grid.area}; "
            + _DAMAGED,
        )


class SourceImage(ABC):
    """One image of a slide: a pyramid level or an associated image."""

    flavor: ImageFlavorValues
    size: SizePx
    tile_size: SizePx
    samples_per_pixel: int
    pixel_spacing: SizeMm | None
    #: The encoding of ``read_frame``'s bytes, or ``None`` when frames must be decoded and
    #: re-encoded (LZW, Deflate, uncompressed TIFF ...).
    encoding: FrameEncoding | None
    #: Whether the pixels already went through lossy compression (JPEG, lossy JPEG 2000).
    source_lossy: bool
    #: For a lossy source handed over decoded: how it was compressed (DICOM's
    #: LossyImageCompressionMethod and ratio), when known.
    lossy_method: LossyImageCompressionMethodValues | None = None
    lossy_ratio: float | None = None
    #: Per-image DICOM attributes kept from a DICOM source (``None`` for other formats).
    dataset: Any = None
    #: Focal planes (z) and optical paths (channels); see the module docstring for the order.
    focal_planes: int = 1
    optical_paths: int = 1
    #: BitsStored: 8, or up to 16 (BitsAllocated 16) for grey fluorescence samples.
    bits_stored: int = 8
    #: Told of the bytes an image reads from its file, ``(path, offset, data)``, so that the
    #: source's fingerprint is computed without reading the file a second time (optional).
    read_observer: ReadObserver | None = None

    @property
    def grid(self) -> SizePx:
        return self.size.tiles(self.tile_size)

    @property
    def frame_count(self) -> int:
        return self.grid.area * self.focal_planes * self.optical_paths

    @property
    def dtype(self) -> type[np.unsignedinteger[Any]]:
        """The samples' type: uint8, or uint16 above 8 bits stored."""
        return np.uint8 if self.bits_stored <= 8 else np.uint16

    def frame_index(self, col: int, row: int, z: int = 0, c: int = 0) -> int:
        """The 0-based index of a tile's frame in TILED_FULL order."""
        grid = self.grid
        return col + row * grid.width + (z + c * self.focal_planes) * grid.area

    def planes(self) -> Iterator[tuple[int, int]]:
        """Every (z, c) in frame order: the focal planes of the first channel, then the next..."""
        for c in range(self.optical_paths):
            for z in range(self.focal_planes):
                yield z, c

    def read_frame(self, index: int) -> bytes:
        """The encoded frame ``index`` (row-major). Only when ``encoding`` is not ``None``."""
        raise TypeError(f"{type(self).__name__} hands over decoded tiles only (its encoding is None)")

    def frame_lengths(self) -> Sequence[int] | None:
        """Lengths of the encoded frames, when known without reading them (optional)."""
        return None

    def iter_frames(self) -> Iterator[bytes]:
        for index in range(self.frame_count):
            yield self.read_frame(index)

    def iter_frame_parts(self) -> Iterator[Sequence[Buffer]]:
        for frame in self.iter_frames():
            yield (frame,)

    @abstractmethod
    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        """The tile's pixels, ``(tile_height, tile_width, samples)``, padded to the full tile;
        of focal plane ``z`` and optical path ``c``."""

    def decode_region(self, z: int = 0, c: int = 0) -> Pixels:
        """The whole image decoded. Only for small images (associated images, small levels)."""
        grid = self.grid
        tw, th = self.tile_size.width, self.tile_size.height
        out = np.zeros((grid.height * th, grid.width * tw, self.samples_per_pixel), self.dtype)
        for row in range(grid.height):
            for col in range(grid.width):
                out[row * th : (row + 1) * th, col * tw : (col + 1) * tw] = self.decode_tile(col, row, z, c)
        return out[: self.size.height, : self.size.width]


class SlideSource(ABC):
    """A slide file (or folder) opened for reading. See the module docstring for the contract."""

    format_name: ClassVar[str]
    #: Human-readable name for tables and docs.
    display_name: ClassVar[str]
    #: Higher wins when several readers claim a file.
    priority: ClassVar[int] = 50
    #: Extensions of the format's files, lower case: a damaged file that has one is claimed.
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: Path, options: SourceOptions) -> None:
        self.path = path
        self.options = options
        #: Filled by the reader: the VOLUME images (largest first) and the associated images.
        self._levels: list[SourceImage] = []
        self._associated: list[SourceImage] = []

    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """Does this reader claim ``path``? Cheap, never raises (see the module docstring)."""

    @classmethod
    def named_like(cls, path: Path) -> bool:
        """Whether the file's name ends with one of the format's ``suffixes``."""
        return path.name.lower().endswith(cls.suffixes) if cls.suffixes else False

    @property
    def levels(self) -> Sequence[SourceImage]:
        return self._levels

    @property
    def associated(self) -> Sequence[SourceImage]:
        return self._associated

    @property
    @abstractmethod
    def metadata(self) -> SlideMetadata: ...

    @property
    def files(self) -> Sequence[Path]:
        return [self.path]

    def observe_reads(self, observer: ReadObserver) -> None:
        """Tell ``observer`` of the bytes the images read (see ``SourceImage.read_observer``)."""
        for image in [*self.levels, *self.associated]:
            image.read_observer = observer

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def __enter__(self) -> SlideSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
