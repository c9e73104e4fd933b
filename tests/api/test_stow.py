"""STOW-RS: a slide posted by a real client is stored through the ingest path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from lamina.api import create_app
from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from tests.support import serving, shared_file


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
    answer = DICOMwebClient(base).store_instances(datasets)
    stored = answer.ReferencedSOPSequence
    assert {item.ReferencedSOPInstanceUID for item in stored} == {ds.SOPInstanceUID for ds in datasets}
    assert "FailedSOPSequence" not in answer
    (slide,) = archive.catalog.slides()
    assert slide.series_instance_uid == datasets[0].SeriesInstanceUID
    assert slide.instances == len(datasets)
    # posting again is idempotent: the same slide, nothing new
    DICOMwebClient(base).store_instances(datasets)
    assert len(archive.catalog.slides()) == 1


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
    answer = httpx.post(
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


def test_all_failed_is_409_and_stores_nothing(target: tuple[str, Archive]) -> None:
    base, archive = target
    answer = httpx.post(
        f"{base}/studies",
        content=_multipart([("application/dicom", b"junk")]),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
    )
    assert answer.status_code == 409
    assert archive.catalog.slides() == []
    assert list(archive.store.iter_digests()) == []


def test_over_the_limit_is_413_and_a_missing_boundary_400(target: tuple[str, Archive]) -> None:
    base, _ = target
    big = httpx.post(
        f"{base}/studies",
        content=_multipart([("application/dicom", b"\x00" * (65 << 20))]),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
        timeout=120,
    )
    assert big.status_code == 413
    bad = httpx.post(f"{base}/studies", content=b"x", headers={"Content-Type": "multipart/related"})
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
    client = DICOMwebClient(base)
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
    answer = httpx.post(
        f"{base}/studies",
        content=_multipart([("application/dicom", _encode(annotations))]),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
    )
    assert answer.status_code == 409


def test_modalities_in_study_follow_the_series_stored_and_deleted(
    exported: list[Path], target: tuple[str, Archive]
) -> None:
    base, archive = target
    client = DICOMwebClient(base)
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
