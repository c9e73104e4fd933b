"""The next level made while a level is encoded (formats.quarters) equals, pixel for pixel, the
level computed from the four tiles above each tile, for sizes that do not fill their tiles, RGB
and 16-bit channels with focal planes, two levels down."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.formats.pyramid import GeneratedLevel
from lamina.formats.quarters import QuarterSpool, can_spool
from lamina.formats.source import Pixels, SourceImage
from lamina.model.enums import ImageFlavorValues
from lamina.model.geometry import SizeMm, SizePx


class Planes(SourceImage):
    """Random pixels of (channels, planes, height, width, samples), in tiles."""

    def __init__(self, data: np.ndarray, tile: int) -> None:
        self._data = data
        channels, planes, height, width, samples = data.shape
        self.flavor = ImageFlavorValues.VOLUME
        self.size = SizePx(width, height)
        self.tile_size = SizePx(tile, tile)
        self.samples_per_pixel = samples
        self.pixel_spacing = SizeMm(0.001, 0.001)
        self.encoding = None
        self.source_lossy = False
        self.focal_planes, self.optical_paths = planes, channels
        self.bits_stored = 16 if data.dtype == np.uint16 else 8

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        t = self.tile_size.width
        out = np.full((t, t, self.samples_per_pixel), 7, self.dtype)  # padding the crop must drop
        part = self._data[c, z, row * t : (row + 1) * t, col * t : (col + 1) * t]
        out[: part.shape[0], : part.shape[1]] = part
        return out


def _spooled(parent: SourceImage, child: GeneratedLevel) -> QuarterSpool:
    spool = QuarterSpool(parent, child)
    for z, c in parent.planes():
        for row in range(parent.grid.height):
            for col in range(parent.grid.width):
                spool.add(col, row, z, c, parent.decode_tile(col, row, z, c))
    spool.finish()
    return spool


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((1, 1, 301, 517, 3), np.uint8), ((2, 3, 130, 200, 1), np.uint16), ((1, 1, 64, 64, 3), np.uint8)],
    ids=["rgb-odd-size", "16-bit-channels-planes", "one-tile"],
)
def test_a_spooled_level_is_the_computed_level(shape: tuple[int, ...], dtype: type) -> None:
    rng = np.random.default_rng(3)
    top = Planes(rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype), tile=64)
    child, reference = GeneratedLevel(top), GeneratedLevel(top)
    assert can_spool(top, child)
    # Act: two levels down, each made from the one above as it passes
    child.spool = _spooled(top, child)
    grandchild, grand_reference = GeneratedLevel(child), GeneratedLevel(reference)
    grandchild.spool = _spooled(child, grandchild)
    # Assert
    for made, computed in ((child, reference), (grandchild, grand_reference)):
        for z, c in made.planes():
            for row in range(made.grid.height):
                for col in range(made.grid.width):
                    assert np.array_equal(
                        made.decode_tile(col, row, z, c), computed.decode_tile(col, row, z, c)
                    ), (made.size, col, row, z, c)


def test_odd_tiles_keep_the_computed_way() -> None:
    top = Planes(np.zeros((1, 1, 100, 100, 3), np.uint8), tile=45)
    assert not can_spool(top, GeneratedLevel(top))
