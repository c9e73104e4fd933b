"""What a retrieval answers when it finds nothing to read: 410 for an expired slide
(:mod:`lamina.lifecycle.serving`), else 404, or, for an object the catalog still lists, a
damaged object (audited, its repair queued).

Every path of WADO-RS that would answer "not found" or report an object missing goes through
here, so an expired slide is never reported damaged nor queued for repair, also while a server
still caches its instances for a moment after the expiry. These are failure paths: a live slide
costs nothing more. Blocking (catalog queries): thread pool only.
"""

from __future__ import annotations

from typing import NoReturn

from starlette.requests import Request

from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.errors import IntegrityError, NotFoundError
from lamina.lifecycle.serving import availability, study_availability

__all__ = ["lost_object", "nothing_in_series", "nothing_in_study", "opening"]

_NOTHING = "no such study, series or instance in this archive"


def opening(request: Request) -> None:
    """Before a slide is opened (its series' metadata, the whole series): 410 when it expired
    (and, with the cold tier, 202 while it is restored). One indexed query, once per opening."""
    archive: Archive = request.app.state.archive
    params = request.path_params
    availability(archive.catalog, params["study"], params["series"])


def nothing_in_series(request: Request, message: str = _NOTHING) -> NoReturn:
    """A series-level retrieval found no instance: 410 when its slide expired, else 404."""
    archive: Archive = request.app.state.archive
    params = request.path_params
    availability(archive.catalog, params["study"], params["series"])
    raise NotFoundError(message)


def nothing_in_study(request: Request, message: str = _NOTHING) -> NoReturn:
    """A study-level retrieval found no instance it may send: 410 when the slides it may read
    there all expired, else 404."""
    archive: Archive = request.app.state.archive
    only = request.scope.get("state", {}).get("series_allowed")
    study_availability(archive.catalog, request.path_params["study"], only)
    raise NotFoundError(message)


def lost_object(archive: Archive, row: InstanceRow, where: str, message: str) -> NoReturn:
    """The object of ``row`` is missing or short in the store: 410 when its slide expired since
    the row was read, 404 when the instance was deleted meanwhile, else the object is damaged:
    audited, its repair queued, and :class:`IntegrityError` (``message``)."""
    availability(archive.catalog, row.study_instance_uid, row.series_instance_uid)
    if archive.catalog.instance(row.sop_instance_uid) is None:  # deleted by another process
        raise NotFoundError(f"instance {row.sop_instance_uid} is not in this archive")
    archive.damaged(row.blob_sha256, where, "dicomweb")
    raise IntegrityError(message)
