"""The next pyramid level made while a level is encoded, so that nothing is decoded twice.

A level lamina re-encodes (pixel-exact formats, generated levels) has each tile's pixels in hand
once; the level below it is their 2x2 average. Rather than decode the frames just written (JPEG
2000 decodes as slowly as it encodes), :class:`QuarterSpool` halves each tile as it passes, puts
the half into its quarter of the next level's tile, and keeps the next level's tiles raw in a
temporary file, one row of tiles at a time in memory. :class:`~lamina.formats.pyramid.GeneratedLevel`
then reads its tiles from the spool. The result is the same, pixel for pixel, as computing the
tile from the four tiles above it (``GeneratedLevel.decode_tile``) when the tile's sides are even
(2x2 blocks then never straddle two tiles); odd tile sizes keep the old way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lamina.formats.source import Pixels, SourceImage

if TYPE_CHECKING:
    from lamina.formats.pyramid import GeneratedLevel


def can_spool(parent: SourceImage, child: SourceImage) -> bool:
    """Whether ``child``'s tiles can be made from ``parent``'s as they are encoded."""
    tile = parent.tile_size
    return tile.width % 2 == 0 and tile.height % 2 == 0 and child.tile_size == tile


class QuarterSpool:
    """``child``'s tiles, made from ``parent``'s tiles as they are handed to :meth:`add` in frame
    order (TILED_FULL: columns, rows, focal planes, optical paths), kept raw in a temporary file
    in ``folder``."""

    def __init__(self, parent: SourceImage, child: GeneratedLevel, folder: Path | None = None) -> None:
        from lamina.formats.pyramid import background

        self._parent = parent
        self._child = child
        tw, th = child.tile_size.width, child.tile_size.height
        self._shape = (th, tw, child.samples_per_pixel)
        self._tile_bytes = th * tw * child.samples_per_pixel * np.dtype(child.dtype).itemsize
        self._background = background(child)
        self._row_buffer = np.full((th, child.grid.width * tw, child.samples_per_pixel), 0, child.dtype)
        self._row: tuple[int, int] | None = None  # (plane, child row) in the buffer
        self._file = tempfile.TemporaryFile(dir=str(folder) if folder else None)  # noqa: SIM115 - closed in close()
        self._written = 0  # child tiles written, in frame order

    def half(self, col: int, row: int, pixels: Pixels) -> Pixels:
        """Parent tile (col, row)'s pixels halved (its real pixels: the padding cut off). Pure:
        may run in any thread; its result goes to :meth:`place`."""
        from lamina.formats.pyramid import downsample2

        parent = self._parent
        th, tw = parent.tile_size.height, parent.tile_size.width
        high = min(th, parent.size.height - row * th)
        wide = min(tw, parent.size.width - col * tw)
        return downsample2(pixels[:high, :wide])

    def add(self, col: int, row: int, z: int, c: int, pixels: Pixels) -> None:
        """Parent tile (col, row) of plane (z, c), decoded, padded to the tile size."""
        self.place(col, row, z, c, self.half(col, row, pixels))

    def place(self, col: int, row: int, z: int, c: int, half: Pixels) -> None:
        """Put tile (col, row)'s :meth:`half` in the next level; tiles in frame order."""
        parent = self._parent
        plane = z + c * parent.focal_planes
        target = (plane, row // 2)
        if self._row != target:
            self._flush()
            self._row = target
            self._row_buffer.fill(self._background)
        th, tw = parent.tile_size.height, parent.tile_size.width
        top = (row % 2) * (th // 2)
        left = col * (tw // 2)
        self._row_buffer[top : top + half.shape[0], left : left + half.shape[1]] = half
        # the child's row is whole after the second of its two parent rows (or the last one)
        if (row % 2 == 1 or row == parent.grid.height - 1) and col == parent.grid.width - 1:
            self._flush()

    def _flush(self) -> None:
        if self._row is None:
            return
        plane, child_row = self._row
        grid = self._child.grid
        expected = plane * grid.area + child_row * grid.width
        if expected != self._written:
            raise RuntimeError(f"tiles came out of order: child tile {expected} after {self._written}")
        tw = self._child.tile_size.width
        for col in range(grid.width):
            tile = np.ascontiguousarray(self._row_buffer[:, col * tw : (col + 1) * tw])
            self._file.write(tile.tobytes())
        self._written += grid.width
        self._row = None

    def finish(self) -> None:
        """Every parent tile was added: write the last row; the child reads from now on."""
        self._flush()
        self._file.flush()
        if self._written != self._child.frame_count:
            raise RuntimeError(f"{self._written} tiles made of the {self._child.frame_count} expected")

    def tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        index = self._child.frame_index(col, row, z, c)
        data = os.pread(self._file.fileno(), self._tile_bytes, index * self._tile_bytes)
        if len(data) != self._tile_bytes:
            raise RuntimeError(f"tile {index} of the temporary level is cut short")
        pixels: Pixels = np.frombuffer(data, self._child.dtype).reshape(self._shape)
        return pixels

    def close(self) -> None:
        self._file.close()
