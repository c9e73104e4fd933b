"""Sign-in and the decision on every route.

:class:`Authenticate`, the outermost layer of the application, reads the bearer token (RFC 6750,
``Authorization: Bearer ...``) of every HTTP request, and turns it into the
:class:`~lamina.governance.decide.Principal` it stands for
(:class:`~lamina.governance.principals.Principals`: one hash and one look-up when it was seen in
the last 25 s, else validated in the thread pool; on a keep-alive connection that sends the same
header again, its principal of the last 5 s without even that: a tile burst costs a comparison).
A token that cannot be believed is answered 401 by every route that needs a
principal, with ``WWW-Authenticate: Bearer error="invalid_token"`` and no detail (the public routes
answer anyway: a stale token must not lock a user out of the
sign-in page); a request without one goes on without a principal.

Each route then passes its rule (:data:`RULES`, by method and path: :func:`guard` wraps every
endpoint of the application, and refuses to build an application with a route that has none):

- ``PUBLIC``: ``/healthz``, the sign-in endpoints, and the viewer's static files (code, no data:
  the viewer shows its sign-in page, then sends the token with every request);
- ``SIGNED_IN``: any principal (the API description);
- ``SEARCH``: any principal; the search itself keeps what it may see, in SQL
  (:func:`~lamina.governance.decide.visible_studies`);
- ``STORE``: a principal that may store into some tenant; the handler picks which one;
- ``CONSENT``: a principal that may record patients' oppositions in some tenant; the handler
  picks which one;
- ``EXCHANGE``: a principal that may send slides of interest to the archive for some tenant
  (:data:`~lamina.governance.decide.Action.EXCHANGE_RECEIVE`); the handler picks which one;
- ``READ_STUDY`` / ``READ_SERIES``: :meth:`~lamina.governance.access.Access.read` on the study or
  the series of the path: what it may not read is answered 404 like what does not exist;
- ``ADMINISTER``: the lab of the path's ``finess`` administered (the lab admins' API);
- ``READ_SLIDE``, ``ANNOTATE_SLIDE``, ``ADMINISTER_SLIDE``: the path's ``slide`` (a lamina slide
  id), owned by its lab: read (a role or a grant) or its lab administered; a role in its lab that
  annotates (a pathologist of the lab: a grant from another lab does not reach its lifecycle);
  its lab administered. A slide the principal cannot see is 404 like an absent one; the
  :class:`~lamina.governance.decide.Resource` found is left in ``scope["state"]["slide"]``;
- ``PLATFORM``: a platform admin (administering every lab: adding one);
- ``ANNOTATIONS``: any principal; the handler decides on the slide its query names (read, as
  ``READ_SERIES``) or on the annotation (its author deletes it).

No principal where one is needed: 401 with ``WWW-Authenticate: Bearer realm="lamina"``.
"""

from __future__ import annotations

import enum
import functools
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread
from sqlalchemy import select
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.archive.catalog import tables as t
from lamina.errors import AuthenticationError, NotFoundError, PermissionDeniedError, UnavailableError
from lamina.governance.access import Access
from lamina.governance.decide import Action, Principal, Resource, decide, withdrawn_slides
from lamina.governance.principals import Principals

__all__ = ["RULES", "Authenticate", "Rule", "guard", "principal", "signed_in", "slide_resource"]

_SIGN_IN = "this route needs a bearer token: sign in, then send it as 'Authorization: Bearer TOKEN'"


class Rule(enum.Enum):
    """What a route asks of the principal."""

    PUBLIC = "public"
    SIGNED_IN = "signed in"
    SEARCH = "search"
    STORE = "store"
    READ_STUDY = "read the study"
    READ_SERIES = "read the series"
    ADMINISTER = "administer the lab"
    PLATFORM = "administer the platform"
    READ_SLIDE = "read the slide, or administer its lab"
    ANNOTATE_SLIDE = "annotate in the slide's lab"
    ADMINISTER_SLIDE = "administer the slide's lab"
    CONSENT = "record oppositions in some lab"
    EXCHANGE = "send slides of interest to the archive for some lab"
    ANNOTATIONS = "signed in; the handler decides on the slide named (read) or the annotation (its author)"


_STUDY = "/dicomweb/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"

#: Every route's rule, by "METHOD path" as the application declares it.
RULES: dict[str, Rule] = {
    "GET /healthz": Rule.PUBLIC,
    # the viewer's library, when it is not installed: a page saying how to install it
    "GET /vendor/openseadragon/{path:path}": Rule.PUBLIC,
    "GET /openapi.json": Rule.SIGNED_IN,
    # lamina's own issuer: its sign-in page's token endpoint and its keys
    "POST /auth/token": Rule.PUBLIC,
    "GET /auth/viewer-config": Rule.PUBLIC,
    "POST /auth/oidc/token": Rule.PUBLIC,
    "GET /auth/jwks": Rule.PUBLIC,
    "GET /.well-known/openid-configuration": Rule.PUBLIC,
    # QIDO-RS
    "GET /dicomweb/studies": Rule.SEARCH,
    "GET /dicomweb/series": Rule.SEARCH,
    "GET /dicomweb/instances": Rule.SEARCH,
    f"GET {_STUDY}/series": Rule.SEARCH,
    f"GET {_STUDY}/instances": Rule.SEARCH,
    f"GET {_SERIES}/instances": Rule.SEARCH,
    # STOW-RS
    "POST /dicomweb/studies": Rule.STORE,
    f"POST {_STUDY}": Rule.STORE,
    # WADO-RS
    f"GET {_STUDY}/metadata": Rule.READ_STUDY,
    f"GET {_SERIES}/metadata": Rule.READ_SERIES,
    f"GET {_INSTANCE}/metadata": Rule.READ_SERIES,
    f"GET {_INSTANCE}/frames/{{frames}}": Rule.READ_SERIES,
    f"GET {_INSTANCE}/bulkdata/{{path:path}}": Rule.READ_SERIES,
    f"GET {_INSTANCE}/frames/{{frames}}/rendered": Rule.READ_SERIES,
    f"GET {_INSTANCE}/rendered": Rule.READ_SERIES,
    f"GET {_INSTANCE}/thumbnail": Rule.READ_SERIES,
    f"GET {_SERIES}/thumbnail": Rule.READ_SERIES,
    f"GET {_STUDY}/thumbnail": Rule.READ_STUDY,
    f"GET {_SERIES}/rendered": Rule.READ_SERIES,
    f"GET {_STUDY}/rendered": Rule.READ_STUDY,
    f"GET {_INSTANCE}": Rule.READ_SERIES,
    f"GET {_SERIES}": Rule.READ_SERIES,
    f"GET {_STUDY}": Rule.READ_STUDY,
    # the labs' administration (lamina.api.governance)
    "GET /api/tenants": Rule.SIGNED_IN,
    "POST /api/tenants": Rule.PLATFORM,
    "GET /api/tenants/{finess}/people": Rule.ADMINISTER,
    "POST /api/tenants/{finess}/people": Rule.ADMINISTER,
    "GET /api/tenants/{finess}/grants": Rule.ADMINISTER,
    "POST /api/tenants/{finess}/grants": Rule.ADMINISTER,
    "DELETE /api/tenants/{finess}/grants/{grant}": Rule.ADMINISTER,
    "GET /api/tenants/{finess}/collections": Rule.ADMINISTER,
    "POST /api/tenants/{finess}/collections": Rule.ADMINISTER,
    "GET /api/tenants/{finess}/collections/{collection}": Rule.ADMINISTER,
    "DELETE /api/tenants/{finess}/collections/{collection}": Rule.ADMINISTER,
    "POST /api/tenants/{finess}/collections/{collection}/slides": Rule.ADMINISTER,
    "DELETE /api/tenants/{finess}/collections/{collection}/slides/{slide}": Rule.ADMINISTER,
    # the care lifecycle (lamina.api.lifecycle): a lab's rules, a slide's flag of interest, holds
    "GET /api/tenants/{finess}/lifecycle-rules": Rule.ADMINISTER,
    "PUT /api/tenants/{finess}/lifecycle-rules": Rule.ADMINISTER,
    "GET /api/slides/{slide}/lifecycle": Rule.READ_SLIDE,
    # the slides to compare with one (lamina.api.related): its query names the slide, which the
    # handler reads with Access (404 when hidden); its lists keep what the principal may search,
    # in the query (visible_series)
    "GET /api/slides/related": Rule.SIGNED_IN,
    "PUT /api/slides/{slide}/interest": Rule.ANNOTATE_SLIDE,
    "DELETE /api/slides/{slide}/interest": Rule.ANNOTATE_SLIDE,
    "POST /api/slides/{slide}/holds": Rule.ADMINISTER_SLIDE,
    "DELETE /api/slides/{slide}/holds": Rule.ADMINISTER_SLIDE,
    # the storage report and the cost calculator (lamina.api.reporting)
    "GET /api/tenants/{finess}/report": Rule.ADMINISTER,
    "GET /api/tenants/{finess}/report/plots/{name}": Rule.ADMINISTER,
    "GET /api/report": Rule.PLATFORM,
    "GET /api/report/plots/{name}": Rule.PLATFORM,
    "GET /api/costs": Rule.SIGNED_IN,
    # the LIS's final reports (lamina.api.fhir): a principal that stores into a lab (its LIS)
    "POST /fhir/DiagnosticReport": Rule.STORE,
    # patients' oppositions from the LIS (lamina.api.fhir_consent): a principal that may record
    # them in a lab (its pathologists, admins, technicians: the LIS's account)
    "POST /fhir/Consent": Rule.CONSENT,
    # the archive's side of the exchange (lamina.api.exchange): the account the archive issued to
    # a sending lab (a technician or an admin of that lab); answered on an archive node only
    "POST /api/exchange/slides": Rule.EXCHANGE,
    "POST /api/exchange/slides/{series}/verify": Rule.EXCHANGE,
    "POST /api/exchange/withdrawals": Rule.EXCHANGE,
    # a slide's annotations (lamina.api.annotations): the handler checks the slide's read right,
    # or the annotation's author for a deletion
    "GET /api/annotations": Rule.ANNOTATIONS,
    "POST /api/annotations": Rule.ANNOTATIONS,
    "POST /api/annotations/geojson": Rule.ANNOTATIONS,
    "DELETE /api/annotations/{instance}": Rule.ANNOTATIONS,
    "GET /api/annotations/{instance}/geojson": Rule.ANNOTATIONS,
    # the viewer's static files and its library
    "MOUNT /vendor/openseadragon": Rule.PUBLIC,
    "MOUNT /": Rule.PUBLIC,
}


