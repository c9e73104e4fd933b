"""Complete a pyramid: generate levels below the smallest one until a level fits in one tile.

Each tile of a generated level is computed from the 2x2 tiles of the level above that it
covers, so memory is a few tiles whatever the size or width of the slide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from lamina.formats import codec
from lamina.formats.quarters import QuarterSpool
from lamina.formats.source import FrameEncoding, Pixels, SourceImage
from lamina.model.enums import ImageFlavorValues
from lamina.model.geometry import SizePx


def downsample2(pixels: Pixels) -> Pixels:
    """Halve both axes by averaging 2x2 blocks (an odd last row or column is repeated); the
    samples keep their type (uint8, or uint16)."""
    height, width = pixels.shape[:2]
    if height % 2 or width % 2:
        pixels = np.pad(pixels, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    wider = np.uint16 if pixels.dtype == np.uint8 else np.uint32
    summed: npt.NDArray[np.unsignedinteger[Any]] = pixels[0::2, 0::2].astype(wider)
    summed += pixels[1::2, 0::2]
    summed += pixels[0::2, 1::2]
    summed += pixels[1::2, 1::2]
    summed += 2
    halved: Pixels = (summed >> 2).astype(pixels.dtype)
    return halved


def background(image: SourceImage) -> int:
    """What pads a tile past the image's edge: white for brightfield, black for fluorescence."""
    return 0 if image.optical_paths > 1 or image.bits_stored > 8 else 255


_fill = background


#: More levels than any slide has: 2**48 pixels across.
_MAX_LEVELS = 48


class GeneratedLevel(SourceImage):
    """A pyramid level computed from the level above by 2x2 averaging."""

    def __init__(self, parent: SourceImage) -> None:
        self.parent = parent
        self.flavor = ImageFlavorValues.VOLUME
        self.size = SizePx(-(-parent.size.width // 2), -(-parent.size.height // 2))
        self.tile_size = parent.tile_size
        self.samples_per_pixel = parent.samples_per_pixel
        self.pixel_spacing = None if parent.pixel_spacing is None else parent.pixel_spacing.scaled(2.0)
        self.encoding = None
        self.source_lossy = parent.source_lossy
        self.focal_planes = parent.focal_planes
        self.optical_paths = parent.optical_paths
        self.bits_stored = parent.bits_stored
        # how the pixels it is computed from were compressed (JPEG, or lossy JPEG 2000)
        self.lossy_method = parent.lossy_method or (parent.encoding.lossy_method if parent.encoding else None)
        #: The tiles made while the level above was encoded (formats.quarters), when it was
        self.spool: QuarterSpool | None = None

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        if self.spool is not None:
            return self.spool.tile(col, row, z, c)
        parent = self.parent
        tw, th = self.tile_size.width, self.tile_size.height
        grid = parent.grid
        background = _fill(self)
        block = np.full((2 * th, 2 * tw, self.samples_per_pixel), background, self.dtype)
        for dy in (0, 1):
            for dx in (0, 1):
                pcol, prow = 2 * col + dx, 2 * row + dy
                if pcol < grid.width and prow < grid.height:
                    block[dy * th : (dy + 1) * th, dx * tw : (dx + 1) * tw] = parent.decode_tile(
                        pcol, prow, z, c
                    )
        # only the parent's real pixels count: its edge tiles are padded
        high = min(2 * th, parent.size.height - 2 * row * th)
        wide = min(2 * tw, parent.size.width - 2 * col * tw)
        small = downsample2(block[:high, :wide])
        if small.shape[:2] == (th, tw):
            return small
        out = np.full((th, tw, self.samples_per_pixel), background, self.dtype)
        out[: small.shape[0], : small.shape[1]] = small
        return out


def complete_pyramid(levels: Sequence[SourceImage]) -> list[SourceImage]:
    """``levels`` (largest first) followed by generated levels down to one tile."""
    result = list(levels)
    smallest = result[-1]
    # readers refuse a tile size of zero (check_geometry); the bound keeps a pyramid finite anyway
    while (
        smallest.size.width > smallest.tile_size.width or smallest.size.height > smallest.tile_size.height
    ) and len(result) < _MAX_LEVELS:
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
        self.focal_planes = level.focal_planes
        self.optical_paths = level.optical_paths
        self.bits_stored = level.bits_stored
        # a DICOM source's attributes travel down to the levels generated from it
        origin = level
        while isinstance(origin, GeneratedLevel):
            origin = origin.parent
        self.dataset = origin.dataset
        self._read = read

    def read_frame(self, index: int) -> bytes:
        return self._read(index)

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        frame = self._read(self.frame_index(col, row, z, c))
        size = (self.tile_size.width, self.tile_size.height)
        return codec.decode(frame, self.encoding or codec.lossy_encoding(3), size)
