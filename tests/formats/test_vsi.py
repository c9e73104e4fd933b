"""Evident (Olympus) VSI ingest: the real cellSens slide (2 fluorescence channels x 11 focal planes,
16-bit JPEG 2000) becomes one DICOM instance whose frames are the ETS tiles as stored and whose
pixels are slideio's, plane by plane; a VSI without its folder or with a damaged ETS is refused in
one line naming what is missing, with nothing stored."""

from __future__ import annotations

import shutil
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.formats.ets import TileCoord, read_ets
from tests.support import ingest_path, shared_file, stored_file

pytestmark = pytest.mark.backend_independent

VSI = "olympus-vsi/vsi-ets-test-jpg2k.vsi"
ETS = "olympus-vsi/_vsi-ets-test-jpg2k_/stack1/frame_t_0.ets"


def _stored(archive: Archive, ingestor: Ingestor, path: Path, tmp_path: Path) -> pydicom.Dataset:
    result = ingest_path(ingestor, path)
    assert result.status == "ingested", result.reason
    assert result.format == "olympus_vsi"
    (row,) = archive.catalog.instances(result.slide_id or "")
    return pydicom.dcmread(stored_file(archive.store, row.blob_sha256, tmp_path / "stored"))


def test_every_plane_is_slideios_and_every_frame_the_stored_tile(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    slideio = pytest.importorskip("slideio", reason="slideio is the reference reader of VSI")
    # Act
    ds = _stored(archive, ingestor, shared_file(VSI).parent, tmp_path)
    # Assert: TILED_FULL, optical path outermost, then focal plane (PS3.3 C.7.6.17.3)
    assert (ds.NumberOfFrames, ds.TotalPixelMatrixFocalPlanes, ds.NumberOfOpticalPaths) == (22, 11, 2)
    assert (ds.BitsAllocated, ds.BitsStored, ds.PhotometricInterpretation) == (16, 16, "MONOCHROME2")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000  # lossy in the scanner: kept so
    assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_15444_1"
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(0.001)
    assert float(measures.PixelSpacing[0]) == pytest.approx(0.000108333, rel=1e-4)
    paths = ds.OpticalPathSequence
    assert [p.OpticalPathDescription.split(" ")[0] for p in paths] == ["C405", "C488"]
    assert all(p.IlluminationTypeCodeSequence[0].CodeValue == "111743" for p in paths)
    ets = read_ets(shared_file(ETS))
    scene = slideio.open_slide(str(shared_file(VSI)), "VSI").get_scene(0)
    frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    for index, frame in enumerate(frames):
        c, z = divmod(index, 11)
        tile = ets.tile(TileCoord(0, 0, z, c))
        # the frame is the tile, padded to an even length as every DICOM item is
        assert frame in (tile, tile + b"\0"), f"frame {index + 1} is not the ETS tile"
        ours = imagecodecs.jpeg2k_decode(frame)[: ds.TotalPixelMatrixRows, : ds.TotalPixelMatrixColumns]
        theirs = scene.read_block(channel_indices=[c], slices=(z, z + 1)).reshape(ours.shape)
        assert np.array_equal(ours, theirs), f"channel {c + 1}, focal plane {z + 1} differs from slideio"


def test_a_vsi_without_its_folder_is_refused_naming_the_folder(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: the .vsi copied alone, as a user who forgot the folder beside it
    alone = tmp_path / "in" / "vsi-ets-test-jpg2k.vsi"
    alone.parent.mkdir()
    shutil.copyfile(shared_file(VSI), alone)
    # Act
    result = ingest_path(ingestor, alone)
    # Assert
    assert result.status == "failed"
    reason = result.reason or ""
    assert "_vsi-ets-test-jpg2k_/stack1/frame_t_0.ets is missing" in reason and "\n" not in reason
    assert "copy the folder _vsi-ets-test-jpg2k_ together with the .vsi" in reason
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []


def test_a_truncated_ets_is_refused_naming_it(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    # Arrange: the slide copied whole, its ETS cut in the middle of the tiles
    folder = tmp_path / "slide"
    shutil.copytree(shared_file(VSI).parent, folder)
    ets = folder / "_vsi-ets-test-jpg2k_" / "stack1" / "frame_t_0.ets"
    ets.chmod(0o644)
    ets.write_bytes(ets.read_bytes()[:40_000])
    # Act
    result = ingest_path(ingestor, folder)
    # Assert
    assert result.status == "failed"
    assert "frame_t_0.ets" in (result.reason or "") and "\n" not in (result.reason or "")
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []
