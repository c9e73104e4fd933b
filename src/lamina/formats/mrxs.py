"""3DHISTECH MRXS (MIRAX): ``NAME.mrxs`` and the folder ``NAME/`` of Slidedat.ini, Index.dat and Data files.

Each zoom level is a set of camera images placed by the slide's position map (or, without one,
by the nominal overlap), exactly as OpenSlide's MIRAX reader places them: an image is cut into
sub-tiles, one per camera position it covers, each drawn at that position divided by the level's
concatenation factor; where they overlap, the image of the highest row, then column, is on top
(OpenSlide draws the last cell first and paints with cairo's SATURATE: the first drawn stays).

* Where a level's JPEG camera images sit on a regular grid, edge to edge, with the tile's size,
  they are the DICOM frames, copied byte for byte; a grid cell with no image is a frame of the
  slide's fill colour.
* Otherwise (overlapping or irregular positions, PNG or BMP images) the tiles are composed from
  the images as OpenSlide places them, a few decoded images at a time, and handed over decoded
  (the writer stores them losslessly). Sub-pixel positions of reduced levels are rounded down,
  where OpenSlide interpolates.

Pixel spacing is MICROMETER_PER_PIXEL_X/Y of level 0, the objective OBJECTIVE_MAGNIFICATION; the
macro (``ScanDataLayer_SlideThumbnail``) and label (``ScanDataLayer_SlideBarcode``) are the
OVERVIEW and LABEL images.
"""

from __future__ import annotations

import functools
import io
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from lamina.errors import CodecError, CorruptSourceError, MissingMetadataError, UnsupportedFormatError
from lamina.formats import codec
from lamina.formats.images import MAX_DECODED_PIXELS, DecodedImage
from lamina.formats.mrxs_index import IndexFile, Record, Slidedat, ZoomLevel, positions_from, read_slidedat
from lamina.formats.source import (
    FrameEncoding,
    Pixels,
    SlideMetadata,
    SlideSource,
    SourceImage,
    SourceOptions,
    check_geometry,
)
from lamina.model.enums import ImageFlavorValues, LossyImageCompressionMethodValues
from lamina.model.geometry import SizeMm, SizePx

_DAMAGED = "the slide's files are damaged or truncated: copy the slide again from the scanner"
#: Tiles of a composed level, and how many decoded camera images are kept for the next tiles.
_TILE = 512
_CACHED_IMAGES = 16


@dataclass(frozen=True)
class Placement:
    """A sub-tile of a camera image drawn on a level, in that level's pixels."""

    record: Record
    x: int
    y: int
    src_x: int
    src_y: int
    width: int
    height: int
    #: OpenSlide's grid cell of the sub-tile: where sub-tiles overlap, the highest (row, col) is on top.
    col: int
    row: int
    #: The image's cell in a grid of whole images (camera index // concatenation).
    cell_x: int
    cell_y: int


class _Images:
    """The camera images of a slide's Data files: read with bounds, decoded a few at a time."""

    def __init__(self, paths: Sequence[Path], sizes: Sequence[int]) -> None:
        self.paths = paths
        self.sizes = sizes
        self._decoded: OrderedDict[tuple[int, int], Pixels] = OrderedDict()

    def read(self, record: Record) -> bytes:
        path = self.paths[record.file]
        try:
            with path.open("rb") as fh:
                fh.seek(record.offset)
                data = fh.read(record.length)
        except OSError as exc:
            raise CorruptSourceError(path, f"cannot be read ({exc.strerror}); {_DAMAGED}") from exc
        if len(data) != record.length:
            raise CorruptSourceError(path, f"image {record.index} is cut short; {_DAMAGED}")
        return data

    def decode(self, record: Record, image_format: str, size: tuple[int, int], what: str) -> Pixels:
        key = (record.file, record.offset)
        pixels = self._decoded.get(key)
        if pixels is not None:
            self._decoded.move_to_end(key)
            return pixels
        data = self.read(record)
        try:
            if image_format == "JPEG":
                array = np.asarray(imagecodecs.jpeg8_decode(data))
            elif image_format == "PNG":
                array = np.asarray(imagecodecs.png_decode(data))
            else:
                with Image.open(io.BytesIO(data)) as image:
                    array = np.asarray(image.convert("RGB"))
        except Exception as exc:
            raise CorruptSourceError(
                self.paths[record.file], f"{what} cannot be decoded: {codec.damage(exc)}; {_DAMAGED}"
            ) from exc
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.dtype != np.uint8 or array.shape[:2] != (size[1], size[0]):
            raise CorruptSourceError(
                self.paths[record.file],
                f"{what} is {array.shape[1]}x{array.shape[0]} {array.dtype} pixels, Slidedat.ini says "
                f"{size[0]}x{size[1]} 8-bit; {_DAMAGED}",
            )
        pixels = array[..., :3]
        self._decoded[key] = pixels
        if len(self._decoded) > _CACHED_IMAGES:
            self._decoded.popitem(last=False)
        return pixels


