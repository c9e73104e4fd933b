"""The .vsi metadata of Olympus VSI: the real cellSens file's stacks, channels and axes, checked
against slideio, and damaged copies refused by name."""

from __future__ import annotations

import contextlib
import importlib.util
import random
import struct
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import tifffile

from lamina.errors import CorruptSourceError, LaminaError, UnsupportedFormatError
from lamina.formats.ets import EtsAxes, read_ets
from lamina.formats.vsi_meta import VsiChannel, VsiStackType, read_vsi
from tests.support import need, shared_file

VSI = "olympus-vsi/vsi-ets-test-jpg2k.vsi"
ETS = "olympus-vsi/_vsi-ets-test-jpg2k_/stack1/frame_t_0.ets"
DOCUMENT_VOLUME_AT = 48  # the document properties' volume header in this file
COLLECTION_FIELD_AT = 28358  # the collection volume's field (tag 2000), whose data runs to the end


def test_the_real_file_reads_as_slideio_reports_it() -> None:
    # Act
    document = read_vsi(shared_file(VSI))
    # Assert: slideio: one scene "001 C405, C488", 1645x1682, 0.108333 um, 11 z-planes 1 um apart, 60x
    assert document.software == "OLYMPUS cellSens Dimension 3.1"
    assert (document.manufacturer, document.model_name) == (
        "Hamamatsu",
        "Multi Camera (Hamamatsu ORCA-Fusion)",
    )
    assert document.other_images == ()
    (image,) = document.images
    assert image.name == "001 C405, C488" and image.stack_type is VsiStackType.IMAGE
    assert image.stack == "stack1"
    assert image.size == (1645, 1682)
    assert image.pixel_spacing_um == pytest.approx((0.108333, 0.108333), rel=1e-5)
    assert (image.z_planes, image.z_spacing_um) == (11, 1.0)
    assert image.channels == (
        VsiChannel("C405", excitation_nm=345.0, emission_nm=455.0, color=(0, 0, 255)),
        VsiChannel("C488", excitation_nm=494.0, emission_nm=518.0, color=(0, 255, 2)),
    )
    # ets.py's defaults (Z at 3, C at 4); T, of size 1, at 2
    assert image.axes == EtsAxes(z=3, c=4, t=2)
    assert (image.objective_power, image.objective_na, image.bit_depth) == (60.0, 1.42, 16)
    # cellSens stores Unix seconds; the TIFF's DateTime says 16:58:55 local time (UTC+2)
    assert image.acquired == datetime(2021, 5, 31, 14, 58, 55, tzinfo=UTC)


def test_the_values_equal_slideios() -> None:
    need(importlib.util.find_spec("slideio") is not None, "the package slideio")
    import slideio

    # Arrange
    scene = slideio.open_slide(str(shared_file(VSI)), "VSI").get_scene(0)
    # Act
    (image,) = read_vsi(shared_file(VSI)).images
    # Assert
    assert image.name == scene.name
    assert (0, 0, *(image.size or ())) == tuple(scene.rect)
    # slideio rounds the spacing to 6 digits (0.108333)
    assert image.pixel_spacing_um == pytest.approx(tuple(r * 1e6 for r in scene.resolution), rel=1e-5)
    assert image.z_spacing_um == pytest.approx(scene.z_resolution * 1e6)
    assert image.z_planes == scene.num_z_slices
    assert image.objective_power == scene.magnification
    assert [c.name for c in image.channels] == [scene.get_channel_name(i) for i in range(scene.num_channels)]


def test_the_axes_and_size_read_the_ets_file() -> None:
    # Arrange
    (image,) = read_vsi(shared_file(VSI)).images
    ets_path = shared_file(VSI).parent / "_vsi-ets-test-jpg2k_" / (image.stack or "") / "frame_t_0.ets"
    # Act
    ets = read_ets(ets_path, axes=image.axes, image_size=image.size)
    # Assert
    assert ets_path == shared_file(ETS)
    assert (ets.z_planes, ets.channels, ets.timepoints) == (image.z_planes, len(image.channels), 1)
    assert ets.image_size == image.size and ets.image_size_from == "parameter"


def test_a_truncated_file_is_refused_naming_it(tmp_path: Path) -> None:
    # Arrange: cut in the middle of the image volume
    damaged = tmp_path / "cut.vsi"
    damaged.write_bytes(shared_file(VSI).read_bytes()[:60_000])
    # Act / Assert
    with pytest.raises(
        CorruptSourceError, match=rf"tag 2000 \(field at byte offset {COLLECTION_FIELD_AT}\)"
    ) as raised:
        read_vsi(damaged)
    assert raised.value.path == damaged and "cut.vsi" in str(raised.value)
    assert "truncated or damaged" in str(raised.value)


def test_a_damaged_count_is_refused_naming_its_offset(tmp_path: Path) -> None:
    # Arrange: the document volume's field count (low 28 bits of flags, 16 bytes into its header)
    data = bytearray(shared_file(VSI).read_bytes())
    struct.pack_into("<I", data, DOCUMENT_VOLUME_AT + 16, 0x0FFFFFFF)
    damaged = tmp_path / "count.vsi"
    damaged.write_bytes(bytes(data))
    # Act / Assert
    with pytest.raises(CorruptSourceError, match=r"field count 268435455 .*\(at byte offset 64\)") as raised:
        read_vsi(damaged)
    assert raised.value.path == damaged


def test_a_field_chain_that_goes_back_is_refused(tmp_path: Path) -> None:
    # Arrange: the document volume's first field points to itself as its next field
    data = bytearray(shared_file(VSI).read_bytes())
    struct.pack_into("<I", data, DOCUMENT_VOLUME_AT + 24 + 8, 24)
    damaged = tmp_path / "loop.vsi"
    damaged.write_bytes(bytes(data))
    # Act / Assert
    with pytest.raises(CorruptSourceError, match=r"next-field offset 24 .* points back"):
        read_vsi(damaged)


def test_random_damage_gives_only_laminas_errors(tmp_path: Path) -> None:
    # Arrange: bytes of the property tree overwritten at random (a fixed seed)
    original = shared_file(VSI).read_bytes()
    rng = random.Random(13)
    damaged = tmp_path / "random.vsi"
    for _ in range(60):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(8, len(data))] = rng.randrange(256)
        damaged.write_bytes(bytes(data))
        # Act / Assert: a document or one of lamina's errors, never another exception
        with contextlib.suppress(LaminaError):
            read_vsi(damaged)


def test_a_tiff_that_is_not_a_vsi_is_unsupported(tmp_path: Path) -> None:
    # Arrange
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((16, 16), np.uint8))
    # Act / Assert
    with pytest.raises(UnsupportedFormatError, match="cellSens property volume at byte offset 8") as raised:
        read_vsi(plain)
    assert raised.value.path == plain


def test_an_ets_file_is_not_a_vsi(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match="little-endian TIFF header"):
        read_vsi(shared_file(ETS))
    empty = tmp_path / "empty.vsi"
    empty.write_bytes(b"")
    with pytest.raises(UnsupportedFormatError):
        read_vsi(empty)
