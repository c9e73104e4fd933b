"""``/api/annotations``: a slide's annotations as GeoJSON, kept as DICOM Microscopy Bulk Simple
Annotations (:mod:`lamina.annotations`, docs/annotations.md).

- ``GET /api/annotations?study=&series=``: the slide's annotations (lamina's and other tools'
  ANN, SR regions, SEG outlines), to whoever may read the slide;
- ``POST /api/annotations`` ``{study, series, features}``: one annotation instance made of the
  features, stored through the archive's receive path as a STOW-RS store is (so QIDO-RS and
  WADO-RS serve it), its author the principal; 201 with the annotation;
- ``POST /api/annotations/geojson?study=&series=``: the same from a QuPath GeoJSON file;
- ``GET /api/annotations/{instance}/geojson``: one annotation as QuPath reads it (a download);
- ``DELETE /api/annotations/{instance}``: by its author alone; 204.

The route rule (``Rule.ANNOTATIONS``) asks for a principal; each handler decides on what it
names: the slide's read right (:meth:`~lamina.governance.access.Access.require`, as WADO-RS
decides: a slide it may not see is 404, one it sees but may not read 403), the author for a
deletion. Storing and deleting are audited (``store`` by the receive path, ``annotate`` and
``delete`` here); reading is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from anyio.to_thread import run_sync
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lamina.annotations import Annotations, Author, feature_collection, read_features
from lamina.annotations.ann import ANN_CLASS
from lamina.annotations.service import SOURCES
from lamina.api.auth import principal
from lamina.api.dicomweb.stow import receive
from lamina.api.params import read_body, uid
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.receive import FailureReason, Outcome
from lamina.errors import (
    InsufficientStorageError,
    NotFoundError,
    PermissionDeniedError,
    RequestError,
    StorageError,
)
from lamina.governance.access import Access
from lamina.governance.decide import Action, Principal, Resource, decide

__all__ = ["MAX_BODY", "routes"]

#: the largest body taken (bytes): a million points with room
MAX_BODY = 48 << 20
_JSON = "application/json"
_GEOJSON = "application/geo+json"


def routes() -> list[BaseRoute]:
    return [
        Route("/annotations", list_annotations, methods=["GET"]),
        Route("/annotations", create_annotation, methods=["POST"]),
        Route("/annotations/geojson", import_geojson, methods=["POST"]),
        Route("/annotations/{instance}", delete_annotation, methods=["DELETE"]),
        Route("/annotations/{instance}/geojson", export_geojson, methods=["GET"]),
    ]


def _service(request: Request) -> Annotations:
    found = getattr(request.app.state, "annotations", None)
    if found is None:
        archive: Archive = request.app.state.archive
        found = request.app.state.annotations = Annotations(archive.catalog, archive.store)
    return found


def _answer(
    body: Any, status: int = 200, media: str = _JSON, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media)


def _readable(request: Request, who: Principal, study: str, series: str) -> Resource:
    """The slide, if ``who`` may read it (blocking): NotFoundError or PermissionDeniedError."""
    access: Access = request.app.state.access
    resource = access.series(study, series)
    access.require(who, Action.READ, resource)
    assert resource is not None
    return resource


async def list_annotations(request: Request) -> Response:
    who = principal(request)
    study = uid(request.query_params.get("study"), "study")
    series = uid(request.query_params.get("series"), "series")

    def work() -> list[dict[str, Any]]:
        _readable(request, who, study, series)
        return [found.answer(who.id) for found in _service(request).listing(study, series)]

    return _answer({"annotations": await run_sync(work)})


async def _body(request: Request) -> Any:
    try:
        return orjson.loads(await read_body(request, MAX_BODY))
    except orjson.JSONDecodeError as exc:
        raise RequestError("body", f"not JSON ({exc})") from exc


async def create_annotation(request: Request) -> Response:
    who = principal(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise RequestError("body", "an object {study, series, features}")
    study, series = uid(body.get("study"), "study"), uid(body.get("series"), "series")
    if "features" not in body:
        raise RequestError("features", "a GeoJSON FeatureCollection of the annotation's features")
    return await _create(request, who, study, series, body["features"], "features")


async def import_geojson(request: Request) -> Response:
    who = principal(request)
    study = uid(request.query_params.get("study"), "study")
    series = uid(request.query_params.get("series"), "series")
    return await _create(request, who, study, series, await _body(request), "geojson")


async def _create(
    request: Request, who: Principal, study: str, series: str, features: Any, where: str
) -> Response:
    archive: Archive = request.app.state.archive
    service = _service(request)
    with archive.incoming.request() as folder:

        def prepare() -> tuple[Path, str, str]:
            resource = _readable(request, who, study, series)
            level0, _ = service.level0(study, series)
            size = (level0.total_pixel_matrix_columns, level0.total_pixel_matrix_rows)
            shapes = read_features(features, size, where)
            # the author's lab: the slide's when the author holds a role there, else their own
            # (a pathologist of another lab reading through a grant)
            labs = sorted(who.tenants())
            lab = resource.tenant if resource.tenant in labs or not labs else labs[0]
            author = Author(who.id, _display_name(archive, who.id), lab)
            path, sop = service.prepare(study, series, shapes, author, folder)
            return path, sop, resource.tenant

        path, sop, tenant = await run_sync(prepare)
        outcome = await _store(request, path, study, tenant, who.id)
    if not outcome.ok:
        if outcome.failure_reason is FailureReason.OUT_OF_RESOURCES:
            raise InsufficientStorageError("", outcome.reason)
        raise StorageError(f"the annotation could not be stored: {outcome.reason}")
    request.app.state.index.forget(sop)

    def answer() -> dict[str, Any]:
        with archive.catalog.begin() as conn:
            detail = {"study": study, "slide_series": series, "tenant": tenant}
            audit.append(conn, who.id, "annotate", f"instance/{sop}", detail)
        (made,) = service.listing(study, series, only=sop)
        return made.answer(who.id)

    return _answer(await run_sync(answer), 201)


async def _store(request: Request, path: Path, study: str, tenant: str, actor: str) -> Outcome:
    """Store the file as STOW-RS does (:func:`lamina.api.dicomweb.stow.receive`)."""
    outcomes = await receive(request, [path], study, tenant, actor)
    if outcomes is None:
        raise StorageError("the annotation is still being stored; list the slide's annotations again shortly")
    return outcomes[0]


def _display_name(archive: Archive, person: str) -> str:
    with archive.catalog.engine.connect() as conn:
        row = conn.execute(select(t.people.c.display_name).where(t.people.c.id == person)).first()
    return str(row[0]) if row is not None and row[0] else person


def _object(request: Request, sop: str, classes: set[str] | dict[str, str]) -> tuple[str, str]:
    """(study, series) of a stored annotation object: NotFoundError when there is none."""
    archive: Archive = request.app.state.archive
    row = archive.catalog.instance(sop)
    if row is None or row.sop_class_uid not in classes:
        raise NotFoundError(f"no annotation {sop} here")
    return row.study_instance_uid, row.series_instance_uid


def _slide_of(request: Request, who: Principal, sop: str, study: str) -> tuple[str, Any]:
    """(the slide series, the annotation) of an object that ``who`` may read (blocking)."""
    archive: Archive = request.app.state.archive
    slides = sorted(
        {row.series_instance_uid for row in archive.catalog.instances_in(study) if row.level == 0}
    )
    refused: Exception = NotFoundError(f"no annotation {sop} here")
    for series in slides:
        try:
            _readable(request, who, study, series)
        except (NotFoundError, PermissionDeniedError) as exc:
            refused = refused if isinstance(exc, NotFoundError) else exc
            continue
        found = _service(request).listing(study, series, only=sop)
        if found:
            return series, found[0]
    raise refused


async def export_geojson(request: Request) -> Response:
    who = principal(request)
    sop = uid(request.path_params["instance"], "instance")

    def work() -> dict[str, Any]:
        study, _ = _object(request, sop, SOURCES)
        _, found = _slide_of(request, who, sop, study)
        return feature_collection(found.shapes, qupath=True)

    body = await run_sync(work)
    disposition = f'attachment; filename="{sop}.geojson"'
    return _answer(body, media=_GEOJSON, headers={"Content-Disposition": disposition})


async def delete_annotation(request: Request) -> Response:
    who = principal(request)
    sop = uid(request.path_params["instance"], "instance")
    service = _service(request)

    def work() -> None:
        study, _ = _object(request, sop, {ANN_CLASS: "ANN"})
        stored = service.stored_by([sop]).get(sop)
        if stored is None or stored[0] != who.id:
            access: Access = request.app.state.access
            if not decide(who, Action.READ, access.study(study) or Resource("case", "", study=study)).allowed:
                _slide_of(request, who, sop, study)  # 404 unless it sees the slide (a grant)
            raise PermissionDeniedError("delete", "only the annotation's author may delete it")
        service.delete(sop, who.id)

    await run_sync(work)
    request.app.state.index.forget(sop)
    return Response(status_code=204)
