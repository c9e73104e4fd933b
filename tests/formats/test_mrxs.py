"""3DHISTECH MRXS: the sample ``lamina sample --format mirax_mrxs`` writes opens in OpenSlide (the
independent reader) with the pixels written; its ingest copies level 0's camera JPEGs as the DICOM
frames, byte for byte, and every level's pixels are OpenSlide's; overlapping camera images are
composed as OpenSlide places them; a slide missing a file, truncated or with a damaged Index.dat is
refused in one line naming the file and the part, with nothing stored."""

from __future__ import annotations

import shutil
from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pydicom
import pytest
from pydicom.encaps import generate_frames
from wsidicom import WsiDicom

from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.formats.mrxs import MrxsSource
from lamina.formats.source import SourceOptions
from lamina.sample import write_samples
from lamina.sample._jpeg import encode_jpeg
from lamina.sample.content import make_slide
from lamina.sample.identity import make_identity
from lamina.sample.mrxs import IMAGE, QUALITY, write_mrxs
from tests.support import dciodvfy_errors, ingest_path, stored_file

pytestmark = pytest.mark.backend_independent

SIZE = (1024, 768)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (written,) = write_samples(tmp_path_factory.mktemp("mrxs"), ["mirax_mrxs"], size=SIZE, seed=5)
    return written.path


def _copy(sample: Path, dest: Path) -> Path:
    shutil.copyfile(sample, dest / sample.name)
    shutil.copytree(sample.with_suffix(""), dest / sample.stem)
    return dest / sample.name


def _openslide_level(slide: openslide.OpenSlide, level: int) -> np.ndarray:
    region = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]))
    assert (region[..., 3] == 255).all(), f"OpenSlide leaves part of level {level} empty"
    return region[..., :3]


def test_openslide_reads_the_written_pixels(tmp_path: Path) -> None:
    # Arrange
    identity = make_identity(0, 1)
    slide = make_slide(identity, SIZE, 3)
    # Act
    path = write_mrxs(tmp_path / "scan.mrxs", slide, identity)
    # Assert
    opened = openslide.OpenSlide(path)
    assert opened.level_dimensions == ((1024, 768), (512, 384), (256, 192))
    assert float(opened.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.2425)
    assert {"macro", "label"} <= set(opened.associated_images)
    written = np.zeros((768, 1024, 3), np.uint8)
    for top in range(0, 768, IMAGE):
        for left in range(0, 1024, IMAGE):
            block = slide.pixels[top : top + IMAGE, left : left + IMAGE]
            written[top : top + IMAGE, left : left + IMAGE] = imagecodecs.jpeg8_decode(
                encode_jpeg(block, QUALITY)
            )
    assert np.array_equal(_openslide_level(opened, 0), written)
    # deterministic
    first = {p.name: p.read_bytes() for p in (tmp_path / "scan").iterdir()}
    write_mrxs(tmp_path / "scan.mrxs", slide, identity)
    assert first == {p.name: p.read_bytes() for p in (tmp_path / "scan").iterdir()}


