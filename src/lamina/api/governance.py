"""The labs' administration over HTTP, mounted at ``/api``: labs, their people and roles, and the
grants they give on their slides and cases (the same as ``lamina tenants|users|grants``, and the
same JSON shapes as their ``--json``).

``GET /api/tenants``
    The labs the principal holds a role in (every lab for a platform admin).
``POST /api/tenants`` ``{"finess", "name"}``
    Add a lab (platform admin only); 201 with ``adopted``: what the first lab took over.
``GET /api/tenants/{finess}/people``, ``POST`` ``{"person", "roles": [...], "name"?}``
    The lab's people, with their roles in this lab; give a person roles in it (added if new).
    Only a platform admin gives the ``platform_admin`` role (it holds in every lab).
``GET /api/tenants/{finess}/grants[?all=true]``, ``POST`` ``{"to", "on", "permission"?, "expires"?}``
    The lab's grants in force (``all``: revoked and expired too); give one (201) on a slide, a
    case or a collection of the lab: ``to`` is ``person:ID``, ``tenant:FINESS`` or ``project:ID``,
    ``on`` is ``slide:ID``, ``case:STUDY_INSTANCE_UID`` or ``collection:ID``, ``permission``
    ``read`` (default) or ``read+annotate``, ``expires`` an ISO 8601 date or date and time (UTC
    when no offset), or null (until revoked).
``DELETE /api/tenants/{finess}/grants/{grant}``
    Revoke one of the lab's grants now; another lab's grant, like an absent one, is 404.
``GET /api/tenants/{finess}/collections``, ``POST`` ``{"name", "slides"?: [...]}``
    The lab's collections (named sets of its slides, with their count); make one (201), with the
    lab's slides named by id. ``on`` of a grant may then be ``collection:ID``.
``GET /api/tenants/{finess}/collections/{collection}``, ``DELETE``
    A collection with its slides; delete it (its slides stay; the grants on it are revoked).
``POST /api/tenants/{finess}/collections/{collection}/slides`` ``{"slides": [...]}``
    Put the lab's slides in the collection; ``DELETE .../slides/{slide}`` takes one out.

The lab routes pass :data:`~lamina.api.auth.Rule.ADMINISTER` (the lab's admin, or a platform
admin): a lab the principal cannot see is 404, one it sees but may not administer 403. Bodies are
JSON objects of at most :data:`MAX_BODY_BYTES` (413 past it); an unknown key, a missing one or a
bad value is 400 naming the field and how to fix it. Every change is audited with the principal
as its actor, and the principals this process keeps are forgotten at once, so that it applies a
change to its next request (other processes within their cache's 30 s).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from lamina.api.auth import principal
from lamina.api.params import read_body
from lamina.errors import NotFoundError, PermissionDeniedError, RequestError
from lamina.governance.collections import Collections
from lamina.governance.decide import GLOBAL_ROLES, Action, Principal
from lamina.governance.model import (
    Collection,
    Grant,
    GranteeKind,
    Permission,
    Person,
    ResourceKind,
    check_finess,
    check_person_id,
    parse_target,
)
from lamina.governance.registry import Registry
from lamina.governance.roles import Role

__all__ = ["MAX_BODY_BYTES", "json_body", "path_lab", "routes", "text_field"]

#: The largest JSON body accepted.
MAX_BODY_BYTES = 64 * 1024
_JSON = "application/json"
_GRANT_ID = re.compile(r"[0-9a-f]{32}")
#: the most slides named in one request
MAX_SLIDES_PER_REQUEST = 1_000
#: the registry's parameter names (the CLI's) to this API's fields
_FIELDS = {
    "FINESS": "finess",
    "NAME": "name",
    "PERSON": "person",
    "--name": "name",
    "--role": "roles",
    "--to": "to",
    "--on": "on",
    "--expires": "expires",
    "SLIDE": "slides",
}

T = TypeVar("T")


# -- the request's body ---------------------------------------------------------------------------------


async def json_body(
    request: Request, required: tuple[str, ...], optional: tuple[str, ...], limit: int = MAX_BODY_BYTES
) -> dict[str, Any]:
    """The JSON object of the body, at most ``limit`` bytes (default :data:`MAX_BODY_BYTES`), with
    every ``required`` key and no key outside ``required`` and ``optional``."""
    media = request.headers.get("content-type", _JSON).split(";", 1)[0].strip().lower()
    if media != _JSON:
        raise RequestError("Content-Type", f"send the body as {_JSON}, not {media or 'nothing'}")
    raw = await read_body(request, limit)
    try:
        found = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError("body", "not JSON: send a JSON object, e.g. " + _example(required)) from None
    if not isinstance(found, dict):
        raise RequestError("body", "send a JSON object, e.g. " + _example(required))
    unknown = sorted(set(found) - set(required) - set(optional))
    if unknown:
        known = ", ".join((*required, *optional))
        raise RequestError(", ".join(unknown), f"unknown key(s); the keys are {known}")
    missing = [key for key in required if key not in found]
    if missing:
        raise RequestError(", ".join(missing), "missing; give " + _example(required))
    return found


def _example(keys: tuple[str, ...]) -> str:
    return "{" + ", ".join(f'"{key}": ...' for key in keys) + "}"


def text_field(body: dict[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise RequestError(key, f"a string is expected, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _roles(value: object) -> list[Role]:
    names = ", ".join(role.value for role in Role)
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise RequestError("roles", f"a non-empty list of roles is expected, among {names}")
    unknown = [item for item in value if item not in {role.value for role in Role}]
    if unknown:
        raise RequestError("roles", f"{', '.join(map(repr, unknown))}: not a role; the roles are {names}")
    return [Role(item) for item in value]


def _expiry(value: object) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(
            "expires", f"an ISO 8601 date or date and time, or null, is expected, not {_kind(value)}"
        )
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(
            "expires", f"{value!r}: an ISO 8601 date (2027-03-31) or date and time (2027-03-31T18:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@contextmanager
def _fields() -> Iterator[None]:
    """The registry's errors, naming this API's fields instead of the CLI's parameters."""
    try:
        yield
    except RequestError as error:
        field = _FIELDS.get(error.parameter)
        if field is None:
            raise
        message = str(error).removeprefix(f"{error.parameter}: ")
        raise RequestError(field, message) from None