def principal(request: Request) -> Principal:
    """The signed-in principal of a request that passed its rule: AuthenticationError if it sent
    no token (or one that cannot be believed), UnavailableError if its issuer could not be asked."""
    found = signed_in(request.scope)
    if found is not None:
        return found
    refused = request.scope.get("state", {}).get("token_refused")
    if isinstance(refused, AuthenticationError | UnavailableError):
        raise refused
    raise AuthenticationError(_SIGN_IN, error="")


def study_instances(request: Request) -> list[InstanceRow]:
    """The instances of the path's study the principal may read: all of them, or, when only some
    of its slides are granted to it, theirs alone (the rule of a study-level read decided which)."""
    archive: Archive = request.app.state.archive
    rows = archive.catalog.instances_in(request.path_params["study"])
    only = request.scope.get("state", {}).get("series_allowed")
    if only is not None:
        rows = [row for row in rows if row.series_instance_uid in only]
    return rows


def signed_in(scope: Scope) -> Principal | None:
    """The principal :class:`Authenticate` found for this request, if any."""
    found = scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else None


def _check(request: Request, rule: Rule) -> None:
    """Raise unless the request passes ``rule`` (blocking: owners may be looked up)."""
    if rule is Rule.PUBLIC:
        return
    who = principal(request)
    access: Access = request.app.state.access
    params = request.path_params
    client = request.client.host if request.client else None
    if rule is Rule.READ_STUDY:
        # a study of which only some slides are granted: those alone (study_instances)
        _, only = access.read(who, params["study"], client=client)
        request.scope.setdefault("state", {})["series_allowed"] = only
    elif rule is Rule.READ_SERIES:
        access.read(who, params["study"], params["series"], client=client)
    elif rule is Rule.STORE:
        if not any(Action.STORE in who.allowed_in(tenant) for tenant in who.tenants()):
            raise PermissionDeniedError(Action.STORE.value, "your roles do not allow storing into any lab")
    elif rule is Rule.CONSENT:
        if not any(Action.CONSENT in who.allowed_in(tenant) for tenant in who.tenants()):
            raise PermissionDeniedError(
                Action.CONSENT.value, "your roles do not allow recording oppositions in any lab"
            )
    elif rule is Rule.EXCHANGE:
        if not any(Action.EXCHANGE_RECEIVE in who.allowed_in(tenant) for tenant in who.tenants()):
            raise PermissionDeniedError(
                Action.EXCHANGE_RECEIVE.value,
                "your roles do not allow sending slides to this archive for any lab (a technician or "
                "an admin of the sending lab may)",
            )
    elif rule is Rule.ADMINISTER:
        access.require(who, Action.ADMINISTER, Resource("tenant", str(params["finess"])))
    elif rule is Rule.PLATFORM and Action.ADMINISTER not in who.everywhere:
        raise PermissionDeniedError(Action.ADMINISTER.value, "only a platform admin may do this")
    elif rule in _SLIDE_RULES:
        resource = slide_resource(request.app.state.archive, str(params["slide"]))
        _check_slide(who, rule, resource)
        request.scope.setdefault("state", {})["slide"] = resource


