"""DICOM WSI of other systems with focal planes and optical paths: the real cellSens slide (2
channels x 11 planes, 16-bit JPEG 2000) ingested, exported and ingested again keeps every frame
byte for byte; z-stacks and channels written by hand (TILED_FULL and TILED_SPARSE, JPEG and
uncompressed, 8 and 16 bits) keep every pixel of every plane; a frame count that does not fill
the declared planes is refused in one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from highdicom.spatial import iter_tiled_full_frame_data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, generate_uid
from wsidicom import WsiDicom

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.formats.dicom import DicomSource
from lamina.formats.source import SourceOptions
from lamina.formats.vsi import VsiSource
from tests.support import dciodvfy_errors, ingest_path, shared_file, stored_file

pytestmark = pytest.mark.backend_independent

VSI = "olympus-vsi/vsi-ets-test-jpg2k.vsi"
TILE = 64
GRID = (2, 2)  # columns, rows of tiles


def _stored(archive: Archive, slide_id: str, folder: Path) -> list[pydicom.Dataset]:
    rows = archive.catalog.instances(slide_id)
    return [
        pydicom.dcmread(stored_file(archive.store, row.blob_sha256, folder / str(n)))
        for n, row in enumerate(rows)
    ]


def _raw(ds: pydicom.Dataset) -> Iterator[bytes]:
    yield from generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)


def test_the_vsi_slide_exported_and_ingested_again_keeps_every_frame(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: the cellSens slide ingested and exported as DICOM WSI
    first = ingest_path(ingestor, shared_file(VSI).parent)
    assert first.status == "ingested", first.reason
    (exported,) = archive.export(tmp_path / "export", [first.slide_id or ""])
    second = Archive.open(Settings.load(tmp_path / "second"))
    try:
        # Act
        again = ingest_path(
            Ingestor(second.catalog, second.store, spool_dir=second.settings.home), exported.folder
        )
        # Assert
        assert again.status == "ingested", again.reason
        assert again.format == "dicom_wsi"
        (before,) = _stored(archive, first.slide_id or "", tmp_path / "before")
        (after,) = _stored(second, again.slide_id or "", tmp_path / "after")
        assert after.NumberOfFrames == before.NumberOfFrames == 22
        assert after.TotalPixelMatrixFocalPlanes == before.TotalPixelMatrixFocalPlanes == 11
        assert after.NumberOfOpticalPaths == before.NumberOfOpticalPaths == 2
        assert (after.BitsAllocated, after.BitsStored) == (16, 16)
        assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
        described = [[p.OpticalPathDescription for p in ds.OpticalPathSequence] for ds in (before, after)]
        assert described[0] == described[1] and len(described[0]) == 2
        spacing = [
            ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices
            for ds in (before, after)
        ]
        assert float(spacing[0]) == float(spacing[1]) == pytest.approx(0.001)
        assert list(_raw(after)) == list(_raw(before)), "a frame changed on the way through DICOM"
        assert after.SOPInstanceUID == before.SOPInstanceUID
        with (
            VsiSource(shared_file(VSI), SourceOptions()) as vsi,
            DicomSource(exported.files[0], SourceOptions()) as dcm,
        ):
            theirs, ours = vsi.metadata, dcm.metadata
        assert [(p.illumination_nm, p.color, p.fluorescence) for p in ours.optical_paths] == [
            (p.illumination_nm, p.color, p.fluorescence) for p in theirs.optical_paths
        ]
        assert all(p.color is not None for p in ours.optical_paths)
        assert ours.focal_plane_spacing_mm == pytest.approx(theirs.focal_plane_spacing_mm)
        row = second.catalog.instances(again.slide_id or "")[0]
        assert dciodvfy_errors(stored_file(second.store, row.blob_sha256, tmp_path / "checked")) == []
    finally:
        second.close()


# --- instances written by hand -------------------------------------------------------------


def _tiles(
    planes: int, paths: int, samples: int, dtype: type, seed: int
) -> dict[tuple[int, int, int, int], np.ndarray]:
    """(c, z, row, col) -> a tile of its own pixels: noise on a level that differs per plane."""
    rng = np.random.default_rng(seed)
    top = 255 if dtype is np.uint8 else 4095
    tiles: dict[tuple[int, int, int, int], np.ndarray] = {}
    for c in range(paths):
        for z in range(planes):
            for row in range(GRID[1]):
                for col in range(GRID[0]):
                    base = rng.integers(0, top // 2)
                    noise = rng.integers(0, top // 2, (TILE, TILE, samples))
                    tiles[c, z, row, col] = (base + noise).astype(dtype)
    return tiles


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _instance(
    folder: Path,
    tiles: dict[tuple[int, int, int, int], np.ndarray],
    *,
    planes: int,
    paths: int,
    jpeg: bool = False,
    sparse: bool = False,
    declared_planes: int | None = None,
    series: str | None = None,
    name: str = "instance.dcm",
) -> Path:
    """A VL WSI instance of the tiles, as another system writes one (TILED_FULL order, or
    TILED_SPARSE with each frame's position, Z offset and optical path)."""
    first = next(iter(tiles.values()))
    samples, wide = first.shape[2], first.dtype == np.uint16
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(
        pydicom.uid.JPEGBaseline8Bit if jpeg else pydicom.uid.ExplicitVRLittleEndian
    )
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.VLWholeSlideMicroscopyImageStorage
    ds.SOPClassUID = pydicom.uid.VLWholeSlideMicroscopyImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
        generate_uid(),
        generate_uid(),
        generate_uid(),
    )
    if series is not None:
        ds.SeriesInstanceUID = ds.StudyInstanceUID = series
    ds.Modality = "SM"
    ds.PatientName, ds.PatientID = "Planes^Test", "planes-1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.Manufacturer = "hand"
    ds.Rows = ds.Columns = TILE
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = GRID[0] * TILE, GRID[1] * TILE
    ds.TotalPixelMatrixFocalPlanes = declared_planes or planes
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else ("YBR_FULL_422" if jpeg else "RGB")
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 16 if wide else 8
    ds.BitsStored = 12 if wide else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    optical = []
    for c in range(paths):
        item = Dataset()
        item.OpticalPathIdentifier = f"P{c}"
        item.OpticalPathDescription = f"channel {c}"
        fluorescence = samples == 1
        item.IlluminationTypeCodeSequence = DicomSequence(
            [_code("111743", "DCM", "Epifluorescence illumination")]
            if fluorescence
            else [_code("111744", "DCM", "Brightfield illumination")]
        )
        item.IlluminationWaveLength = 405 + 100 * c
        optical.append(item)
    ds.NumberOfOpticalPaths = paths
    ds.OpticalPathSequence = DicomSequence(optical)
    measures = Dataset()
    measures.PixelSpacing = [0.00025, 0.00025]
    measures.SliceThickness = 0.001
    if not sparse:
        measures.SpacingBetweenSlices = 0.0015
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    order = sorted(tiles, key=lambda key: (key[0], key[1], key[2], key[3]))
    if sparse:
        # stored in another order than TILED_FULL's: by tile, then channel, then plane downward
        order = sorted(tiles, key=lambda key: (key[2], key[3], key[0], -key[1]))
        ds.DimensionOrganizationType = "TILED_SPARSE"
        per_frame = []
        for c, z, row, col in order:
            position = Dataset()
            position.ColumnPositionInTotalImagePixelMatrix = col * TILE + 1
            position.RowPositionInTotalImagePixelMatrix = row * TILE + 1
            position.XOffsetInSlideCoordinateSystem = 20.0
            position.YOffsetInSlideCoordinateSystem = 40.0
            position.ZOffsetInSlideCoordinateSystem = 2.0 + 1.5 * z
            path = Dataset()
            path.OpticalPathIdentifier = f"P{c}"
            item = Dataset()
            item.PlanePositionSlideSequence = DicomSequence([position])
            item.OpticalPathIdentificationSequence = DicomSequence([path])
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    else:
        ds.DimensionOrganizationType = "TILED_FULL"
    ds.NumberOfFrames = len(order)
    if jpeg:
        frames = [bytes(imagecodecs.jpeg8_encode(tiles[key], level=90)) for key in order]
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        ds.PixelData = b"".join(tiles[key].astype("<u2" if wide else np.uint8).tobytes() for key in order)
        ds["PixelData"].VR = "OW" if wide else "OB"
    out = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def _decoded(ds: pydicom.Dataset, frame: bytes) -> np.ndarray:
    ts = ds.file_meta.TransferSyntaxUID
    if not ts.is_encapsulated:
        dtype = "<u2" if ds.BitsAllocated == 16 else np.uint8
        return np.frombuffer(frame, dtype).reshape(ds.Rows, ds.Columns, ds.SamplesPerPixel)
    if ts == pydicom.uid.JPEGBaseline8Bit:
        pixels = np.asarray(imagecodecs.jpeg8_decode(frame))
    elif ts == pydicom.uid.JPEGLSLossless:
        pixels = np.asarray(imagecodecs.jpegls_decode(frame))
    else:
        pixels = np.asarray(imagecodecs.jpeg2k_decode(frame))
    return pixels[..., None] if pixels.ndim == 2 else pixels


