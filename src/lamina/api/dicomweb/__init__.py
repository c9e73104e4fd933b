"""DICOMweb (PS3.18): the routes under /dicomweb.

Handlers that query the catalog or read the store are plain functions, which Starlette runs in
the bounded thread pool (``docs/architecture.md``, "Requests and the event loop"); only the
frames fast path (``fastpath.py``) answers on the event loop.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from lamina.api.dicomweb import frames, qido, rendered, retrieve, stow, wado
from lamina.api.dicomweb.index import InstanceIndex

__all__ = ["InstanceIndex", "routes"]

_STUDY = "/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"


def routes() -> list[BaseRoute]:
    return [
        *qido.routes(),
        Route("/studies", stow.store, methods=["POST"]),
        Route(_STUDY, stow.store, methods=["POST"]),
        Route(_STUDY + "/metadata", wado.study_metadata),
        Route(_SERIES + "/metadata", wado.series_metadata),
        Route(_INSTANCE + "/metadata", wado.instance_metadata),
        Route(_INSTANCE + "/frames/{frames}", frames.frames),
        Route(_INSTANCE + "/bulkdata/{path:path}", wado.bulkdata),
        *rendered.routes(),
        Route(_INSTANCE, retrieve.retrieve_instance),
        Route(_SERIES, retrieve.retrieve_series),
        Route(_STUDY, retrieve.retrieve_study),
    ]
