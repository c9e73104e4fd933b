"""``GET /api/slides/related`` (lamina.api.related) on a real server, on both backends: the other
slides of the block and the patient's prior slides, newest first, only what the principal may see
(a slide of another lab, even of the same patient and the same specimen string, is never listed);
the report's link the LIS gave with ``POST /fhir/DiagnosticReport`` (``presentedForm.url``) kept
and returned; a ``javascript:`` link refused 400 naming the field."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson
import pytest
from sqlalchemy import select, update

from lamina.api.app import create_app
from lamina.api.fhir import ACCESSION_TYPE
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.governance.issuer import LocalIssuer
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from tests.backends import Backend
from tests.support import ingest_case, serving

LAB_A = "690781810"  # Lyon
LAB_B = "130786049"  # Marseille
PATIENT = "RLPAT0001"
CASE = "A26-00200"
REPORT_URL = "https://lis.example.org/cr-acp/A26-00200.pdf?v=2"
FHIR = {"Content-Type": "application/fhir+json"}
PEOPLE = {
    "patho-a": (LAB_A, Role.PATHOLOGIST),
    "patho-b": (LAB_B, Role.PATHOLOGIST),
    "lis-a": (LAB_A, Role.TECHNICIAN),
}
#: name: (lab, patient, accession, specimen, stain, study date)
SLIDES = {
    "he": (LAB_A, PATIENT, CASE, f"{CASE}-A1", "HE", "20260301"),
    "pas": (LAB_A, PATIENT, CASE, f"{CASE}-A1", "PAS", "20260301"),
    "block_b": (LAB_A, PATIENT, CASE, f"{CASE}-B1", "HE", "20260301"),
    "prior_2024": (LAB_A, PATIENT, "A24-00100", "A24-00100-A1", "HE", "20240115"),
    "prior_2025": (LAB_A, PATIENT, "A25-00050", "A25-00050-A1", "HE", "20250610"),
    # the same patient and the very same specimen string, in another lab
    "lab_b": (LAB_B, PATIENT, "B25-00007", f"{CASE}-A1", "HE", "20251201"),
    "stranger": (LAB_A, "RLPAT0002", "A26-00300", "A26-00300-A1", "HE", "20260302"),
}


class Slide(NamedTuple):
    study: str
    series: str


class Node(NamedTuple):
    url: str
    archive: Archive
    tokens: dict[str, str]
    slides: dict[str, Slide]

    def call(self, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def related(self, who: str, name: str, **params: str) -> httpx.Response:
        slide = self.slides[name]
        query = {"study": slide.study, "series": slide.series, **params}
        return self.call(who, "GET", "/api/slides/related", params=query)


@pytest.fixture(scope="module")
def node(module_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root: Path = tmp_path_factory.mktemp("related")
    settings = Settings.load(root / "lamina-data", env=module_backend.env("related"))
    archive = Archive.open(settings)
    try:
        registry = Registry(archive.catalog)
        registry.add_tenant(LAB_A, "Anatomie pathologique, HCL", "tests")
        registry.add_tenant(LAB_B, "Anatomie pathologique, AP-HM", "tests")
        for person, (lab, role) in PEOPLE.items():
            registry.add_person(person, lab, [role], "", "tests")
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
        slides: dict[str, Slide] = {}
        for seed, (name, (lab, patient, accession, specimen, stain, date)) in enumerate(SLIDES.items(), 1):
            slide_id = ingest_case(
                ingestor, root / "samples" / name, seed=seed, tenant=lab, size=(256, 192),
                patient_id=patient, accession_number=accession, specimen_id=specimen, stain=stain,
            )  # fmt: skip
            row = archive.catalog.slide(slide_id)
            assert row is not None
            slides[name] = Slide(row.study_instance_uid, row.series_instance_uid)
            # the case's date, as the LIS would have given it (the samples' own is the scan's)
            with archive.catalog.begin() as conn:
                conn.execute(
                    update(t.studies)
                    .where(t.studies.c.study_instance_uid == row.study_instance_uid)
                    .values(study_date=date)
                )
        assert slides["he"].study == slides["pas"].study == slides["block_b"].study
        issuer = LocalIssuer.open(settings.home)
        tokens = {person: issuer.issue(person, 3600) for person in PEOPLE}
        with serving(create_app(settings, archive)) as port:
            yield Node(f"http://127.0.0.1:{port}", archive, tokens, slides)
    finally:
        archive.close()


def _series(answer: list[dict[str, Any]]) -> list[str]:
    return [each["series"] for each in answer]


def _report(accession: str, **more: Any) -> dict[str, Any]:
    system, code = ACCESSION_TYPE
    return {
        "resourceType": "DiagnosticReport",
        "id": f"cr-{accession}",
        "status": "final",
        "issued": dt.datetime.now(dt.UTC).isoformat(),
        "code": {"coding": [{"system": "http://loinc.org", "code": "60568-3"}]},
        "identifier": [{"type": {"coding": [{"system": system, "code": code}]}, "value": accession}],
        **more,
    }


def test_the_block_and_the_priors_newest_first(node: Node) -> None:
    # Act
    answer = node.related("patho-a", "he")
    # Assert
    assert answer.status_code == 200, answer.text
    found = answer.json()
    slides = node.slides
    assert found["slide"]["series"] == slides["he"].series
    assert found["block_by"] == "specimen"
    assert _series(found["same_block"]) == [slides["pas"].series]
    assert found["same_block"][0]["stain"] == "PAS"
    assert found["same_block"][0]["label"] == f"{CASE}-A1"
    assert _series(found["priors"]) == [slides["prior_2025"].series, slides["prior_2024"].series]
    assert [p["date"] for p in found["priors"]] == ["2025-06-10", "2024-01-15"]
    assert [p["accession"] for p in found["priors"]] == ["A25-00050", "A24-00100"]
    assert found["more"] == {"same_block": False, "priors": False}
    # another block of the case, another patient, another lab: in neither list, nowhere in the body
    for name in ("block_b", "stranger", "lab_b"):
        assert slides[name].series not in answer.text, name
    assert slides["lab_b"].study not in answer.text and "B25-00007" not in answer.text


def test_each_list_is_bounded_by_limit(node: Node) -> None:
    found = node.related("patho-a", "he", limit="1").json()
    assert _series(found["priors"]) == [node.slides["prior_2025"].series]
    assert found["more"] == {"same_block": False, "priors": True}


def test_the_other_lab_sees_nothing_of_lab_a(node: Node) -> None:
    # the slide of lab A: 404 like an absent one, to lab B's pathologist
    refused = node.related("patho-b", "he")
    assert refused.status_code == 404, refused.text
    assert CASE not in refused.text
    # lab B's slide of the same patient and specimen string: lab A's slides are not listed
    found = node.related("patho-b", "lab_b").json()
    assert found["same_block"] == [] and found["priors"] == []
    assert PATIENT not in orjson.dumps(found).decode()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"series": ""}, "series"),
        ({"study": "1.2.x"}, "study"),
        ({"limit": "0"}, "limit"),
        ({"limit": "51"}, "limit"),
    ],
)
def test_a_malformed_query_is_400_naming_the_parameter(
    node: Node, params: dict[str, str], field: str
) -> None:
    answer = node.related("patho-a", "he", **params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith(f"{field}: ")


def test_the_report_link_is_kept_and_returned(node: Node) -> None:
    # Arrange: no report yet
    assert node.related("patho-a", "he").json()["report"] is None
    form = {"contentType": "application/pdf", "url": REPORT_URL, "title": "CR-ACP A26-00200"}
    # Act
    posted = node.call(
        "lis-a",
        "POST",
        "/fhir/DiagnosticReport",
        content=orjson.dumps(_report(CASE, presentedForm=[form])),
        headers=FHIR,
    )
    # Assert
    assert posted.status_code == 201, posted.text
    report = node.related("patho-a", "pas").json()["report"]
    assert report is not None
    assert (report["url"], report["content_type"], report["title"]) == (
        REPORT_URL,
        "application/pdf",
        form["title"],
    )
    assert report["status"] == "final"
    with node.archive.catalog.engine.connect() as conn:
        kept = conn.execute(
            select(t.case_reports.c.form_url).where(t.case_reports.c.accession_number == CASE)
        ).scalar_one()
    assert kept == REPORT_URL
    # a prior case has no report of its own: none shown for it
    assert node.related("patho-a", "prior_2024").json()["report"] is None


@pytest.mark.parametrize(
    "url", ["javascript:alert(document.cookie)", "data:text/html,<b>x</b>", "ftp://lis/cr.pdf"]
)
def test_a_report_link_that_is_not_http_is_refused_naming_the_field(node: Node, url: str) -> None:
    # Arrange
    body = _report("A24-00100", presentedForm=[{"contentType": "text/html", "url": url}])
    # Act
    answer = node.call("lis-a", "POST", "/fhir/DiagnosticReport", content=orjson.dumps(body), headers=FHIR)
    # Assert
    assert answer.status_code == 400, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["DiagnosticReport.presentedForm[0].url"]
    assert "http" in issue["diagnostics"]
    with node.archive.catalog.engine.connect() as conn:
        kept = conn.execute(
            select(t.case_reports.c.id).where(t.case_reports.c.accession_number == "A24-00100")
        ).all()
    assert kept == []