#: the slide rules: what the principal must hold in the slide's lab (READ_SLIDE: or read it)
_SLIDE_RULES: dict[Rule, Action] = {
    Rule.READ_SLIDE: Action.ADMINISTER,
    Rule.ANNOTATE_SLIDE: Action.ANNOTATE,
    Rule.ADMINISTER_SLIDE: Action.ADMINISTER,
}
_NO_SLIDE = "no such slide in this archive; 'lamina slides' lists them"


def slide_resource(archive: Archive, slide: str) -> Resource | None:
    """The slide ``slide`` (a lamina slide id) with its lab and case, or None (blocking)."""
    if not slide or len(slide) > 64 or not slide.isprintable():
        return None
    withdrawn = t.slides.c.id.in_(withdrawn_slides())
    query = select(t.slides.c.tenant, t.slides.c.study_instance_uid, withdrawn).where(t.slides.c.id == slide)
    with archive.catalog.engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else Resource("slide", str(row[0]), slide, str(row[1]), bool(row[2]))


def _check_slide(who: Principal, rule: Rule, resource: Resource | None) -> None:
    """Raise unless ``who`` passes the slide ``rule`` on ``resource``: NotFoundError when it
    cannot see the slide (or there is none), PermissionDeniedError when it sees it."""
    if resource is None:
        raise NotFoundError(_NO_SLIDE)
    action = _SLIDE_RULES[rule]
    if action in who.allowed_in(resource.tenant):  # a role in the slide's lab, or a global one
        return
    read = decide(who, Action.READ, resource)
    if rule is Rule.READ_SLIDE and read.allowed:
        return
    if read.hidden:
        raise NotFoundError(_NO_SLIDE)
    raise PermissionDeniedError(action.value, f"your roles in lab {resource.tenant} do not allow this")


def _guarded(endpoint: Callable[[Request], Any], rule: Rule) -> Callable[[Request], Any]:
    # only the reads look owners up (a query on a miss): the others check in place
    blocking = rule in (Rule.READ_STUDY, Rule.READ_SERIES, Rule.ADMINISTER, *_SLIDE_RULES)
    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def checked_async(request: Request) -> Any:
            if blocking:
                await anyio.to_thread.run_sync(_check, request, rule)
            else:
                _check(request, rule)
            return await endpoint(request)

        return checked_async

    @functools.wraps(endpoint)
    def checked(request: Request) -> Any:
        _check(request, rule)
        return endpoint(request)

    return checked


def route_keys(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, BaseRoute]]:
    """("METHOD path" or "MOUNT path", route) of every route, mounts walked into."""
    found: list[tuple[str, BaseRoute]] = []
    for route in routes:
        if isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                found.append((f"{method} {prefix}{route.path}", route))
        elif isinstance(route, Mount) and route.routes:
            found += route_keys(list(route.routes), prefix + route.path)
        elif isinstance(route, Mount):
            found.append((f"MOUNT {prefix}{route.path or '/'}", route))
    return found