class MrxsLevel(SourceImage):
    """One zoom level: its camera images copied as frames, or its tiles composed from them."""

    def __init__(
        self,
        images: _Images,
        number: int,
        zoom: ZoomLevel,
        size: SizePx,
        spacing: SizeMm | None,
        placements: list[Placement],
    ) -> None:
        self._images = images
        self._number = number
        self._zoom = zoom
        self.flavor = ImageFlavorValues.VOLUME
        self.size = size
        self.samples_per_pixel = 3
        self.pixel_spacing = spacing
        self.source_lossy = zoom.image_format == "JPEG"
        self._placements = placements
        width, height = zoom.image_size
        self._frames = self._grid_frames(placements)
        self.encoding: FrameEncoding | None = None
        if self._frames is not None:
            self.tile_size = SizePx(width, height)
            self.encoding = self._copied_encoding()
        if self.encoding is None:
            self._frames = None
            self.tile_size = SizePx(min(_TILE, size.width), min(_TILE, size.height))
            self._by_tile = self._index_tiles()
            if self.source_lossy:
                unique = {(p.record.file, p.record.offset): p.record.length for p in placements}
                stored = sum(unique.values())
                self.lossy_method = LossyImageCompressionMethodValues.ISO_10918_1
                self.lossy_ratio = width * height * 3 * len(unique) / stored if stored else None
        check_geometry(images.paths[0], f"zoom level {number}", self.size, self.tile_size)

    def _grid_frames(self, placements: list[Placement]) -> dict[int, Record] | None:
        """The frame index of every image when the level's JPEG images tile it edge to edge, each
        drawn whole where its grid cell is (None when one is not)."""
        if self._zoom.image_format != "JPEG":
            return None
        width, height = self._zoom.image_size
        columns, rows = -(-self.size.width // width), -(-self.size.height // height)
        frames: dict[int, Record] = {}
        for p in placements:
            if (p.x, p.y) != (p.cell_x * width + p.src_x, p.cell_y * height + p.src_y):
                return None
            if p.cell_x < columns and p.cell_y < rows:
                frames[p.cell_y * columns + p.cell_x] = p.record
        return frames

    def _copied_encoding(self) -> FrameEncoding | None:
        """The frames' encoding, from the first image's header; None when DICOM cannot carry
        them as stored (not baseline, or not the tile's size)."""
        assert self._frames is not None
        first = next(iter(self._frames.values()), None)
        if first is None:
            return None
        head = self._images.read(Record(first.index, first.file, first.offset, min(first.length, 4096)))
        try:
            info = codec.jpeg_info(head)
        except CodecError as exc:
            raise CorruptSourceError(
                self._images.paths[first.file], f"{self._what(first)} is not a JPEG stream: {exc}; {_DAMAGED}"
            ) from exc
        if (info.width, info.height) != self._zoom.image_size:
            return None
        return codec.jpeg_encoding(info)

    def _index_tiles(self) -> dict[tuple[int, int], list[Placement]]:
        """The sub-tiles that reach each tile, the one on top last (see :class:`Placement`)."""
        tw, th = self.tile_size.width, self.tile_size.height
        grid = self.grid
        by_tile: dict[tuple[int, int], list[Placement]] = {}
        for p in sorted(self._placements, key=lambda p: (p.row, p.col)):
            right, bottom = p.x + p.width, p.y + p.height
            if right <= 0 or bottom <= 0:
                continue
            for row in range(max(0, p.y // th), min(grid.height, -(-bottom // th))):
                for col in range(max(0, p.x // tw), min(grid.width, -(-right // tw))):
                    by_tile.setdefault((col, row), []).append(p)
        return by_tile

    @functools.cached_property
    def _background(self) -> bytes:
        tile = np.empty((self.tile_size.height, self.tile_size.width, 3), np.uint8)
        tile[...] = self._zoom.fill_rgb
        return codec.encode(tile, codec.lossy_encoding(3))

    def read_frame(self, index: int) -> bytes:
        assert self._frames is not None
        record = self._frames.get(index)
        if record is None:
            return self._background
        data = self._images.read(record)
        if self.read_observer is not None:
            self.read_observer(self._images.paths[record.file], record.offset, data)
        return data

    def frame_lengths(self) -> Sequence[int] | None:
        if self._frames is None:
            return None
        frames = self._frames
        return [frames[i].length if i in frames else len(self._background) for i in range(self.frame_count)]

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        tw, th = self.tile_size.width, self.tile_size.height
        size = self._zoom.image_size
        if self._frames is not None:
            record = self._frames.get(self.frame_index(col, row))
            if record is None:
                tile = np.empty((th, tw, 3), np.uint8)
                tile[...] = self._zoom.fill_rgb
                return tile
            return self._images.decode(record, "JPEG", size, self._what(record))
        tile = np.empty((th, tw, 3), np.uint8)
        tile[...] = self._zoom.fill_rgb
        left, top = col * tw, row * th
        for p in self._by_tile.get((col, row), ()):
            image = self._images.decode(p.record, self._zoom.image_format, size, self._what(p.record))
            # the part of the sub-tile inside this tile, in the tile's and the image's pixels
            x0, y0 = max(p.x, left), max(p.y, top)
            x1, y1 = min(p.x + p.width, left + tw), min(p.y + p.height, top + th)
            sx, sy = p.src_x + x0 - p.x, p.src_y + y0 - p.y
            part = image[sy : sy + y1 - y0, sx : sx + x1 - x0]
            tile[y0 - top : y0 - top + part.shape[0], x0 - left : x0 - left + part.shape[1]] = part
        return tile

    def _what(self, record: Record) -> str:
        return f"camera image {record.index} of zoom level {self._number}"


def _placements(
    slide: Slidedat,
    number: int,
    records: list[Record],
    positions: list[tuple[int, int]],
    active: set[int],
    mapped: bool,
) -> list[Placement]:
    """Where OpenSlide draws the sub-tiles of zoom level ``number`` (``mirax_open`` and
    ``process_hier_data_pages_from_indexfile``). ``active`` collects, at level 0, the camera
    positions that have an image; higher levels draw only sub-tiles over those."""
    levels = slide.levels
    zoom = levels[number]
    divisions, across, down = slide.divisions, slide.across, slide.down
    concat = 2 ** sum(level.concat_exponent for level in levels[: number + 1])
    if mapped:
        per_image, divisor, per_tile = max(1, concat // divisions), min(concat, divisions), 1
    else:
        per_image, divisor, per_tile = 1, concat, max(1, concat // divisions)
    tile_w, tile_h = zoom.image_size[0] / per_image, zoom.image_size[1] / per_image
    image0_w, image0_h = levels[0].image_size
    positions_across = across // divisions
    out: list[Placement] = []
    for record in records:
        x, y = record.index % across, record.index // across
        if y >= down or x % concat or y % concat:
            raise CorruptSourceError(
                Path(slide.index_file),
                f"image {record.index} of zoom level {number} lies off its grid of {across}x{down} images "
                f"concatenated by {concat}; {_DAMAGED}",
            )
        for yi in range(per_image):
            yy = y + yi * divisions
            if yy >= down:
                break
            for xi in range(per_image):
                xx = x + xi * divisions
                if xx >= across:
                    break
                xp, yp = xx // divisions, yy // divisions
                position = yp * positions_across + xp
                if position >= len(positions):
                    continue
                px, py = positions[position]
                if number == 0:
                    if (px, py) == (0, 0) and (xp, yp) != (0, 0):
                        continue  # an empty camera position (OpenSlide's rule)
                    active.add(position)
                elif not any(
                    (yp + j) * positions_across + xp + i in active
                    for j in range(per_tile)
                    for i in range(per_tile)
                ):
                    continue
                pos_x = (px + image0_w * (xx - xp * divisions)) / concat
                pos_y = (py + image0_h * (yy - yp * divisions)) / concat
                out.append(
                    Placement(
                        record,
                        math.floor(pos_x),
                        math.floor(pos_y),
                        math.floor(tile_w * xi),
                        math.floor(tile_h * yi),
                        math.ceil(tile_w),
                        math.ceil(tile_h),
                        x // divisor + xi,
                        y // divisor + yi,
                        x // concat,
                        y // concat,
                    )
                )
    return out


class MrxsSource(SlideSource):
    format_name = "mirax_mrxs"
    display_name = "3DHISTECH MRXS"
    priority = 60
    suffixes = (".mrxs",)

    @classmethod
    def detect(cls, path: Path) -> bool:
        # the .mrxs says little; its name does, and the folder beside it holds the slide (a .mrxs
        # without it is claimed all the same, so that opening it says what is missing)
        try:
            return cls.named_like(path) and path.is_file()
        except OSError:
            return False

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        self.folder = path.with_suffix("")
        slidedat_path = self.folder / "Slidedat.ini"
        if not slidedat_path.is_file():
            raise MissingMetadataError(
                path,
                f"the slide's folder is missing: {self.folder.name}/Slidedat.ini is not beside the .mrxs; "
                f"copy the folder {self.folder.name} together with the .mrxs file",
            )
        slide = read_slidedat(slidedat_path)
        self.slidedat = slide
        self._data_paths = [self.folder / name for name in slide.data_files]
        sizes = []
        for data in self._data_paths:
            try:
                sizes.append(data.stat().st_size)
            except OSError:
                raise MissingMetadataError(
                    path,
                    f"{self.folder.name}/{data.name}, a Data file Slidedat.ini lists, is missing: "
                    f"copy the folder {self.folder.name} whole",
                ) from None
        images = _Images(self._data_paths, sizes)
        self._index_path = self.folder / slide.index_file
        index = IndexFile(self._index_path, slide.slide_id, tuple(sizes))
        positions, mapped = self._positions(index, images)
        base_w, base_h = self._base_size()
        spacing = options.pixel_spacing
        mpp = slide.levels[0].mpp
        if spacing is None and min(mpp) > 0:
            spacing = SizeMm(mpp[0] / 1000.0, mpp[1] / 1000.0)
        if spacing is None:
            raise MissingMetadataError(
                slidedat_path,
                "Slidedat.ini gives no pixel spacing (MICROMETER_PER_PIXEL_X); give it with --mpp",
            )
        active: set[int] = set()
        concat0 = 2 ** slide.levels[0].concat_exponent
        for number, zoom in enumerate(slide.levels):
            records = index.zoom_level(number)
            self._check_bounds(records, sizes, number)
            placements = _placements(slide, number, records, positions, active, mapped)
            concat = 2 ** sum(level.concat_exponent for level in slide.levels[: number + 1])
            size = SizePx(base_w // concat, base_h // concat)
            if min(size.width, size.height) < 1:
                break
            down = concat / concat0
            self._levels.append(
                MrxsLevel(
                    images,
                    number,
                    zoom,
                    size,
                    SizeMm(spacing.width * down, spacing.height * down),
                    placements,
                )
            )
        self._associated = [
            image
            for image in (
                self._associated_image(index, images, slide.macro, "macro", ImageFlavorValues.OVERVIEW),
                self._associated_image(index, images, slide.label, "label", ImageFlavorValues.LABEL),
            )
            if image is not None
        ]
        general = slide.ini.get("GENERAL", {})
        self._metadata = SlideMetadata(
            manufacturer="3DHISTECH",
            model_name=general.get("SCANNER_TYPE") or None,
            software_versions=(general["SLIDE_VERSION"],) if general.get("SLIDE_VERSION") else (),
            objective_power=slide.objective,
            description=general.get("SLIDE_NAME") or None,
        )

    def _check_bounds(self, records: list[Record], sizes: list[int], number: int) -> None:
        for record in records:
            if record.offset + record.length > sizes[record.file]:
                path = self._data_paths[record.file]
                raise CorruptSourceError(
                    path,
                    f"camera image {record.index} of zoom level {number} lies at bytes {record.offset} to "
                    f"{record.offset + record.length}, past its end "
                    f"({sizes[record.file]} bytes): truncated; copy the slide again",
                )

    def _positions(self, index: IndexFile, images: _Images) -> tuple[list[tuple[int, int]], bool]:
        """The camera positions in level-0 pixels, and whether a position map gave them."""
        slide = self.slidedat
        count = (slide.across // slide.divisions) * (slide.down // slide.divisions)
        concat0 = 2 ** slide.levels[0].concat_exponent
        record_number = slide.positions if slide.positions is not None else slide.stitching
        if record_number is not None:
            record = index.nonhier(record_number, "position map")
            self._check_bounds([record], list(images.sizes), 0)
            data = images.read(record)
            return positions_from(data, slide.positions is None, count, concat0, self._index_path), True
        zoom = slide.levels[0]
        step_x = zoom.image_size[0] * slide.divisions - zoom.overlap[0]
        step_y = zoom.image_size[1] * slide.divisions - zoom.overlap[1]
        per_row = slide.across // slide.divisions
        positions = [(int(i % per_row * step_x), int(i // per_row * step_y)) for i in range(count)]
        return positions, zoom.overlap != (0.0, 0.0)

    def _base_size(self) -> tuple[int, int]:
        """Level 0's size before concatenation, as OpenSlide adds it up (overlaps between photos)."""
        slide = self.slidedat
        zoom = slide.levels[0]

        def side(count: int, image: int, overlap: float) -> int:
            total = 0.0
            for i in range(count):
                last = i % slide.divisions == slide.divisions - 1 and i != count - 1
                total += image - overlap if last else image
            return int(total)

        return (
            side(slide.across, zoom.image_size[0], zoom.overlap[0]),
            side(slide.down, zoom.image_size[1], zoom.overlap[1]),
        )

    def _associated_image(
        self, index: IndexFile, images: _Images, number: int | None, what: str, flavor: ImageFlavorValues
    ) -> DecodedImage | None:
        if number is None:
            return None
        record = index.nonhier(number, f"{what} image")
        self._check_bounds([record], list(images.sizes), 0)
        data = images.read(record)
        path = self._data_paths[record.file]
        try:
            info = codec.jpeg_info(data)
            if info.width * info.height > MAX_DECODED_PIXELS:
                raise UnsupportedFormatError(
                    path,
                    f"the {what} image is {info.width}x{info.height} pixels: too large to be one",
                )
            pixels = np.asarray(imagecodecs.jpeg8_decode(data))
        except UnsupportedFormatError:
            raise
        except Exception as exc:
            raise CorruptSourceError(
                path, f"the {what} image cannot be decoded: {codec.damage(exc)}; {_DAMAGED}"
            ) from exc
        image = DecodedImage(pixels, flavor, None, True)
        image.lossy_method = LossyImageCompressionMethodValues.ISO_10918_1
        image.lossy_ratio = image.size.area * image.samples_per_pixel / len(data)
        return image

    @property
    def metadata(self) -> SlideMetadata:
        return self._metadata

    @property
    def files(self) -> Sequence[Path]:
        members = [self.path, self.folder / "Slidedat.ini", self._index_path, *self._data_paths]
        return list(dict.fromkeys(members))