# -- helpers ---------------------------------------------------------------------------------------------


def _registry(request: Request) -> Registry:
    return Registry(request.app.state.archive.catalog)


def _platform(who: Principal) -> bool:
    return Action.ADMINISTER in who.everywhere


def path_lab(registry: Registry, finess: str) -> str:
    """The lab of the path (its rule passed: a platform admin may name one that does not exist)."""
    code = check_finess(finess, "finess")
    if code not in registry.existing_tenants([code]):
        raise NotFoundError(f"no lab {code} on this node; GET /api/tenants lists the labs you can see")
    return code


def _changed(request: Request) -> None:
    """Apply a change of people or grants to this process's next request."""
    request.app.state.principals.forget()


async def _blocking(function: Callable[..., T], *args: Any) -> T:
    return await run_in_threadpool(function, *args)


# -- the endpoints -----------------------------------------------------------------------------------------


def list_tenants(request: Request) -> Response:
    who = principal(request)
    found = _registry(request).tenants()
    if not _platform(who):
        mine = who.tenants()
        found = [tenant for tenant in found if tenant.finess in mine]
    return JSONResponse([tenant.as_dict() for tenant in found])


async def add_tenant(request: Request) -> Response:
    who = principal(request)
    body = await json_body(request, ("finess", "name"), ())
    finess, name = check_finess(text_field(body, "finess"), "finess"), text_field(body, "name")
    with _fields():
        tenant, adopted = await _blocking(_registry(request).add_tenant, finess, name, who.id)
    return JSONResponse({**tenant.as_dict(), "adopted": adopted}, status_code=201)


def list_people(request: Request) -> Response:
    registry = _registry(request)
    code = path_lab(registry, request.path_params["finess"])
    return JSONResponse([person.as_dict(code) for person in registry.people(code)])


async def add_person(request: Request) -> Response:
    who = principal(request)
    body = await json_body(request, ("person", "roles"), ("name",))
    person = check_person_id(text_field(body, "person"), "person")
    roles = _roles(body["roles"])
    name = text_field(body, "name", "")
    if set(roles) & GLOBAL_ROLES and not _platform(who):
        raise PermissionDeniedError(
            Action.ADMINISTER.value,
            "roles: only a platform admin gives the platform_admin role (it holds in every lab)",
        )
    registry = _registry(request)

    def add() -> Person:
        code = path_lab(registry, request.path_params["finess"])
        with _fields():
            return registry.add_person(person, code, roles, name, who.id)

    found = await _blocking(add)
    _changed(request)
    return JSONResponse(found.as_dict(check_finess(request.path_params["finess"])))


def list_grants(request: Request) -> Response:
    registry = _registry(request)
    code = path_lab(registry, request.path_params["finess"])
    flag = request.query_params.get("all", "false").lower()
    if flag not in ("true", "false"):
        raise RequestError("all", f"{flag!r}: true (revoked and expired grants too) or false")
    found = registry.grants(code, include_ended=flag == "true")
    return JSONResponse([grant.as_dict() for grant in found])


async def add_grant(request: Request) -> Response:
    who = principal(request)
    body = await json_body(request, ("to", "on"), ("permission", "expires"))
    to_kind, grantee = parse_target(text_field(body, "to"), "to", GranteeKind)
    on_kind, resource = parse_target(text_field(body, "on"), "on", ResourceKind)
    permission = text_field(body, "permission", Permission.READ.value)
    if permission not in {p.value for p in Permission}:
        names = ", ".join(p.value for p in Permission)
        raise RequestError("permission", f"{permission!r}: one of {names}")
    until = _expiry(body.get("expires"))
    registry = _registry(request)

    def add() -> Grant:
        code = path_lab(registry, request.path_params["finess"])
        if to_kind == GranteeKind.TENANT.value:
            lab = check_finess(grantee, "to")
            if lab not in registry.existing_tenants([lab]):
                raise RequestError("to", f"no lab {lab} on this node; name a lab that GET /api/tenants lists")
        with _fields():
            return registry.add_grant(
                code,
                GranteeKind(to_kind),
                grantee,
                ResourceKind(on_kind),
                resource,
                Permission(permission),
                until,
                who.id,
            )

    grant = await _blocking(add)
    _changed(request)
    return JSONResponse(grant.as_dict(), status_code=201)


