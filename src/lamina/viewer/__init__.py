"""The web viewer: a static, hand-written application served by the API at ``/``.

It talks to the archive only through DICOMweb: QIDO-RS for the worklist, WADO-RS metadata for
the pyramid, and rendered frames for the tiles, so it works the same against any DICOMweb
server that has them. Its one library, OpenSeadragon (deep zoom), comes from npm through
``scripts/install`` and is served at ``/vendor/openseadragon/``: nothing is fetched from a
CDN at run time.

Sign-in: the viewer's files are public (code, no data); the archive is not. With no token in
the tab, or once the server answers 401, the viewer shows its sign-in form, which posts the
person identifier and password to ``POST /auth/token`` (lamina's own issuer,
``application/x-www-form-urlencoded``) and keeps the token and its expiry in ``sessionStorage``
(this tab only; never ``localStorage``, a cookie or a URL). Every request to DICOMweb sends it as
``Authorization: Bearer TOKEN``: searches and metadata by ``fetch``, thumbnails and the label and
overview fetched and shown from ``blob:`` URLs, OpenSeadragon's tiles by XMLHttpRequest
(``loadTilesWithAjax``). The page has no inline script, and a Content-Security-Policy that
allows none.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["OPENSEADRAGON_PATH", "STATIC_DIR", "default_openseadragon_dir", "routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where the viewer's page loads OpenSeadragon from.
OPENSEADRAGON_PATH = "/vendor/openseadragon"
_BUILD = Path("node_modules", "openseadragon", "build", "openseadragon")


def default_openseadragon_dir() -> Path:
    """OpenSeadragon's build folder in a source checkout (``npm ci`` at the repository root)."""
    # src/lamina/viewer/__init__.py -> the repository root is three folders up from the package
    return Path(__file__).resolve().parents[3] / _BUILD


def _missing(folder: Path) -> Route:
    message = (
        f"OpenSeadragon is not installed: {folder} does not exist. Run scripts/install (it runs "
        "`npm ci`), or point LAMINA_VIEWER_VENDOR at an openseadragon/build/openseadragon folder.\n"
    )

    async def missing(request: Request) -> Response:
        return PlainTextResponse(message, status_code=404)

    return Route(OPENSEADRAGON_PATH + "/{path:path}", missing)


def routes(static_dir: Path = STATIC_DIR, openseadragon_dir: Path | None = None) -> list[BaseRoute]:
    """The viewer at ``/`` and OpenSeadragon at ``/vendor/openseadragon/``.

    They go last in the application's routes: the mount at ``/`` answers every path that no
    other route took. ``openseadragon_dir`` defaults to the source checkout's ``node_modules``;
    a packaged install passes its own folder.
    """
    vendor = openseadragon_dir or default_openseadragon_dir()
    library: BaseRoute = (
        Mount(OPENSEADRAGON_PATH, app=StaticFiles(directory=vendor), name="openseadragon")
        if vendor.is_dir()
        else _missing(vendor)
    )
    return [library, Mount("/", app=StaticFiles(directory=static_dir, html=True), name="viewer")]