CASES = {
    # name: planes, paths, samples, dtype, jpeg, sparse
    "rgb-jpeg-2-planes": (2, 1, 3, np.uint8, True, False),
    "rgb-native-3-planes": (3, 1, 3, np.uint8, False, False),
    "grey16-3-channels-2-planes": (2, 3, 1, np.uint16, False, False),
    "grey16-sparse-2-channels-3-planes": (3, 2, 1, np.uint16, False, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_plane_and_channel_keeps_its_pixels(
    case: str, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange
    planes, paths, samples, dtype, jpeg, sparse = CASES[case]
    tiles = _tiles(planes, paths, samples, dtype, seed=len(case))
    if sparse:
        del tiles[1, 2, 1, 0]  # a tile the scanner left out: background (black for fluorescence)
    written = _instance(tmp_path / "in", tiles, planes=planes, paths=paths, jpeg=jpeg, sparse=sparse)
    source = pydicom.dcmread(written)
    # Act
    result = ingest_path(ingestor, written.parent)
    # Assert
    assert result.status == "ingested", result.reason
    stored = _stored(archive, result.slide_id or "", tmp_path / "stored")
    ds = max(stored, key=lambda d: int(d.TotalPixelMatrixColumns))
    assert (ds.TotalPixelMatrixFocalPlanes, ds.NumberOfOpticalPaths) == (planes, paths)
    assert ds.NumberOfFrames == GRID[0] * GRID[1] * planes * paths
    assert [p.OpticalPathDescription for p in ds.OpticalPathSequence] == [
        f"channel {c}" for c in range(paths)
    ]
    # 12 bits stored in 16 become BitsStored 16: the VL WSI IOD enumerates 8 and 16
    assert (ds.BitsAllocated, ds.BitsStored) == ((16, 16) if dtype is np.uint16 else (8, 8))
    frames = list(_raw(ds))
    if jpeg:  # copied as stored
        assert frames == list(_raw(source))
    for c in range(paths):
        for z in range(planes):
            for row in range(GRID[1]):
                for col in range(GRID[0]):
                    index = col + row * GRID[0] + (z + c * planes) * GRID[0] * GRID[1]
                    got = _decoded(ds, frames[index])
                    expected = tiles.get((c, z, row, col))
                    if expected is None:
                        expected = np.zeros_like(got)
                    elif jpeg:
                        expected = _decoded(source, bytes(imagecodecs.jpeg8_encode(expected, level=90)))
                    assert got.dtype == expected.dtype, (c, z, row, col)
                    assert np.array_equal(got, expected), (
                        f"channel {c}, plane {z}, tile ({col}, {row}) differs"
                    )
    if sparse:
        between = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices
        assert float(between) == pytest.approx(0.0015)


def _exported(
    archive: Archive,
    ingestor: Ingestor,
    folder: Path,
    *,
    planes: int,
    paths: int,
    samples: int,
    dtype: type,
    sparse: bool,
) -> tuple[dict[tuple[int, int, int, int], np.ndarray], Path]:
    tiles = _tiles(planes, paths, samples, dtype, seed=planes * 10 + paths)
    written = _instance(folder / "in", tiles, planes=planes, paths=paths, sparse=sparse)
    result = ingest_path(ingestor, written.parent)
    assert result.status == "ingested", result.reason
    (exported,) = archive.export(folder / "export", [result.slide_id or ""])
    return tiles, exported.folder


def test_highdicom_finds_each_frame_at_its_channel_and_plane(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: 2 channels x 2 planes of 16-bit grey, stored TILED_SPARSE in a scrambled order
    tiles, folder = _exported(
        archive, ingestor, tmp_path, planes=2, paths=2, samples=1, dtype=np.uint16, sparse=True
    )
    ds = pydicom.dcmread(sorted(folder.glob("*level-0.dcm"))[0])
    # Act: highdicom's reading of the TILED_FULL order, frame by frame
    placed = list(iter_tiled_full_frame_data(ds))
    # Assert
    frames = list(_raw(ds))
    assert len(placed) == len(frames) == 16
    for (channel, plane, column, row, *_), frame in zip(placed, frames, strict=True):
        assert channel is not None
        expected = tiles[channel - 1, plane - 1, (row - 1) // TILE, (column - 1) // TILE]
        assert np.array_equal(_decoded(ds, frame), expected), (channel, plane, column, row)


def test_wsidicom_reads_each_focal_plane_where_it_was_written(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: 3 focal planes of RGB, uncompressed
    tiles, folder = _exported(
        archive, ingestor, tmp_path, planes=3, paths=1, samples=3, dtype=np.uint8, sparse=False
    )
    # Act / Assert: wsidicom, an independent reader, finds each tile at its plane (lowest Z first)
    with WsiDicom.open(folder) as wsi:
        zs = sorted(wsi.levels[0].focal_planes)
        assert len(zs) == 3
        for z, focal in enumerate(zs):
            for row in range(GRID[1]):
                for col in range(GRID[0]):
                    tile = np.asarray(wsi.read_tile(0, (col, row), z=focal))
                    assert np.array_equal(tile, tiles[0, z, row, col]), (z, col, row)


def test_an_instance_short_of_its_declared_planes_is_refused_naming_number_of_frames(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: 3 focal planes declared, frames for 2
    tiles = _tiles(2, 1, 3, np.uint8, seed=3)
    written = _instance(tmp_path / "in", tiles, planes=2, paths=1, declared_planes=3)
    # Act
    result = ingest_path(ingestor, written.parent)
    # Assert
    assert result.status == "failed"
    reason = result.reason or ""
    assert "NumberOfFrames 8 does not match TILED_FULL" in reason and "3 focal planes" in reason
    assert "\n" not in reason
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []


def test_a_level_split_across_instances_is_refused_naming_them(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: one level stored as one instance per optical path (as some converters write)
    series = generate_uid()
    for c in range(2):
        tiles = _tiles(1, 1, 1, np.uint16, seed=c)
        _instance(tmp_path / "in", tiles, planes=1, paths=1, series=series, name=f"path-{c}.dcm")
    # Act
    result = ingest_path(ingestor, tmp_path / "in")
    # Assert
    assert result.status == "failed"
    reason = result.reason or ""
    assert "stored in 2 instances: path-0.dcm" in reason and "path-1.dcm" in reason, reason
    assert "\n" not in reason
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []
