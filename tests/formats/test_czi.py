"""Zeiss CZI ingest through libCZI: a brightfield mosaic of overlapping tiles and a fluorescence
z-stack written by libCZI's writer become DICOM whose pixels are the pixels written, as the
independent reader slideio also returns them; bad files are refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from wsidicom import WsiDicom

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax
from lamina.sample import write_samples
from lamina.sample.czi import write_czi_fluorescence
from tests.support import dciodvfy_errors, ingest_path, stored_file

pytestmark = pytest.mark.backend_independent


def _level0(archive: Archive, slide_id: str, tmp_path: Path) -> tuple[pydicom.Dataset, Path]:
    rows = archive.catalog.instances(slide_id)
    for row in rows:
        errors = dciodvfy_errors(stored_file(archive.store, row.blob_sha256, tmp_path / "stored"))
        assert errors == [], f"level {row.level}: {errors}"
    base = next(r for r in rows if r.level == 0)
    path = stored_file(archive.store, base.blob_sha256, tmp_path / "stored")
    return pydicom.dcmread(path), path


def _plane(ds: pydicom.Dataset, z: int = 0, c: int = 0) -> np.ndarray:
    """Plane (z, c) of a TILED_FULL instance, decoded and stitched."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    across = -(-int(ds.TotalPixelMatrixColumns) // cols)
    down = -(-int(ds.TotalPixelMatrixRows) // rows)
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    planes = int(ds.get("TotalPixelMatrixFocalPlanes", 1))
    samples = int(ds.SamplesPerPixel)
    syntax = TransferSyntax(str(ds.file_meta.TransferSyntaxUID))
    encoding = FrameEncoding(syntax, ds.PhotometricInterpretation)
    out = np.zeros((down * rows, across * cols, samples), np.uint16 if ds.BitsAllocated == 16 else np.uint8)
    first = (z + c * planes) * across * down
    for index in range(across * down):
        row, col = divmod(index, across)
        tile = codec.decode(frames[first + index], encoding, (cols, rows))
        out[row * rows : (row + 1) * rows, col * cols : (col + 1) * cols] = tile
    return out[: int(ds.TotalPixelMatrixRows), : int(ds.TotalPixelMatrixColumns)]


def test_a_brightfield_mosaic_is_pixel_exact(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    slideio = pytest.importorskip("slideio", reason="slideio is the independent reader of CZI")
    # Arrange: tiles of 512 overlapping by 32, blue first, as a stitched scan
    (sample,) = write_samples(tmp_path / "in", ["zeiss_czi"], size=(1100, 900))
    written = _written_pixels(tmp_path / "again")
    # Act
    result = ingest_path(ingestor, sample.path)
    # Assert
    assert result.status == "ingested", result.reason
    assert result.format == "zeiss_czi"
    ds, _ = _level0(archive, result.slide_id or "", tmp_path)
    # pixel-exact in JPEG-LS, the default for a re-encoded pyramid
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
    assert ds.PhotometricInterpretation == "RGB" and ds.LossyImageCompression == "00"
    assert float(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0]) == (
        pytest.approx(0.0002195)
    )
    ours = _plane(ds)
    assert np.array_equal(ours, written)
    theirs = slideio.open_slide(str(sample.path), "CZI").get_scene(0).read_block()
    assert np.array_equal(ours, theirs[..., ::-1])  # slideio hands Bgr24 over as stored, blue first
    exported = archive.export(tmp_path / "export", [result.slide_id or ""])[0]
    assert WsiDicom.open(exported.folder).size.width == 1100


def _written_pixels(folder: Path) -> np.ndarray:
    from lamina.sample import SAMPLE_FORMATS
    from lamina.sample.content import make_slide
    from lamina.sample.identity import make_identity

    index = SAMPLE_FORMATS.index("zeiss_czi")
    return make_slide(make_identity(0, index), (1100, 900), index).pixels  # seed 0: 0 * 7 + index


def test_a_fluorescence_z_stack_keeps_every_plane_and_channel(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    slideio = pytest.importorskip("slideio", reason="slideio is the independent reader of CZI")
    path, data = write_czi_fluorescence(tmp_path / "fluo.czi", size=(700, 600), planes=3)
    # Act
    result = ingest_path(ingestor, path)
    # Assert
    assert result.status == "ingested", result.reason
    ds, _ = _level0(archive, result.slide_id or "", tmp_path)
    assert (ds.TotalPixelMatrixFocalPlanes, ds.NumberOfOpticalPaths, ds.BitsStored) == (3, 2, 16)
    assert [p.OpticalPathDescription for p in ds.OpticalPathSequence] == ["DAPI", "FITC"]
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(0.0005)
    scene = slideio.open_slide(str(path), "CZI").get_scene(0)
    for c in range(2):
        for z in range(3):
            ours = _plane(ds, z, c)[..., 0]
            assert np.array_equal(ours, data[c, z]), f"channel {c + 1}, plane {z + 1}"
    theirs = scene.read_block(channel_indices=[1], slices=(2, 3))
    assert np.array_equal(_plane(ds, 2, 1)[..., 0], theirs.reshape(600, 700))


def test_a_truncated_czi_is_refused_in_one_line(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    path, _ = write_czi_fluorescence(tmp_path / "fluo.czi", size=(300, 200), planes=1)
    cut = tmp_path / "cut.czi"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    # Act
    result = ingest_path(ingestor, cut)
    # Assert
    assert result.status == "failed"
    assert "cut.czi" in (result.reason or "") or result.path == cut
    assert "\n" not in (result.reason or "") and "copy it again" in (result.reason or "")
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []


def test_an_unsupported_pixel_type_is_named(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    import pylibCZIrw.czi as pyczi

    path = tmp_path / "float.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        writer.write(np.zeros((64, 64), np.float32), location=(0, 0))
        writer.write_metadata(scale_x=0.25e-6, scale_y=0.25e-6)
    # Act
    result = ingest_path(ingestor, path)
    # Assert
    assert result.status == "failed"
    assert "pixel type Gray32Float" in (result.reason or "")
    assert archive.catalog.count_slides() == 0


def test_the_subblock_directory_says_how_tiles_were_compressed(tmp_path: Path) -> None:
    import pylibCZIrw.czi as pyczi

    from lamina.errors import CorruptSourceError
    from lamina.formats.czi import subblock_compressions

    path = tmp_path / "zstd.czi"
    with pyczi.create_czi(str(path), exist_ok=True, compression_options="zstd1:ExplicitLevel=2") as writer:
        writer.write(np.zeros((64, 64), np.uint16), location=(0, 0))
    assert subblock_compressions(path) == {6}  # zstd1: lossless, so the slide is not marked lossy
    damaged = tmp_path / "damaged.czi"
    data = bytearray(path.read_bytes())
    data[32 + 52 : 32 + 60] = (len(data) * 4).to_bytes(8, "little")  # DirectoryPosition past the end
    damaged.write_bytes(bytes(data))
    with pytest.raises(CorruptSourceError, match=r"DirectoryPosition .* is outside the file"):
        subblock_compressions(damaged)
