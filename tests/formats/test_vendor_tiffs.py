"""Hamamatsu NDPI, Philips TIFF and 3DHISTECH TIFF: the readers built on opentile.

These formats are covered only by generated files (``lamina.sample``, written in the vendors'
layouts): no real NDPI, Philips TIFF or 3DHISTECH TIFF small enough to commit was found for
../shared/testdata (see ../shared/testdata/SOURCES.md). Each file must ingest into instances
that dciodvfy passes with zero errors, export to a series that wsidicom and OpenSlide 4 open with
the same pyramid, keep every level-0 tile as opentile hands it over (decoding to the same
pixels), and a truncated copy must be refused with a one-line reason, storing nothing.
"""

from __future__ import annotations

import datetime as dt
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pydicom
import pytest
import tifffile
from opentile import OpenTile
from pydicom.encaps import generate_frames
from wsidicom import WsiDicom

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.errors import UnsupportedFormatError
from lamina.formats.codec import jpeg_info
from lamina.formats.registry import detect_format, open_source
from lamina.sample import SampleFile, write_samples
from tests.support import dciodvfy_errors, ingest_path, stored_file

# the conversion is the subject; both backends' keeping of it is checked by tests/archive
pytestmark = pytest.mark.backend_independent

SIZE = (1024, 768)
ACQUIRED = dt.datetime(2026, 11, 28, 9, 14, 2)


@dataclass(frozen=True)
class Case:
    format: str
    levels: int  # the file's levels plus those lamina generates down to one tile
    size: tuple[int, int]  # level 0 as the file stores it (Philips pads to whole tiles)
    flavors: tuple[str, ...]  # associated images
    manufacturer: str
    barcode: bool  # the file carries the slide's barcode (the sample's specimen ID)
    photometric: str  # of the level-0 DICOM frames


CASES = [
    # NDPI: 1024x768 and 256x192 (by 4), which fits one 512 tile; label cropped from the macro
    Case("hamamatsu_ndpi", 2, (1024, 768), ("LABEL", "OVERVIEW"), "Hamamatsu", True, "YBR_FULL_422"),
    # Philips: 1024x1024 (768 padded) and 512x512
    Case("philips_tiff", 2, (1024, 1024), ("LABEL", "OVERVIEW"), "PHILIPS", True, "YBR_FULL_422"),
    # 3DHISTECH: 1024x768, 512x384, 256x192 in 256 tiles; RGB-coded JPEG
    Case("histech_tiff", 3, (1024, 768), (), "3DHISTECH", False, "RGB"),
]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SampleFile]:
    folder = tmp_path_factory.mktemp("vendor-tiffs")
    written = write_samples(folder, [case.format for case in CASES], size=SIZE, seed=2)
    return {sample.format: sample for sample in written}


def _frames(path: Path) -> tuple[pydicom.Dataset, list[bytes]]:
    ds = pydicom.dcmread(path)
    return ds, list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


def _scan(stream: bytes) -> bytes:
    """The entropy-coded data after the start-of-scan header (what a re-encode would change)."""
    sos = stream.index(b"\xff\xda")
    return stream[sos + 2 + int.from_bytes(stream[sos + 2 : sos + 4], "big") :].rstrip(b"\x00")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.format)
def test_each_reader_claims_only_its_own_sample(case: Case, samples: dict[str, SampleFile]) -> None:
    for other in CASES:
        claimed = detect_format(samples[other.format].path).format_name
        assert (claimed == case.format) == (other.format == case.format), (other.format, claimed)


def test_a_file_named_ndpi_that_is_no_tiff_is_not_claimed(tmp_path: Path) -> None:
    fake = tmp_path / "scan.ndpi"
    fake.write_bytes(b"not a slide")
    with pytest.raises(UnsupportedFormatError, match="not a slide format"):
        detect_format(fake)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.format)
def test_metadata_is_read_from_the_file(case: Case, samples: dict[str, SampleFile]) -> None:
    sample = samples[case.format]
    with open_source(sample.path) as source:
        meta = source.metadata
        assert meta.manufacturer == case.manufacturer
        assert meta.acquisition_datetime == ACQUIRED
        expected = sample.identity["specimen_id"] if case.barcode else None
        assert meta.identity.container_id == expected
        base = source.levels[0]
        assert base.pixel_spacing is not None
        for level in source.levels[1:]:
            assert level.pixel_spacing is not None
            factor = base.size.width / level.size.width
            assert level.pixel_spacing.width == pytest.approx(base.pixel_spacing.width * factor, rel=0.01)
    if case.format == "hamamatsu_ndpi":
        assert (meta.model_name, meta.device_serial_number, meta.objective_power) == (
            "C13210",
            "C13210-01234",
            40.0,
        )
    if case.format == "philips_tiff":
        assert (meta.model_name, meta.device_serial_number) == ("UFS Scanner", "FMT0417")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.format)
