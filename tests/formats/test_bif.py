"""Roche (Ventana) BIF: the sample ``lamina sample --format roche_bif`` writes opens in OpenSlide
(the independent reader) and ingests into instances whose frames are the stored JPEG tiles and
whose every level is OpenSlide's pixels, dciodvfy-clean, exported to files wsidicom and OpenSlide
open. A BIF whose tiles overlap (TileJointInfo) is composed as OpenSlide composes it, pixel for
pixel. A truncated copy and a slide of several scanned areas are refused in one line, storing
nothing. No real BIF small enough to commit exists: the samples, written to the layout of
OpenSlide's ``ventana`` reader, are the coverage, and OpenSlide the oracle."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pydicom
import pytest
import tifffile
from pydicom.encaps import generate_frames
from wsidicom import WsiDicom

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats.bif import BifSource, ComposedImage
from lamina.formats.registry import detect_format, open_source
from lamina.sample import SampleFile, write_samples
from lamina.sample.bif import write_bif
from lamina.sample.content import make_slide
from lamina.sample.identity import make_identity
from tests.support import dciodvfy_errors, ingest_path, stored_file

pytestmark = pytest.mark.backend_independent

SIZE = (1024, 768)
#: by 2 down to one 256 tile
LEVELS = [(1024, 768), (512, 384), (256, 192)]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFile:
    (written,) = write_samples(tmp_path_factory.mktemp("bif"), ["roche_bif"], size=SIZE, seed=2)
    return written


def _openslide(path: Path, level: int) -> np.ndarray:
    slide = openslide.OpenSlide(path)
    return np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]))[..., :3]


def _scan(stream: bytes) -> bytes:
    """The entropy-coded data after the start-of-scan header (what a re-encode would change)."""
    sos = stream.index(b"\xff\xda")
    return stream[sos + 2 + int.from_bytes(stream[sos + 2 : sos + 4], "big") :].rstrip(b"\x00")


def _decoded(ds: pydicom.Dataset) -> np.ndarray:
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    tile, across = int(ds.Columns), -(-int(ds.TotalPixelMatrixColumns) // int(ds.Columns))
    down = -(-int(ds.TotalPixelMatrixRows) // int(ds.Rows))
    whole = np.zeros((down * tile, across * tile, 3), np.uint8)
    for index, frame in enumerate(frames):
        top, left = (tile * n for n in divmod(index, across))
        whole[top : top + tile, left : left + tile] = imagecodecs.imread(frame)
    return whole[: int(ds.TotalPixelMatrixRows), : int(ds.TotalPixelMatrixColumns)]


def test_openslide_reads_the_sample_as_written(sample: SampleFile) -> None:
    slide = openslide.OpenSlide(sample.path)
    props = slide.properties
    assert props["openslide.vendor"] == "ventana"
    assert list(slide.level_dimensions) == LEVELS
    assert float(props["openslide.mpp-x"]) == pytest.approx(0.5)
    assert props["openslide.objective-power"] == "20"
    assert props["ventana.Barcode1D"] == sample.identity["specimen_id"]
    assert set(slide.associated_images) == {"macro", "thumbnail"}
    with tifffile.TiffFile(sample.path) as tiff:
        for level in range(len(LEVELS)):
            assert np.array_equal(_openslide(sample.path, level), tiff.pages[2 + level].asarray()), level


def test_the_reader_claims_the_sample_and_reads_its_metadata(sample: SampleFile) -> None:
    assert detect_format(sample.path) is BifSource
    with open_source(sample.path) as source:
        meta = source.metadata
        assert [(level.size.width, level.size.height) for level in source.levels] == LEVELS
        assert all(level.encoding is not None for level in source.levels)  # copied
        assert source.levels[0].pixel_spacing is not None
        assert source.levels[0].pixel_spacing.width == pytest.approx(0.0005)
        assert sorted(image.flavor for image in source.associated) == ["OVERVIEW", "THUMBNAIL"]
    assert (meta.manufacturer, meta.model_name, meta.device_serial_number) == (
        "Ventana",
        "VENTANA DP 200",
        "2000515",
    )
    assert meta.objective_power == 20.0
    assert meta.identity.container_id == sample.identity["specimen_id"]


def test_ingest_copies_the_tiles_keeps_openslides_pixels_and_is_conformant(
    sample: SampleFile, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    result = ingest_path(ingestor, sample.path)
    assert result.status == "ingested", result.reason
    assert result.format == "roche_bif"
    rows = archive.catalog.instances(result.slide_id or "")
    assert sorted(r.flavor for r in rows if r.flavor != "VOLUME") == ["OVERVIEW", "THUMBNAIL"]
    levels = sorted((r for r in rows if r.level is not None), key=lambda r: r.level or 0)
    assert [(r.total_pixel_matrix_columns, r.total_pixel_matrix_rows) for r in levels] == LEVELS
    for row in rows:
        path = stored_file(archive.store, row.blob_sha256, tmp_path / "stored")
        assert dciodvfy_errors(path) == [], f"{row.flavor} level {row.level}"
    raw = sample.path.read_bytes()
    with tifffile.TiffFile(sample.path) as tiff:
        stored = [
            (tiff.pages[2 + n].dataoffsets, tiff.pages[2 + n].databytecounts) for n in range(len(LEVELS))
        ]
    for level, row in enumerate(levels):
        ds = pydicom.dcmread(stored_file(archive.store, row.blob_sha256, tmp_path / "stored"))
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
        assert ds.ContainerIdentifier == sample.identity["specimen_id"]
        frames = generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))
        for index, frame in enumerate(frames):
            offset, count = stored[level][0][index], stored[level][1][index]
            assert _scan(frame) == _scan(raw[offset : offset + count]), (
                f"level {level} tile {index} re-encoded"
            )
        assert np.array_equal(_decoded(ds), _openslide(sample.path, level)), (
            f"level {level} is not OpenSlide's"
        )
    exported = archive.export(tmp_path / "export", [result.slide_id or ""])[0]
    wsi = WsiDicom.open(exported.folder)
    assert [(level.size.width, level.size.height) for level in wsi.levels] == LEVELS
    assert list(openslide.OpenSlide(exported.files[0]).level_dimensions) == LEVELS


def test_overlapping_tiles_are_composed_as_openslide_draws_them(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: tiles overlapping their neighbours by 8 pixels, as a scan's raw tiles do
    identity = make_identity(5, 0)
    path = write_bif(tmp_path / "overlap.bif", make_slide(identity, (700, 500), 5), identity, overlap=8)
    expected = _openslide(path, 0)
    # Act
    with open_source(path) as source:
        (level,) = source.levels
        assert isinstance(level, ComposedImage) and level.encoding is None
        composed = level.decode_region()
    result = ingest_path(ingestor, path)
    # Assert: pixel for pixel OpenSlide's canvas, kept losslessly
    assert np.array_equal(composed, expected)
    assert result.status == "ingested", result.reason
    row = next(r for r in archive.catalog.instances(result.slide_id or "") if r.level == 0)
    stored = stored_file(archive.store, row.blob_sha256, tmp_path / "stored")
    assert dciodvfy_errors(stored) == []
    assert np.array_equal(_decoded(pydicom.dcmread(stored)), expected)


def test_a_bif_of_two_scanned_areas_is_refused_in_one_line(
    sample: SampleFile, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: level 0's ImageInfo written twice (tifffile rewrites the longer XMP at the end)
    data = sample.path.read_bytes()
    one = data[data.index(b"<ImageInfo") : data.index(b"</ImageInfo>") + len(b"</ImageInfo>")]
    two_areas = tmp_path / "two.bif"
    two_areas.write_bytes(data)
    with tifffile.TiffFile(two_areas, mode="r+b") as tiff:
        page = tiff.pages[2]
        xmp = page.tags[700].value
        doubled = xmp.replace(one, one + one)
        page.tags[700].overwrite(doubled)
    # Act / Assert
    with pytest.raises(UnsupportedFormatError, match="a BIF of 2 scanned areas"):
        open_source(two_areas)
    result = ingest_path(ingestor, two_areas)
    assert result.status == "failed" and "\n" not in (result.reason or "")
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []


@pytest.mark.parametrize("keep", [0.5, 0.9], ids=["half", "tail-cut"])
def test_a_truncated_copy_is_refused_in_one_line_naming_the_file(
    sample: SampleFile, keep: float, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    data = sample.path.read_bytes()
    cut = tmp_path / "cut.bif"
    cut.write_bytes(data[: int(len(data) * keep)])
    result = ingest_path(ingestor, cut)
    assert result.status == "failed"
    reason = result.reason or ""
    assert reason.startswith("truncated: ") and "\n" not in reason, reason
    assert detect_format(cut) is BifSource
    with pytest.raises(CorruptSourceError) as raised:
        open_source(cut)
    assert str(raised.value).startswith(f"{cut}: truncated: ")
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []
