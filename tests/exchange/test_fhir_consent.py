"""``POST /fhir/Consent`` (lamina.api.fhir_consent) on a real server: a deny from the LIS is in
force and audited under the patient's pseudonym, a permit lifts it; a malformed Consent is 400
naming the field, a valid one lamina cannot use 422, an unknown patient 422, a lab not the
principal's 403, a role that may not record oppositions 403, all as OperationOutcomes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson
import pytest

from lamina.api.app import create_app
from lamina.api.fhir import FINESS_SYSTEM
from lamina.api.fhir_consent import PURPOSE_CODE
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.exchange.consent import opposed
from lamina.exchange.keys import ExchangeKeys
from lamina.governance.issuer import LocalIssuer
from tests.exchange.site import LAB_A, PATIENT, PEOPLE, open_site
from tests.support import serving

FHIR = {"Content-Type": "application/fhir+json"}


class Site(NamedTuple):
    url: str
    archive: Archive
    tokens: dict[str, str]

    def post(self, who: str, body: object) -> httpx.Response:
        headers = {**FHIR, "Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.post(f"{self.url}/fhir/Consent", content=orjson.dumps(body), headers=headers, timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root: Path = tmp_path_factory.mktemp("consent")
    archive = open_site(root)
    try:
        issuer = LocalIssuer.open(archive.settings.home)
        tokens = {person: issuer.issue(person, 3600) for person in PEOPLE}
        with serving(create_app(archive.settings, archive)) as port:
            yield Site(f"http://127.0.0.1:{port}", archive, tokens)
    finally:
        archive.close()


def _consent(
    kind: str = "deny", patient: str | None = PATIENT, lab: str | None = None, **more: Any
) -> dict[str, Any]:
    identifier: dict[str, Any] = {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": patient}
    if lab is not None:
        identifier["assigner"] = {"identifier": {"system": FINESS_SYSTEM, "value": lab}}
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "id": "opp-2026-0007",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
        "dateTime": "2026-03-02T10:00:00+01:00",
        "provision": {"type": kind, "purpose": [{"system": PURPOSE_CODE[0], "code": PURPOSE_CODE[1]}]},
    }
    if patient is not None:
        consent["patient"] = {"identifier": identifier}
    return {**consent, **more}


def _issue(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/fhir+json"
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue: dict[str, Any] = outcome["issue"][0]
    return issue


def _opposed(site: Site) -> bool:
    with site.archive.catalog.engine.connect() as conn:
        return opposed(conn, LAB_A, PATIENT)


def test_the_lis_records_a_deny_then_a_permit_lifts_it(site: Site) -> None:
    # Act
    created = site.post("lis-a", _consent("deny"))
    # Assert
    assert created.status_code == 201, created.text
    kept = created.json()
    assert created.headers["location"] == f"Consent/{kept['id']}"
    assert kept["resourceType"] == "Consent" and kept["provision"]["type"] == "deny"
    assert _opposed(site)
    pseudonym = ExchangeKeys.for_settings(site.archive.settings).patient_pseudonym(PATIENT)
    with site.archive.catalog.engine.connect() as conn:
        entries = audit.entries(conn, action="consent")
    assert [(e.actor, e.entity, e.detail["fhir_id"]) for e in entries] == [
        ("lis-a", f"patient/{LAB_A}/{pseudonym}", "opp-2026-0007")
    ]
    assert all(PATIENT not in f"{e.entity}{e.detail}" for e in entries)

    # a pathologist of the lab lifts it, naming the lab
    lifted = site.post("patho-a", _consent("permit", lab=LAB_A))
    assert lifted.status_code == 201, lifted.text
    assert not _opposed(site)


def test_a_malformed_consent_is_400_naming_the_field(site: Site) -> None:
    issue = _issue(site.post("lis-a", _consent(status=5, scope="research")), 400)
    assert issue["code"] == "invalid" and issue["expression"][0].startswith("Consent.")
    assert _issue(site.post("lis-a", {"resourceType": "Patient"}), 400)["expression"] == [
        "Consent.resourceType"
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_consent(status="inactive"), "Consent.status"),
        (_consent(provision={"type": "deny"}), "Consent.provision.purpose"),
        (
            _consent(provision={"purpose": [{"system": PURPOSE_CODE[0], "code": "HRESCH"}]}),
            "Consent.provision.type",
        ),
        (
            _consent(
                scope={
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "adr"}
                    ]
                }
            ),
            "Consent.scope",
        ),
        (_consent(patient=None), "Consent.patient.identifier"),
        (_consent(patient="IPP-NOBODY"), "Consent.patient.identifier"),
    ],
)
def test_a_consent_lamina_cannot_use_is_422_naming_the_field(
    site: Site, body: dict[str, Any], field: str
) -> None:
    issue = _issue(site.post("lis-a", body), 422)
    assert issue["expression"] == [field]
    assert "IPP-NOBODY" not in issue["diagnostics"]


def test_another_lab_or_a_role_without_the_right_is_403(site: Site) -> None:
    before = _opposed(site)
    assert _issue(site.post("admin-b", _consent(lab=LAB_A)), 403)["code"] == "forbidden"
    refused = site.post("searcher-a", _consent())
    assert refused.status_code == 403, refused.text
    # a lab B admin without naming the lab: the patient has no slide in lab B
    assert _issue(site.post("admin-b", _consent()), 422)["expression"] == ["Consent.patient.identifier"]
    assert _opposed(site) == before
