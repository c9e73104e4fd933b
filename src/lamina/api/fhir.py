"""The LIS's diagnostic reports over FHIR, mounted at ``/fhir``: ``POST /fhir/DiagnosticReport``.

A validated report of a case starts (an amended, corrected or appended one restarts) the clock of
its slides' care retention (:mod:`lamina.lifecycle.reports`). The body is a FHIR R4
``DiagnosticReport`` (``application/fhir+json`` or ``application/json``, at most
:data:`MAX_BODY_BYTES`), validated with ``fhir.resources``' R4B models (R4B changed nothing in
DiagnosticReport: an R4 resource validates as it is).

The case
    is named by its **accession number**: the ``identifier`` whose ``type.coding`` holds the code
    ``ACSN`` of ``http://terminology.hl7.org/CodeSystem/v2-0203`` (the ANS's French
    ``FRAccessionNumberIdentifier``, HL7 v2 OBR-18/DICOM (0008,0050)), in
    ``DiagnosticReport.identifier`` or, as the HL7 Europe imaging report puts it, in the
    ``identifier`` of a ``basedOn`` reference (the order). Several different ones are refused.
The lab
    is the principal's, never a header: the LIS signs in as an account that may store into a lab
    (a technician-like role, :data:`~lamina.governance.decide.Action.STORE`; the route's rule);
    one that stores into several labs names the lab as the accession number's ``assigner``
    (``assigner.identifier`` of system ``urn:oid:1.2.250.1.71.4.2.2``, FINESS), which must be one
    of its labs (403 otherwise).
The clock
    ``status`` ``final``, ``amended``, ``corrected`` or ``appended`` needs ``issued`` (the
    validation time, with its time zone); other statuses are recorded and start nothing
    (``issued``, when absent, is the time received); ``entered-in-error`` withdraws the report of
    the same ``id``.
The report's link
    the first ``presentedForm`` that has a ``url`` (with its ``contentType`` and ``title``) is kept
    with the report: the viewer shows it as a "Report" link beside the case's slides
    (``GET /api/slides/related``). Only an absolute ``http``/``https`` URL is taken; another
    (``javascript:``, ``data:``...) is refused 400 naming ``presentedForm[i].url``.

Answers: 201 with the resource as kept (``id`` lamina's, ``meta.lastUpdated`` the time received;
the LIS's own ``id`` is kept as the report's identifier) and ``Location: DiagnosticReport/ID``
(lamina keeps the report's facts, not the resource: there is no read); errors are FHIR
``OperationOutcome`` s: 400 for a body that is not a valid DiagnosticReport (the issue's
``expression`` the FHIRPath of the field), 403 for a lab not the principal's, 413 past the bound,
415 for another media type, 422 for a valid report lamina cannot use (no accession number, no
``issued`` on a final report, several labs and none named). Recorded with the principal as actor.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.identifier import Identifier
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lamina.api.auth import principal
from lamina.errors import (
    InvalidResourceError,
    LaminaError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ReportError,
    RequestError,
)
from lamina.governance.decide import Action, Principal
from lamina.lifecycle.reports import (
    CLOCK_STATUSES,
    STATUSES,
    ReportForm,
    check_accession,
    check_form_url,
    record_report,
)

__all__ = ["ACCESSION_TYPE", "FINESS_SYSTEM", "MAX_BODY_BYTES", "ReportError", "routes"]

#: The largest body accepted (a report's narrative fits; attachments belong in a Binary).
MAX_BODY_BYTES = 256 * 1024
#: The identifier type of an accession number (HL7 v2 table 0203).
ACCESSION_TYPE = ("http://terminology.hl7.org/CodeSystem/v2-0203", "ACSN")
#: The FINESS number's identifier system (the ANS's OID).
FINESS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
FHIR_JSON = "application/fhir+json"
_MEDIA = (FHIR_JSON, "application/json")
_MAX_ISSUES = 20
#: record_report's parameter names to the resource's FHIRPath
_PATHS = {
    "status": "DiagnosticReport.status",
    "issued": "DiagnosticReport.issued",
    "id": "DiagnosticReport.id",
}


@dataclass(frozen=True)
class Issue:
    code: str
    diagnostics: str
    expression: str | None = None

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"severity": "error", "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            found["expression"] = [self.expression]
        return found


def outcome(status: int, issues: list[Issue]) -> Response:
    body = {"resourceType": "OperationOutcome", "issue": [issue.as_dict() for issue in issues]}
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)


# -- the body ----------------------------------------------------------------------------------------


async def read_body(request: Request) -> bytes:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in _MEDIA:
        raise ReportError(
            415,
            "not-supported",
            "",
            f"send the resource as {FHIR_JSON} (or application/json), not {media or 'nothing'}",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"the body of {declared} bytes is over the {MAX_BODY_BYTES} byte limit")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"the body is over the {MAX_BODY_BYTES} byte limit")
    return bytes(raw)


def _fhirpath(root: str, location: tuple[int | str, ...]) -> str:
    """A pydantic error's location as a FHIRPath from the resource ``root``."""
    path = root
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier():
            path += "." + ("resourceType" if part == "resource_type" else part)
    return path


Resource = TypeVar("Resource", bound=BaseModel)


def parse_resource(raw: bytes, model: type[Resource], name: str) -> Resource:
    """The FHIR resource ``name`` of a JSON body, validated by ``model``; a 400
    :class:`ReportError` (not JSON, another resource) or :class:`InvalidResourceError` (one issue
    per wrong field, at most :data:`_MAX_ISSUES`)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ReportError(400, "structure", "", f"not JSON ({exc}): send a {name} resource") from None
    if not isinstance(document, dict) or document.get("resourceType") != name:
        raise ReportError(
            400, "structure", f"{name}.resourceType", f'send one resource with "resourceType": "{name}"'
        )
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        issues: list[tuple[str, str, str | None]] = [
            ("invalid", str(error["msg"]).split("\n", 1)[0], _fhirpath(name, tuple(error["loc"])))
            for error in exc.errors()[:_MAX_ISSUES]
        ]
        raise InvalidResourceError(issues) from None
    except (TypeError, ValueError) as exc:
        raise ReportError(400, "invalid", name, str(exc).split("\n", 1)[0]) from None


def parse_report(raw: bytes) -> DiagnosticReport:
    """The DiagnosticReport of a JSON body, or a 400 error per wrong field."""
    return parse_resource(raw, DiagnosticReport, "DiagnosticReport")


# -- what lamina takes from it ----------------------------------------------------------------------


def _is_accession(identifier: Identifier | None) -> bool:
    if identifier is None or identifier.type is None:
        return False
    return any((coding.system, coding.code) == ACCESSION_TYPE for coding in identifier.type.coding or ())


def accession_of(report: DiagnosticReport) -> tuple[str, str | None]:
    """(accession number, FINESS of its assigner or None), or a 422 :class:`ReportError`."""
    found: list[tuple[Identifier, str]] = []
    for index, identifier in enumerate(report.identifier or ()):
        if _is_accession(identifier):
            found.append((identifier, f"DiagnosticReport.identifier[{index}]"))
    for index, reference in enumerate(report.basedOn or ()):
        if reference.identifier is not None and _is_accession(reference.identifier):
            found.append((reference.identifier, f"DiagnosticReport.basedOn[{index}].identifier"))
    if not found:
        raise ReportError(
            422,
            "required",
            "DiagnosticReport.identifier",
            "no accession number: add an identifier whose type.coding is "
            f"{ACCESSION_TYPE[0]}#{ACCESSION_TYPE[1]} and whose value is the case's accession number",
        )
    values: dict[str, str] = {}
    assigners: set[str] = set()
    for identifier, path in found:
        if not identifier.value:
            raise ReportError(422, "required", f"{path}.value", "the accession number's value is missing")
        try:
            values.setdefault(check_accession(identifier.value, path), path)
        except RequestError as exc:
            raise ReportError(422, "value", f"{path}.value", str(exc).removeprefix(f"{path}: ")) from None
        assigner = identifier.assigner.identifier if identifier.assigner else None
        if assigner is not None and assigner.system == FINESS_SYSTEM and assigner.value:
            assigners.add(assigner.value.strip())
    if len(values) > 1:
        raise ReportError(
            422,
            "business-rule",
            found[1][1],
            f"several accession numbers ({', '.join(sorted(values))}): one case a report",
        )
    if len(assigners) > 1:
        raise ReportError(
            422,
            "business-rule",
            f"{found[0][1]}.assigner",
            f"several labs ({', '.join(sorted(assigners))}) assign it",
        )
    return next(iter(values)), next(iter(assigners), None)


def lab_of(who: Principal, assigner: str | None) -> str:
    """The lab the report is for: the principal's lab where it stores, the one ``assigner`` names
    when it stores into several (PermissionDeniedError for a lab it does not store into)."""
    labs = sorted(tenant for tenant in who.tenants() if Action.STORE in who.allowed_in(tenant))
    if assigner is not None:
        if assigner not in labs:
            raise PermissionDeniedError(
                Action.STORE.value, f"lab {assigner}: your roles do not allow storing reports there"
            )
        return assigner
    if len(labs) == 1:
        return labs[0]
    raise ReportError(
        422,
        "business-rule",
        "DiagnosticReport.identifier.assigner",
        f"you store into several labs ({', '.join(labs)}): name the lab as the accession number's assigner "
        f"(assigner.identifier, system {FINESS_SYSTEM}, value its FINESS)",
    )


def form_of(report: DiagnosticReport) -> ReportForm | None:
    """The report's link (the first ``presentedForm`` with a ``url``: its media type and title
    with it), or None; a 400 :class:`ReportError` naming the field for a URL that is not http(s)."""
    for index, attachment in enumerate(report.presentedForm or ()):
        if not attachment.url:
            continue
        path = f"DiagnosticReport.presentedForm[{index}].url"
        try:
            url = check_form_url(str(attachment.url), path)
        except RequestError as exc:
            raise ReportError(400, "value", path, str(exc).removeprefix(f"{path}: ")) from None
        return ReportForm(url, attachment.contentType, attachment.title)
    return None


def _clock(report: DiagnosticReport) -> tuple[str, dt.datetime]:
    status = report.status
    if status not in STATUSES:
        raise ReportError(
            400, "code-invalid", "DiagnosticReport.status", f"{status!r}: one of {', '.join(STATUSES)}"
        )
    issued = report.issued
    if issued is None:
        if status in CLOCK_STATUSES:
            raise ReportError(
                422,
                "required",
                "DiagnosticReport.issued",
                f"a {status} report starts the clock of the case's retention: give issued (its validation)",
            )
        return status, dt.datetime.now(dt.UTC)
    assert isinstance(issued, dt.datetime)
    return status, issued


# -- the endpoint ----------------------------------------------------------------------------------------


def issue_of(exc: LaminaError) -> tuple[int, list[Issue]] | None:
    """The OperationOutcome of a refusal (None: not a refusal of the request)."""
    if isinstance(exc, InvalidResourceError):
        return 400, [Issue(code, diagnostics, expression) for code, diagnostics, expression in exc.issues]
    if isinstance(exc, ReportError):
        return exc.status, [Issue(exc.code, exc.message, exc.expression or None)]
    if isinstance(exc, RequestError):
        path = _PATHS.get(exc.parameter)
        message = str(exc).removeprefix(f"{exc.parameter}: ")
        return 400, [Issue("value" if path else "invalid", message, path)]
    if isinstance(exc, PayloadTooLargeError):
        return 413, [Issue("too-long", str(exc))]
    if isinstance(exc, PermissionDeniedError):
        return 403, [Issue("forbidden", str(exc))]
    if isinstance(exc, NotFoundError):
        return 404, [Issue("not-found", str(exc))]
    return None


async def create_diagnostic_report(request: Request) -> Response:
    """``POST /fhir/DiagnosticReport`` (FHIR create)."""
    who = principal(request)
    try:
        report = parse_report(await read_body(request))
        accession, assigner = accession_of(report)
        tenant = lab_of(who, assigner)
        status, issued = _clock(report)
        form = form_of(report)
        recorded = await run_in_threadpool(
            record_report,
            request.app.state.archive.catalog,
            tenant,
            accession,
            status,
            issued,
            source="fhir",
            actor=who.id,
            report_id=report.id,
            form=form,
        )
    except LaminaError as exc:
        found = issue_of(exc)
        if found is None:
            raise
        return outcome(*found)
    kept = orjson.loads(report.model_dump_json(by_alias=True, exclude_none=True))
    kept["id"] = recorded.id
    kept["meta"] = {**kept.get("meta", {}), "lastUpdated": recorded.received_at.isoformat()}
    return Response(
        orjson.dumps(kept),
        status_code=201,
        media_type=FHIR_JSON,
        headers={"Location": f"DiagnosticReport/{recorded.id}"},
    )


def routes() -> list[BaseRoute]:
    """The FHIR routes, to mount at ``/fhir``."""
    return [Route("/DiagnosticReport", create_diagnostic_report, methods=["POST"])]
