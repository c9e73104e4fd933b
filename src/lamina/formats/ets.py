"""The ETS container of Olympus/Evident cellSens VSI slides: one pyramid's tiles, read as stored.

A VSI slide is a ``NAME.vsi`` file (metadata) and a folder ``_NAME_/stackN/frame_t_*.ets``, one ETS
file per image stack. An ETS file is little-endian:

- a 64-byte ``SIS`` header: the number of dimensions of a tile's coordinate, where the ``ETS``
  header is, where the table of used chunks (tiles) is and how many there are;
- a 228-byte ``ETS`` header: pixel type, samples per pixel, colour space, compression and its
  quality, tile width/height, background colour, and whether the last coordinate is a pyramid level;
- the table of used chunks, one 44-byte record per tile for the 6 dimensions seen so far
  (``4 + 4 * dimensions + 16`` in general): an int32 we skip, the tile's int32 coordinate (x and y
  in tiles, then the other axes, then the level when the file has a pyramid), its int64 byte offset,
  its uint32 byte length and an uint32 we skip;
- the tiles' codestreams, each a whole JPEG, JPEG 2000 or raw tile.

What the ETS file does *not* hold, and the ``.vsi`` does (not read here yet): which coordinate
index is Z, C (channel), T, lambda...; the true level-0 image size (tiles are padded); pixel
spacing, channel names, focal distances. Both are parameters of :func:`read_ets`: ``axes`` and
``image_size``. Without them, the axes default to the order of the real cellSens file we test with
(Z at index 3, C at index 4), a coordinate index not named must be 0 in every tile (else the file
is refused rather than tiles mixed up), and the image size is the tile grid's.

Read as Bio-Formats (``CellSensReader.parseETSFile``) and slideio (``vsi/etsfile.cpp``) read it.
The parser is bounded: every count and offset is checked against the file's size before anything
is allocated or read from it, and the work is linear in the number of tiles.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lamina.errors import CorruptSourceError, UnsupportedFormatError

SIS_HEADER = struct.Struct("<4sIIIQIIQIIQII")  # 64 bytes
ETS_HEADER = struct.Struct("<4s9I17I10III18I")  # 228 bytes
MAX_DIMENSIONS = 16  # x, y, a handful of axes, the level: more is a damaged count
MAX_LEVELS = 32  # 2**32 times smaller than level 0 is no slide
MAX_TILE_SIDE = 1 << 16


class EtsCompression(enum.IntEnum):
    """The ``format`` field of the ETS header (slideio ``vsi::Compression``)."""

    RAW = 0
    JPEG = 2
    JPEG_2000 = 3
    JPEG_LOSSLESS = 5
    PNG = 8
    BMP = 9


class EtsPixelType(enum.IntEnum):
    """The ``componentType`` field: one sample's type (Bio-Formats ``convertPixelType``)."""

    INT8 = 1
    UINT8 = 2
    INT16 = 3
    UINT16 = 4
    INT32 = 5
    UINT32 = 6
    INT64 = 7
    UINT64 = 8
    FLOAT32 = 9
    FLOAT64 = 10

    @property
    def dtype(self) -> str:
        """The numpy dtype name (``uint16``...)."""
        return self.name.lower()

    @property
    def bits(self) -> int:
        return int("".join(ch for ch in self.name if ch.isdigit()))


class EtsColorSpace(enum.IntEnum):
    UNKNOWN = 0
    GRAY = 1
    PALETTE = 2
    RGB = 3
    BGR = 4
    HSV = 5


@dataclass(frozen=True)
class EtsAxes:
    """Which index of a tile's coordinate is each axis (0 and 1 are always x and y; the level,
    when the file has a pyramid, is always the last). Comes from the ``.vsi``'s dimension
    description; ``None``: the axis is absent (size 1)."""

    z: int | None = 3
    c: int | None = 4
    t: int | None = None


class TileCoord(NamedTuple):
    """A tile's place: column and row in tiles, focal plane, channel, timepoint, pyramid level."""

    x: int
    y: int
    z: int = 0
    c: int = 0
    t: int = 0
    level: int = 0


@dataclass(frozen=True)
class EtsTile:
    coord: TileCoord
    offset: int
    length: int


@dataclass(frozen=True)
class EtsLevel:
    """One pyramid level: its image size in pixels and its grid in tiles (columns, rows)."""

    size: tuple[int, int]
    grid: tuple[int, int]


