"""DICOMweb (PS3.18): the routes under /dicomweb."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from lamina.api.dicomweb import qido, rendered, stow, wado
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
        Route(_INSTANCE + "/frames/{frames}", wado.frames),
        Route(_INSTANCE + "/bulkdata/{path:path}", wado.bulkdata),
        *rendered.routes(),
        Route(_INSTANCE, wado.retrieve_instance),
        Route(_SERIES, wado.retrieve_series),
        Route(_STUDY, wado.retrieve_study),
    ]
