"""Every format lamina reads, on the synthetic samples ``lamina sample`` writes.

For formats with no real file in ../shared/testdata (Hamamatsu NDPI, Philips TIFF, 3DHistech
TIFF, OME-TIFF pyramids) these generated files, built to the vendors' layouts, are the only
coverage; SVS, generic TIFF and DICOM are also covered by real files (test_conformance.py).
Each sample must ingest with its manifest identity, pass dciodvfy, and export to files that
wsidicom and OpenSlide 4 open with the same pyramid.
"""

from __future__ import annotations

from pathlib import Path

import openslide
import pydicom
import pytest
from wsidicom import WsiDicom

from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.sample import SAMPLE_FORMATS, write_samples
from tests.support import dciodvfy_errors, stored_file

# the conversion is the subject; both backends' keeping of it is checked by tests/archive
pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize("sample_format", SAMPLE_FORMATS)
def test_generated_sample_ingests_conformant(
    sample_format: str, archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange
    (sample,) = write_samples(tmp_path / "in", [sample_format], size=(2048, 1536), seed=7)
    manifest = load_manifest(tmp_path / "in" / "manifest.csv")
    (candidate,) = discover([sample.path])
    # Act
    result = ingestor.ingest(candidate, manifest)
    # Assert
    assert result.status == "ingested", result.reason
    assert result.format == sample_format
    assert result.identified
    rows = archive.catalog.instances(result.slide_id or "")
    levels = sorted((r for r in rows if r.level is not None), key=lambda r: r.level or 0)
    assert (levels[0].total_pixel_matrix_columns, levels[0].total_pixel_matrix_rows) == (2048, 1536)
    assert levels[-1].total_pixel_matrix_columns <= levels[-1].columns
    for row in rows:
        path = stored_file(archive.store, row.blob_sha256, tmp_path / "stored")
        assert dciodvfy_errors(path) == [], f"{row.flavor} {row.level}"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientID == sample.identity["patient_id"]
        assert ds.AccessionNumber == sample.identity["accession_number"]
    exported = archive.export(tmp_path / "out", [result.slide_id or ""])[0]
    wsi = WsiDicom.open(exported.folder)
    assert [(level.size.width, level.size.height) for level in wsi.levels] == [
        (r.total_pixel_matrix_columns, r.total_pixel_matrix_rows) for r in levels
    ]
    # OpenSlide 4 reads JPEG 2000, not the JPEG-LS of a re-encoded pyramid: the export for it
    for_openslide = archive.export(tmp_path / "j2k", [result.slide_id or ""], transfer_syntax="jpeg2000")[0]
    assert openslide.OpenSlide(for_openslide.files[0]).level_count == len(levels)
