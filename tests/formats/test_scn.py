"""Leica SCN: the sample ``lamina sample --format leica_scn`` writes opens in OpenSlide and slideio
(the independent readers), ingests into instances whose level-0 frames are the stored JPEG tiles
and whose every level is OpenSlide's pixels, dciodvfy-clean, exported to files wsidicom and
OpenSlide open; a truncated copy, a fluorescence scan and a slide of several regions are refused
in one line, storing nothing.

No real SCN small enough to commit exists: the sample, written to the layout of OpenSlide's
``leica`` reader (page 0 the macro with the collection's XML, then the main image's levels), is
the coverage, and OpenSlide the oracle.
"""

from __future__ import annotations

import datetime as dt
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
from lamina.formats.registry import detect_format, open_source
from lamina.formats.scn import ScnSource
from lamina.sample import SampleFile, write_samples
from lamina.sample.scn import NM_PER_PIXEL, OFFSET_NM
from tests.support import dciodvfy_errors, ingest_path, stored_file

pytestmark = pytest.mark.backend_independent

SIZE = (1024, 768)
#: 1024x768 and 256x192 (by 4, one 512 tile): the file's two levels.
LEVELS = [(1024, 768), (256, 192)]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFile:
    (written,) = write_samples(tmp_path_factory.mktemp("scn"), ["leica_scn"], size=SIZE, seed=2)
    return written


def _openslide_levels(path: Path) -> list[np.ndarray]:
    """The main image at each of OpenSlide's levels, read where OpenSlide places it."""
    slide = openslide.OpenSlide(path)
    x, y = int(slide.properties["openslide.bounds-x"]), int(slide.properties["openslide.bounds-y"])
    regions = []
    for level, (width, height) in enumerate(LEVELS):
        regions.append(np.asarray(slide.read_region((x, y), level, (width, height)))[..., :3])
    return regions


def _scan(stream: bytes) -> bytes:
    """The entropy-coded data after the start-of-scan header (what a re-encode would change)."""
    sos = stream.index(b"\xff\xda")
    return stream[sos + 2 + int.from_bytes(stream[sos + 2 : sos + 4], "big") :].rstrip(b"\x00")


def _frames(path: Path) -> tuple[pydicom.Dataset, list[bytes]]:
    ds = pydicom.dcmread(path)
    return ds, list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


