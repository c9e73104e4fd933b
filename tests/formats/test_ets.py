"""The ETS container of Olympus VSI: the real cellSens file's header, tile index and codestreams,
checked against slideio (which reads the .vsi too), and damaged copies refused by name."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats.ets import EtsAxes, EtsCompression, EtsPixelType, TileCoord, read_ets
from tests.support import need, shared_file

VSI = "olympus-vsi/vsi-ets-test-jpg2k.vsi"
ETS = "olympus-vsi/_vsi-ets-test-jpg2k_/stack1/frame_t_0.ets"
TABLE_AT = 0x17295  # the SIS header's used-chunks offset in this file
RECORD = 44  # 4 + 6 dimensions * 4 + 8 + 4 + 4


def test_the_header_is_read_as_slideio_reports_it() -> None:
    # Act
    ets = read_ets(shared_file(ETS))
    # Assert: slideio: one scene of 1645x1682, 2 channels, 11 z-planes, JPEG 2000, uint16
    assert ets.compression is EtsCompression.JPEG_2000
    assert ets.pixel_type is EtsPixelType.UINT16 and ets.bits == 16
    assert ets.samples_per_pixel == 1
    assert ets.tile_size == (1645, 1682)  # one tile per plane in this small file
    assert ets.image_size == (1645, 1682) and ets.image_size_from == "tile grid"
    assert (ets.z_planes, ets.channels, ets.timepoints, len(ets.levels)) == (11, 2, 1, 1)
    assert len(ets.tiles) == 22
    assert {(c.z, c.c) for c in ets.tiles} == {(z, c) for z in range(11) for c in range(2)}


def test_every_tile_is_a_jpeg2000_codestream_of_the_tile_size() -> None:
    # Arrange
    ets = read_ets(shared_file(ETS))
    for coord in ets.tiles:
        # Act
        stream = ets.tile(coord)
        # Assert: a bare codestream (SOC, SIZ), stored as is, that decodes to one tile
        assert stream[:4] == b"\xff\x4f\xff\x51", coord
        pixels = imagecodecs.jpeg2k_decode(stream)
        assert pixels.shape == (1682, 1645) and pixels.dtype == np.uint16, coord


def test_planes_assembled_from_the_tiles_equal_slideios() -> None:
    need(importlib.util.find_spec("slideio") is not None, "the package slideio")
    import slideio

    scene = slideio.open_slide(str(shared_file(VSI)), "VSI").get_scene(0)
    ets = read_ets(shared_file(ETS), image_size=scene.size)
    assert (scene.num_channels, scene.num_z_slices) == (ets.channels, ets.z_planes)
    width, height = ets.image_size
    tile_w, tile_h = ets.tile_size
    # (z=0, c=0) is black in this slide (below the focus); the others are not, and differ
    for z, c in [(0, 0), (5, 0), (6, 1)]:
        # Act: level 0's plane (z, c), tile by tile
        plane = np.zeros((ets.levels[0].grid[1] * tile_h, ets.levels[0].grid[0] * tile_w), np.uint16)
        for coord in ets.tiles:
            if (coord.z, coord.c, coord.t, coord.level) == (z, c, 0, 0):
                y, x = coord.y * tile_h, coord.x * tile_w
                plane[y : y + tile_h, x : x + tile_w] = imagecodecs.jpeg2k_decode(ets.tile(coord))
        # Assert: pixel for pixel
        expected = scene.read_block(scene.rect, channel_indices=[c], slices=(z, z + 1))
        assert expected.max() > 0 or z == 0
        np.testing.assert_array_equal(plane[:height, :width], expected)


def test_a_truncated_file_is_refused_naming_the_tile_table(tmp_path: Path) -> None:
    # Arrange: cut in the middle of the tile table
    damaged = tmp_path / "frame_t_0.ets"
    damaged.write_bytes(shared_file(ETS).read_bytes()[: TABLE_AT + 5 * RECORD])
    # Act / Assert
    with pytest.raises(CorruptSourceError, match=r"tile table .* at byte offset 40.*truncated") as raised:
        read_ets(damaged)
    assert raised.value.path == damaged


def test_a_tile_offset_past_the_end_is_refused_naming_the_tile(tmp_path: Path) -> None:
    # Arrange: the third tile's offset (after its 4 + 24 bytes) points past the end
    data = bytearray(shared_file(ETS).read_bytes())
    at = TABLE_AT + 2 * RECORD + 28
    struct.pack_into("<q", data, at, len(data) + 100)
    damaged = tmp_path / "frame_t_0.ets"
    damaged.write_bytes(bytes(data))
    # Act / Assert
    with pytest.raises(CorruptSourceError, match=rf"tile 2 .*byte offset {at}\).*past the end"):
        read_ets(damaged)


def test_a_huge_tile_count_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    # Arrange: the SIS header claims 2**31 tiles
    data = bytearray(shared_file(ETS).read_bytes())
    struct.pack_into("<I", data, 40, 1 << 31)
    damaged = tmp_path / "frame_t_0.ets"
    damaged.write_bytes(bytes(data))
    # Act / Assert
    with pytest.raises(CorruptSourceError, match="2147483648 tiles"):
        read_ets(damaged)


def test_other_files_and_unnamed_axes_are_refused(tmp_path: Path) -> None:
    # Arrange
    not_ets = tmp_path / "x.ets"
    not_ets.write_bytes(b"II*\0" + bytes(100))
    # Act / Assert: not an ETS file
    with pytest.raises(UnsupportedFormatError, match="'SIS' header"):
        read_ets(not_ets)
    # Act / Assert: the Z axis left unnamed, its coordinates would mix planes up
    with pytest.raises(UnsupportedFormatError, match=r"coordinate index 3.*axes"):
        read_ets(shared_file(ETS), axes=EtsAxes(z=None, c=4))


def test_a_tile_that_is_not_there_is_a_key_error() -> None:
    ets = read_ets(shared_file(ETS))
    with pytest.raises(KeyError):
        ets.tile(TileCoord(1, 0))
