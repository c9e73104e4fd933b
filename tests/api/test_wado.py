"""WADO-RS as a real client sees it: dicomweb-client against a running lamina server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import imagecodecs
import numpy as np
import pydicom
import pytest
import tifffile
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import generate_frames

from lamina.api import create_app
from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions, Ingestor
from lamina.config import Settings
from lamina.model.geometry import SizeMm
from tests.backends import Backend
from tests.support import serving, shared_file, stored_file


@pytest.fixture(scope="module")
def wado_server(
    module_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Archive, str]]:
    home = tmp_path_factory.mktemp("wado") / "lamina-data"
    archive = Archive.open(Settings.load(home, env=module_backend.env("wado")))
    (candidate,) = discover([shared_file("aperio/CMU-1-Small-Region.svs")])
    result = Ingestor(archive.catalog, archive.store).ingest(candidate)
    assert result.status == "ingested", result.reason
    try:
        with serving(create_app(archive.settings, archive)) as port:
            yield f"http://127.0.0.1:{port}/dicomweb", archive, result.slide_id or ""
    finally:
        archive.close()


def _level0(archive: Archive, slide_id: str, folder: Path) -> tuple[pydicom.Dataset, list[bytes]]:
    row = next(r for r in archive.catalog.instances(slide_id) if r.level == 0)
    ds = pydicom.dcmread(stored_file(archive.store, row.blob_sha256, folder))
    return ds, [f for f in generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))]


def test_metadata_at_every_level_with_absolute_bulk_data(
    wado_server: tuple[str, Archive, str], tmp_path: Path
) -> None:
    base, archive, slide_id = wado_server
    ds, _ = _level0(archive, slide_id, tmp_path)
    client = DICOMwebClient(base)
    series = client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert len(series) == archive.catalog.slide(slide_id).instances  # type: ignore[union-attr]
    study = client.retrieve_study_metadata(ds.StudyInstanceUID)
    assert len(study) == len(series)
    instance = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert instance["00080018"]["Value"] == [ds.SOPInstanceUID]
    assert instance["00480007"]["Value"] == [ds.TotalPixelMatrixRows]
    uri = instance["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/")


def test_frames_are_the_stored_bytes(wado_server: tuple[str, Archive, str], tmp_path: Path) -> None:
    base, archive, slide_id = wado_server
    ds, stored = _level0(archive, slide_id, tmp_path)
    client = DICOMwebClient(base)
    frames = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        [1, 2, 130],
        media_types=(("application/octet-stream", "*"),),
    )
    assert [f.rstrip(b"\x00") for f in frames] == [stored[i].rstrip(b"\x00") for i in (0, 1, 129)]
    (single,) = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        [7],
        media_types=(("application/octet-stream", "*"),),
    )
    assert single.rstrip(b"\x00") == stored[6].rstrip(b"\x00")


def test_frames_transcoded_to_uncompressed_on_request(
    wado_server: tuple[str, Archive, str], tmp_path: Path
) -> None:
    base, archive, slide_id = wado_server
    ds, stored = _level0(archive, slide_id, tmp_path)
    client = DICOMwebClient(base)
    (raw,) = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        [5],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
    )
    expected = imagecodecs.jpeg8_decode(stored[4])
    assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(expected.shape), expected)


def test_instance_retrieval_gives_the_stored_object(
    wado_server: tuple[str, Archive, str], tmp_path: Path
) -> None:
    base, archive, slide_id = wado_server
    ds, _ = _level0(archive, slide_id, tmp_path)
    retrieved = DICOMwebClient(base).retrieve_instance(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    assert retrieved.SOPInstanceUID == ds.SOPInstanceUID
    assert retrieved.PixelData == ds.PixelData


@pytest.mark.parametrize(
    ("suffix", "headers", "status", "words"),
    [
        ("/frames/999", {}, 404, "frame 999 does not exist"),
        ("/frames/1,x", {}, 400, "frames"),
        (
            "/frames/1",
            {
                "Accept": 'multipart/related; type="application/octet-stream"; '
                "transfer-syntax=1.2.840.10008.1.2.4.80"
            },
            406,
            "transfer-syntax=*",
        ),
    ],
)
def test_bad_frame_requests(
    wado_server: tuple[str, Archive, str],
    suffix: str,
    headers: dict[str, str],
    status: int,
    words: str,
    tmp_path: Path,
) -> None:
    base, archive, slide_id = wado_server
    ds, _ = _level0(archive, slide_id, tmp_path)
    series = f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    url = f"{series}/instances/{ds.SOPInstanceUID}{suffix}"
    answer = httpx.get(url, headers=headers)
    assert answer.status_code == status
    assert words in answer.json()["detail"]


def test_unknown_uids_are_404(wado_server: tuple[str, Archive, str]) -> None:
    base, _, _ = wado_server
    assert httpx.get(f"{base}/studies/1.2.3/metadata").status_code == 404
    assert httpx.get(f"{base}/studies/1.2.3/series/4.5/instances/6.7/frames/1").status_code == 404


def test_cors_preflight(wado_server: tuple[str, Archive, str]) -> None:
    base, _, _ = wado_server
    answer = httpx.options(
        f"{base}/studies/1/metadata",
        headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"},
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] in ("*", "http://viewer.example")


def test_bulk_data_uris_answer_with_the_values(wado_server: tuple[str, Archive, str]) -> None:
    base, archive, slide_id = wado_server
    client = DICOMwebClient(base)
    # Pixel Data of the smallest level: its frames
    levels = [r for r in archive.catalog.instances(slide_id) if r.level is not None]
    row = max(levels, key=lambda r: r.level or 0)
    uids = (row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid)
    pixel_uri = client.retrieve_instance_metadata(*uids)["7FE00010"]["BulkDataURI"]
    (stored,) = client.retrieve_bulkdata(pixel_uri, media_types=(("application/octet-stream", "*"),))
    (frame,) = client.retrieve_instance_frames(*uids, [1], media_types=(("application/octet-stream", "*"),))
    assert stored == frame
    # with no transfer syntax asked for, Explicit VR Little Endian, as for frames (PS3.18 8.7.3.3)
    (pixels,) = client.retrieve_bulkdata(pixel_uri)
    assert pixels == imagecodecs.jpeg8_decode(frame).tobytes()
    # an ICC profile too large to inline (the TCGA scan's, 3,144 bytes)
    source = shared_file("aperio/tcga-cr-7395-01a-01-ts1.svs")
    (candidate,) = discover([source])
    options = IngestOptions(SizeMm.from_mpp(0.25))
    result = Ingestor(archive.catalog, archive.store).ingest(candidate, options=options)
    tcga = next(r for r in archive.catalog.instances(result.slide_id or "") if r.level == 0)
    uids = (tcga.study_instance_uid, tcga.series_instance_uid, tcga.sop_instance_uid)
    uri = client.retrieve_instance_metadata(*uids)["00480105"]["Value"][0]["00282000"]["BulkDataURI"]
    (icc,) = client.retrieve_bulkdata(uri)
    assert icc == tifffile.TiffFile(source).pages[0].iccprofile


def test_openapi_describes_the_own_routes(wado_server: tuple[str, Archive, str]) -> None:
    base, _, _ = wado_server
    root = base.removesuffix("/dicomweb")
    spec = httpx.get(f"{root}/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/healthz" in spec["paths"]
    health = httpx.get(f"{root}/healthz").json()
    assert health["status"] == "ok" and health["slides"] >= 1


def test_rendered_through_dicomweb_client(wado_server: tuple[str, Archive, str]) -> None:
    base, archive, slide_id = wado_server
    client = DICOMwebClient(base)
    rows = archive.catalog.instances(slide_id)
    label = next(r for r in rows if r.flavor == "LABEL")
    uids = (label.study_instance_uid, label.series_instance_uid)
    image = client.retrieve_instance_rendered(*uids, label.sop_instance_uid, media_types=("image/png",))
    decoded = imagecodecs.png_decode(image)
    assert decoded.shape[:2] == (label.total_pixel_matrix_rows, label.total_pixel_matrix_columns)
    # a whole slide series rendered, each instance scaled into the viewport
    answer = httpx.get(f"{base}/studies/{uids[0]}/series/{uids[1]}/rendered", params={"viewport": "128,128"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    assert answer.content.count(b"Content-Type: image/jpeg") == len(rows)


def test_opening_a_slide_is_audited(wado_server: tuple[str, Archive, str]) -> None:
    from lamina.archive import audit

    base, archive, slide_id = wado_server
    slide = archive.catalog.slide(slide_id)
    assert slide is not None
    httpx.get(f"{base}/studies/{slide.study_instance_uid}/series/{slide.series_instance_uid}/metadata")
    with archive.catalog.begin() as conn:
        reads = [entry for entry in audit.entries(conn, action="read") if entry.entity == f"slide/{slide_id}"]
        assert reads and reads[-1].detail["client"] == "127.0.0.1"
        assert audit.verify(conn).first_bad is None