def test_ingest_is_conformant_and_opens_in_wsidicom_and_openslide(
    case: Case, samples: dict[str, SampleFile], archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Act
    result = ingest_path(ingestor, samples[case.format].path)
    # Assert
    assert result.status == "ingested", result.reason
    assert result.format == case.format
    assert result.levels == case.levels
    rows = archive.catalog.instances(result.slide_id or "")
    assert sorted(r.flavor for r in rows if r.flavor != "VOLUME") == sorted(case.flavors)
    levels = sorted((r for r in rows if r.level is not None), key=lambda r: r.level or 0)
    assert (levels[0].total_pixel_matrix_columns, levels[0].total_pixel_matrix_rows) == case.size
    assert levels[-1].total_pixel_matrix_columns <= levels[-1].columns
    assert levels[-1].total_pixel_matrix_rows <= levels[-1].rows
    for row in rows:
        path = stored_file(archive.store, row.blob_sha256, tmp_path / "stored")
        assert dciodvfy_errors(path) == [], f"{row.flavor} level {row.level}"
    ds = pydicom.dcmread(
        stored_file(archive.store, levels[0].blob_sha256, tmp_path / "stored"), stop_before_pixels=True
    )
    assert ds.Manufacturer == case.manufacturer
    assert ds.PhotometricInterpretation == case.photometric
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    if case.barcode:
        assert ds.ContainerIdentifier == samples[case.format].identity["specimen_id"]
    for row in rows:
        if row.flavor != "VOLUME":  # decoded JPEG, kept losslessly with its lossy history
            other = pydicom.dcmread(
                stored_file(archive.store, row.blob_sha256, tmp_path / "stored"), stop_before_pixels=True
            )
            assert other.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90", row.flavor
            assert (other.LossyImageCompression, other.LossyImageCompressionMethod) == ("01", "ISO_10918_1")
    exported = archive.export(tmp_path / "export", [result.slide_id or ""])[0]
    sizes = [(r.total_pixel_matrix_columns, r.total_pixel_matrix_rows) for r in levels]
    wsi = WsiDicom.open(exported.folder)
    assert [(level.size.width, level.size.height) for level in wsi.levels] == sizes
    slide = openslide.OpenSlide(exported.files[0])
    assert list(slide.level_dimensions) == sizes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.format)
