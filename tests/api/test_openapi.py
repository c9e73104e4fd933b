"""``/openapi.json`` describes every route of the application (``lamina.api.openapi``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import content_type_conformance, not_a_server_error, status_code_conformance
from starlette.routing import BaseRoute, Route

from lamina.api.app import create_app
from lamina.api.openapi import OPERATIONS, describe, routes_of
from lamina.config import Settings
from tests.api.conftest import ServedArchive
from tests.signin import TEST_LAB, auth_headers, signed


def _template(path: str) -> str:
    return path.replace("{path:path}", "{path}")


def test_every_route_is_described_with_its_methods(tmp_path: Path) -> None:
    app = create_app(Settings.load(tmp_path / "lamina-data", env={}))
    spec = app.state.openapi

    listed = list(routes_of(app.starlette.routes))

    assert len(listed) > 25  # DICOMweb included, not only lamina's own routes
    for path, name, methods in listed:
        assert name in OPERATIONS, (path, name)
        described = spec["paths"][_template(path)]
        assert {method.lower() for method in methods} <= set(described), path
    assert {"/healthz", "/openapi.json", "/dicomweb/studies", "/{path}"} <= set(spec["paths"])
    assert set(spec["paths"]["/dicomweb/studies/{study}"]) == {"get", "post"}  # retrieve and STOW-RS


def test_operations_say_what_they_take_and_answer(tmp_path: Path) -> None:
    spec = create_app(Settings.load(tmp_path / "lamina-data", env={})).state.openapi
    operations = [op for methods in spec["paths"].values() for op in methods.values()]
    assert len({op["operationId"] for op in operations}) == len(operations)
    frames = spec["paths"]["/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"][
        "get"
    ]
    assert [p["name"] for p in frames["parameters"] if p["in"] == "path"] == [
        "study",
        "series",
        "instance",
        "frames",
    ]
    assert 'multipart/related; type="image/jpeg"' in frames["responses"]["200"]["content"]
    assert frames["responses"]["406"] == {"$ref": "#/components/responses/406"}
    store = spec["paths"]["/dicomweb/studies"]["post"]
    assert 'multipart/related; type="application/dicom"' in store["requestBody"]["content"]
    problem = spec["components"]["responses"]["404"]["content"]["application/problem+json"]
    assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
    for op in operations:
        for response in op["responses"].values():
            if "$ref" in response:
                assert response["$ref"].rsplit("/", 1)[1] in spec["components"]["responses"]
    search = spec["paths"]["/dicomweb/studies"]["get"]
    assert {"limit", "offset", "includefield"} <= {p["name"] for p in search["parameters"]}


def test_a_route_without_a_description_is_an_error() -> None:
    async def undocumented(request: object) -> None:
        raise AssertionError("never called")

    routes: list[BaseRoute] = [Route("/new", undocumented)]
    with pytest.raises(KeyError, match="'undocumented' has no entry"):
        describe(routes)


def test_the_description_is_served(served_archive: ServedArchive) -> None:
    root = served_archive.base_url.removesuffix("/dicomweb")
    answer = signed.get(f"{root}/openapi.json")
    assert answer.status_code == 200
    spec = answer.json()
    assert spec["openapi"] == "3.1.0"
    assert "/dicomweb/studies/{study}/series/{series}/metadata" in spec["paths"]


# -- the description against the server: schemathesis ----------------------------------------------


def _known(served: ServedArchive) -> dict[str, str]:
    """Path parameters that name things in the archive, so that requests reach the handlers."""
    row = next(r for r in served.archive.catalog.instances(served.slide_ids[0]) if r.level == 0)
    return {
        "study": row.study_instance_uid,
        "series": row.series_instance_uid,
        "instance": row.sop_instance_uid,
        "frames": "1",
        "path": "7FE00010",
        # the labs' administration: the operator's own lab, a grant and a collection it does not
        # have, a slide it has
        "finess": TEST_LAB,
        "grant": "0" * 32,
        "collection": "0" * 32,
        "slide": served.slide_ids[0],
        # a plot of the storage report
        "name": "volume.svg",
    }


def test_every_operation_answers_as_described(served_archive: ServedArchive) -> None:
    """schemathesis, on every operation but STOW-RS (whose multipart body of DICOM files it cannot
    generate; tests/api/test_stow.py covers it): no 5xx, and only the statuses and media types the
    description gives, for generated parameters, headers and queries, with the generated
    identifiers and then with real ones."""
    root = served_archive.base_url.removesuffix("/dicomweb")
    # signed in, as the lab's operator (the token in every call); sign-in itself is not fuzzed here
    signed_in = auth_headers(root)
    schema = schemathesis.openapi.from_url(f"{root}/openapi.json", headers=signed_in).exclude(method="POST")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    real = _known(served_archive)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20

    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def answers_as_described(case: Any) -> None:
            case.call_and_validate(checks=checks, timeout=60, headers=signed_in)
            if case.path_parameters:
                if case.path.startswith(("/dicomweb", "/api")):
                    case.path_parameters = {name: real[name] for name in case.path_parameters}
                else:
                    case.path_parameters = {"path": "index.html"}
                case.call_and_validate(checks=checks, timeout=60, headers=signed_in)

        answers_as_described()