def revoke_grant(request: Request) -> Response:
    who = principal(request)
    registry = _registry(request)
    code = path_lab(registry, request.path_params["finess"])
    grant_id = str(request.path_params["grant"])
    absent = NotFoundError(
        f"no grant {grant_id!r} in force in lab {code}; GET /api/tenants/{code}/grants lists them"
    )
    if not _GRANT_ID.fullmatch(grant_id):
        raise absent
    given = next((g for g in registry.grants(code, include_ended=True) if g.id == grant_id), None)
    if given is None or given.revoked_at is not None:
        raise absent
    try:
        revoked = registry.revoke_grant(grant_id, who.id)
    except NotFoundError:  # revoked meanwhile
        raise absent from None
    _changed(request)
    return JSONResponse(revoked.as_dict())


def _slides(body: dict[str, Any], key: str = "slides") -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RequestError(key, 'a list of slide ids is expected, e.g. ["4f2a9c0e1b7d3a55"]')
    if len(value) > MAX_SLIDES_PER_REQUEST:
        raise RequestError(key, f"at most {MAX_SLIDES_PER_REQUEST} slides in one request: send several")
    return value


def _collection(request: Request) -> tuple[Collections, str, Collection]:
    """The collection of the path, in the lab of the path (blocking): 404 when absent or
    another lab's, alike."""
    collections = Collections(request.app.state.archive.catalog)
    code = path_lab(_registry(request), request.path_params["finess"])
    ident = str(request.path_params["collection"])
    if not _GRANT_ID.fullmatch(ident):
        raise NotFoundError(
            f"no collection {ident!r} in lab {code}; GET /api/tenants/{code}/collections lists them"
        )
    return collections, code, collections.get(ident, code)


def list_collections(request: Request) -> Response:
    code = path_lab(_registry(request), request.path_params["finess"])
    found = Collections(request.app.state.archive.catalog).find(code)
    return JSONResponse([item.as_dict(with_slides=False) for item in found])


async def add_collection(request: Request) -> Response:
    who = principal(request)
    body = await json_body(request, ("name",), ("slides",))
    name, slides = text_field(body, "name"), _slides(body)

    def add() -> Collection:
        code = path_lab(_registry(request), request.path_params["finess"])
        with _fields():
            return Collections(request.app.state.archive.catalog).add(code, name, slides, who.id)

    made = await _blocking(add)
    return JSONResponse(made.as_dict(), status_code=201)


def get_collection(request: Request) -> Response:
    return JSONResponse(_collection(request)[2].as_dict())


async def add_collection_slides(request: Request) -> Response:
    who = principal(request)
    collections, code, found = await _blocking(_collection, request)
    body = await json_body(request, ("slides",), ())
    slides = _slides(body)

    def add() -> Collection:
        with _fields():
            return collections.add_slides(found.id, slides, code, who.id)

    changed = await _blocking(add)
    _changed(request)
    return JSONResponse(changed.as_dict())


def remove_collection_slide(request: Request) -> Response:
    who = principal(request)
    collections, code, found = _collection(request)
    with _fields():
        changed = collections.remove_slides(found.id, [str(request.path_params["slide"])], code, who.id)
    _changed(request)
    return JSONResponse(changed.as_dict())


def delete_collection(request: Request) -> Response:
    who = principal(request)
    collections, code, found = _collection(request)
    deleted = collections.delete(found.id, code, who.id)
    _changed(request)
    return JSONResponse(deleted.as_dict())


def routes() -> list[BaseRoute]:
    """The administration routes, to mount at ``/api``."""
    return [
        Route("/tenants", list_tenants, methods=["GET"]),
        Route("/tenants", add_tenant, methods=["POST"]),
        Route("/tenants/{finess}/people", list_people, methods=["GET"]),
        Route("/tenants/{finess}/people", add_person, methods=["POST"]),
        Route("/tenants/{finess}/grants", list_grants, methods=["GET"]),
        Route("/tenants/{finess}/grants", add_grant, methods=["POST"]),
        Route("/tenants/{finess}/grants/{grant}", revoke_grant, methods=["DELETE"]),
        Route("/tenants/{finess}/collections", list_collections, methods=["GET"]),
        Route("/tenants/{finess}/collections", add_collection, methods=["POST"]),
        Route("/tenants/{finess}/collections/{collection}", get_collection, methods=["GET"]),
        Route("/tenants/{finess}/collections/{collection}", delete_collection, methods=["DELETE"]),
        Route("/tenants/{finess}/collections/{collection}/slides", add_collection_slides, methods=["POST"]),
        Route(
            "/tenants/{finess}/collections/{collection}/slides/{slide}",
            remove_collection_slide,
            methods=["DELETE"],
        ),
    ]