def test_level0_frames_are_opentiles_tiles_and_decode_to_the_same_pixels(
    case: Case, samples: dict[str, SampleFile], archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    source = samples[case.format].path
    result = ingest_path(ingestor, source)
    assert result.status == "ingested", result.reason
    row = next(r for r in archive.catalog.instances(result.slide_id or "") if r.level == 0)
    ds, frames = _frames(stored_file(archive.store, row.blob_sha256, tmp_path))
    assert ds.LossyImageCompression == "01"
    whole = tifffile.TiffFile(source).series[0].levels[0].asarray()
    with OpenTile.open(source, 512) as tiler:
        level = tiler.levels[0]
        across, down = level.tiled_size.width, level.tiled_size.height
        tw, th = level.tile_size.width, level.tile_size.height
        assert len(frames) == across * down
        for index, frame in enumerate(frames):
            col, row_ = index % across, index // across
            tile = level.get_tile((col, row_))
            # copied as handed over: the same scan data (RGB-coded JPEG gains an Adobe marker)
            assert _scan(frame) == _scan(tile), f"tile {col},{row_} was re-encoded"
            decoded = imagecodecs.jpeg8_decode(frame)
            expected = np.asarray(level.get_decoded_tile((col, row_)))
            assert np.array_equal(decoded, expected.reshape(decoded.shape)), f"tile {col},{row_}"
            # and tifffile's decode of the whole level agrees; NDPI tiles are cut out of one JPEG,
            # so their first and last columns may differ a little: the decoder interpolates the
            # half-width chroma there from the neighbouring tile's, which a cut tile lacks
            region = whole[row_ * th : (row_ + 1) * th, col * tw : (col + 1) * tw]
            diff = np.abs(decoded[: region.shape[0], : region.shape[1]].astype(int) - region)
            assert diff[:, 1:-1].max() == 0, f"tile {col},{row_}"
            assert diff.max() <= (32 if case.format == "hamamatsu_ndpi" else 0), f"tile {col},{row_}"
    if case.photometric == "RGB":
        assert jpeg_info(frames[0]).rgb_coded


def _sparse_copy(source: Path, dest: Path, tile: int) -> Path:
    """A Philips TIFF whose level-0 tile ``tile`` is sparse (byte count 0), as scanners leave
    tiles outside the scanned area."""
    shutil.copyfile(source, dest)
    with tifffile.TiffFile(dest) as tiff:
        tag = tiff.pages.first.tags["TileByteCounts"]
        assert tag.dtype == 4 and tag.count > 1  # LONG values stored out of line
        offset = tag.valueoffset
    with dest.open("r+b") as fh:
        fh.seek(offset + 4 * tile)
        fh.write(struct.pack("<I", 0))
    return dest


def test_sparse_philips_tiles_become_blank_frames(
    samples: dict[str, SampleFile], archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    source = _sparse_copy(samples["philips_tiff"].path, tmp_path / "sparse.tiff", tile=3)
    result = ingest_path(ingestor, source)
    assert result.status == "ingested", result.reason
    row = next(r for r in archive.catalog.instances(result.slide_id or "") if r.level == 0)
    path = stored_file(archive.store, row.blob_sha256, tmp_path / "stored")
    assert dciodvfy_errors(path) == []
    _, frames = _frames(path)
    assert len(frames) == 4
    blank = imagecodecs.jpeg8_decode(frames[3])
    assert blank.shape == (512, 512, 3) and blank.min() >= 250  # white, as opentile fills it
    assert imagecodecs.jpeg8_decode(frames[0]).std() > 5  # the others are tissue


def test_philips_label_and_macro_kept_only_in_the_xml_are_read_from_it(
    samples: dict[str, SampleFile], tmp_path: Path
) -> None:
    # Arrange: the same file without the Label and Macro pages' names, as many Philips exports
    # carry these images only as base64 JPEG in the XML
    data = samples["philips_tiff"].path.read_bytes()
    assert data.count(b"Label\x00") == data.count(b"Macro\x00") == 1
    xml_only = tmp_path / "xml-only.tiff"
    xml_only.write_bytes(data.replace(b"Label\x00", b"Other\x00").replace(b"Macro\x00", b"Other\x00"))
    with open_source(samples["philips_tiff"].path) as source:
        from_pages = {image.flavor: image.decode_region() for image in source.associated}
    # Act
    with open_source(xml_only) as source:
        from_xml = {image.flavor: image.decode_region() for image in source.associated}
    # Assert: the same images (both are JPEG of the same pixels at the same quality)
    assert from_xml.keys() == from_pages.keys() == {"LABEL", "OVERVIEW"}
    for flavor, pixels in from_xml.items():
        assert pixels.shape == from_pages[flavor].shape
        assert np.abs(pixels.astype(int) - from_pages[flavor]).mean() < 3, flavor


@pytest.mark.parametrize("keep", [0.5, 0.9], ids=["half", "tail-cut"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.format)
def test_truncated_copy_is_refused_with_one_line_and_nothing_stored(
    case: Case,
    keep: float,
    samples: dict[str, SampleFile],
    archive: Archive,
    ingestor: Ingestor,
    tmp_path: Path,
) -> None:
    # Arrange
    source = samples[case.format].path
    damaged = tmp_path / f"damaged{source.suffix}"
    data = source.read_bytes()
    damaged.write_bytes(data[: int(len(data) * keep)])
    # Act
    result = ingest_path(ingestor, damaged)
    # Assert
    assert result.status == "failed"
    reason = result.reason or ""
    assert reason and "\n" not in reason
    assert archive.catalog.count_slides() == 0
    assert list(archive.store.iter_digests()) == []
    if keep == 0.9 or case.format == "hamamatsu_ndpi":
        # page 0 survives (or the name says NDPI): the vendor's reader claims it, names the damage
        assert detect_format(damaged).format_name == case.format
        assert reason.startswith("truncated: "), reason
