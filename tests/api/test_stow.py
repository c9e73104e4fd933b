"""STOW-RS: a slide posted by a real client is stored through the ingest path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.datadict import dictionary_VR

from lamina.api import create_app
from lamina.api.dicomweb.upload import PREAMBLE_LIMIT, MultipartSpooler, spool_parts
from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.receive import Receiver
from lamina.config import Settings
from lamina.errors import RequestError
from tests.s3server import free_ports
from tests.signin import dicomweb_client, sign_in_process, signed
from tests.smalldisk import fill, small_disk
from tests.support import lamina_env, partial_writes, serving, shared_file


@pytest.fixture
def exported(tmp_path: Path) -> list[Path]:
    source = Archive.open(Settings.load(tmp_path / "source", env={}))
    (candidate,) = discover([shared_file("aperio/CMU-1-Small-Region.svs")])
    result = Ingestor(source.catalog, source.store).ingest(candidate)
    files = source.export(tmp_path / "export", [result.slide_id or ""])[0].files
    source.close()
    return files


@pytest.fixture
def target(tmp_path: Path, backend_env: dict[str, str]) -> Iterator[tuple[str, Archive]]:
    """An empty archive on the backend, served."""
    settings = Settings.load(tmp_path / "target", env=backend_env).with_(max_upload_bytes=64 << 20)
    archive = Archive.open(settings)
    try:
        with serving(create_app(archive.settings, archive)) as port:
            yield f"http://127.0.0.1:{port}/dicomweb", archive
    finally:
        archive.close()


def test_a_slide_posted_by_dicomweb_client_is_stored_whole(
    exported: list[Path], target: tuple[str, Archive]
) -> None:
    base, archive = target
    datasets = [pydicom.dcmread(path) for path in exported]
    answer = dicomweb_client(base).store_instances(datasets)
    stored = answer.ReferencedSOPSequence
    assert {item.ReferencedSOPInstanceUID for item in stored} == {ds.SOPInstanceUID for ds in datasets}
    assert "FailedSOPSequence" not in answer
    (slide,) = archive.catalog.slides()
    assert slide.series_instance_uid == datasets[0].SeriesInstanceUID
    assert slide.instances == len(datasets)
    # posting again is idempotent: the same slide, nothing new
    dicomweb_client(base).store_instances(datasets)
    assert len(archive.catalog.slides()) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's nice value is Linux's")
def test_the_slide_is_ingested_at_background_priority(
    exported: list[Path], target: tuple[str, Archive], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: the receive path notes the nice value of the thread it runs on
    base, archive = target
    seen: list[int] = []
    receive = Receiver.receive

    def noting(self: Receiver, *args: Any, **kwargs: Any) -> Any:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return receive(self, *args, **kwargs)

    monkeypatch.setattr(Receiver, "receive", noting)
    # Act
    answer = dicomweb_client(base).store_instances([pydicom.dcmread(path) for path in exported])
    # Assert: stored, by a thread at the default LAMINA_BACKGROUND_NICE
    assert "FailedSOPSequence" not in answer
    assert seen == [archive.settings.background_nice] == [19]


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "xyz") -> bytes:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n" for kind, data in parts
    )
    return body + f"--{boundary}--\r\n".encode()


def test_bad_parts_are_reported_and_the_rest_stored(
    exported: list[Path], target: tuple[str, Archive]
) -> None:
    base, archive = target
    good = [("application/dicom", path.read_bytes()) for path in exported]
    body = _multipart([*good, ("application/dicom", b"not dicom at all"), ("text/plain", b"hello")])
    answer = signed.post(
        f"{base}/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
        timeout=120,
    )
    assert answer.status_code == 202
    assert answer.headers["content-type"] == "application/dicom+json"
    data = answer.json()
    assert len(data["00081199"]["Value"]) == len(exported)
    reasons = [item["00081197"]["Value"][0] for item in data["00081198"]["Value"]]
    assert reasons == [0xC000, 0xC000]
    assert len(archive.catalog.slides()) == 1


def _check_vrs(element: dict[str, object], tag: str) -> None:
    """Every element (in sequences too) carries its dictionary VR."""
    assert element["vr"] == dictionary_VR(int(tag, 16)).split(" or ")[0], (tag, element)
    if element["vr"] == "SQ":
        for item in element.get("Value", []):  # type: ignore[attr-defined]
            for inner, value in item.items():
                _check_vrs(value, inner)


def test_the_answer_is_dicom_json_that_reads_back_with_the_dictionarys_vrs(
    exported: list[Path], target: tuple[str, Archive]
) -> None:
    base, _ = target
    body = _multipart([("application/dicom", exported[0].read_bytes()), ("text/plain", b"hello")])
    answer = signed.post(
        f"{base}/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
        timeout=120,
    )
    assert answer.status_code == 202
    data = answer.json()
    for tag, value in data.items():
        _check_vrs(value, tag)
    read = pydicom.Dataset.from_json(data)
    [stored] = read.ReferencedSOPSequence
    first = pydicom.dcmread(exported[0], stop_before_pixels=True)
    assert stored.ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert stored.ReferencedSOPClassUID == first.SOPClassUID
    assert stored.RetrieveURL.endswith(f"/instances/{first.SOPInstanceUID}")
    assert read.RetrieveURL == f"{base}/studies/{first.StudyInstanceUID}"
    [refused] = read.FailedSOPSequence
    assert refused.FailureReason == 0xC000
    # a part refused for its media type has no UIDs: the elements are there, empty
    assert data["00081198"]["Value"][0]["00081150"] == {"vr": "UI"}
    assert data["00081198"]["Value"][0]["00081155"] == {"vr": "UI"}


def test_all_failed_is_409_and_stores_nothing(target: tuple[str, Archive]) -> None:
    base, archive = target
    answer = signed.post(
        f"{base}/studies",
        content=_multipart([("application/dicom", b"junk")]),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
    )
    assert answer.status_code == 409
    assert archive.catalog.slides() == []
    assert list(archive.store.iter_digests()) == []


def test_over_the_limit_is_413_and_a_missing_boundary_400(target: tuple[str, Archive]) -> None:
    base, _ = target
    big = signed.post(
        f"{base}/studies",
        content=_multipart([("application/dicom", b"\x00" * (65 << 20))]),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
        timeout=120,
    )
    assert big.status_code == 413
    bad = signed.post(f"{base}/studies", content=b"x", headers={"Content-Type": "multipart/related"})
    assert bad.status_code == 400 and "boundary" in bad.json()["detail"]


def _annotations(slide_level: pydicom.Dataset) -> pydicom.Dataset:
    """Microscopy Bulk Simple Annotations (highdicom) on the slide, as an AI tool would post them."""
    import highdicom as hd
    import numpy as np
    from highdicom.ann import (
        AnnotationCoordinateTypeValues,
        AnnotationGroup,
        AnnotationGroupGenerationTypeValues,
        GraphicTypeValues,
        MicroscopyBulkSimpleAnnotations,
    )
    from pydicom.sr.codedict import codes

    group = AnnotationGroup(
        number=1,
        uid=hd.UID(),
        label="nuclei",
        annotated_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        annotated_property_type=codes.SCT.Nucleus,
        graphic_type=GraphicTypeValues.POINT,
        graphic_data=[np.array([[10.0, 20.0]]), np.array([[30.0, 40.0]])],
        algorithm_type=AnnotationGroupGenerationTypeValues.MANUAL,
    )
    return MicroscopyBulkSimpleAnnotations(
        source_images=[slide_level],
        annotation_coordinate_type=AnnotationCoordinateTypeValues.SCOORD,
        annotation_groups=[group],
        series_instance_uid=hd.UID(),
        series_number=20,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lamina tests",
        manufacturer_model_name="tests",
        software_versions="1",
        device_serial_number="1",
    )


def test_annotations_are_stored_beside_the_slide(exported: list[Path], target: tuple[str, Archive]) -> None:
    base, archive = target
    client = dicomweb_client(base)
    slide = [pydicom.dcmread(path) for path in exported]
    client.store_instances(slide)
    annotations = _annotations(slide[0])
    answer = client.store_instances([annotations])
    assert answer.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == annotations.SOPInstanceUID
    found = client.search_for_series(slide[0].StudyInstanceUID, search_filters={"Modality": "ANN"})
    assert [item["0020000E"]["Value"][0] for item in found] == [annotations.SeriesInstanceUID]
    back = client.retrieve_instance(
        annotations.StudyInstanceUID, annotations.SeriesInstanceUID, annotations.SOPInstanceUID
    )
    assert back.AnnotationGroupSequence[0].AnnotationGroupLabel == "nuclei"
    metadata = client.retrieve_series_metadata(annotations.StudyInstanceUID, annotations.SeriesInstanceUID)
    assert metadata[0]["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.91.1"]
    # the same object again is a success and stores nothing; other content under its UID is refused
    before = set(archive.store.iter_digests())
    client.store_instances([annotations])
    assert set(archive.store.iter_digests()) == before
    annotations.ContentLabel = "CHANGED"
    answer = signed.post(
        f"{base}/studies",
        content=_multipart([("application/dicom", _encode(annotations))]),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
    )
    assert answer.status_code == 409


def test_modalities_in_study_follow_the_series_stored_and_deleted(
    exported: list[Path], target: tuple[str, Archive]
) -> None:
    base, archive = target
    client = dicomweb_client(base)
    slide = [pydicom.dcmread(path) for path in exported]
    client.store_instances(slide)
    study = slide[0].StudyInstanceUID

    def studies_with(modality: str) -> list[list[str]]:
        found = client.search_for_studies(search_filters={"ModalitiesInStudy": modality})
        assert all(item["0020000D"]["Value"] == [study] for item in found)
        return [item["00080061"]["Value"] for item in found]

    assert (studies_with("SM"), studies_with("ANN")) == ([["SM"]], [])
    client.store_instances([_annotations(slide[0])])
    assert studies_with("SM") == studies_with("ANN") == studies_with("SM\\CT") == [["ANN", "SM"]]
    assert studies_with("A*") == [["ANN", "SM"]]  # a wild card probes the series instead
    (row,) = archive.catalog.slides()
    archive.delete_slide(row.id, "tester", "a test")
    assert (studies_with("SM"), studies_with("ANN")) == ([], [["ANN"]])


def _encode(dataset: pydicom.Dataset) -> bytes:
    import io

    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# -- a body that does not use its boundary ---------------------------------------------------------


def _chunks(total: int, boundary: str, counted: list[int], chunk: int = 64 << 10) -> AsyncIterator[bytes]:
    """A ``total``-byte body of one part framed by ``boundary``, made as it is read; ``counted``
    gets the bytes handed out."""

    async def generate() -> AsyncIterator[bytes]:
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        for piece in (head, None, tail):
            if piece is None:
                left = total - len(head) - len(tail)
                while left > 0:
                    data = b"\x5a" * min(chunk, left)
                    left -= len(data)
                    counted[0] += len(data)
                    yield data
            else:
                counted[0] += len(piece)
                yield piece

    return generate()


def test_a_body_sent_with_another_boundary_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    # Arrange: 128 MB framed by one boundary, declared with another
    counted = [0]
    body = _chunks(128 << 20, "the-real-boundary", counted)
    # Act
    with pytest.raises(RequestError) as refused:
        asyncio.run(spool_parts(body, "a-wrong-boundary", tmp_path, 1 << 40))
    # Assert: refused once the preamble's bound is passed, naming the boundary
    assert "'--a-wrong-boundary'" in str(refused.value)
    assert refused.value.parameter == "Content-Type"
    assert counted[0] <= PREAMBLE_LIMIT + (64 << 10)
    assert list(tmp_path.iterdir()) == []


def test_what_is_kept_between_chunks_is_bounded_whatever_the_body(tmp_path: Path) -> None:
    for declared in ("a-wrong-boundary", "the-real-boundary"):
        folder = tmp_path / declared
        folder.mkdir()
        spooler = MultipartSpooler(declared, folder, 1 << 40)
        counted = [0]

        async def feed(spooler: MultipartSpooler = spooler, counted: list[int] = counted) -> None:
            async for chunk in _chunks(48 << 20, "the-real-boundary", counted, chunk=1 << 20):
                if spooler.feed(chunk):
                    return

        with contextlib.suppress(RequestError):
            asyncio.run(feed())
        spooler.close()
        # never more than a delimiter cut by a chunk's end (or a part's headers, bounded too)
        assert spooler.peak_kept <= len(f"\r\n--{declared}") + 1
    (part,) = spooler.parts
    assert part.size == (48 << 20) - len(
        b"--the-real-boundary\r\nContent-Type: application/dicom\r\n\r\n"
    ) - len(b"\r\n--the-real-boundary--\r\n")


def test_a_wrong_boundary_is_answered_400_naming_it(target: tuple[str, Archive]) -> None:
    base, archive = target
    answer = signed.post(
        f"{base}/studies",
        content=_multipart([("application/dicom", b"\0" * (4 << 20))], boundary="real"),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=wrong'},
        timeout=120,
    )
    assert answer.status_code == 400
    assert "'--wrong'" in answer.json()["detail"]
    assert archive.catalog.count_slides() == 0


# -- a full disk -------------------------------------------------------------------------------


@contextlib.contextmanager
def _served_on_small_disk(
    tmp_path: Path, env: dict[str, str], size: int
) -> Iterator[tuple[str, Archive, Path]]:
    with small_disk(tmp_path / "disk", size) as disk:
        archive = Archive.open(Settings.load(disk / "home", env=env))
        try:
            with serving(create_app(archive.settings, archive)) as port:
                yield f"http://127.0.0.1:{port}/dicomweb", archive, disk
        finally:
            archive.close()


def _left_in_spools(archive: Archive) -> list[Path]:
    root = archive.settings.home / "incoming" / "stow"
    return [path for path in root.rglob("*") if path.name != "OWNER" and path.parent != root]


def test_a_full_spool_is_507_naming_it_and_leaves_nothing(
    tmp_path: Path, backend_env: dict[str, str]
) -> None:
    with _served_on_small_disk(tmp_path, backend_env, 4 << 20) as (base, archive, disk):
        answer = signed.post(
            f"{base}/studies",
            content=_multipart([("application/dicom", b"\0" * (8 << 20))]),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
            timeout=120,
        )
        assert answer.status_code == 507, answer.text
        problem = answer.json()
        assert problem["title"] == "Insufficient storage"
        assert problem["detail"].startswith(f"the STOW-RS spool {disk / 'home' / 'incoming' / 'stow'}/")
        assert "is full (No space left on device)" in problem["detail"]
        assert _left_in_spools(archive) == []
        assert archive.catalog.count_slides() == 0
        assert list(archive.store.iter_digests()) == []


def test_a_full_blob_store_is_507_naming_it_and_leaves_nothing(tmp_path: Path, exported: list[Path]) -> None:
    body = _multipart([("application/dicom", path.read_bytes()) for path in exported])
    with _served_on_small_disk(tmp_path, {}, 16 << 20) as (base, archive, disk):
        fill(disk, len(body) + (1 << 20))  # room for the request's spool, not for the slide too
        answer = signed.post(
            f"{base}/studies",
            content=body,
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
            timeout=120,
        )
        assert answer.status_code == 507, answer.text
        assert answer.json()["detail"].startswith(f"the blob store folder {disk / 'home' / 'blobs'} is full")
        assert _left_in_spools(archive) == []
        assert archive.catalog.count_slides() == 0
        assert list(archive.store.iter_digests()) == []
        assert partial_writes(archive.store) == []


# -- a server killed mid-request ---------------------------------------------------------------


def test_the_spool_of_a_server_killed_mid_request_is_swept_at_the_next_start(
    tmp_path: Path, settings: Settings
) -> None:
    home = settings.home
    # a stop waits for open connections at most 5 s (30 by default), well inside the wait below
    env = lamina_env(settings, LAMINA_VERIFY_CRON="off", LAMINA_SHUTDOWN_GRACE_S="5")
    lamina = str(Path(sys.executable).parent / "lamina")
    port, dimse_port = free_ports(2)
    log = tmp_path / "serve.log"

    def start(*extra: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                [lamina, "serve", "--port", str(port), *extra], env=env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if signed.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    sign_in_process(settings, port)
                    return process
            time.sleep(0.1)

    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield b"--xyz\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * (2 << 20)
        release.wait(60)  # the rest never comes: the server is killed meanwhile

    server = start()
    try:
        sender = threading.Thread(
            target=_post_quietly, args=(f"http://127.0.0.1:{port}/dicomweb/studies", body()), daemon=True
        )
        sender.start()
        stow = home / "incoming" / "stow"
        deadline = time.monotonic() + 30
        while not any(path.stat().st_size > 0 for path in stow.glob("*/*/part-*")):
            assert time.monotonic() < deadline, "the request was never spooled"
            time.sleep(0.05)
        # Act: a kill mid-request, then a start with DIMSE too
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        release.set()
        (killed,) = [path for path in stow.iterdir() if path.is_dir()]
        assert list(killed.glob("*/part-*")), "the kill left nothing to sweep"
        server = start("--dimse-port", str(dimse_port))
        # Assert: the killed process's spool is gone; the new server's own session may be there
        assert not killed.exists()
        assert "request spool(s) of processes" in log.read_text()
    finally:
        release.set()
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise


def _post_quietly(url: str, content: Iterator[bytes]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        signed.post(
            url,
            content=content,
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
            timeout=60,
        )