@dataclass(frozen=True)
class EtsFile:
    """An ETS file's header and tile index. :meth:`tile` reads one tile's stored bytes."""

    path: Path
    version: int
    compression: EtsCompression
    quality: int
    pixel_type: EtsPixelType
    samples_per_pixel: int
    color_space: int
    tile_size: tuple[int, int]
    background: tuple[int, ...]
    levels: tuple[EtsLevel, ...]
    z_planes: int
    channels: int
    timepoints: int
    image_size_from: str  # "parameter" (the .vsi's size) or "tile grid" (an upper bound)
    tiles: Mapping[TileCoord, EtsTile]

    @property
    def image_size(self) -> tuple[int, int]:
        """Level 0's width and height in pixels."""
        return self.levels[0].size

    @property
    def bits(self) -> int:
        return self.pixel_type.bits

    def tile(self, coord: TileCoord) -> bytes:
        """The tile's codestream as stored (a JPEG 2000 codestream, a JPEG...), for copying as is.

        Raises KeyError for a coordinate with no tile (the file leaves background tiles out)."""
        entry = self.tiles[coord]
        with self.path.open("rb") as fh:
            fh.seek(entry.offset)
            data = fh.read(entry.length)
        if len(data) != entry.length:
            raise CorruptSourceError(
                self.path,
                f"tile {tuple(coord)} at byte offset {entry.offset} has {len(data)} of its "
                f"{entry.length} bytes: the file was truncated after it was opened",
            )
        return data


def read_ets(
    path: Path | str,
    *,
    axes: EtsAxes | None = None,
    image_size: tuple[int, int] | None = None,
) -> EtsFile:
    """Read an ETS file's headers and tile table (no tile data).

    Parameters
    ----------
    axes
        Which coordinate index is Z, C and T, as the ``.vsi`` says; default :class:`EtsAxes()`.
    image_size
        Level 0's true (width, height), from the ``.vsi``; default the tile grid's size, which
        includes the padding of the last column and row of tiles.

    Raises
    ------
    UnsupportedFormatError
        Not an ETS file (magic), or a compression, pixel type or coordinate layout not handled.
    CorruptSourceError
        A count, offset or length that does not fit the file; the message names the field and its
        byte offset.
    """
    path = Path(path)
    axes = axes or EtsAxes()
    with path.open("rb") as fh:
        data = fh.read(SIS_HEADER.size)
        size = fh.seek(0, 2)
        if len(data) < SIS_HEADER.size or data[:4] != b"SIS\0":
            raise UnsupportedFormatError(
                path, f"not an ETS file: it does not start with the 64-byte 'SIS' header (got {data[:4]!r})"
            )
        (_, header_size, _, ndims, ets_at, _, _, chunks_at, nchunks, *_) = SIS_HEADER.unpack(data)
        if header_size != SIS_HEADER.size:
            raise CorruptSourceError(path, f"SIS header size at byte offset 4 is {header_size}, not 64")
        if not 2 <= ndims <= MAX_DIMENSIONS:
            raise CorruptSourceError(
                path, f"SIS dimension count at byte offset 12 is {ndims}, not 2..{MAX_DIMENSIONS}"
            )
        if ets_at + ETS_HEADER.size > size:
            raise CorruptSourceError(
                path,
                f"the ETS header offset at byte offset 16 ({ets_at}) points past the end of the "
                f"file ({size} bytes): the file is truncated or damaged",
            )
        fh.seek(ets_at)
        ets = ETS_HEADER.unpack(fh.read(ETS_HEADER.size))
        record = struct.Struct(f"<I{ndims}iqII")
        if chunks_at + nchunks * record.size > size:
            raise CorruptSourceError(
                path,
                f"the tile table (SIS header: offset {chunks_at} at byte offset 32, {nchunks} tiles "
                f"at byte offset 40, {record.size} bytes each) ends past the end of the file "
                f"({size} bytes): the file is truncated or damaged",
            )
        fh.seek(chunks_at)
        table = fh.read(nchunks * record.size)
    magic, version, ptype, spp, cspace, fmt, quality, tile_w, tile_h, _tile_z = ets[:10]
    background, use_pyramid = ets[27:37], ets[38] != 0
    where = f"the ETS header at byte offset {ets_at}"
    if magic != b"ETS\0":
        raise CorruptSourceError(path, f"{where} does not start with 'ETS' (got {magic!r})")
    try:
        compression = EtsCompression(fmt)
        pixel_type = EtsPixelType(ptype)
    except ValueError:
        raise UnsupportedFormatError(
            path, f"{where}: compression {fmt} or pixel type {ptype} is not one lamina knows"
        ) from None
    if not (1 <= tile_w <= MAX_TILE_SIDE and 1 <= tile_h <= MAX_TILE_SIDE and 1 <= spp <= 10):
        raise CorruptSourceError(
            path, f"{where}: tile size {tile_w}x{tile_h} or {spp} samples per pixel is out of range"
        )
    tiles = _tile_index(path, table, record, ndims, use_pyramid, axes, size, chunks_at)
    levels = _levels(path, tiles, (tile_w, tile_h), image_size)
    return EtsFile(
        path=path,
        version=version,
        compression=compression,
        quality=quality,
        pixel_type=pixel_type,
        samples_per_pixel=spp,
        color_space=cspace,
        tile_size=(tile_w, tile_h),
        background=tuple(background[:spp]),
        levels=levels,
        z_planes=1 + max((c.z for c in tiles), default=0),
        channels=1 + max((c.c for c in tiles), default=0),
        timepoints=1 + max((c.t for c in tiles), default=0),
        image_size_from="tile grid" if image_size is None else "parameter",
        tiles=tiles,
    )


def _tile_index(
    path: Path,
    table: bytes,
    record: struct.Struct,
    ndims: int,
    use_pyramid: bool,
    axes: EtsAxes,
    size: int,
    table_at: int,
) -> dict[TileCoord, EtsTile]:
    level_at = ndims - 1 if use_pyramid else None
    named = {i for i in (axes.z, axes.c, axes.t, level_at) if i is not None}
    for name, index in (("z", axes.z), ("c", axes.c), ("t", axes.t)):
        if index is not None and not 2 <= index < (level_at if level_at is not None else ndims):
            raise UnsupportedFormatError(
                path, f"axes.{name}={index} is not a coordinate index of this file's {ndims} (2..)"
            )
    tiles: dict[TileCoord, EtsTile] = {}
    for n, fields in enumerate(record.iter_unpack(table)):
        at = table_at + n * record.size
        coords, offset, length = fields[1 : 1 + ndims], fields[1 + ndims], fields[2 + ndims]
        for i, value in enumerate(coords):
            if value < 0 or (i not in named and i > 1 and value != 0):
                raise UnsupportedFormatError(
                    path,
                    f"tile {n} (record at byte offset {at}) has {value} at coordinate index {i}, "
                    "which no axis names: pass the .vsi's axes to read it",
                )

        def axis(index: int | None, coords: tuple[int, ...] = coords) -> int:
            return 0 if index is None else coords[index]

        coord = TileCoord(coords[0], coords[1], axis(axes.z), axis(axes.c), axis(axes.t), axis(level_at))
        if coord.level >= MAX_LEVELS:
            raise CorruptSourceError(path, f"tile {n} (record at byte offset {at}): level {coord.level}")
        if offset < 0 or offset + length > size:
            raise CorruptSourceError(
                path,
                f"tile {n} {tuple(coord)}: its offset {offset} (byte offset {at + 4 + 4 * ndims}) "
                f"and length {length} point past the end of the file ({size} bytes): the file is "
                "truncated or damaged",
            )
        if coord in tiles:
            raise CorruptSourceError(path, f"tile {n} (record at byte offset {at}) repeats {tuple(coord)}")
        tiles[coord] = EtsTile(coord, offset, length)
    return tiles


def _levels(
    path: Path,
    tiles: Mapping[TileCoord, EtsTile],
    tile: tuple[int, int],
    image_size: tuple[int, int] | None,
) -> tuple[EtsLevel, ...]:
    """Each level's grid (from its tiles' largest column and row) and size: level 0's from
    ``image_size`` or its grid, each next level half the one before (rounded up, as Bio-Formats
    does), never beyond its grid."""
    if not tiles:
        raise CorruptSourceError(path, "the tile table is empty: the file holds no image")
    count = 1 + max(c.level for c in tiles)
    cols, rows = [0] * count, [0] * count
    for c in tiles:
        cols[c.level] = max(cols[c.level], c.x + 1)
        rows[c.level] = max(rows[c.level], c.y + 1)
    width, height = image_size or (cols[0] * tile[0], rows[0] * tile[1])
    if not (0 < width <= cols[0] * tile[0] and 0 < height <= rows[0] * tile[1]):
        raise CorruptSourceError(
            path,
            f"image size {width}x{height} does not fit level 0's {cols[0]}x{rows[0]} tiles of "
            f"{tile[0]}x{tile[1]}: the .vsi and the ETS file disagree",
        )
    levels = []
    for n in range(count):
        if n:
            width = min(-(-width // 2), max(cols[n], 1) * tile[0])
            height = min(-(-height // 2), max(rows[n], 1) * tile[1])
        levels.append(EtsLevel((width, height), (max(cols[n], 1), max(rows[n], 1))))
    return tuple(levels)