def test_ingest_copies_the_camera_jpegs_and_keeps_openslides_pixels(
    sample: Path, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange
    source = MrxsSource(sample, SourceOptions())
    assert all(level.encoding is not None for level in source.levels)
    data = (sample.with_suffix("") / "Data0001.dat").read_bytes()
    # Act
    (candidate,) = discover([sample])
    result = ingestor.ingest(candidate, load_manifest(sample.parent / "manifest.csv"))
    # Assert
    assert result.status == "ingested", result.reason
    assert result.format == "mirax_mrxs" and result.identified
    rows = archive.catalog.instances(result.slide_id or "")
    levels = sorted((r for r in rows if r.level is not None), key=lambda r: r.level or 0)
    assert {r.flavor for r in rows if r.level is None} == {"LABEL", "OVERVIEW"}
    opened = openslide.OpenSlide(sample)
    assert len(levels) == opened.level_count
    for row in rows:
        path = stored_file(archive.store, row.blob_sha256, tmp_path / "stored")
        assert dciodvfy_errors(path) == [], f"{row.flavor} {row.level}"
    for number, row in enumerate(levels):
        ds = pydicom.dcmread(stored_file(archive.store, row.blob_sha256, tmp_path / "stored"))
        frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
        if number == 0:
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
            for index, frame in enumerate(frames):
                stored = source.levels[0].read_frame(index)
                assert frame in (stored, stored + b"\0") and stored in data, (
                    f"frame {index + 1} is not copied"
                )
        columns = -(-ds.TotalPixelMatrixColumns // ds.Columns)
        mosaic = np.zeros(
            (-(-ds.TotalPixelMatrixRows // ds.Rows) * ds.Rows, columns * ds.Columns, 3), np.uint8
        )
        for index, frame in enumerate(frames):
            row_, col = divmod(index, columns)
            pixels = imagecodecs.imread(frame)
            mosaic[row_ * ds.Rows : (row_ + 1) * ds.Rows, col * ds.Columns : (col + 1) * ds.Columns] = pixels
        ours = mosaic[: ds.TotalPixelMatrixRows, : ds.TotalPixelMatrixColumns]
        assert np.array_equal(ours, _openslide_level(opened, number)), (
            f"level {number} differs from OpenSlide"
        )
    exported = archive.export(tmp_path / "out", [result.slide_id or ""])[0]
    assert len(WsiDicom.open(exported.folder).levels) == len(levels)
    assert openslide.OpenSlide(exported.files[0]).level_count == len(levels)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_overlapping_camera_images_are_composed_as_openslide_places_them(
    tmp_path: Path, image_format: str
) -> None:
    # Arrange: camera images sharing 16 pixels with their neighbours (JPEG: their copies differ)
    identity = make_identity(0, 2)
    path = write_mrxs(
        tmp_path / "o.mrxs",
        make_slide(identity, (640, 480), 4),
        identity,
        image_format=image_format,
        overlap=16,
    )
    # Act
    source = MrxsSource(path, SourceOptions())
    # Assert
    opened = openslide.OpenSlide(path)
    assert [(level.size.width, level.size.height) for level in source.levels] == list(opened.level_dimensions)
    for number, level in enumerate(source.levels):
        assert level.encoding is None
        assert np.array_equal(level.decode_region(), _openslide_level(opened, number)), f"level {number}"


def _refused(ingestor: Ingestor, archive: Archive, path: Path) -> str:
    result = ingest_path(ingestor, path)
    assert result.status == "failed"
    reason = result.reason or ""
    assert reason and "\n" not in reason
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []
    return reason


def test_an_mrxs_without_its_folder_is_refused(
    sample: Path, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    shutil.copyfile(sample, tmp_path / "alone.mrxs")
    reason = _refused(ingestor, archive, tmp_path / "alone.mrxs")
    assert "alone/Slidedat.ini" in reason and "copy the folder alone" in reason


def test_a_missing_data_file_is_refused(
    sample: Path, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    path = _copy(sample, tmp_path)
    (path.with_suffix("") / "Data0002.dat").unlink()
    reason = _refused(ingestor, archive, path)
    assert "Data0002.dat" in reason and "is missing" in reason


def test_a_truncated_data_file_is_refused(
    sample: Path, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    path = _copy(sample, tmp_path)
    data = path.with_suffix("") / "Data0001.dat"
    data.write_bytes(data.read_bytes()[:5000])
    reason = _refused(ingestor, archive, path)
    assert "Data0001.dat" in reason and "zoom level 0" in reason and "truncated" in reason


def test_a_damaged_index_is_refused(
    sample: Path, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    path = _copy(sample, tmp_path)
    index = path.with_suffix("") / "Index.dat"
    damaged = bytearray(index.read_bytes())
    root = len("01.02") + 32
    damaged[root : root + 4] = (1 << 30).to_bytes(4, "little")  # the hierarchical root points away
    index.write_bytes(bytes(damaged))
    reason = _refused(ingestor, archive, path)
    assert "Index.dat" in reason and "zoom level 0" in reason
