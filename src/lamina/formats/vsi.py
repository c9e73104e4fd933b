"""Evident (Olympus) cellSens VSI: the ``.vsi`` file and the ETS pyramids in the folder beside it.

A slide is ``NAME.vsi`` (metadata, read by :mod:`lamina.formats.vsi_meta`) and
``_NAME_/stackN/frame_t_0.ets`` per image stack (tiles, read by :mod:`lamina.formats.ets`). The
volume image is the largest image stack; its ETS levels become the DICOM pyramid, each with its
focal planes and channels. JPEG and JPEG 2000 tiles are copied as stored (byte-identical frames);
a tile the ETS leaves out (background) is written as one frame of the background value. Raw,
PNG and BMP tiles, time series and samples other than 8-bit and unsigned 16-bit are refused with
the reason. Overview and macro stacks are not imported yet.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lamina.errors import CodecError, CorruptSourceError, MissingMetadataError, UnsupportedFormatError
from lamina.formats import codec
from lamina.formats.ets import EtsCompression, EtsFile, EtsPixelType, TileCoord, read_ets
from lamina.formats.source import (
    FrameEncoding,
    OpticalPath,
    Pixels,
    SlideMetadata,
    SlideSource,
    SourceImage,
    SourceOptions,
    check_geometry,
)
from lamina.formats.tiff_common import is_tiff
from lamina.formats.vsi_meta import VsiDocument, VsiImage, read_vsi
from lamina.model.enums import ImageFlavorValues
from lamina.model.geometry import SizeMm, SizePx

_COPIED = {EtsCompression.JPEG: "JPEG", EtsCompression.JPEG_2000: "JPEG 2000"}
_SAMPLES = {EtsPixelType.UINT8: 8, EtsPixelType.UINT16: 16}


def ets_path(vsi: Path, stack: str) -> Path:
    """Where the ETS file of image stack ``stack`` of ``vsi`` is: ``_NAME_/stack/frame_t_0.ets``."""
    return vsi.parent / f"_{vsi.stem}_" / stack / "frame_t_0.ets"


class VsiLevel(SourceImage):
    """One ETS pyramid level: its tiles copied as frames, every focal plane and channel."""

    def __init__(self, ets: EtsFile, level: int, spacing: SizeMm, encoding: FrameEncoding) -> None:
        self._ets = ets
        self._level = level
        width, height = ets.levels[level].size
        self.flavor = ImageFlavorValues.VOLUME
        self.size = SizePx(width, height)
        self.tile_size = SizePx(*ets.tile_size)
        self.samples_per_pixel = ets.samples_per_pixel
        self.pixel_spacing = spacing
        self.encoding = encoding
        self.source_lossy = encoding.lossy_method is not None
        self.focal_planes = ets.z_planes
        self.optical_paths = ets.channels
        self.bits_stored = _SAMPLES[ets.pixel_type]
        grid = ets.levels[level].grid
        if grid != (self.grid.width, self.grid.height):
            raise CorruptSourceError(
                ets.path,
                f"level {level} is {width}x{height} pixels, whose tiles of {self.tile_size} make a grid "
                f"of {self.grid}, but its tiles span {grid[0]}x{grid[1]}; the file is damaged: "
                "copy the slide again from the scanner",
            )
        check_geometry(ets.path, f"level {level}", self.size, self.tile_size)

    def _coord(self, index: int) -> TileCoord:
        area = self.grid.area
        plane, at = divmod(index, area)
        c, z = divmod(plane, self.focal_planes)
        row, col = divmod(at, self.grid.width)
        return TileCoord(col, row, z, c, 0, self._level)

    def read_frame(self, index: int) -> bytes:
        coord = self._coord(index)
        if coord not in self._ets.tiles:
            return self._background_frame()
        data = self._ets.tile(coord)
        if self.read_observer is not None:
            self.read_observer(self._ets.path, self._ets.tiles[coord].offset, data)
        return data

    def frame_lengths(self) -> Sequence[int] | None:
        tiles = self._ets.tiles
        lengths = []
        for index in range(self.frame_count):
            entry = tiles.get(self._coord(index))
            lengths.append(entry.length if entry is not None else len(self._background_frame()))
        return lengths

    @functools.cache  # noqa: B019 - one per level, kept as long as the level
    def _background_frame(self) -> bytes:
        """A tile of the ETS's background value, in the frames' codec (JPEG 2000 lossless is a
        JPEG 2000 codestream, so it sits among lossy ones too)."""
        value = self._ets.background[0] if self._ets.background else 0
        tile = np.full(
            (self.tile_size.height, self.tile_size.width, self.samples_per_pixel), value, self.dtype
        )
        return codec.encode_like(tile, self.encoding or codec.lossless_encoding(self.samples_per_pixel))

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        index = self.frame_index(col, row, z, c)
        frame = self.read_frame(index)
        assert self.encoding is not None
        try:
            pixels = codec.decode(frame, self.encoding, (self.tile_size.width, self.tile_size.height))
        except CodecError as exc:
            raise CorruptSourceError(
                self._ets.path,
                f"level {self._level}, tile ({col}, {row}) of focal plane {z + 1}, channel {c + 1} cannot "
                f"be decoded: {exc}; the file is damaged: copy the slide again from the scanner",
            ) from exc
        return pixels


class VsiSource(SlideSource):
    format_name = "olympus_vsi"
    display_name = "Evident (Olympus) VSI"
    priority = 60
    suffixes = (".vsi",)

    @classmethod
    def detect(cls, path: Path) -> bool:
        # a .vsi is a small TIFF (its preview) holding the property tree; the name says which
        return cls.named_like(path) and (is_tiff(path) or path.is_file())

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        self.document: VsiDocument = read_vsi(path)
        image = self._volume_image()
        assert image.stack is not None
        self._ets_path = ets_path(path, image.stack)
        if not self._ets_path.is_file():
            raise MissingMetadataError(
                path,
                f"the pixels of {image.name!r} are not beside the .vsi: "
                f"{self._ets_path.relative_to(path.parent)} is missing; copy the folder "
                f"_{path.stem}_ together with the .vsi file",
            )
        ets = read_ets(self._ets_path, axes=image.axes, image_size=image.size)
        self._check(ets)
        self.ets = ets
        self.image = image
        spacing = options.pixel_spacing
        if spacing is None and image.pixel_spacing_um is not None:
            spacing = SizeMm(image.pixel_spacing_um[0] / 1000.0, image.pixel_spacing_um[1] / 1000.0)
        if spacing is None:
            raise MissingMetadataError(
                path, "the .vsi gives no pixel spacing for its image; give it with --mpp (µm per pixel)"
            )
        encoding = self._encoding(ets)
        base = ets.levels[0].size
        self._levels = [
            VsiLevel(
                ets,
                level,
                SizeMm(spacing.width * base[0] / size[0], spacing.height * base[1] / size[1]),
                encoding,
            )
            for level, (size, _) in enumerate((item.size, item.grid) for item in ets.levels)
        ]
        if ets.channels != max(1, len(image.channels)) and image.channels:
            raise CorruptSourceError(
                path,
                f"the .vsi describes {len(image.channels)} channels for {image.name!r}, its ETS file holds "
                f"{ets.channels}; the slide's files do not belong together: copy them again",
            )
        self._metadata = self._read_metadata(image, ets)

    def _volume_image(self) -> VsiImage:
        stacked = [image for image in self.document.images if image.stack]
        if not stacked:
            raise UnsupportedFormatError(self.path, "the .vsi describes no image stack with pixels (ETS)")
        return max(stacked, key=lambda image: (image.size or (0, 0))[0] * (image.size or (0, 0))[1])

    def _check(self, ets: EtsFile) -> None:
        if ets.compression not in _COPIED:
            raise UnsupportedFormatError(
                self._ets_path,
                f"{ets.compression.name} tiles: lamina reads VSI slides with JPEG or JPEG 2000 tiles",
            )
        if ets.pixel_type not in _SAMPLES:
            raise UnsupportedFormatError(
                self._ets_path,
                f"{ets.pixel_type.dtype} samples: lamina reads 8-bit and unsigned 16-bit slides",
            )
        if ets.timepoints > 1:
            raise UnsupportedFormatError(
                self._ets_path, f"a time series of {ets.timepoints} timepoints: a slide has one"
            )
        if ets.samples_per_pixel not in (1, 3) or (ets.samples_per_pixel == 3 and ets.bits > 8):
            raise UnsupportedFormatError(
                self._ets_path,
                f"{ets.samples_per_pixel} samples of {ets.bits} bits per pixel: "
                "lamina reads grey or 8-bit RGB",
            )

    def _encoding(self, ets: EtsFile) -> FrameEncoding:
        """The frames' DICOM encoding, read from the first stored tile's header."""
        first = min(ets.tiles, default=None)
        if first is None:
            raise CorruptSourceError(self._ets_path, "the ETS file holds no tile; copy the slide again")
        data = ets.tile(first)
        try:
            if ets.compression is EtsCompression.JPEG_2000:
                info = codec.j2k_info(data)
                encoding = codec.j2k_encoding(info)
            else:
                found = codec.jpeg_encoding(codec.jpeg_info(data))
                if found is None:
                    raise UnsupportedFormatError(
                        self._ets_path, "JPEG tiles that are not baseline 8-bit: DICOM has no place for them"
                    )
                encoding = found
        except CodecError as exc:
            raise CorruptSourceError(
                self._ets_path, f"tile {tuple(first)} is not a {_COPIED[ets.compression]} stream: {exc}"
            ) from exc
        return encoding

    def _read_metadata(self, image: VsiImage, ets: EtsFile) -> SlideMetadata:
        fluorescence = ets.samples_per_pixel == 1 and (ets.bits > 8 or len(image.channels) > 1)
        paths = tuple(
            OpticalPath(
                description=channel.name or None,
                illumination_nm=channel.excitation_nm,
                emission_nm=channel.emission_nm,
                color=channel.color,
                fluorescence=fluorescence,
            )
            for channel in image.channels
        )
        acquired = image.acquired
        if acquired is not None and acquired.tzinfo is None:
            acquired = acquired.replace(tzinfo=dt.UTC)
        doc = self.document
        return SlideMetadata(
            manufacturer=doc.manufacturer,
            model_name=doc.model_name,
            software_versions=(doc.software,) if doc.software else (),
            acquisition_datetime=acquired,
            objective_power=image.objective_power,
            description=image.name,
            optical_paths=paths if ets.channels > 1 or fluorescence else (),
            focal_plane_spacing_mm=None if image.z_spacing_um is None else image.z_spacing_um / 1000.0,
        )

    @property
    def metadata(self) -> SlideMetadata:
        return self._metadata

    @property
    def files(self) -> Sequence[Path]:
        return [self.path, self._ets_path]
