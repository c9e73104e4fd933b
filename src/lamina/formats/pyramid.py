"""Complete a pyramid: generate levels below the smallest one until a level fits in one tile.

Generated levels are computed tile by tile from a band of two tile rows of the level above, so
memory stays bounded by the width of that level, never by its area.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lamina.formats import codec
from lamina.formats.source import FrameEncoding, ImageFlavor, Pixels, SourceImage
from lamina.model.geometry import SizePx


def downsample2(pixels: Pixels) -> Pixels:
    """Halve both axes by averaging 2x2 blocks (odd edges are repeated)."""
    height, width = pixels.shape[:2]
    if height % 2 or width % 2:
        pixels = np.pad(pixels, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    wide = pixels.astype(np.uint16)
    summed = wide[0::2, 0::2] + wide[1::2, 0::2] + wide[0::2, 1::2] + wide[1::2, 1::2]
    return ((summed + 2) >> 2).astype(np.uint8)


class GeneratedLevel(SourceImage):
    """A pyramid level computed from the level above by 2x2 averaging."""

    def __init__(self, parent: SourceImage) -> None:
        self.parent = parent
        self.flavor = ImageFlavor.VOLUME
        self.size = SizePx(-(-parent.size.width // 2), -(-parent.size.height // 2))
        self.tile_size = parent.tile_size
        self.samples_per_pixel = parent.samples_per_pixel
        self.pixel_spacing = None if parent.pixel_spacing is None else parent.pixel_spacing.scaled(2.0)
        self.encoding = None
        self.source_lossy = parent.source_lossy
        self._band_row: int | None = None
        self._band: Pixels | None = None

    def _band_for(self, row: int) -> Pixels:
        """The downsampled pixels of output tile row ``row`` (parent rows 2*row and 2*row+1)."""
        if self._band_row != row or self._band is None:
            parent = self.parent
            grid = parent.grid
            rows = [r for r in (2 * row, 2 * row + 1) if r < grid.height]
            strips = [
                np.concatenate([parent.decode_tile(col, r) for col in range(grid.width)], axis=1)
                for r in rows
            ]
            band = np.concatenate(strips, axis=0)
            # crop to the parent's real size so padding never bleeds into the edge
            top = rows[0] * parent.tile_size.height
            band = band[: max(1, parent.size.height - top), : parent.size.width]
            self._band = downsample2(band)
            self._band_row = row
        return self._band

    def decode_tile(self, col: int, row: int) -> Pixels:
        band = self._band_for(row)
        tw, th = self.tile_size.width, self.tile_size.height
        tile = band[:th, col * tw : (col + 1) * tw]
        if tile.shape[:2] == (th, tw):
            return np.ascontiguousarray(tile)
        out = np.full((th, tw, self.samples_per_pixel), 255, np.uint8)
        out[: tile.shape[0], : tile.shape[1]] = tile
        return out


def complete_pyramid(levels: Sequence[SourceImage]) -> list[SourceImage]:
    """``levels`` (largest first) followed by generated levels down to one tile."""
    result = list(levels)
    smallest = result[-1]
    while smallest.size.width > smallest.tile_size.width or smallest.size.height > smallest.tile_size.height:
        smallest = GeneratedLevel(smallest)
        result.append(smallest)
    return result


class WrittenLevel(SourceImage):
    """A level already written as DICOM frames, read back to compute the next level down.

    Each generated level is computed from the one above it once that one is written, so a
    single-level source is decoded once, not once per generated level.
    """

    def __init__(self, level: SourceImage, encoding: FrameEncoding, read: Callable[[int], bytes]) -> None:
        self.flavor = level.flavor
        self.size = level.size
        self.tile_size = level.tile_size
        self.samples_per_pixel = level.samples_per_pixel
        self.pixel_spacing = level.pixel_spacing
        self.encoding = encoding
        self.source_lossy = level.source_lossy
        # a DICOM source's attributes travel down to the levels generated from it
        origin = level
        while isinstance(origin, GeneratedLevel):
            origin = origin.parent
        self.dataset = origin.dataset
        self._read = read

    def read_frame(self, index: int) -> bytes:
        return self._read(index)

    def decode_tile(self, col: int, row: int) -> Pixels:
        return codec.decode(self._read(row * self.grid.width + col), self.encoding or codec.lossy_encoding(3))
