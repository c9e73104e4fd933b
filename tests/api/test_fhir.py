"""The LIS's reports over FHIR (``POST /fhir/DiagnosticReport``, lamina.api.fhir) on a real server:
a final report starts the clock of its case's slides, an amended one restarts it; a resource that
is not a valid DiagnosticReport is 400 naming the field, a valid one lamina cannot use 422, a lab
that is not the principal's 403, all as OperationOutcomes; recorded with the LIS account as actor.
Embedded backend only: record_report is tested on both backends in tests/lifecycle."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from lamina.api.fhir import ACCESSION_TYPE, FINESS_SYSTEM, MAX_BODY_BYTES
from lamina.archive.catalog import tables as t
from lamina.governance.roles import Role
from tests.api.lifecycle_node import LAB_A, LAB_B, Node, serve_node

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # an LIS account that stores into both labs
    both = {"lis-ab": ((LAB_A, Role.TECHNICIAN), (LAB_B, Role.TECHNICIAN))}
    yield from serve_node(tmp_path_factory.mktemp("fhir"), both)


def _accession(value: str, lab: str | None = None) -> dict[str, Any]:
    system, code = ACCESSION_TYPE
    found: dict[str, Any] = {"type": {"coding": [{"system": system, "code": code}]}, "value": value}
    if lab is not None:
        found["assigner"] = {"identifier": {"system": FINESS_SYSTEM, "value": lab}}
    return found


def _report(
    accession: str | None, status: str = "final", issued: dt.datetime | None = None, **more: Any
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": "cr-2026-0001",
        "status": status,
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "60568-3", "display": "Pathology Synoptic report"}
            ]
        },
        "conclusion": "Adénocarcinome lieberkühnien",
    }
    if accession is not None:
        report["identifier"] = [_accession(accession)]
    if issued is not None:
        report["issued"] = issued.isoformat()
    return {**report, **more}


def _post(node: Node, who: str | None, body: object, headers: dict[str, str] = FHIR) -> httpx.Response:
    return node.call(who, "POST", "/fhir/DiagnosticReport", content=orjson.dumps(body), headers=headers)


def _issue(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/fhir+json"
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue: dict[str, Any] = outcome["issue"][0]
    assert issue["severity"] == "error"
    return issue


def _reports(node: Node, accession: str) -> list[tuple[str, str, str, str | None, str]]:
    query = (
        select(
            t.case_reports.c.tenant,
            t.case_reports.c.status,
            t.case_reports.c.actor,
            t.case_reports.c.report_id,
            t.case_reports.c.source,
        )
        .where(t.case_reports.c.accession_number == accession)
        .order_by(t.case_reports.c.received_at)
    )
    with node.archive.catalog.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]


def _clock(node: Node, who: str, slide: str) -> dt.datetime | None:
    state = node.call(who, "GET", f"/api/slides/{slide}/lifecycle").json()
    return None if state["report_at"] is None else dt.datetime.fromisoformat(state["report_at"])


def test_a_final_report_starts_the_clock_and_an_amended_one_restarts_it(node: Node) -> None:
    slide = node.slide_a
    first = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=20)
    # Act
    created = _post(node, "lis-a", _report(slide.accession, "final", first))
    # Assert: 201, the resource kept under lamina's id, its Location
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/fhir+json"
    kept = created.json()
    assert kept["resourceType"] == "DiagnosticReport" and kept["status"] == "final"
    assert created.headers["location"] == f"DiagnosticReport/{kept['id']}"
    assert kept["conclusion"] == "Adénocarcinome lieberkühnien"
    assert _reports(node, slide.accession) == [(LAB_A, "final", "lis-a", "cr-2026-0001", "fhir")]
    assert _clock(node, "patho-a", slide.id) == first
    assert node.audited("lis-a", f"case/{LAB_A}/{slide.accession}") == ["case-report"]

    # Act: amended 5 days later (application/json is taken too)
    later = first + dt.timedelta(days=5)
    amended = _post(
        node, "lis-a", _report(slide.accession, "amended", later), {"Content-Type": "application/json"}
    )
    # Assert: the clock restarts
    assert amended.status_code == 201, amended.text
    assert _clock(node, "patho-a", slide.id) == later

    # Act: a preliminary report records, and starts nothing (issued may be absent)
    preliminary = _post(node, "lis-a", _report(slide.accession, "preliminary"))
    assert preliminary.status_code == 201, preliminary.text
    assert _clock(node, "patho-a", slide.id) == later


def test_the_accession_number_may_come_in_based_on_and_the_report_before_the_slides(node: Node) -> None:
    issued = dt.datetime.now(dt.UTC).replace(microsecond=0)
    body = _report(None, "final", issued, basedOn=[{"identifier": _accession("A26-99999")}])
    # Act
    created = _post(node, "lis-b", body)
    # Assert: kept for when the case's slides arrive
    assert created.status_code == 201, created.text
    assert _reports(node, "A26-99999") == [(LAB_B, "final", "lis-b", "cr-2026-0001", "fhir")]


def test_a_resource_that_is_not_a_valid_diagnostic_report_is_400_naming_the_field(node: Node) -> None:
    accession = "A26-00400"
    issued = dt.datetime.now(dt.UTC)
    # a malformed issued, an unknown element, another resource, not JSON, a status not FHIR's
    bad_issued = {**_report(accession, "final", issued), "issued": "yesterday"}
    assert _issue(_post(node, "lis-a", bad_issued), 400)["expression"] == ["DiagnosticReport.issued"]
    unknown = {**_report(accession, "final", issued), "validatedBy": "Dr X"}
    assert _issue(_post(node, "lis-a", unknown), 400)["expression"] == ["DiagnosticReport.validatedBy"]
    nested = _report(accession, "final", issued)
    nested["identifier"][0]["type"]["coding"][0]["code"] = 7
    assert _issue(_post(node, "lis-a", nested), 400)["expression"] == [
        "DiagnosticReport.identifier[0].type.coding[0].code"
    ]
    patient = {"resourceType": "Patient", "id": "p1"}
    assert _issue(_post(node, "lis-a", patient), 400)["expression"] == ["DiagnosticReport.resourceType"]
    not_json = node.call("lis-a", "POST", "/fhir/DiagnosticReport", content=b"{final", headers=FHIR)
    assert _issue(not_json, 400)["code"] == "structure"
    status = _report(accession, "signed", issued)
    assert _issue(_post(node, "lis-a", status), 400)["expression"] == ["DiagnosticReport.status"]
    # the media type and the bound
    xml = node.call(
        "lis-a",
        "POST",
        "/fhir/DiagnosticReport",
        content=b"<x/>",
        headers={"Content-Type": "application/fhir+xml"},
    )
    assert _issue(xml, 415)["code"] == "not-supported"
    huge = _report(accession, "final", issued, conclusion="x" * MAX_BODY_BYTES)
    assert _issue(_post(node, "lis-a", huge), 413)["code"] == "too-long"
    assert _reports(node, accession) == []  # nothing recorded


def test_a_valid_report_lamina_cannot_use_is_422(node: Node) -> None:
    issued = dt.datetime.now(dt.UTC)
    # no accession number
    none = _issue(_post(node, "lis-a", _report(None, "final", issued)), 422)
    assert none["expression"] == ["DiagnosticReport.identifier"] and "ACSN" in none["diagnostics"]
    # a final report without its validation time
    assert _issue(_post(node, "lis-a", _report("A26-00077")), 422)["expression"] == [
        "DiagnosticReport.issued"
    ]
    # an account of two labs that names neither
    two = _issue(_post(node, "lis-ab", _report("A26-00077", "final", issued)), 422)
    assert LAB_A in two["diagnostics"] and LAB_B in two["diagnostics"]
    assert _reports(node, "A26-00077") == []


def test_the_lab_is_the_principals_never_one_it_does_not_store_into(node: Node) -> None:
    issued = dt.datetime.now(dt.UTC).replace(microsecond=0)
    other_lab = _report(None, "final", issued, identifier=[_accession("B26-00042", LAB_B)])
    # an LIS account of lab A naming lab B: refused
    assert _issue(_post(node, "lis-a", other_lab), 403)["code"] == "forbidden"
    # a pathologist, a lab admin, nobody: not accounts that store (the route's rule)
    assert _post(node, "patho-a", other_lab).status_code == 403
    assert _post(node, "admin-b", other_lab).status_code == 403
    assert _post(node, None, other_lab).status_code == 401
    assert _reports(node, "B26-00042") == []
    # the account of both labs names lab B: recorded there
    assert _post(node, "lis-ab", other_lab).status_code == 201
    assert _reports(node, "B26-00042") == [(LAB_B, "final", "lis-ab", "cr-2026-0001", "fhir")]
