"""``create_app(settings)``: the ASGI application, with an explicit route list and a lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from lamina import __version__, viewer
from lamina.api import dicomweb
from lamina.api.dicomweb.fastpath import FramesFastPath
from lamina.api.problems import handle_lamina_error
from lamina.archive.archive import Archive
from lamina.config import Settings
from lamina.errors import LaminaError


async def health(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    return JSONResponse({"status": "ok", "version": __version__, "slides": archive.catalog.count_slides()})


OPENAPI = {
    "openapi": "3.1.0",
    "info": {
        "title": "lamina",
        "version": __version__,
        "description": "lamina's own routes. DICOMweb (QIDO-RS, WADO-RS, STOW-RS) is under /dicomweb "
        "as DICOM PS3.18 defines it; the viewer is served at /.",
    },
    "paths": {
        "/healthz": {
            "get": {
                "summary": "Liveness: the server answers and its catalog is readable",
                "responses": {
                    "200": {
                        "description": "status, version and number of slides",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {"type": "string"},
                                        "version": {"type": "string"},
                                        "slides": {"type": "integer"},
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This description", "responses": {"200": {"description": "OpenAPI"}}}
        },
    },
}


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)


def create_app(settings: Settings, archive: Archive | None = None) -> _FastApp:
    """The application serving the archive of ``settings`` (or the given open ``archive``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opened = archive or Archive.open(settings)
        app.state.archive = opened
        app.state.index = dicomweb.InstanceIndex(opened)
        from lamina.jobs.runtime import Jobs

        jobs = Jobs(opened)
        app.state.jobs = jobs if jobs.queued else None
        jobs.start()
        try:
            yield
        finally:
            jobs.close()
            if archive is None:
                opened.close()

    routes = [
        Route("/healthz", health),
        Route("/openapi.json", openapi),
        Mount("/dicomweb", routes=dicomweb.routes()),
        # the viewer's mount at / takes every other path: it comes last
        *viewer.routes(openseadragon_dir=settings.viewer_vendor_dir),
    ]
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=["*"],
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["Content-Type", "Content-Length", "Warning"],
        )
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={LaminaError: handle_lamina_error},
    )
    return _FastApp(app)


class _FastApp:
    """The Starlette application behind the frames fast path (``dicomweb.fastpath``)."""

    def __init__(self, app: Starlette) -> None:
        self.starlette = app
        self.state = app.state
        self._call = FramesFastPath(app, app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._call(scope, receive, send)
