"""STOW-RS (PS3.18 10.5): DICOM instances posted as multipart/related, stored through the same
path as ``lamina ingest`` (validated, content-addressed, atomic, frame index built).

The body streams to files (never into memory); the instances are grouped by series and each
series is ingested as one slide. Parts that are not DICOM, not a supported SOP class, or of
another study than the URL's are reported failed; the others are stored. Slides (VL WSI) go
through the ingest path; annotations, reports, segmentations, parametric maps, key objects and
presentation states (``objects.STORABLE``) are kept as they are, beside them.
"""

from __future__ import annotations

import shutil
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import pydicom
from pydicom.errors import InvalidDicomError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from lamina.api.dicomweb.upload import Part, boundary_of, spool_parts

__all__ = ["Outcome", "Part", "check_parts", "store", "store_parts"]
from lamina.api.dicomweb.wado import DICOM_JSON, dicomweb_base
from lamina.archive.archive import Archive
from lamina.archive.discover import Candidate
from lamina.archive.ingest import IngestOptions, Ingestor
from lamina.archive.objects import STORABLE, store_object
from lamina.errors import LaminaError, PayloadTooLargeError, UnavailableError
from lamina.formats.dicom import VL_WSI

#: PS3.18 Table 10.5.3-2 / PS3.4 failure reasons used here.
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000


@dataclass
class Outcome:
    sop_class: str
    sop_instance: str
    study: str
    series: str
    failure: int | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_part(part: Part, study: str | None) -> tuple[Outcome, Path | None]:
    media = part.content_type.split(";", 1)[0].strip().lower()
    if media != "application/dicom":
        return Outcome(
            "", "", "", "", CANNOT_UNDERSTAND, f"part of type {media} is not application/dicom"
        ), None
    try:
        ds = pydicom.dcmread(part.path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return Outcome("", "", "", "", CANNOT_UNDERSTAND, f"not a DICOM file ({exc})"), None
    outcome = Outcome(
        str(ds.get("SOPClassUID", "")),
        str(ds.get("SOPInstanceUID", "")),
        str(ds.get("StudyInstanceUID", "")),
        str(ds.get("SeriesInstanceUID", "")),
    )
    if study and outcome.study != study:
        outcome.failure, outcome.reason = DOES_NOT_MATCH, f"StudyInstanceUID is not {study}"
    elif outcome.sop_class != VL_WSI and outcome.sop_class not in STORABLE:
        outcome.failure, outcome.reason = (
            SOP_CLASS_NOT_SUPPORTED,
            f"SOP class {outcome.sop_class} is not stored",
        )
    elif not outcome.series or not outcome.sop_instance:
        outcome.failure, outcome.reason = CANNOT_UNDERSTAND, "no SeriesInstanceUID or SOPInstanceUID"
    return outcome, None if outcome.failure else part.path


def store_parts(
    archive: Archive, parts: list[Part], study: str | None, actor: str = "dicomweb", *, final: bool = True
) -> list[Outcome]:
    """Read, group by series, ingest each series; one outcome per part. Unless ``final``, a
    failure of a service that may come back raises UnavailableError (the job is retried; what
    was stored is found again as duplicates)."""
    outcomes: list[Outcome] = []
    series: dict[str, list[tuple[Outcome, Path]]] = defaultdict(list)
    for part in parts:
        outcome, path = _read_part(part, study)
        outcomes.append(outcome)
        if path is not None:
            series[outcome.series].append((outcome, path))
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
    for key in list(series):
        objects = [(outcome, path) for outcome, path in series[key] if outcome.sop_class != VL_WSI]
        series[key] = [(outcome, path) for outcome, path in series[key] if outcome.sop_class == VL_WSI]
        for outcome, path in objects:
            try:
                store_object(archive.catalog, archive.store, path, actor)
            except UnavailableError:
                if not final:
                    raise
                outcome.failure, outcome.reason = PROCESSING_FAILURE, "storage unavailable; send again"
            except LaminaError as exc:
                outcome.failure, outcome.reason = PROCESSING_FAILURE, str(exc)
    for members in (members for members in series.values() if members):
        files = tuple(sorted(path for _, path in members))
        result = ingestor.ingest(Candidate(files[0], files), options=IngestOptions(actor=actor))
        if result.retryable and not final:
            raise UnavailableError(result.reason or "a storage service is unavailable")
        if not result.ok:
            for outcome, _ in members:
                outcome.failure, outcome.reason = PROCESSING_FAILURE, result.reason or "not stored"
    return outcomes


def _sequence(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": items}


def _response(base: str, outcomes: list[Outcome]) -> Response:
    stored, failed = [], []
    for item in outcomes:
        entry: dict[str, Any] = {
            "00081150": {"vr": "UI", "Value": [item.sop_class]} if item.sop_class else {"vr": "UI"},
            "00081155": {"vr": "UI", "Value": [item.sop_instance]} if item.sop_instance else {"vr": "UI"},
        }
        if item.failure is None:
            url = f"{base}/studies/{item.study}/series/{item.series}/instances/{item.sop_instance}"
            entry["00081190"] = {"vr": "UR", "Value": [url]}
            stored.append(entry)
        else:
            entry["00081197"] = {"vr": "US", "Value": [item.failure]}
            failed.append(entry)
    body: dict[str, Any] = {}
    studies = {item.study for item in outcomes if item.failure is None}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{studies.pop()}"]}
    if stored:
        body["00081199"] = _sequence(stored)
    if failed:
        body["00081198"] = _sequence(failed)
    status = 200 if not failed else (202 if stored else 409)
    return Response(orjson.dumps(body), status_code=status, media_type=DICOM_JSON)


async def store(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    limit = archive.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the upload of {declared} bytes is over the {limit} byte limit")
    boundary = boundary_of(request.headers.get("content-type", ""))
    study = request.path_params.get("study")
    folder = archive.settings.home / "incoming" / f"stow-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    try:
        parts = await spool_parts(request.stream(), boundary, folder, limit)
        queue = getattr(request.app.state, "jobs", None)
        if queue is None:  # embedded: the in-process runner
            outcomes = await run_in_threadpool(store_parts, archive, parts, study)
        else:
            outcomes = await queue.store(parts, study)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if outcomes is None:  # still running after stow_wait_s
        return Response(
            orjson.dumps({}),
            status_code=202,
            media_type=DICOM_JSON,
            headers={"Warning": '299 lamina "accepted; the instances are still being stored"'},
        )
    for outcome in outcomes:
        if outcome.failure is None:
            request.app.state.index.forget(outcome.sop_instance)
    return _response(dicomweb_base(request), outcomes)


def check_parts(parts: list[Part], study: str | None) -> tuple[list[Outcome], list[Part]]:
    """The outcome of each part that fails before storing, and the parts to store."""
    early, keep = [], []
    for part in parts:
        outcome, path = _read_part(part, study)
        if path is None:
            early.append(outcome)
        else:
            keep.append(part)
    return early, keep
