"""Hamamatsu NDPI z-stacks: the pages of each level, one per focal plane, become one DICOM instance
whose frames are opentile's tiles of every plane as stored (lowest Z offset first, TILED_FULL),
whose pixels are tifffile's for that plane and whose SpacingBetweenSlices is the distance the
ZOffsetFromSlideCenter tags give; levels stored for some planes only are computed, every plane
kept; planes not evenly spaced are refused in one line naming their offsets."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
import tifffile
from opentile import OpenTile
from pydicom.encaps import generate_frames
from wsidicom import WsiDicom

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor, IngestResult
from lamina.sample.content import make_slide
from lamina.sample.identity import make_identity
from lamina.sample.ndpi import plane_offsets_nm, write_ndpi
from tests.support import dciodvfy_errors, ingest_path, stored_file

pytestmark = pytest.mark.backend_independent

SPACING_NM = 1500
PLANES = 3


def _sample(folder: Path, **options: int) -> Path:
    identity = make_identity(2, 0)
    slide = make_slide(identity, (1024, 768), seed=2)
    return write_ndpi(folder / "zstack.ndpi", slide, identity, focal_planes=PLANES, **options)


@pytest.fixture(scope="module")
def zstack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _sample(tmp_path_factory.mktemp("ndpi-planes"), plane_spacing_nm=SPACING_NM)


def _ingested(archive: Archive, ingestor: Ingestor, path: Path) -> tuple[IngestResult, list[Any]]:
    """The result and the catalog rows of its pyramid levels, largest first."""
    result = ingest_path(ingestor, path)
    assert result.status == "ingested", result.reason
    assert result.format == "hamamatsu_ndpi"
    return result, sorted(
        (r for r in archive.catalog.instances(result.slide_id or "") if r.level is not None),
        key=lambda r: r.level or 0,
    )


def _frames(path: Path) -> tuple[pydicom.Dataset, list[bytes]]:
    ds = pydicom.dcmread(path)
    return ds, list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


def test_the_sample_stores_each_plane_at_its_z_offset_in_nm(zstack: Path) -> None:
    with tifffile.TiffFile(zstack) as tiff:
        offsets = [page.tags.valueof(65424) for page in tiff.pages if isinstance(page, tifffile.TiffPage)]
    # the pyramid of each plane in turn (focus first), then the macro
    assert plane_offsets_nm(PLANES, SPACING_NM) == [0, -1500, 1500]
    assert offsets == [0, 0, -1500, -1500, 1500, 1500, 0]


def test_every_frame_of_every_plane_is_the_stored_tile_and_tifffiles_pixels(
    zstack: Path, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Act
    _, rows = _ingested(archive, ingestor, zstack)
    # Assert: both stored levels hold every plane; nothing left to compute below 256x192
    assert [(r.total_pixel_matrix_columns, r.total_pixel_matrix_rows) for r in rows] == [
        (1024, 768),
        (256, 192),
    ]
    with tifffile.TiffFile(zstack) as tiff, OpenTile.open(zstack, 512) as tiler:
        for index, row in enumerate(rows):
            ds, frames = _frames(stored_file(archive.store, row.blob_sha256, tmp_path / "stored"))
            assert ds.TotalPixelMatrixFocalPlanes == PLANES
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit  # copied, not re-encoded
            measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            assert float(measures.SpacingBetweenSlices) == pytest.approx(SPACING_NM / 1e6)
            size = (ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows)
            images = [lv for lv in tiler.levels if (lv.image_size.width, lv.image_size.height) == size]
            images.sort(key=lambda lv: lv.focal_plane)  # plane 0 is the lowest Z offset
            assert [lv.focal_plane for lv in images] == [-1.5, 0.0, 1.5]
            across, down = images[0].tiled_size.width, images[0].tiled_size.height
            tw, th = images[0].tile_size.width, images[0].tile_size.height
            assert len(frames) == across * down * PLANES
            stack = tiff.series[0].levels[index].asarray()  # (plane in file order, rows, columns, 3)
            by_z = dict(zip([0, -1500, 1500], stack, strict=True))
            planes = []
            for z, image in enumerate(images):
                whole = by_z[round(image.focal_plane * 1000)]
                for at in range(across * down):
                    col, row_ = at % across, at // across
                    frame = frames[at + z * across * down]
                    tile = image.get_tile((col, row_))
                    # the frame is the tile, padded to an even length as every DICOM item is
                    assert frame in (tile, tile + b"\0"), (
                        f"plane {z}, tile {col},{row_} is not the stored tile"
                    )
                    decoded = imagecodecs.jpeg8_decode(frame)
                    region = whole[row_ * th : (row_ + 1) * th, col * tw : (col + 1) * tw]
                    diff = np.abs(decoded[: region.shape[0], : region.shape[1]].astype(int) - region)
                    # tiles cut out of one JPEG: only their edge columns' chroma may differ
                    assert diff[:, 1:-1].max() == 0 and diff.max() <= 32, f"plane {z}, tile {col},{row_}"
                planes.append(imagecodecs.jpeg8_decode(frames[z * across * down]))
            assert not np.array_equal(planes[0], planes[1]) and not np.array_equal(planes[1], planes[2])


def test_the_export_is_conformant_and_wsidicom_finds_three_focal_planes(
    zstack: Path, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Act
    result, rows = _ingested(archive, ingestor, zstack)
    # Assert
    for row in archive.catalog.instances(result.slide_id or ""):
        path = stored_file(archive.store, row.blob_sha256, tmp_path / "stored")
        assert dciodvfy_errors(path) == [], f"{row.flavor} level {row.level}"
    exported = archive.export(tmp_path / "export", [result.slide_id or ""])[0]
    with WsiDicom.open(exported.folder) as wsi:
        zs = sorted(wsi.levels[0].focal_planes)
        assert len(zs) == PLANES
        assert zs[1] - zs[0] == pytest.approx(SPACING_NM / 1000, rel=1e-3)  # µm
        _, frames = _frames(stored_file(archive.store, rows[0].blob_sha256, tmp_path / "stored"))
        for z, focal in enumerate(zs):  # the first tile of each plane, at the plane's Z
            tile = np.asarray(wsi.read_tile(0, (0, 0), z=focal))
            assert np.array_equal(tile, imagecodecs.jpeg8_decode(frames[4 * z])), f"plane {z}"


def test_levels_stored_for_one_plane_are_computed_with_every_plane(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: the other planes at level 0 only
    path = _sample(tmp_path, plane_levels=1)
    # Act
    _, rows = _ingested(archive, ingestor, path)
    # Assert: level 0 copied with its 3 planes, the level below computed from it with 3 planes
    assert [(r.total_pixel_matrix_columns, r.total_pixel_matrix_rows) for r in rows] == [
        (1024, 768),
        (512, 384),
    ]
    for row in rows:
        ds = pydicom.dcmread(stored_file(archive.store, row.blob_sha256, tmp_path / "stored"))
        assert (ds.TotalPixelMatrixFocalPlanes, ds.NumberOfFrames) == (
            PLANES,
            PLANES * (4 if row.level == 0 else 1),
        )
    planes = pydicom.dcmread(stored_file(archive.store, rows[1].blob_sha256, tmp_path / "stored")).pixel_array
    assert planes.shape == (PLANES, 512, 512, 3)
    with tifffile.TiffFile(path) as tiff:
        stack = dict(zip([0, -1500, 1500], tiff.series[0].asarray(), strict=True))
    halved = []
    for offset in [-1500, 0, 1500]:
        above = stack[offset].astype(float)
        halved.append((above[0::2, 0::2] + above[1::2, 0::2] + above[0::2, 1::2] + above[1::2, 1::2]) / 4)
    for z in range(PLANES):  # each plane computed from its own plane above (JPEG-coded once more)
        error = [np.abs(planes[z, :384, :512] - other).mean() for other in halved]
        assert min(error) == error[z] < 2.5, f"plane {z}: {error}"
    assert not np.array_equal(planes[0], planes[1]) and not np.array_equal(planes[1], planes[2])


def _retag(source: Path, dest: Path, z_nm: int, new_nm: int) -> Path:
    """A copy whose pages at Z offset ``z_nm`` say ``new_nm`` (the SLONG held in its IFD entry)."""
    entry = struct.pack("<HHI", 65424, 9, 1)
    data = source.read_bytes()
    old, new = entry + struct.pack("<i", z_nm), entry + struct.pack("<i", new_nm)
    assert data.count(old) == 2  # level 0 and level 1 of that plane
    dest.write_bytes(data.replace(old, new))
    return dest


@pytest.mark.parametrize(
    ("new_nm", "expected"),
    [
        (4500, "its focal planes lie at Z offsets -1.5, 0, 4.5 µm, not evenly spaced"),
        (0, "images of one focal plane repeat"),
    ],
    ids=["uneven", "repeated"],
)
def test_planes_dicom_cannot_hold_are_refused_in_one_line(
    new_nm: int, expected: str, zstack: Path, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange
    path = _retag(zstack, tmp_path / "retagged.ndpi", 1500, new_nm)
    # Act
    result = ingest_path(ingestor, path)
    # Assert
    assert result.status == "failed"
    reason = result.reason or ""
    assert expected in reason and "\n" not in reason, reason
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []
