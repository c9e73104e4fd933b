"""WADO-RS as a real client sees it: dicomweb-client against a running lamina server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import imagecodecs
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.encaps import generate_frames

from lamina.api import create_app
from lamina.api.dicomweb.frames import JPEG_BASELINE, read_frames
from lamina.api.dicomweb.index import InstanceIndex
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions, Ingestor
from lamina.config import Settings
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax
from lamina.model.geometry import SizeMm
from tests.api.conftest import multipart_parts
from tests.backends import Backend
from tests.signin import dicomweb_client, signed
from tests.support import dciodvfy_errors, serving, shared_file, stored_file


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
    client = dicomweb_client(base)
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
    client = dicomweb_client(base)
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
    client = dicomweb_client(base)
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
    retrieved = dicomweb_client(base).retrieve_instance(
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
    answer = signed.get(url, headers=headers)
    assert answer.status_code == status
    assert words in answer.json()["detail"]


def test_unknown_uids_are_404(wado_server: tuple[str, Archive, str]) -> None:
    base, _, _ = wado_server
    assert signed.get(f"{base}/studies/1.2.3/metadata").status_code == 404
    assert signed.get(f"{base}/studies/1.2.3/series/4.5/instances/6.7/frames/1").status_code == 404


def test_cors_preflight(wado_server: tuple[str, Archive, str]) -> None:
    base, _, _ = wado_server
    answer = signed.options(
        f"{base}/studies/1/metadata",
        headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"},
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] in ("*", "http://viewer.example")


def test_bulk_data_uris_answer_with_the_values(wado_server: tuple[str, Archive, str]) -> None:
    base, archive, slide_id = wado_server
    client = dicomweb_client(base)
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
    spec = signed.get(f"{root}/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/healthz" in spec["paths"]
    health = signed.get(f"{root}/healthz").json()
    assert health["status"] == "ok" and health["slides"] >= 1


def test_rendered_through_dicomweb_client(wado_server: tuple[str, Archive, str]) -> None:
    base, archive, slide_id = wado_server
    client = dicomweb_client(base)
    rows = archive.catalog.instances(slide_id)
    label = next(r for r in rows if r.flavor == "LABEL")
    uids = (label.study_instance_uid, label.series_instance_uid)
    image = client.retrieve_instance_rendered(*uids, label.sop_instance_uid, media_types=("image/png",))
    decoded = imagecodecs.png_decode(image)
    assert decoded.shape[:2] == (label.total_pixel_matrix_rows, label.total_pixel_matrix_columns)
    # a whole slide series rendered, each instance scaled into the viewport
    answer = signed.get(f"{base}/studies/{uids[0]}/series/{uids[1]}/rendered", params={"viewport": "128,128"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    assert answer.content.count(b"Content-Type: image/jpeg") == len(rows)


def test_opening_a_slide_is_audited(wado_server: tuple[str, Archive, str]) -> None:
    from lamina.archive import audit

    base, archive, slide_id = wado_server
    slide = archive.catalog.slide(slide_id)
    assert slide is not None
    signed.get(f"{base}/studies/{slide.study_instance_uid}/series/{slide.series_instance_uid}/metadata")
    with archive.catalog.begin() as conn:
        reads = [entry for entry in audit.entries(conn, action="read") if entry.entity == f"slide/{slide_id}"]
        assert reads and reads[-1].detail["client"] == "127.0.0.1"
        assert audit.verify(conn).first_bad is None


# -- frames: what each Accept header gives (PS3.18 8.7.3.3, Tables 8.7.3-4 and 8.7.3-5) ----------

EVRLE = "1.2.840.10008.1.2.1"
OCTETS = f"application/octet-stream; transfer-syntax={EVRLE}"
JPEG_PART = "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
J2K_PART = "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"


def _row(archive: Archive, slide_id: str, flavor: str, level: int | None = None) -> InstanceRow:
    return next(r for r in archive.catalog.instances(slide_id) if r.flavor == flavor and r.level == level)


def _instance(base: str, row: InstanceRow) -> str:
    return (
        f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}"
    )


def _decode(row: InstanceRow, stored: bytes) -> bytes:
    encoding = FrameEncoding(TransferSyntax(row.transfer_syntax_uid), row.photometric_interpretation)
    return np.ascontiguousarray(codec.decode(stored, encoding)).tobytes()


@pytest.mark.parametrize(
    ("accept", "part", "content"),
    [
        (None, OCTETS, "decoded"),
        ("*/*", OCTETS, "decoded"),
        ("multipart/related", OCTETS, "decoded"),
        ('multipart/related; type="application/octet-stream"', OCTETS, "decoded"),
        (f'multipart/related; type="application/octet-stream"; transfer-syntax={EVRLE}', OCTETS, "decoded"),
        ('multipart/related; type="application/octet-stream"; transfer-syntax=*', JPEG_PART, "stored"),
        ('multipart/related; type="image/jpeg"', JPEG_PART, "stored"),
        ('multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50', JPEG_PART, "stored"),
        ('multipart/related; type="image/jpeg"; transfer-syntax=*', JPEG_PART, "stored"),
        # the first range cannot be had (JPEG 2000 of a JPEG frame): the next one is taken
        ('multipart/related; type="image/jp2", multipart/related; type="image/jpeg"', JPEG_PART, "stored"),
        # q=0 refuses a range
        (
            'multipart/related; type="application/octet-stream"; transfer-syntax=*; q=0, '
            'multipart/related; type="application/octet-stream"',
            OCTETS,
            "decoded",
        ),
    ],
)
def test_frames_follow_the_accept_header(
    wado_server: tuple[str, Archive, str], accept: str | None, part: str, content: str
) -> None:
    base, archive, slide_id = wado_server
    row = _row(archive, slide_id, "VOLUME", 0)  # JPEG baseline, lossy
    (stored,) = read_frames(InstanceIndex(archive).get(*_uids(row)), [5], archive)
    expected = stored if content == "stored" else _decode(row, stored)
    headers = {"Accept": accept} if accept is not None else {}
    # twice: the second time the instance is cached (the fast path on a local store)
    for _ in range(2):
        answer = signed.get(f"{_instance(base, row)}/frames/5", headers=headers)
        assert answer.status_code == 200, answer.text
        media_type = part.split(";")[0]
        assert answer.headers["content-type"].startswith(f'multipart/related; type="{media_type}"')
        assert multipart_parts(answer) == [(part, expected)]


def test_compressed_lossless_frames_carry_their_own_media_type(wado_server: tuple[str, Archive, str]) -> None:
    base, archive, slide_id = wado_server
    label = _row(archive, slide_id, "LABEL")  # JPEG 2000 lossless
    (stored,) = read_frames(InstanceIndex(archive).get(*_uids(label)), [1], archive)
    url = f"{_instance(base, label)}/frames/1"

    def get(accept: str | None) -> httpx.Response:
        return signed.get(url, headers={"Accept": accept} if accept else {})

    assert multipart_parts(get('multipart/related; type="image/jp2"')) == [(J2K_PART, stored)]
    star = get('multipart/related; type="application/octet-stream"; transfer-syntax=*')
    assert star.headers["content-type"].startswith('multipart/related; type="image/jp2"')
    assert multipart_parts(star) == [(J2K_PART, stored)]
    assert multipart_parts(get(None)) == [(OCTETS, _decode(label, stored))]
    # JPEG of a lossless frame only when the client names the lossy syntax
    refused = get('multipart/related; type="image/jpeg"')
    assert refused.status_code == 406 and "transfer-syntax=*" in refused.json()["detail"]
    ((part, jpeg),) = multipart_parts(
        get(f'multipart/related; type="image/jpeg"; transfer-syntax={JPEG_BASELINE}')
    )
    assert part == JPEG_PART
    assert imagecodecs.jpeg8_decode(jpeg).shape == (label.rows, label.columns, 3)


# -- whole instances in Explicit VR Little Endian ----------------------------------------------


def _retrieve(url: str, accept: str) -> list[tuple[str, bytes]]:
    with signed.stream("GET", url, headers={"Accept": accept}, timeout=60) as answer:
        assert answer.status_code == 200, answer.read()
        assert "content-length" not in answer.headers  # streamed
        answer.read()
    return multipart_parts(answer)


def test_instance_in_explicit_vr_little_endian_is_valid_dicom(
    wado_server: tuple[str, Archive, str], tmp_path: Path
) -> None:
    base, archive, slide_id = wado_server
    row = _row(archive, slide_id, "VOLUME", 0)
    stored = read_frames(
        InstanceIndex(archive).get(*_uids(row)), list(range(1, row.number_of_frames + 1)), archive
    )
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={EVRLE}'

    ((part, data),) = _retrieve(_instance(base, row), accept)

    assert part == f"application/dicom; transfer-syntax={EVRLE}"
    path = tmp_path / "native.dcm"
    path.write_bytes(data)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    original = pydicom.dcmread(stored_file(archive.store, row.blob_sha256, tmp_path), stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == EVRLE
    assert ds.SOPInstanceUID == row.sop_instance_uid
    assert (ds.PhotometricInterpretation, ds.PlanarConfiguration) == ("RGB", 0)
    assert "ExtendedOffsetTable" not in ds and "ExtendedOffsetTable" in original
    assert ds.LossyImageCompression == "01"  # the pixels were lossy-compressed once, and say so
    assert len(ds.PixelData) == row.number_of_frames * row.rows * row.columns * 3
    assert ds.pixel_array.tobytes() == b"".join(_decode(row, frame) for frame in stored)
    original.PixelData = ds.PixelData  # everything else as stored, but what the pixels' form changes
    for keyword in ("PhotometricInterpretation", "PlanarConfiguration"):
        delattr(original, keyword)
        delattr(ds, keyword)
    kept = {elem.tag for elem in original if elem.tag < 0x7FE00000}
    assert {elem.tag for elem in ds if elem.tag < 0x7FE00000} == kept
    assert all(ds[tag].value == original[tag].value for tag in kept)


def test_series_in_explicit_vr_little_endian(wado_server: tuple[str, Archive, str], tmp_path: Path) -> None:
    base, archive, slide_id = wado_server
    rows = archive.catalog.instances(slide_id)
    series = f"{base}/studies/{rows[0].study_instance_uid}/series/{rows[0].series_instance_uid}"

    parts = _retrieve(series, f'multipart/related; type="application/dicom"; transfer-syntax={EVRLE}')

    assert len(parts) == len(rows)
    for index, (part, data) in enumerate(parts):
        assert part == f"application/dicom; transfer-syntax={EVRLE}"
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(data)
        assert dciodvfy_errors(path) == [], path
        ds = pydicom.dcmread(path)
        row = next(r for r in rows if r.sop_instance_uid == ds.SOPInstanceUID)
        (first,) = read_frames(InstanceIndex(archive).get(*_uids(row)), [1], archive)
        assert ds.pixel_array.reshape(row.number_of_frames, -1)[0].tobytes() == _decode(row, first)


def test_instances_without_a_transfer_syntax(wado_server: tuple[str, Archive, str]) -> None:
    """PS3.18 8.7.3: Explicit VR Little Endian, except where the server holds only lossy data."""
    base, archive, slide_id = wado_server
    label = _row(archive, slide_id, "LABEL")  # JPEG 2000 lossless: decoded
    level = _row(archive, slide_id, "VOLUME", 4)  # JPEG baseline, lossy: as stored
    accept = 'multipart/related; type="application/dicom"'
    ((part, _),) = _retrieve(_instance(base, label), accept)
    assert part == f"application/dicom; transfer-syntax={EVRLE}"
    ((part, data),) = _retrieve(_instance(base, level), accept)
    assert part == f"application/dicom; transfer-syntax={level.transfer_syntax_uid}"
    assert hashlib.sha256(data).hexdigest() == level.blob_sha256
    ((part, data),) = _retrieve(_instance(base, label), accept + "; transfer-syntax=*")
    assert hashlib.sha256(data).hexdigest() == label.blob_sha256


@pytest.fixture(scope="module")
def limited_server(wado_server: tuple[str, Archive, str]) -> Iterator[str]:
    """A second server on the same archive, with small answer and transcoding limits."""
    _, archive, _ = wado_server
    settings = archive.settings.with_(
        max_frames_bytes=200_000, max_transcode_bytes=300_000, workers=0, verify_cron=None
    )
    with serving(create_app(settings, archive)) as port:
        yield f"http://127.0.0.1:{port}/dicomweb"


def test_limits_of_one_answer(wado_server: tuple[str, Archive, str], limited_server: str) -> None:
    _, archive, slide_id = wado_server
    row = _row(archive, slide_id, "VOLUME", 0)
    url = _instance(limited_server, row)
    star = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    # one short URL repeating a frame: bounded by bytes, not only by the count
    length = InstanceIndex(archive).get(*_uids(row)).frame_span(1)[1]
    repeat = 200_000 // length + 1
    answer = signed.get(f"{url}/frames/{','.join(['1'] * repeat)}", headers=star)
    assert answer.status_code == 400
    assert "200000-byte limit" in answer.json()["detail"]
    assert "LAMINA_MAX_FRAMES_BYTES" in answer.json()["detail"]
    assert signed.get(f"{url}/frames/{','.join(['1'] * (repeat - 1))}", headers=star).status_code == 200
    # decoded frames count as decoded: one 240 x 240 RGB frame fits, two do not
    assert signed.get(f"{url}/frames/1").status_code == 200
    assert signed.get(f"{url}/frames/1,2").status_code == 400
    # whole instances: over the transcoding limit is 406, naming it and the way to the stored bytes
    native = {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={EVRLE}'}
    refused = signed.get(url, headers=native)
    assert refused.status_code == 406
    assert "300000-byte transcoding limit (LAMINA_MAX_TRANSCODE_BYTES)" in refused.json()["detail"]
    assert "transfer-syntax=*" in refused.json()["detail"]
    assert (
        signed.get(
            url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
        ).status_code
        == 200
    )
    # no transfer syntax asked for: what the limit keeps from being transcoded comes as stored
    label = _row(archive, slide_id, "LABEL")  # 463 x 387 RGB: 537,543 bytes decoded
    ((part, _),) = multipart_parts(
        signed.get(
            _instance(limited_server, label),
            headers={"Accept": 'multipart/related; type="application/dicom"'},
        )
    )
    assert part == f"application/dicom; transfer-syntax={label.transfer_syntax_uid}"


def _uids(row: InstanceRow) -> tuple[str, str, str]:
    return row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid
