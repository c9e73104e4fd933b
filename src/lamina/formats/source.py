"""The one seam a new slide format implements.

A format is a subclass of :class:`SlideSource`, registered under the entry-point group
``lamina.formats`` (see ``pyproject.toml``). Every source has the same constructor,
``Source(path, options)``, so the registry never needs a per-format branch.

Required members of a source
----------------------------
``format_name``
    A stable identifier stored in the catalog (``aperio_svs``, ``dicom_wsi``, ...). Never rename one.
``detect(path)``
    Cheap sniffing (magic bytes, a TIFF tag); ``True`` when this reader claims the file.
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
``source_lossy``, ``decode_tile(col, row)``.

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

from lamina.model.geometry import SizeMm, SizePx
from lamina.model.slide import SlideIdentity

Pixels = npt.NDArray[np.uint8]
ReadObserver = Callable[[Path, int, bytes], None]
Buffer = bytes | bytearray | memoryview


class ImageFlavor(StrEnum):
    """Value 3 of ImageType for VL Whole Slide Microscopy images."""

    VOLUME = "VOLUME"
    LABEL = "LABEL"
    OVERVIEW = "OVERVIEW"
    THUMBNAIL = "THUMBNAIL"


class TransferSyntax(StrEnum):
    EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
    JPEG_BASELINE_8BIT = "1.2.840.10008.1.2.4.50"
    JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
    JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
    JPEG_2000 = "1.2.840.10008.1.2.4.91"
    HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"

    @property
    def encapsulated(self) -> bool:
        return self is not TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN


@dataclass(frozen=True)
class FrameEncoding:
    """How the frames that a source hands over are encoded, in DICOM terms."""

    transfer_syntax: TransferSyntax
    photometric_interpretation: str  # of the encoded stream: YBR_FULL_422, RGB, YBR_ICT, ...
    lossy_method: str | None = None  # LossyImageCompressionMethod when the stream is lossy


@dataclass(frozen=True)
class SourceOptions:
    """What the user told lamina about the file; the same for every format."""

    pixel_spacing: SizeMm | None = None  # --mpp, or the manifest's
    #: All files of a multi-file slide found together (the instances of a DICOM series).
    members: tuple[Path, ...] = ()


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
    extra: dict[str, Any] = field(default_factory=dict)


class SourceImage(ABC):
    """One image of a slide: a pyramid level or an associated image."""

    flavor: ImageFlavor
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
    lossy_method: str | None = None
    lossy_ratio: float | None = None
    #: Per-image DICOM attributes kept from a DICOM source (``None`` for other formats).
    dataset: Any = None
    #: Told of the bytes an image reads from its file, ``(path, offset, data)``, so that the
    #: source's fingerprint is computed without reading the file a second time (optional).
    read_observer: ReadObserver | None = None

    @property
    def grid(self) -> SizePx:
        return self.size.tiles(self.tile_size)

    @property
    def frame_count(self) -> int:
        return self.grid.area

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
    def decode_tile(self, col: int, row: int) -> Pixels:
        """The tile's pixels, ``(tile_height, tile_width, samples)``, padded to the full tile."""

    def decode_region(self) -> Pixels:
        """The whole image decoded. Only for small images (associated images, small levels)."""
        grid = self.grid
        tw, th = self.tile_size.width, self.tile_size.height
        out = np.zeros((grid.height * th, grid.width * tw, self.samples_per_pixel), np.uint8)
        for row in range(grid.height):
            for col in range(grid.width):
                out[row * th : (row + 1) * th, col * tw : (col + 1) * tw] = self.decode_tile(col, row)
        return out[: self.size.height, : self.size.width]


class SlideSource(ABC):
    """A slide file (or folder) opened for reading. See the module docstring for the contract."""

    format_name: ClassVar[str]
    #: Human-readable name for tables and docs.
    display_name: ClassVar[str]
    #: Higher wins when several readers claim a file.
    priority: ClassVar[int] = 50

    def __init__(self, path: Path, options: SourceOptions) -> None:
        self.path = path
        self.options = options
        #: Filled by the reader: the VOLUME images (largest first) and the associated images.
        self._levels: list[SourceImage] = []
        self._associated: list[SourceImage] = []

    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """Cheap check: does this reader claim ``path``?"""

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