def test_openslide_and_slideio_read_the_sample_as_written(sample: SampleFile) -> None:
    # Act
    slide = openslide.OpenSlide(sample.path)
    # Assert: the canvas is the collection (76 mm of glass at 0.5 µm), the main image at its offset
    props = slide.properties
    assert props["openslide.vendor"] == "leica"
    assert (int(props["openslide.bounds-x"]), int(props["openslide.bounds-y"])) == (
        OFFSET_NM[0] // NM_PER_PIXEL,
        OFFSET_NM[1] // NM_PER_PIXEL,
    )
    assert (int(props["openslide.bounds-width"]), int(props["openslide.bounds-height"])) == SIZE
    assert slide.level_count == 2 and slide.level_dimensions[0][0] == 76_000_000 // NM_PER_PIXEL
    assert float(props["openslide.mpp-x"]) == pytest.approx(0.5)
    assert props["openslide.objective-power"] == "20"
    assert props["leica.device-model"].startswith("Leica SCN400")
    assert props["openslide.barcode"] == sample.identity["specimen_id"]
    assert slide.associated_images["macro"].size == (1280, 431)
    with tifffile.TiffFile(sample.path) as tiff:
        written = [tiff.pages[1 + level].asarray() for level in range(len(LEVELS))]
    for level, region in enumerate(_openslide_levels(sample.path)):
        assert np.array_equal(region, written[level]), f"level {level}"
    slideio = pytest.importorskip("slideio", reason="slideio is the second reader of SCN")
    scenes = slideio.open_slide(str(sample.path), "SCN")
    main = next(s for s in (scenes.get_scene(i) for i in range(scenes.num_scenes)) if s.name == "Main")
    assert main.rect == (*(o // NM_PER_PIXEL for o in OFFSET_NM), *SIZE)
    # slideio decodes the 4:2:0 chroma its own way (no fancy upsampling): close, not equal
    diff = np.abs(main.read_block().astype(int) - written[0])
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 4


def test_the_reader_claims_the_sample_and_reads_its_metadata(sample: SampleFile) -> None:
    assert detect_format(sample.path) is ScnSource
    with open_source(sample.path) as source:
        meta = source.metadata
        assert [(level.size.width, level.size.height) for level in source.levels] == LEVELS
        assert [level.pixel_spacing.width for level in source.levels if level.pixel_spacing] == [
            pytest.approx(0.0005),
            pytest.approx(0.002),
        ]
        assert [(image.flavor, image.size.width) for image in source.associated] == [("OVERVIEW", 1280)]
    assert (meta.manufacturer, meta.model_name, meta.objective_power) == ("Leica", "Leica SCN400", 20.0)
    assert meta.acquisition_datetime == dt.datetime(2026, 11, 28, 9, 14, 2, 540000, tzinfo=dt.UTC)
    assert meta.identity.container_id == sample.identity["specimen_id"]


def test_ingest_copies_the_tiles_keeps_openslides_pixels_and_is_conformant(
    sample: SampleFile, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Act
    result = ingest_path(ingestor, sample.path)
    # Assert
    assert result.status == "ingested", result.reason
    assert result.format == "leica_scn"
    rows = archive.catalog.instances(result.slide_id or "")
    assert sorted(r.flavor for r in rows if r.flavor != "VOLUME") == ["OVERVIEW"]
    levels = sorted((r for r in rows if r.level is not None), key=lambda r: r.level or 0)
    assert [(r.total_pixel_matrix_columns, r.total_pixel_matrix_rows) for r in levels] == LEVELS
    for row in rows:
        path = stored_file(archive.store, row.blob_sha256, tmp_path / "stored")
        assert dciodvfy_errors(path) == [], f"{row.flavor} level {row.level}"
    expected = _openslide_levels(sample.path)
    with tifffile.TiffFile(sample.path) as tiff:
        stored_tiles = [tiff.pages[1 + level].dataoffsets for level in range(len(LEVELS))]
        counts = [tiff.pages[1 + level].databytecounts for level in range(len(LEVELS))]
    raw = sample.path.read_bytes()
    for level, row in enumerate(levels):
        ds, frames = _frames(stored_file(archive.store, row.blob_sha256, tmp_path / "stored"))
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
        assert (ds.Manufacturer, ds.ContainerIdentifier) == ("Leica", sample.identity["specimen_id"])
        tile = int(ds.Columns)
        across = -(-int(ds.TotalPixelMatrixColumns) // tile)
        whole = np.zeros((-(-LEVELS[level][1] // tile) * tile, across * tile, 3), np.uint8)
        for index, frame in enumerate(frames):
            offset, count = stored_tiles[level][index], counts[level][index]
            stored = raw[offset : offset + count]
            assert _scan(frame) == _scan(stored), f"level {level} tile {index} was re-encoded"
            top, left = (tile * n for n in divmod(index, across))
            whole[top : top + tile, left : left + tile] = imagecodecs.jpeg8_decode(frame)
        height, width = expected[level].shape[:2]
        assert np.array_equal(whole[:height, :width], expected[level]), f"level {level} is not OpenSlide's"
    exported = archive.export(tmp_path / "export", [result.slide_id or ""])[0]
    wsi = WsiDicom.open(exported.folder)
    assert [(level.size.width, level.size.height) for level in wsi.levels] == LEVELS
    assert list(openslide.OpenSlide(exported.files[0]).level_dimensions) == LEVELS


def _edited(sample: SampleFile, dest: Path, old: bytes, new: bytes) -> Path:
    """A copy whose XML has ``old`` replaced by ``new`` (of the same length) once."""
    data = sample.path.read_bytes()
    assert len(old) == len(new) and data.count(old) >= 1
    at = data.rindex(old)
    dest.write_bytes(data[:at] + new + data[at + len(old) :])
    return dest


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        # the main image (the last one) scanned in fluorescence
        (b"<illuminationSource>brightfield", b"<illuminationSource>fluorescent", "a fluorescence Leica SCN"),
        # the macro no longer at the collection's origin: two images scanned apart
        (b'offsetX="0" offsetY="0"', b'offsetX="1" offsetY="0"', "a Leica SCN of 2 regions scanned apart"),
    ],
    ids=["fluorescence", "two-regions"],
)
def test_what_lamina_does_not_read_is_refused_in_one_line(
    sample: SampleFile,
    old: bytes,
    new: bytes,
    reason: str,
    archive: Archive,
    ingestor: Ingestor,
    tmp_path: Path,
) -> None:
    edited = _edited(sample, tmp_path / "edited.scn", old, new)
    with pytest.raises(UnsupportedFormatError, match=reason):
        open_source(edited)
    result = ingest_path(ingestor, edited)
    assert result.status == "failed" and "\n" not in (result.reason or "")
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []


@pytest.mark.parametrize("keep", [0.5, 0.9], ids=["half", "tail-cut"])
def test_a_truncated_copy_is_refused_in_one_line_naming_the_file(
    sample: SampleFile, keep: float, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange
    data = sample.path.read_bytes()
    cut = tmp_path / "cut.scn"
    cut.write_bytes(data[: int(len(data) * keep)])
    # Act
    result = ingest_path(ingestor, cut)
    # Assert
    assert result.status == "failed"
    reason = result.reason or ""
    assert reason.startswith("truncated: ") and "\n" not in reason, reason
    assert detect_format(cut) is ScnSource  # claimed by its name, so that the refusal says the damage
    with pytest.raises(CorruptSourceError) as raised:
        open_source(cut)
    assert str(raised.value).startswith(f"{cut}: truncated: ")
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []
