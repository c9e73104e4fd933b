"""``/openapi.json``: an OpenAPI 3.1 description generated from the application's own routes.

Paths, methods and path parameters come from the route list, so the description follows the
routes as they change; what a route takes and answers (summary, query parameters, media types,
statuses) comes from :data:`OPERATIONS`, keyed by the name of the route's endpoint. A route
whose endpoint has no entry there is an error (``describe`` raises), which the tests catch.
Errors are RFC 9457 problem details (``application/problem+json``), described once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from lamina import __version__
from lamina.api.auth import RULES, Rule

PROBLEM = "application/problem+json"
DICOM_JSON = "application/dicom+json"
TOML = "application/toml"
FHIR_JSON = "application/fhir+json"
_PARAMETER = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[A-Za-z]+)?}")

_PATH_PARAMETERS = {
    "study": "Study Instance UID",
    "series": "Series Instance UID",
    "instance": "SOP Instance UID",
    "frames": "Frame numbers, from 1, separated by commas (e.g. 1,2,3)",
    "path": "The rest of the path",
    "finess": "The lab's FINESS number (9 characters, e.g. 750712184)",
    "person": "A person's identifier (a login, or the national practitioner number)",
    "grant": "A grant's identifier (32 hexadecimal digits)",
    "collection": "A collection's identifier (32 hexadecimal digits)",
    "slide": "A slide's identifier (lamina slides lists them)",
}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_QIDO = [
    _query(
        "{attributeID}",
        "Match on an attribute by keyword or tag (e.g. PatientID=123, "
        "00100020=123): single value, wild cards * and ?, UID lists, date and time ranges "
        "(PS3.18 8.3.4)",
    ),
    _query("includefield", "Attributes to add to each result, or 'all'"),
    _query("limit", "The most results to return", {"type": "integer", "minimum": 0}),
    _query("offset", "Results to skip", {"type": "integer", "minimum": 0}),
    _query("fuzzymatching", "Fuzzy matching of person names", {"type": "boolean"}),
]
_RENDER = [
    _query("accept", "image/jpeg or image/png (overrides the Accept header)"),
    _query("viewport", "vw,vh or vw,vh,sx,sy,sw,sh: scale into a box, from a region"),
    _query("quality", "JPEG quality, 1 to 100", {"type": "integer", "minimum": 1, "maximum": 100}),
]
_FRAMES = [
    'multipart/related; type="application/octet-stream"',
    'multipart/related; type="image/jpeg"',
    'multipart/related; type="image/jp2"',
    'multipart/related; type="image/jls"',
    'multipart/related; type="image/jphc"',
]
_IMAGES = ["image/jpeg", "image/png"]
_COSTS = [
    _query("preset", "Start from one of the report's worked examples", {"enum": ["private", "public"]}),
    _query("slides", "Slides a year (instead of cases)", {"type": "number", "minimum": 1, "maximum": 1e9}),
    _query("cases", "Cases a year", {"type": "number", "minimum": 1, "maximum": 1e9}),
    _query("slides-per-case", "Slides per case", {"type": "number", "minimum": 0.1, "maximum": 1000}),
    _query("pathologists", "Pathologists", {"type": "integer", "minimum": 0, "maximum": 1000000}),
    _query("sites", "Sites", {"type": "integer", "minimum": 1, "maximum": 100000}),
    _query("scanners", "Scanners", {"type": "integer", "minimum": 0, "maximum": 1000000}),
    _query(
        "retention-days", "Days a care slide stays hot", {"type": "number", "minimum": 0, "maximum": 36500}
    ),
    _query("interest-share", "Share of slides of interest", {"type": "number", "minimum": 0, "maximum": 1}),
    _query("sector", "Scanner price HT (public) or TTC (private)", {"enum": ["public", "private"]}),
    _query("price", "A unit price KEY=VALUE (lamina costs --price); repeatable"),
    _query("measured", "Slides a year and GB a slide from the catalog", {"type": "boolean"}),
    _query("tenant", "With measured: this lab's slides (FINESS)"),
]


@dataclass(frozen=True)
class Operation:
    """What one endpoint takes and answers."""

    summary: str
    tag: str
    answers: list[str]  # media types of a successful answer
    errors: tuple[int, ...] = (400, 404)
    query: list[dict[str, Any]] = field(default_factory=list)
    body: list[str] = field(default_factory=list)  # request media types
    status: int = 200
    accept: bool = False  # the answer is negotiated from the Accept header (406 possible)


_SLIDE_QUERY = [
    _query("study", "The slide's Study Instance UID"),
    _query("series", "The slide's Series Instance UID"),
]


OPERATIONS: dict[str, Operation] = {
    # a slide's annotations (lamina.api.annotations, docs/annotations.md)
    "list_annotations": Operation(
        "A slide's annotations as GeoJSON: lamina's and other tools' (ANN, SR regions, SEG outlines)",
        "annotations",
        ["application/json"],
        query=_SLIDE_QUERY,
    ),
    "create_annotation": Operation(
        "Save {study, series, features} as one DICOM Microscopy Bulk Simple Annotations instance",
        "annotations",
        ["application/json"],
        (400, 404, 413, 507),
        body=["application/json"],
        status=201,
    ),
    "import_geojson": Operation(
        "Import a QuPath GeoJSON file onto the slide as one annotation instance",
        "annotations",
        ["application/json"],
        (400, 404, 413, 507),
        _SLIDE_QUERY,
        body=["application/geo+json", "application/json"],
        status=201,
    ),
    "delete_annotation": Operation("Delete an annotation (its author only)", "annotations", [], status=204),
    "export_geojson": Operation(
        "An annotation as a QuPath GeoJSON file (a download)", "annotations", ["application/geo+json"]
    ),
    "health": Operation(
        "Liveness: the server answers and its catalog is readable", "lamina", ["application/json"], ()
    ),
    "openapi": Operation("This description", "lamina", ["application/json"], ()),
    "search_studies": Operation(
        "Search for studies (QIDO-RS)", "QIDO-RS", [DICOM_JSON], (400, 404), _QIDO, accept=True
    ),
    "search_series": Operation(
        "Search for series (QIDO-RS)", "QIDO-RS", [DICOM_JSON], (400, 404), _QIDO, accept=True
    ),
    "search_instances": Operation(
        "Search for instances (QIDO-RS)", "QIDO-RS", [DICOM_JSON], (400, 404), _QIDO, accept=True
    ),
    "store": Operation(
        "Store instances (STOW-RS)",
        "STOW-RS",
        [DICOM_JSON],
        (400, 409, 413, 415, 507),
        body=['multipart/related; type="application/dicom"'],
    ),
    "study_metadata": Operation("Retrieve a study's metadata", "WADO-RS", [DICOM_JSON]),
    "series_metadata": Operation(
        "Retrieve a series' metadata (audited as the slide's opening)", "WADO-RS", [DICOM_JSON]
    ),
    "instance_metadata": Operation("Retrieve an instance's metadata", "WADO-RS", [DICOM_JSON]),
    "frames": Operation(
        "Retrieve frames: transfer-syntax=* for the stored bytes, none for Explicit VR Little Endian",
        "WADO-RS",
        _FRAMES,
        accept=True,
    ),
    "bulkdata": Operation(
        "Retrieve bulk data by its BulkDataURI",
        "WADO-RS",
        ['multipart/related; type="application/octet-stream"', *_FRAMES[1:]],
        accept=True,
    ),
    "retrieve_instance": Operation(
        "Retrieve an instance", "WADO-RS", ['multipart/related; type="application/dicom"'], accept=True
    ),
    "retrieve_series": Operation(
        "Retrieve a series' instances",
        "WADO-RS",
        ['multipart/related; type="application/dicom"'],
        accept=True,
    ),
    "retrieve_study": Operation(
        "Retrieve a study's instances",
        "WADO-RS",
        ['multipart/related; type="application/dicom"'],
        accept=True,
    ),
    "frame_rendered": Operation(
        "A frame, rendered", "WADO-RS rendered", _IMAGES, (400, 404, 413), _RENDER, accept=True
    ),
    "instance_rendered": Operation(
        "An instance, rendered", "WADO-RS rendered", _IMAGES, (400, 404, 413), _RENDER, accept=True
    ),
    "instance_thumbnail": Operation(
        "An instance's thumbnail", "WADO-RS rendered", _IMAGES, (400, 404, 413), _RENDER, accept=True
    ),
    "series_thumbnail": Operation(
        "A series' thumbnail", "WADO-RS rendered", _IMAGES, (400, 404, 413), _RENDER, accept=True
    ),
    "study_thumbnail": Operation(
        "A study's thumbnail", "WADO-RS rendered", _IMAGES, (400, 404, 413), _RENDER, accept=True
    ),
    "series_rendered": Operation(
        "A series' instances, rendered",
        "WADO-RS rendered",
        ['multipart/related; type="image/jpeg"', 'multipart/related; type="image/png"'],
        (400, 404, 413),
        _RENDER,
        accept=True,
    ),
    "study_rendered": Operation(
        "A study's instances, rendered",
        "WADO-RS rendered",
        ['multipart/related; type="image/jpeg"', 'multipart/related; type="image/png"'],
        (400, 404, 413),
        _RENDER,
        accept=True,
    ),
    "sign_in_token": Operation(
        "Sign in with a password (lamina's own sign-in page): a bearer token",
        "sign-in",
        ["application/json"],
        (400, 401, 413, 429),
        body=["application/x-www-form-urlencoded"],
    ),
    "viewer_config": Operation(
        "How the viewer signs in: a password, and the OpenID provider when configured",
        "sign-in",
        ["application/json"],
        (),
    ),
    "provider_token": Operation(
        "The viewer's authorization code (PKCE) or refresh token exchanged at the OpenID provider",
        "sign-in",
        ["application/json"],
        (400, 401, 413),
        body=["application/x-www-form-urlencoded"],
    ),
    "openid_configuration": Operation(
        "The node's own issuer: its discovery document", "sign-in", ["application/json"], ()
    ),
    "issuer_jwks": Operation(
        "The node's own issuer: its public keys", "sign-in", ["application/jwk-set+json"], ()
    ),
    "list_tenants": Operation(
        "The labs the principal holds a role in (every lab for a platform admin)",
        "administration",
        ["application/json"],
        (),
    ),
    "add_tenant": Operation(
        "Add a lab {finess, name} (platform admin only)",
        "administration",
        ["application/json"],
        (400, 413),
        body=["application/json"],
        status=201,
    ),
    "list_people": Operation(
        "The lab's people, with their roles in it (the lab's admin)", "administration", ["application/json"]
    ),
    "add_person": Operation(
        "Give a person {person, roles, name?} roles in the lab, added if new (the lab's admin)",
        "administration",
        ["application/json"],
        (400, 404, 413),
        body=["application/json"],
    ),
    "list_grants": Operation(
        "The lab's grants in force (all=true: revoked and expired ones too) (the lab's admin)",
        "administration",
        ["application/json"],
        (400, 404),
        [_query("all", "Also the revoked and expired grants", {"type": "boolean"})],
    ),
    "add_grant": Operation(
        "Give a grant {to, on, permission?, expires?} on one of the lab's slides, cases or collections "
        "(the lab's admin)",
        "administration",
        ["application/json"],
        (400, 404, 413),
        body=["application/json"],
        status=201,
    ),
    "revoke_grant": Operation(
        "Revoke one of the lab's grants now (the lab's admin)", "administration", ["application/json"]
    ),
    "list_collections": Operation(
        "The lab's collections of slides, with their count (the lab's admin)",
        "administration",
        ["application/json"],
    ),
    "add_collection": Operation(
        "Make a collection {name, slides?} of the lab's slides (the lab's admin)",
        "administration",
        ["application/json"],
        (400, 404, 413),
        body=["application/json"],
        status=201,
    ),
    "get_collection": Operation(
        "A collection of the lab and its slides (the lab's admin)", "administration", ["application/json"]
    ),
    "delete_collection": Operation(
        "Delete a collection (its slides stay; the grants on it are revoked) (the lab's admin)",
        "administration",
        ["application/json"],
    ),
    "add_collection_slides": Operation(
        "Put the lab's slides {slides} in a collection (the lab's admin)",
        "administration",
        ["application/json"],
        (400, 404, 413),
        body=["application/json"],
    ),
    "remove_collection_slide": Operation(
        "Take a slide out of a collection (the lab's admin)", "administration", ["application/json"]
    ),
    "get_lifecycle_rules": Operation(
        "The lab's retention rules in force, as TOML (the default rules when it has none) (the lab's admin)",
        "lifecycle",
        [TOML],
    ),
    "put_lifecycle_rules": Operation(
        "Replace the lab's retention rules (TOML, at most 1 MiB); a malformed document is 400 naming its "
        "line and field, and the rules in force stay (the lab's admin)",
        "lifecycle",
        ["application/json"],
        (400, 404, 413),
        body=[TOML, "text/plain"],
    ),
    "get_slide_lifecycle": Operation(
        "A slide's lifecycle: tier, expiry, interest, holds, its case's clock, the rule and what is due "
        "(who may read the slide, and its lab's admin)",
        "lifecycle",
        ["application/json"],
        (404,),
    ),
    "related": Operation(
        "The slides to compare with one the principal may read (the other slides of its block, the "
        "patient's prior slides, newest first: only those it may see) and its case's report link",
        "viewer",
        ["application/json"],
        (400, 404),
        [
            _query("study", "The slide's Study Instance UID (required)"),
            _query("series", "The slide's Series Instance UID (required)"),
            _query("limit", "The most slides a list (1 to 50, default 20)", {"type": "integer"}),
        ],
    ),
    "flag_interest": Operation(
        "Flag a slide as of interest {category, reason} (a pathologist of its lab)",
        "lifecycle",
        ["application/json"],
        (400, 404, 413),
        body=["application/json"],
    ),
    "unflag_interest": Operation(
        "Take a slide's flag of interest off, with a reason (?reason= or {reason}) (its lab's pathologists)",
        "lifecycle",
        ["application/json"],
        (400, 404, 413),
        [_query("reason", "Why (audited); or a JSON body {reason}")],
    ),
    "add_hold": Operation(
        "Put a slide under a legal hold {reason} (its lab's admin)",
        "lifecycle",
        ["application/json"],
        (400, 404, 413),
        body=["application/json"],
        status=201,
    ),
    "release_holds": Operation(
        "Release the legal holds in force on a slide, with a reason (?reason= or {reason}) (its lab's admin)",
        "lifecycle",
        ["application/json"],
        (400, 404, 413),
        [_query("reason", "Why (audited); or a JSON body {reason}")],
    ),
    "create_diagnostic_report": Operation(
        "The LIS's report of a case (FHIR R4 DiagnosticReport, its accession number an identifier of type "
        "v2-0203#ACSN): a final, amended, corrected or appended one starts the clock of the case's "
        "retention; errors are OperationOutcomes",
        "FHIR",
        [FHIR_JSON],
        (400, 413, 415, 422),
        body=[FHIR_JSON, "application/json"],
        status=201,
    ),
    "create_consent": Operation(
        "A patient's opposition to research use, or its lifting, from the LIS (FHIR R4 Consent: scope "
        "research, provision deny or permit for purpose v3-ActReason#HRESCH, the PatientID as "
        "patient.identifier); errors are OperationOutcomes",
        "FHIR",
        [FHIR_JSON],
        (400, 413, 415, 422),
        body=[FHIR_JSON, "application/json"],
        status=201,
    ),
    "announce_slide": Operation(
        "At the archive: a site announces a de-identified slide of interest (series, patient pseudonym, "
        "category, reason, each instance's frame count and frames' SHA-256); expected, or verified "
        "already with its acknowledgement; 409 when another lab announced the series",
        "exchange",
        ["application/json"],
        (400, 404, 409, 413),
        body=["application/json"],
    ),
    "verify_slide": Operation(
        "At the archive: verify an announced series (each instance stored, its frames' SHA-256, no "
        "identity): verified with the acknowledgement, 409 incomplete with the missing instances, 422 "
        "refused with the reasons",
        "exchange",
        ["application/json"],
        (400, 404, 409, 413, 422),
        body=["application/json"],
    ),
    "withdraw_patient": Operation(
        "At the archive: the sending lab's patient (by pseudonym) opposes research use: their slides "
        "are withdrawn from research at once",
        "exchange",
        ["application/json"],
        (400, 404, 413),
        body=["application/json"],
    ),
    "tenant_report": Operation(
        "The lab's storage report: slides and GB per tier, per month, of interest, projected, EUR and CO2 "
        "(the lab's admin)",
        "report",
        ["application/json"],
    ),
    "tenant_report_plot": Operation(
        "A plot of the lab's report (volume, months, projection, co2; .png or .svg) (the lab's admin)",
        "report",
        ["image/png", "image/svg+xml"],
    ),
    "node_report": Operation(
        "The storage report of every lab of the node (platform admins)", "report", ["application/json"], ()
    ),
    "node_report_plot": Operation(
        "A plot of the node's report (volume, months, projection, co2; .png or .svg) (platform admins)",
        "report",
        ["image/png", "image/svg+xml"],
        (404,),
    ),
    "costs_calculator": Operation(
        "The report's cost model: investment, operation, archive, per slide and case, storage CO2 "
        "(lamina costs's options; anyone signed in)",
        "report",
        ["application/json"],
        (400, 404),
        _COSTS,
    ),
    "missing": Operation("OpenSeadragon is not installed: says how to install it", "viewer", [], (404,)),
    "static": Operation("The viewer's files", "viewer", ["text/html", "text/javascript", "text/css"], (404,)),
}

_TITLES = {
    400: "Bad request",
    401: "Unauthorized: no bearer token, or one that is not valid",
    403: "Forbidden: the principal's roles do not allow this action",
    429: "Too many failed sign-ins: wait for Retry-After",
    404: "Not found",
    406: "Not acceptable",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported media type",
    422: "Unprocessable: a valid resource lamina cannot use",
    500: "Server error",
    503: "Storage unavailable",
    507: "Insufficient storage",
}


def routes_of(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, set[str]]]:
    """(path template, endpoint name, methods) of every route, mounts walked."""
    for route in routes:
        if isinstance(route, Route):
            methods = set(route.methods or {"GET"}) - {"HEAD"}
            yield prefix + route.path, route.endpoint.__name__, methods
        elif isinstance(route, Mount):
            if isinstance(route.app, StaticFiles):
                yield prefix + route.path + "/{path}", "static", {"GET"}
            else:
                yield from routes_of(route.routes, prefix + route.path)


def _operation(path: str, name: str, method: str) -> dict[str, Any]:
    if name not in OPERATIONS:
        raise KeyError(
            f"route {method} {path}: endpoint {name!r} has no entry in lamina.api.openapi.OPERATIONS"
        )
    op = OPERATIONS[name]
    parameters = [
        {
            "name": parameter,
            "in": "path",
            "required": True,
            "description": _PATH_PARAMETERS.get(parameter, parameter),
            "schema": {"type": "string"},
        }
        for parameter in _PARAMETER.findall(path)
    ]
    parameters += [item for item in op.query if not item["name"].startswith("{")]
    if op.accept:
        parameters.append(
            {
                "name": "Accept",
                "in": "header",
                "required": False,
                "description": "Acceptable media types and transfer syntaxes (PS3.18 8.7)",
                "schema": {"type": "string"},
            }
        )
    ok: dict[str, Any] = {"description": "OK"}
    if op.answers:
        ok["content"] = {media: {} for media in op.answers}
    responses: dict[str, Any] = {str(op.status): ok}
    for status in sorted({*op.errors, *((406,) if op.accept else ()), 500, 503}):
        responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    operation: dict[str, Any] = {
        "operationId": method + re.sub(r"[^A-Za-z0-9]+", "_", path).rstrip("_"),
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": parameters,
        "responses": responses,
    }
    extra = [item for item in op.query if item["name"].startswith("{")]
    if extra:
        operation["description"] = " ".join(item["description"] for item in extra)
    if op.body and method in ("post", "put"):
        operation["requestBody"] = {"required": True, "content": {media: {} for media in op.body}}
    return operation


def describe(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI description of ``routes`` (the application's route list)."""
    paths: dict[str, dict[str, Any]] = {}
    for path, name, methods in routes_of(routes):
        template = _PARAMETER.sub(lambda match: "{" + match.group(1) + "}", path) or "/"
        for method in sorted(methods):
            operation = _operation(template, name, method.lower())
            if name != "static" and RULES.get(f"{method} {path}") is not Rule.PUBLIC:
                # sign-in needed (RFC 6750); a refused action is 403, something hidden 404
                operation["security"] = [{"bearer": []}]
                operation["responses"]["401"] = {"$ref": "#/components/responses/401"}
                operation["responses"]["403"] = {"$ref": "#/components/responses/403"}
            paths.setdefault(template, {})[method.lower()] = operation
    problem = {
        "type": "object",
        "description": "RFC 9457 problem details; detail says what was wrong and how to fix it",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
        "required": ["title", "status", "detail"],
    }
    responses = {
        str(status): {
            "description": title,
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, title in _TITLES.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lamina",
            "version": __version__,
            "description": "DICOMweb (QIDO-RS, WADO-RS, STOW-RS, DICOM PS3.18) under /dicomweb, the "
            "viewer at /, and lamina's own routes. Generated from the server's routes.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Problem": problem},
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