def guard(routes: list[BaseRoute], rules: Mapping[str, Rule] = RULES, prefix: str = "") -> list[BaseRoute]:
    """``routes`` with every endpoint wrapped in its rule's check; LookupError naming a route
    that has no rule (a new route must get one here before the application starts)."""
    guarded: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route):
            methods = sorted((route.methods or {"GET"}) - {"HEAD"})
            found = {rules.get(f"{method} {prefix}{route.path}") for method in methods}
            if None in found or len(found) != 1:
                raise LookupError(
                    f"route {methods} {prefix}{route.path} has no authorization rule: add it to "
                    "lamina.api.auth.RULES"
                )
            (rule,) = found
            assert rule is not None
            guarded.append(
                Route(
                    route.path,
                    _guarded(route.endpoint, rule),
                    methods=list(route.methods or ()) or None,
                    name=route.name,
                )
            )
        elif isinstance(route, Mount) and route.routes:
            guarded.append(Mount(route.path, routes=guard(list(route.routes), rules, prefix + route.path)))
        elif isinstance(route, Mount):
            key = f"MOUNT {prefix}{route.path or '/'}"
            if rules.get(key) is not Rule.PUBLIC:
                raise LookupError(f"{key} has no authorization rule: add it to lamina.api.auth.RULES")
            guarded.append(route)
        else:
            raise LookupError(f"{route!r}: a kind of route lamina.api.auth cannot guard")
    return guarded


def _bearer(scope: Scope) -> str | None:
    """The token of the Authorization header; "" when the header is there but not a bearer
    token; None when there is none."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"bearer" or not token.strip():
                return ""
            return str(token.strip().decode("latin-1"))
    return None


#: How long a connection's principal is reused without asking the principals' cache (seconds):
#: added to that cache's 25 s, a revocation takes effect within 30 s.
_CONNECTION_S = 5.0
#: The most connections remembered (cleared whole past it: a cache, not a registry).
_CONNECTIONS_KEPT = 10_000


class Authenticate:
    """The principal of each request's bearer token, put in ``scope["state"]["principal"]``; a
    token that cannot be believed is kept as ``token_refused``, which a route that needs the
    principal answers (401; 503 when the issuer cannot be reached)."""

    def __init__(self, app: ASGIApp, state_owner: object) -> None:
        self.app = app
        self.owner = state_owner
        #: per keep-alive connection (its client address and port): the Authorization header it
        #: last sent, the principal found for it, and until when (monotonic) that answer stands
        self._connections: dict[object, tuple[bytes, Principal, float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found: Principal | None = None
        refused: Exception | None = None
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        if header is not None:
            # the common case: the connection's header again (a viewer's tile burst), compared whole
            connection = scope.get("client")
            kept = self._connections.get(connection)
            if kept is not None and kept[0] == header and time.monotonic() < kept[2]:
                found = kept[1]
            elif header[:7].lower() == b"bearer ":
                # the lifespan's (an application started again gets new ones)
                principals: Principals = self.owner.state.principals  # type: ignore[attr-defined]
                found = principals.cached_raw(header[7:].strip())
                if found is not None:
                    self._keep(connection, header, found)
        token = None if found is not None else _bearer(scope)
        if token is not None:
            principals = self.owner.state.principals  # type: ignore[attr-defined]
            found = principals.cached(token) if token else None
            if found is None:
                try:
                    if not token:
                        raise AuthenticationError("the Authorization header must be 'Bearer TOKEN'")
                    found = await anyio.to_thread.run_sync(principals.resolve, token)
                    self._keep(scope.get("client"), header, found)
                except AuthenticationError as error:
                    if not error.error:
                        error.error = "invalid_token"
                    refused = error
                except UnavailableError:
                    refused = UnavailableError(
                        "the sign-in provider cannot be reached to check the token; try again shortly"
                    )
        # a route that needs the principal answers the refusal (401, or 503); a public one
        # (the sign-in page, /healthz) answers anyway: a stale token must not lock out sign-in
        state = scope.setdefault("state", {})
        state["principal"] = found
        state["token_refused"] = refused
        await self.app(scope, receive, send)

    def _keep(self, connection: object, header: bytes | None, found: Principal) -> None:
        """Remember ``found`` for this connection's ``header`` for :data:`_CONNECTION_S`."""
        if connection is None or header is None:
            return
        if len(self._connections) >= _CONNECTIONS_KEPT:
            self._connections.clear()
        self._connections[connection] = (header, found, time.monotonic() + _CONNECTION_S)


def challenge(error: str | None) -> str:
    """The ``WWW-Authenticate`` value (RFC 6750 section 3): the realm, and the error when a token
    was sent."""
    return f'Bearer realm="lamina", error="{error}"' if error else 'Bearer realm="lamina"'
