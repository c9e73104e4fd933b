"""Patients' opposition from the LIS over FHIR: ``POST /fhir/Consent`` (:mod:`lamina.exchange.consent`).

The body is a FHIR R4 ``Consent`` (``application/fhir+json`` or ``application/json``, at most
:data:`~lamina.api.fhir.MAX_BODY_BYTES`), validated with ``fhir.resources``' R4B models, as
``POST /fhir/DiagnosticReport`` (:mod:`lamina.api.fhir`) is. What lamina takes from it:

- ``status`` ``active`` (another status is refused: to lift an opposition, send a new active
  Consent whose provision permits);
- ``scope``: ``research`` or ``patient-privacy`` of ``http://terminology.hl7.org/CodeSystem/consentscope``;
- ``provision.type``: ``deny`` (the patient opposes research use) or ``permit`` (the opposition
  is lifted), for ``provision.purpose`` holding ``HRESCH`` of
  ``http://terminology.hl7.org/CodeSystem/v3-ActReason`` (research);
- ``patient.identifier.value``: the patient's PatientID in the lab. The lab is the principal's: one
  where it may record oppositions (:data:`~lamina.governance.decide.Action.CONSENT`: the lab's
  pathologists, admins and technicians, the LIS's account being one); a principal of several labs
  names it as the identifier's ``assigner`` (FINESS, system ``urn:oid:1.2.250.1.71.4.2.2``).

Answers: 201 with the resource as kept (``id`` lamina's, ``meta.lastUpdated`` the time recorded)
and ``Location: Consent/ID``; errors are ``OperationOutcome`` s naming the field: 400 for a body
that is not a valid Consent, 403 for a lab not the principal's, 413, 415, and 422 for a valid
Consent lamina cannot use (another status, scope or purpose, no PatientID, a patient with no slide
in the lab). Recorded with the principal as actor, audited with the patient's pseudonym.
"""

from __future__ import annotations

from typing import Any

import orjson
from fhir.resources.R4B.consent import Consent as FhirConsent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lamina.api.auth import principal
from lamina.api.fhir import FHIR_JSON, FINESS_SYSTEM, Issue, issue_of, outcome, parse_resource, read_body
from lamina.archive.catalog import Catalog
from lamina.config import Settings
from lamina.errors import (
    InvalidResourceError,
    LaminaError,
    NotFoundError,
    PermissionDeniedError,
    ReportError,
    RequestError,
)
from lamina.exchange.consent import Consent, record
from lamina.exchange.keys import ExchangeKeys
from lamina.governance.decide import Action, Principal

__all__ = ["PURPOSE_CODE", "SCOPES", "parse_consent", "routes"]

#: the scopes taken (HL7 consentscope)
SCOPES = ("http://terminology.hl7.org/CodeSystem/consentscope", ("research", "patient-privacy"))
#: the purpose an opposition is about: research (HL7 v3 ActReason)
PURPOSE_CODE = ("http://terminology.hl7.org/CodeSystem/v3-ActReason", "HRESCH")
_DECISIONS = {"deny": "deny", "permit": "allow"}
#: record's parameter names to the resource's FHIRPath
_PATHS = {"id": "Consent.id", "PATIENT_ID": "Consent.patient.identifier.value"}


def parse_consent(raw: bytes) -> FhirConsent:
    """The Consent of a JSON body, or a 400 error per wrong field."""
    return parse_resource(raw, FhirConsent, "Consent")


def _decision(consent: FhirConsent) -> str:
    """deny or allow, or a 422 naming the field lamina cannot use."""
    if consent.status != "active":
        raise ReportError(
            422,
            "business-rule",
            "Consent.status",
            f"{consent.status!r}: only an active Consent is recorded (to lift an opposition, send an "
            "active one whose provision.type is permit)",
        )
    system, scopes = SCOPES
    codings = consent.scope.coding or () if consent.scope else ()
    if not any(c.system == system and c.code in scopes for c in codings):
        raise ReportError(
            422, "code-invalid", "Consent.scope", f"use {system}#research (or #patient-privacy)"
        )
    provision = consent.provision
    if provision is None or provision.type not in _DECISIONS:
        raise ReportError(
            422, "required", "Consent.provision.type", "deny (the patient opposes) or permit (lifted)"
        )
    if not any((c.system, c.code) == PURPOSE_CODE for c in provision.purpose or ()):
        raise ReportError(
            422,
            "code-invalid",
            "Consent.provision.purpose",
            f"lamina records oppositions to research: add {PURPOSE_CODE[0]}#{PURPOSE_CODE[1]}",
        )
    return _DECISIONS[str(provision.type)]


def _patient(consent: FhirConsent) -> tuple[str, str | None]:
    """(PatientID, FINESS of its assigner or None), or a 422."""
    identifier = consent.patient.identifier if consent.patient else None
    if identifier is None or not identifier.value:
        raise ReportError(
            422,
            "required",
            "Consent.patient.identifier",
            "name the patient by patient.identifier.value (their PatientID in the lab)",
        )
    assigner = identifier.assigner.identifier if identifier.assigner else None
    lab = None
    if assigner is not None and assigner.system == FINESS_SYSTEM and assigner.value:
        lab = assigner.value.strip()
    return identifier.value, lab


def lab_of(who: Principal, assigner: str | None) -> str:
    """The lab the opposition is recorded in: the principal's where it may record one, or the
    one ``assigner`` names (403 for a lab not the principal's)."""
    labs = sorted(tenant for tenant in who.tenants() if Action.CONSENT in who.allowed_in(tenant))
    if assigner is not None:
        if assigner not in labs:
            raise PermissionDeniedError(
                Action.CONSENT.value, f"lab {assigner}: your roles do not allow recording oppositions there"
            )
        return assigner
    if len(labs) == 1:
        return labs[0]
    raise ReportError(
        422,
        "business-rule",
        "Consent.patient.identifier.assigner",
        f"you record oppositions in several labs ({', '.join(labs)}): name the lab as the identifier's "
        f"assigner (assigner.identifier, system {FINESS_SYSTEM}, value its FINESS)",
    )


def _record(
    catalog: Catalog,
    settings: Settings,
    tenant: str,
    patient: str,
    decision: str,
    actor: str,
    fhir_id: str | None,
) -> Consent:
    keys = ExchangeKeys.for_settings(settings)
    return record(catalog, tenant, patient, decision, actor, "fhir", fhir_id, keys=keys)


async def create_consent(request: Request) -> Response:
    """``POST /fhir/Consent`` (FHIR create)."""
    who = principal(request)
    try:
        consent = parse_consent(await read_body(request))
        decision = _decision(consent)
        patient, assigner = _patient(consent)
        tenant = lab_of(who, assigner)
        recorded = await run_in_threadpool(
            _record,
            request.app.state.archive.catalog,
            request.app.state.settings,
            tenant,
            patient,
            decision,
            who.id,
            consent.id,
        )
    except NotFoundError as exc:  # the patient has no slide in the lab
        return outcome(422, [Issue("not-found", str(exc), "Consent.patient.identifier")])
    except RequestError as exc:
        if isinstance(exc, ReportError | InvalidResourceError):
            return outcome(*(issue_of(exc) or (400, [Issue("invalid", str(exc))])))
        message = str(exc).removeprefix(f"{exc.parameter}: ")
        return outcome(400, [Issue("value", message, _PATHS.get(exc.parameter, "Consent"))])
    except LaminaError as exc:
        found = issue_of(exc)
        if found is None:
            raise
        return outcome(*found)
    kept: dict[str, Any] = orjson.loads(consent.model_dump_json(by_alias=True, exclude_none=True))
    kept["id"] = str(recorded.id)
    kept["meta"] = {**kept.get("meta", {}), "lastUpdated": recorded.recorded_at.isoformat()}
    return Response(
        orjson.dumps(kept),
        status_code=201,
        media_type=FHIR_JSON,
        headers={"Location": f"Consent/{recorded.id}"},
    )


def routes() -> list[BaseRoute]:
    """The FHIR Consent route, to mount at ``/fhir`` beside :func:`lamina.api.fhir.routes`."""
    return [Route("/Consent", create_consent, methods=["POST"])]
