"""``create_app(settings)``: the ASGI application, with an explicit route list and a lifespan.

Requests and the event loop: the frames fast path (``dicomweb.fastpath``) answers cached local
frames on the loop; every other handler that queries the catalog, reads the store or decodes is
a plain function, which Starlette runs in anyio's thread pool, bounded at start-up to
``Settings.api_threads`` (``docs/architecture.md``, "Requests and the event loop").
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from http import HTTPStatus

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from lamina import __version__, viewer
from lamina.api import annotations as annotations_api
from lamina.api import (
    dicomweb,
    exchange,
    fhir,
    fhir_consent,
    governance,
    lifecycle,
    related,
    reporting,
    signin,
)
from lamina.api.auth import Authenticate, guard
from lamina.api.dicomweb.fastpath import FramesFastPath
from lamina.api.errorlog import ErrorLog
from lamina.api.openapi import describe
from lamina.api.problems import handle_lamina_error, problem
from lamina.api.urls import ForwardedHeaders
from lamina.archive.archive import Archive
from lamina.archive.priority import background_pool
from lamina.config import Settings
from lamina.errors import LaminaError
from lamina.governance.access import Access
from lamina.governance.claims import ClaimsMapping
from lamina.governance.issuer import LocalIssuer
from lamina.governance.principals import Principals, TrustedIssuer
from lamina.governance.tokens import TokenValidator
from lamina.governance.userinfo import Userinfo, UserinfoReader

#: How long a thread may run Python while the event loop waits for the GIL (CPython's default: 5 ms).
_SWITCH_INTERVAL_S = 0.001


def health(request: Request) -> Response:
    """Liveness; a plain function, run in the thread pool: it counts the slides in the catalog."""
    archive: Archive = request.app.state.archive
    return JSONResponse({"status": "ok", "version": __version__, "slides": archive.catalog.count_slides()})


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def no_route(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed) as problem details too."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        detail = f"nothing at {request.url.path}; /openapi.json lists what this server answers"
    else:
        detail = str(exc.detail)
    answer = problem(exc.status_code, HTTPStatus(exc.status_code).phrase, detail)
    answer.headers.update(exc.headers or {})
    return answer


async def unexpected(request: Request, exc: Exception) -> Response:
    """A 500 that says nothing of the cause to the client; ``errorlog`` logs it for the operator."""
    return problem(500, "Server error", "unexpected error; the server's log has its cause")


def create_app(settings: Settings, archive: Archive | None = None) -> _FastApp:
    """The application serving the archive of ``settings`` (or the given open ``archive``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # one bounded pool for every blocking call of a request: Starlette's plain endpoints,
        # run_in_threadpool and streamed bodies all take a token of anyio's default limiter
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        # for the process: a thread running Python (an ingest parsing a slide) hands the GIL to
        # the loop after 1 ms instead of 5, the loop's longest waits under load (measured:
        # docs/architecture.md, "Requests and the event loop")
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        opened = archive or Archive.open(settings)
        app.state.settings = settings
        app.state.archive = opened
        app.state.index = dicomweb.InstanceIndex(opened)
        # sign-in: the node's own issuer, and the OpenID provider of [auth] when configured
        app.state.issuer = LocalIssuer.open(settings.home)
        trusted = [TrustedIssuer(app.state.issuer.validator())]
        app.state.userinfo = None
        if settings.auth_issuer is not None:
            mapping = settings.auth_claims or ClaimsMapping()
            validator = TokenValidator(settings.auth_issuer)
            if settings.auth_issuer.userinfo:
                # the provider's userinfo, for the token presented or the viewer's sign-in
                viewer_id = () if settings.auth_viewer is None else (settings.auth_viewer.client_id,)
                reader = UserinfoReader(settings.auth_issuer, validator.keys, viewer_id)
                app.state.userinfo = Userinfo(reader)
            trusted.append(TrustedIssuer(validator, mapping, app.state.userinfo))
        app.state.principals = Principals(opened.catalog, trusted)
        app.state.access = Access(opened.catalog)
        # long work a request starts (the embedded STOW-RS ingest): its own bounded threads, at
        # background priority, beside the request pool (lamina.archive.priority)
        app.state.background = background_pool(
            settings.api_threads, settings.background_nice, "lamina-ingest"
        )
        from lamina.jobs.runtime import Jobs

        jobs = Jobs(opened)
        app.state.jobs = jobs if jobs.queued else None
        jobs.start()
        try:
            yield
        finally:
            jobs.close()
            app.state.background.shutdown(wait=False, cancel_futures=True)
            if archive is None:
                opened.close()

    routes: list[BaseRoute] = [
        Route("/healthz", health),
        Route("/openapi.json", openapi),
        *signin.routes(),
        Mount("/dicomweb", routes=dicomweb.routes()),
        Mount(
            "/api",
            routes=[
                *governance.routes(),
                *lifecycle.routes(),
                *reporting.routes(),
                *exchange.routes(),
                *related.routes(),
                *annotations_api.routes(),
            ],
        ),
        Mount("/fhir", routes=[*fhir.routes(), *fhir_consent.routes()]),
        # the viewer's mount at / takes every other path: it comes last
        *viewer.routes(openseadragon_dir=settings.viewer_vendor_dir),
    ]
    # every endpoint behind its authorization rule (lamina.api.auth.RULES); none without one
    routes = guard(routes)
    middleware = [
        Middleware(ForwardedHeaders, trusted=settings.trusted_proxies),
        Middleware(ErrorLog),
        Middleware(
            CORSMiddleware,
            allow_origins=["*"],
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[
                "Content-Type",
                "Content-Length",
                "Warning",
                "WWW-Authenticate",
                "Location",
                "ETag",
            ],
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={LaminaError: handle_lamina_error, HTTPException: no_route, Exception: unexpected},
    )
    app.state.openapi = describe(routes)
    return _FastApp(app)


class _FastApp:
    """The Starlette application behind the frames fast path (``dicomweb.fastpath``)."""

    def __init__(self, app: Starlette) -> None:
        self.starlette = app
        self.state = app.state
        # sign-in first: the frames fast path, like every route, needs the principal
        self._call = Authenticate(FramesFastPath(app, app), app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._call(scope, receive, send)
