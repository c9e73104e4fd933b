"""STOW-RS (PS3.18 10.5): DICOM instances posted as multipart/related, received by the archive's
one receive path (:mod:`lamina.archive.receive`), as C-STORE and watched folders are, into a lab
the principal may store into (``?tenant=FINESS`` when it may store into several), and recorded
under the principal's name in the audit log.

This module only translates: the body streams into the request's spool (one file per part,
never held in memory whole), the parts that are not ``application/dicom`` are refused, the
others are handed to :meth:`~lamina.archive.receive.Receiver.receive` (embedded) or to the job
queue (a PostgreSQL catalog), and the outcomes become the DICOM JSON answer: 200 all stored,
202 some failed, 409 all failed; 507 when nothing could be stored for lack of space. The reasons of
the failures (a code in the body) are said in words in the ``Warning`` header.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lamina.api.auth import principal
from lamina.api.dicomweb.upload import Part, boundary_of, spool_parts
from lamina.api.dicomweb.wado import DICOM_JSON
from lamina.api.urls import dicomweb_base
from lamina.archive.archive import Archive
from lamina.archive.receive import FailureReason, Outcome
from lamina.errors import InsufficientStorageError, PayloadTooLargeError, PermissionDeniedError, RequestError
from lamina.governance.decide import Action, Principal
from lamina.mapping.attributes import element, tags

__all__ = ["receive", "store"]

_DICOM = "application/dicom"


async def store(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    base = dicomweb_base(request)  # a Host this server does not answer to is refused before storing
    limit = archive.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the upload of {declared} bytes is over the {limit} byte limit")
    boundary = boundary_of(request.headers.get("content-type", ""))
    study = request.path_params.get("study")
    who = principal(request)
    tenant = _tenant(who, request.query_params.get("tenant"))
    actor = who.id
    with archive.incoming.request() as folder:
        parts = await spool_parts(request.stream(), boundary, folder, limit)
        refused, files = _dicom_parts(parts)
        outcomes = await receive(request, files, study, tenant, actor)
    if outcomes is None:  # still running after stow_wait_s
        return Response(
            orjson.dumps({}),
            status_code=202,
            media_type=DICOM_JSON,
            headers={"Warning": '299 lamina "accepted; the instances are still being stored"'},
        )
    outcomes = refused + outcomes
    _no_space(outcomes)
    for outcome in outcomes:
        if outcome.ok:
            request.app.state.index.forget(outcome.sop_instance_uid)
    return _response(base, outcomes)


async def receive(
    request: Request, files: list[Path], study: str | None, tenant: str, actor: str
) -> list[Outcome] | None:
    """``files`` stored into ``tenant`` by the archive's receive path: in this process by a thread
    of long work (embedded), or by the job queue (a PostgreSQL catalog); None when the queue's
    job is still running after ``stow_wait_s``."""
    archive: Archive = request.app.state.archive
    queue = getattr(request.app.state, "jobs", None)
    if queue is None:
        receipt = await asyncio.get_running_loop().run_in_executor(
            request.app.state.background,
            lambda: archive.receiver().receive(files, study=study, actor=actor, tenant=tenant),
        )
        return receipt.outcomes
    return await queue.store(files, study, tenant, actor)  # type: ignore[no-any-return]


def _tenant(who: Principal, asked: str | None) -> str:
    """The lab the instances go into: the one named by ``?tenant=FINESS`` (lamina's parameter),
    else the only one the principal may store into."""
    writable = sorted(code for code in who.tenants() if Action.STORE in who.allowed_in(code))
    if asked is not None:
        if asked not in writable:
            raise PermissionDeniedError(
                Action.STORE.value, f"tenant={asked}: your roles do not allow storing into that lab"
            )
        return asked
    if len(writable) != 1:  # none: the route's rule refused already
        raise RequestError(
            "tenant", f"you may store into several labs ({', '.join(writable)}): name one with ?tenant=FINESS"
        )
    return writable[0]


def _dicom_parts(parts: list[Part]) -> tuple[list[Outcome], list[Path]]:
    """The outcome of each part refused for its media type, and the files of the others."""
    refused, files = [], []
    for part in parts:
        media = part.content_type.split(";", 1)[0].strip().lower()
        if media == _DICOM:
            files.append(part.path)
        else:
            refused.append(
                Outcome.refused(FailureReason.CANNOT_UNDERSTAND, f"part of type {media} is not {_DICOM}")
            )
    return refused, files


def _no_space(outcomes: list[Outcome]) -> None:
    """Nothing stored, and for lack of space: 507 with what is full, rather than a 409 that would
    blame the instances."""
    if any(outcome.ok for outcome in outcomes):
        return
    for outcome in outcomes:
        if outcome.failure_reason is FailureReason.OUT_OF_RESOURCES:
            raise InsufficientStorageError("", outcome.reason)


_CLASS, _INSTANCE, _URL, _REASON, _STORED, _FAILED = tags(
    "ReferencedSOPClassUID", "ReferencedSOPInstanceUID", "RetrieveURL", "FailureReason",
    "ReferencedSOPSequence", "FailedSOPSequence",
)  # fmt: skip


def _response(base: str, outcomes: list[Outcome]) -> Response:
    """The DICOM JSON answer (PS3.18 10.5.3), its elements made as every answer's are
    (:func:`lamina.mapping.attributes.element`)."""
    stored, failed = [], []
    for item in outcomes:
        entry = {
            _CLASS: element(_CLASS, item.sop_class_uid),
            _INSTANCE: element(_INSTANCE, item.sop_instance_uid),
        }
        if item.ok:
            url = (
                f"{base}/studies/{item.study_instance_uid}/series/{item.series_instance_uid}"
                f"/instances/{item.sop_instance_uid}"
            )
            entry[_URL] = element(_URL, url)
            stored.append(entry)
        else:
            entry[_REASON] = element(_REASON, int(item.failure_reason or FailureReason.PROCESSING_FAILURE))
            failed.append(entry)
    body: dict[str, Any] = {}
    studies = {item.study_instance_uid for item in outcomes if item.ok}
    if len(studies) == 1:
        body[_URL] = element(_URL, f"{base}/studies/{studies.pop()}")
    if stored:
        body[_STORED] = element(_STORED, *stored)
    if failed:
        body[_FAILED] = element(_FAILED, *failed)
    status = 200 if not failed else (202 if stored else 409)
    headers = {"Warning": warning} if (warning := _warnings(outcomes)) else None
    return Response(orjson.dumps(body), status_code=status, media_type=DICOM_JSON, headers=headers)


#: the most failures whose reason the Warning header repeats, and the most characters of each
_WARNED, _WARNING_CHARS = 10, 1000


def _warnings(outcomes: list[Outcome]) -> str:
    """Why instances failed, in words (the answer's Failure Reason is a code only): one
    ``299 lamina "UID: reason"`` per failure (PS3.18 10.5.3's Warning header), the first few."""
    found = []
    for item in [item for item in outcomes if not item.ok and item.reason][:_WARNED]:
        text = f"{item.sop_instance_uid or '(unread)'}: {item.reason}"[:_WARNING_CHARS]
        text = "".join(c if c.isprintable() and c.isascii() and c not in '"\\' else "'" for c in text)
        found.append(f'299 lamina "{text}"')
    return ", ".join(found)
