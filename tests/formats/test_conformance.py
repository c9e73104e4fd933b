"""Conformance matrix: every reader against every real test file (open or refuse, and why).

Each ingested file must give instances that dciodvfy passes with zero errors, and an export
that wsidicom and OpenSlide 4 open with the same pyramid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import pytest
from wsidicom import WsiDicom

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from tests.support import TESTDATA, dciodvfy_errors, ingest_path, need, shared_file, stored_file

# the conversion is the subject; both backends' keeping of it is checked by tests/archive
pytestmark = pytest.mark.backend_independent


@dataclass(frozen=True)
class Expect:
    path: str
    format: str | None  # None: refused
    reason: str = ""  # part of the refusal's message
    mpp: float | None = None  # given with --mpp
    levels: int = 0
    flavors: tuple[str, ...] = ()  # associated images expected
    size: tuple[int, int] | None = None
    #: OpenSlide opens the export (its DICOM reader takes RGB only: not a fluorescence scan's grey
    #: channels, "Couldn't read PlanarConfiguration")
    openslide: bool = True


MATRIX = [
    Expect(
        "aperio/CMU-1-Small-Region.svs",
        "aperio_svs",
        levels=5,
        flavors=("LABEL", "OVERVIEW", "THUMBNAIL"),
        size=(2220, 2967),
    ),
    Expect("aperio/tcga-cr-7395-01a-01-ts1.svs", None, "no pixel spacing"),
    Expect(
        "aperio/tcga-cr-7395-01a-01-ts1.svs",
        "aperio_svs",
        mpp=0.25,
        levels=6,
        flavors=("THUMBNAIL",),
        size=(4443, 3567),
    ),
    Expect("aperio-synthetic/small.svs", "aperio_svs", levels=1, flavors=("THUMBNAIL",), size=(16, 16)),
    Expect("aperio-synthetic/boxes.tiff", None, "no pixel spacing"),
    Expect("aperio-synthetic/boxes.tiff", "tiled_tiff", mpp=0.5, levels=4, size=(300, 250)),
    Expect("dicom-openslide-python", "dicom_wsi", levels=1, flavors=("THUMBNAIL",), size=(16, 16)),
    Expect("dicom-highdicom/sm_image.dcm", "dicom_wsi", levels=4, size=(50, 50)),
    Expect("dicom-highdicom/sm_image_jpegls.dcm", "dicom_wsi", levels=4, size=(50, 50)),
    Expect("dicom-wsi2dcm/jpeg.dicom", "dicom_wsi", levels=3, size=(957, 715)),
    Expect("dicom-wsi2dcm/jpeg2000.dicom", "dicom_wsi", levels=3, size=(957, 715)),
    Expect("dicom-wsi2dcm/raw.dicom", "dicom_wsi", levels=3, size=(957, 715)),
    Expect("dicom-pathml/small_dicom.dcm", None, "is not a valid UID"),
    Expect(
        "perkinelmer-qptiff/small_vectra.qptiff",
        "perkinelmer_qptiff",
        levels=3,
        flavors=("LABEL", "OVERVIEW", "THUMBNAIL"),
        size=(1920, 1440),
        openslide=False,
    ),
    Expect(
        "hamamatsu-ndpi/test3-DAPI-2-(387).ndpi",
        "hamamatsu_ndpi",
        levels=5,
        flavors=("LABEL", "OVERVIEW"),
        size=(3968, 4864),
    ),
    # the .vsi and its ETS folder are one slide (one candidate): 2 channels x 11 focal planes
    Expect("olympus-vsi", "olympus_vsi", levels=1, size=(1645, 1682), openslide=False),
    Expect("ome-tiff-nonwsi/multi-channel-z-series.ome.tif", None, "int8 samples"),
    Expect("tiff-nonwsi/kidney-48-5.tif", None, "not a tiled pyramidal TIFF"),
]


def test_matrix_covers_every_test_file() -> None:
    need(TESTDATA.exists(), "../shared/testdata")
    files = {p.relative_to(TESTDATA) for p in TESTDATA.rglob("*") if p.is_file() and p.suffix != ".md"}
    covered = set()
    for expect in MATRIX:
        base = TESTDATA / expect.path
        covered |= {p.relative_to(TESTDATA) for p in ([base] if base.is_file() else base.rglob("*"))}
    assert files <= covered, f"add these files to the conformance matrix: {sorted(map(str, files - covered))}"


@pytest.mark.parametrize("expect", MATRIX, ids=lambda e: f"{e.path}{'-mpp' if e.mpp else ''}")
def test_reader_against_file(expect: Expect, archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    path = shared_file(expect.path)
    result = ingest_path(ingestor, path, pixel_spacing=_spacing(expect.mpp))
    if expect.format is None:
        assert result.status == "failed"
        assert expect.reason in (result.reason or "")
        # the summary names the format a reader claimed the file as, or none
        assert result.format is None or "not supported yet" not in (result.reason or "")
        assert "\n" not in (result.reason or "")
        assert archive.catalog.count_slides() == 0
        assert list(archive.store.iter_digests()) == []
        return
    assert result.status == "ingested", result.reason
    assert result.format == expect.format
    assert result.levels == expect.levels
    rows = archive.catalog.instances(result.slide_id or "")
    assert sorted(r.flavor for r in rows if r.flavor != "VOLUME") == sorted(expect.flavors)
    base = next(r for r in rows if r.level == 0)
    assert (base.total_pixel_matrix_columns, base.total_pixel_matrix_rows) == expect.size
    smallest = max((r for r in rows if r.level is not None), key=lambda r: r.level or 0)
    assert smallest.total_pixel_matrix_columns <= smallest.columns
    assert smallest.total_pixel_matrix_rows <= smallest.rows
    for row in rows:
        errors = dciodvfy_errors(stored_file(archive.store, row.blob_sha256, tmp_path / "stored"))
        assert errors == [], f"{row.flavor} level {row.level}: {errors}"
    exported = archive.export(tmp_path / "export", [result.slide_id or ""])[0]
    wsi = WsiDicom.open(exported.folder)
    assert len(wsi.levels) == expect.levels
    assert (wsi.size.width, wsi.size.height) == expect.size
    if expect.openslide:
        # OpenSlide 4 reads JPEG 2000, not JPEG-LS: the export for it rewrites those frames
        for_openslide = archive.export(tmp_path / "j2k", [result.slide_id or ""], transfer_syntax="jpeg2000")[
            0
        ]
        slide = openslide.OpenSlide(for_openslide.files[0])
        assert slide.level_count == expect.levels
        assert slide.dimensions == expect.size
        # the same pixels either way
        rewritten = WsiDicom.open(for_openslide.folder)
        for level in range(expect.levels):
            size = wsi.levels[level].size
            region = (min(size.width, 512), min(size.height, 512))
            kept = np.asarray(wsi.read_region((0, 0), level, region))
            assert np.array_equal(np.asarray(rewritten.read_region((0, 0), level, region)), kept)


def _spacing(mpp: float | None) -> object:
    from lamina.model.geometry import SizeMm

    return SizeMm.from_mpp(mpp) if mpp else None
