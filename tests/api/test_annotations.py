"""``/api/annotations`` over real HTTP, on both backends: saved as DICOM Microscopy Bulk Simple
Annotations by their author, seen by a colleague with rights, refused to another lab, deleted by
the author alone, QuPath GeoJSON in and out, measurements from the slide's pixel spacing, the
stored instance valid (dciodvfy), and an ANN another tool stores by STOW-RS shown."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from lamina.api import annotations as annotations_api
from lamina.api.app import create_app
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.governance.issuer import LocalIssuer
from lamina.governance.model import GranteeKind, Permission, ResourceKind
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from tests.backends import Backend
from tests.support import dciodvfy_errors, ingest_case, serving

LAB_A, LAB_B = "750712184", "130781810"
DATA = Path(__file__).parents[1] / "annotations" / "data"


@dataclass
class World:
    base: str
    archive: Archive
    study: str
    series: str
    spacing: float
    headers: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def world(module_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("annotations")
    settings = Settings.load(root / "lamina-data", env=module_backend.env("annotations"))
    archive = Archive.open(settings)
    try:
        registry = Registry(archive.catalog)
        registry.add_tenant(LAB_A, "Anatomie pathologique A (tests)", "tests")
        registry.add_tenant(LAB_B, "Anatomie pathologique B (tests)", "tests")
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
        slide_id = ingest_case(
            ingestor, root / "samples", seed=3, tenant=LAB_A, size=(512, 384), patient_id="P1"
        )
        row = archive.catalog.slide(slide_id)
        assert row is not None
        level0 = next(i for i in archive.catalog.instances(slide_id) if i.level == 0)
        assert level0.pixel_spacing_mm is not None
        people = {
            "author": (LAB_A, [Role.PATHOLOGIST, Role.TECHNICIAN], "Dr Ada Author"),
            "colleague": (LAB_A, [Role.PATHOLOGIST], "Dr Colin Colleague"),
            "outsider": (LAB_B, [Role.PATHOLOGIST], "Dr Olga Outsider"),
            "grantee": (LAB_B, [Role.PATHOLOGIST], "Dr Gil Grantee"),
        }
        for person, (lab, roles, name) in people.items():
            registry.add_person(person, lab, roles, name, "tests")
        # a second opinion: lab A grants its slide to a pathologist of lab B
        registry.add_grant(
            LAB_A, GranteeKind.PERSON, "grantee", ResourceKind.SLIDE, slide_id, Permission.READ, None, "tests"
        )
        issuer = LocalIssuer.open(settings.home)
        headers = {person: {"Authorization": f"Bearer {issuer.issue(person, 3600)}"} for person in people}
        app = create_app(settings, archive)
        with serving(app, sign_in=False) as port:
            yield World(
                f"http://127.0.0.1:{port}",
                archive,
                row.study_instance_uid,
                row.series_instance_uid,
                level0.pixel_spacing_mm,
                headers,
            )
    finally:
        archive.close()


def _features() -> dict[str, object]:
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[10, 20], [110, 20]]},
                "properties": {"label": "ruler", "color": "#00ff00", "kind": "line"},
            },
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [100, 0], [100, 50], [0, 50], [0, 0]]],
                },
                "properties": {"label": "Tumour", "color": "#c80000", "kind": "rectangle"},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [200.5, 100.25]},
                "properties": {"label": "Mitosis", "color": "#ffc800", "kind": "point"},
            },
        ],
    }


def _list(world: World, who: str) -> httpx.Response:
    params = {"study": world.study, "series": world.series}
    return httpx.get(f"{world.base}/api/annotations", params=params, headers=world.headers[who], timeout=60)


def _create(world: World, who: str, features: object) -> httpx.Response:
    body = {"study": world.study, "series": world.series, "features": features}
    return httpx.post(f"{world.base}/api/annotations", json=body, headers=world.headers[who], timeout=60)


def test_an_annotation_is_saved_shown_to_a_colleague_refused_to_another_lab_and_deleted_by_its_author(
    world: World,
) -> None:
    # Act
    created = _create(world, "author", _features())
    # Assert: made, with measurements from the pixel spacing
    assert created.status_code == 201, created.text
    made = created.json()
    assert made["source"] == "ANN" and made["mine"] is True and made["author"] == "Dr Ada Author"
    assert made["created"] is not None
    features = made["features"]["features"]
    by_label = {f["properties"]["label"]: f for f in features}
    assert by_label["ruler"]["properties"]["measurement"]["length_mm"] == pytest.approx(
        100 * world.spacing, rel=1e-5
    )
    area = by_label["Tumour"]["properties"]["measurement"]["area_mm2"]
    assert area == pytest.approx(100 * 50 * world.spacing**2, rel=1e-5)
    assert by_label["Tumour"]["properties"]["kind"] == "rectangle"
    assert by_label["Mitosis"]["geometry"] == {"type": "Point", "coordinates": [200.5, 100.25]}
    assert by_label["Tumour"]["properties"]["color"] == "#c80000"

    # a colleague of the lab sees it, not as theirs; another lab's pathologist is refused
    seen = _list(world, "colleague")
    assert seen.status_code == 200
    (theirs,) = [a for a in seen.json()["annotations"] if a["id"] == made["id"]]
    assert theirs["mine"] is False and theirs["features"] == made["features"]
    assert _list(world, "outsider").status_code == 404
    assert made["id"] not in _list(world, "outsider").text

    # the instance is in the archive as any other: QIDO-RS finds it in the slide's study
    qido = httpx.get(
        f"{world.base}/dicomweb/studies/{world.study}/instances",
        params={"SOPInstanceUID": made["id"]},
        headers=world.headers["colleague"],
        timeout=60,
    )
    assert qido.status_code == 200 and qido.json()[0]["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.91.1"]

    # deleted by its author alone
    url = f"{world.base}/api/annotations/{made['id']}"
    refused = httpx.delete(url, headers=world.headers["colleague"], timeout=60)
    assert refused.status_code == 403 and "author" in refused.json()["detail"]
    assert httpx.delete(url, headers=world.headers["outsider"], timeout=60).status_code == 404
    assert httpx.delete(url, headers=world.headers["author"], timeout=60).status_code == 204
    assert httpx.delete(url, headers=world.headers["author"], timeout=60).status_code == 404
    assert made["id"] not in _list(world, "colleague").text
    assert world.archive.catalog.instance(made["id"]) is None
    # saving and deleting audited, under the author's id
    with world.archive.catalog.engine.connect() as conn:
        entries = [e for e in audit.entries(conn, actor="author") if e.entity == f"instance/{made['id']}"]
    assert [e.action for e in entries] == ["store", "annotate", "delete"]


def test_a_body_over_the_limit_is_refused_and_nothing_stored(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(annotations_api, "MAX_BODY", 1000)
    before = len(world.archive.catalog.instances_in(world.study))
    features = {"type": "FeatureCollection", "features": _features()["features"] * 20}  # type: ignore[operator]
    assert _create(world, "author", features).status_code == 413
    assert len(world.archive.catalog.instances_in(world.study)) == before


def test_another_lab_cannot_annotate_the_slide(world: World) -> None:
    before = len(world.archive.catalog.instances_in(world.study))
    assert _create(world, "outsider", _features()).status_code == 404
    assert len(world.archive.catalog.instances_in(world.study)) == before


@pytest.mark.parametrize(
    ("features", "field", "says"),
    [
        (
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]},
                    }
                ],
            },
            "features[0].geometry.coordinates",
            "at least 3 points",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"color": "red"},
                        "geometry": {"type": "Point", "coordinates": [1, 1]},
                    }
                ],
            },
            "features[0].properties.color",
            "#rrggbb",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Point", "coordinates": [1e7, 1]},
                    }
                ],
            },
            "features[0].geometry.coordinates",
            "outside the slide",
        ),
        ({"type": "FeatureCollection", "features": []}, "features", "between 1 and 10000"),
    ],
)
def test_bad_features_are_refused_naming_the_field_and_nothing_is_stored(
    world: World, features: object, field: str, says: str
) -> None:
    before = len(world.archive.catalog.instances_in(world.study))
    answer = _create(world, "author", features)
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith(field + ":") and says in answer.json()["detail"]
    assert len(world.archive.catalog.instances_in(world.study)) == before


def test_a_qupath_file_comes_back_as_it_went_in(world: World) -> None:
    # Arrange
    sent = json.loads((DATA / "qupath.geojson").read_text())
    # Act
    imported = httpx.post(
        f"{world.base}/api/annotations/geojson",
        params={"study": world.study, "series": world.series},
        content=(DATA / "qupath.geojson").read_bytes(),
        headers={**world.headers["author"], "Content-Type": "application/geo+json"},
        timeout=60,
    )
    assert imported.status_code == 201, imported.text
    exported = httpx.get(
        f"{world.base}/api/annotations/{imported.json()['id']}/geojson",
        headers=world.headers["colleague"],
        timeout=60,
    )
    # Assert
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/geo+json"
    assert exported.headers["content-disposition"].startswith("attachment")
    back = exported.json()["features"]

    def key(feature: dict[str, object]) -> str:
        return json.dumps(feature["properties"]["classification"], sort_keys=True)  # type: ignore[index]

    assert sorted(map(key, back)) == sorted(map(key, sent["features"]))
    for want in sent["features"]:
        (got,) = [f for f in back if key(f) == key(want)]
        assert got["geometry"] == want["geometry"]
        assert got["properties"]["objectType"] == "annotation"
    kinds = {f["properties"]["classification"]["name"]: f["properties"]["kind"] for f in back}
    assert kinds == {"Tumor": "polygon", "Stroma": "rectangle", "Ruler": "line", "Mitosis": "point"}


def test_the_stored_instance_is_a_valid_annotation(world: World) -> None:
    made = _create(world, "author", _features()).json()
    row = world.archive.catalog.instance(made["id"])
    assert row is not None
    data = b"".join(world.archive.store.open(row.blob_sha256))
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.91.1"
    assert ds.StudyInstanceUID == world.study
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == world.series
    path = Path(world.archive.settings.home) / f"{made['id']}.dcm"
    path.write_bytes(data)
    try:
        errors = dciodvfy_errors(path)
    finally:
        path.unlink()
    # dciodvfy (2024) asks for CommonZCoordinateValue's condition on a 2D annotation that does not
    # have it (the condition is 3D only: PS3.3 C.37.1.2): its own false report, nothing else
    assert [e for e in errors if "CommonZCoordinateValue" not in e] == []


def test_an_annotation_another_tool_stores_by_stow_rs_is_shown(world: World) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from lamina.annotations.service import Annotations

    service = Annotations(world.archive.catalog, world.archive.store)
    level0, _ = service.level0(world.study, world.series)
    source = service.header(level0)
    group = hd.ann.AnnotationGroup(
        number=1,
        uid=hd.UID(),
        label="nuclei",
        annotated_property_category=codes.SCT.AnatomicalStructure,
        annotated_property_type=codes.SCT.Nucleus,
        graphic_type="POLYGON",
        graphic_data=[np.array([[5, 5], [25, 5], [15, 30]], dtype=np.float32)],
        algorithm_type="AUTOMATIC",
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            "seg", codes.DCM.ArtificialIntelligence, "1"
        ),
    )
    made = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[source], annotation_coordinate_type="2D", annotation_groups=[group],
        series_instance_uid=hd.UID(), series_number=7, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="another tool", manufacturer_model_name="x", software_versions="1",
        device_serial_number="1",
    )  # fmt: skip
    _stow(world, made)
    shown = [a for a in _list(world, "colleague").json()["annotations"] if a["id"] == made.SOPInstanceUID]
    assert len(shown) == 1 and shown[0]["source"] == "ANN"
    (feature,) = shown[0]["features"]["features"]
    assert feature["properties"]["label"] == "nuclei" and feature["properties"]["kind"] == "polygon"
    assert feature["geometry"]["coordinates"] == [[[5, 5], [25, 5], [15, 30], [5, 5]]]


def _stow(world: World, dataset: object) -> None:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)  # type: ignore[attr-defined]
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + buffer.getvalue() + b"\r\n--b--\r\n"
    stored = httpx.post(
        f"{world.base}/dicomweb/studies/{world.study}",
        content=body,
        headers={
            **world.headers["author"],
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
        },
        timeout=60,
    )
    assert stored.status_code == 200, stored.text


def _shown(world: World, sop: str) -> dict[str, object]:
    answer = _list(world, "colleague")
    assert answer.status_code == 200
    (found,) = [a for a in answer.json()["annotations"] if a["id"] == sop]
    return found  # type: ignore[no-any-return]


def test_a_structured_report_s_image_region_is_shown(world: World) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from lamina.annotations.service import Annotations

    level0, _ = Annotations(world.archive.catalog, world.archive.store).level0(world.study, world.series)
    source = Annotations.header(level0)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,  # closed: SCOORD's polygon
        graphic_data=np.array([[10, 10], [90, 10], [50, 70], [10, 10]], dtype=np.float32),
        source_image=hd.sr.SourceImageForRegion(source.SOPClassUID, source.SOPInstanceUID),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="region 1"),
        referenced_region=region,
        finding_type=codes.SCT.Neoplasm,
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Person,
                observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Path^Sam"),
            )
        ),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source], content=report[0], series_instance_uid=hd.UID(), series_number=8,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="another tool",
    )  # fmt: skip
    # Act
    _stow(world, sr)
    shown = _shown(world, sr.SOPInstanceUID)
    # Assert
    assert shown["source"] == "SR" and shown["mine"] is False and shown["author"] == "Path Sam"
    (feature,) = shown["features"]["features"]  # type: ignore[index]
    assert feature["properties"]["label"] == "Neoplasm" and feature["properties"]["kind"] == "polygon"
    assert feature["geometry"]["coordinates"] == [[[10, 10], [90, 10], [50, 70], [10, 10]]]
    area = feature["properties"]["measurement"]["area_mm2"]
    assert area == pytest.approx(80 * 60 / 2 * world.spacing**2, rel=1e-5)


def test_a_segmentation_s_outline_is_shown(world: World) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from lamina.annotations.service import Annotations

    level0, _ = Annotations(world.archive.catalog, world.archive.store).level0(world.study, world.series)
    source = Annotations.header(level0)
    mask = np.zeros((level0.total_pixel_matrix_rows, level0.total_pixel_matrix_columns), dtype=bool)
    mask[100:200, 50:250] = True  # a 200 x 100 rectangle at (50, 100)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="tumour bed", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=mask[None, :, :, None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[description],
        series_instance_uid=hd.UID(), series_number=9, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="another tool", manufacturer_model_name="x", software_versions="1",
        device_serial_number="1", tile_pixel_array=True,
    )  # fmt: skip
    # Act
    _stow(world, seg)
    shown = _shown(world, seg.SOPInstanceUID)
    # Assert
    assert shown["source"] == "SEG"
    (feature,) = shown["features"]["features"]  # type: ignore[index]
    assert feature["properties"]["label"] == "tumour bed"
    ring = feature["geometry"]["coordinates"][0]
    assert sorted(map(tuple, ring[:-1])) == [(50, 100), (50, 200), (250, 100), (250, 200)]


def test_a_pathologist_of_another_lab_granted_the_slide_sees_and_adds_annotations(world: World) -> None:
    # Arrange: the author's annotation
    made = _create(world, "author", _features()).json()
    # Act
    seen = _list(world, "grantee")
    own = _create(world, "grantee", _features())
    # Assert: seen, exported, not deletable; their own saved under their name and lab
    assert seen.status_code == 200 and made["id"] in {a["id"] for a in seen.json()["annotations"]}
    url = f"{world.base}/api/annotations/{made['id']}"
    assert httpx.get(url + "/geojson", headers=world.headers["grantee"], timeout=60).status_code == 200
    assert httpx.delete(url, headers=world.headers["grantee"], timeout=60).status_code == 403
    assert own.status_code == 201 and own.json()["mine"] is True and own.json()["author"] == "Dr Gil Grantee"
    row = world.archive.catalog.instance(own.json()["id"])
    assert row is not None
    ds = pydicom.dcmread(io.BytesIO(b"".join(world.archive.store.open(row.blob_sha256))))
    creator = ds.ContentCreatorIdentificationCodeSequence[0]
    assert creator.InstitutionName == LAB_B
    assert creator.PersonIdentificationCodeSequence[0].CodeValue == "grantee"
    assert httpx.get(url + "/geojson", headers=world.headers["outsider"], timeout=60).status_code == 404
