"""WADO-RS (PS3.18 10.4): metadata and bulk data; frames are in ``frames.py``, whole instances
in ``retrieve.py``.

Metadata is the DICOM JSON stored at ingest, with its bulk data URIs made absolute. Every
handler here is a plain function: Starlette runs it in the bounded thread pool, because each one
queries the catalog (and bulk data reads the store).
"""

from __future__ import annotations

import gzip
import re
from typing import Any

import pydicom
from starlette.requests import Request
from starlette.responses import Response

from lamina.api.auth import study_instances
from lamina.api.dicomweb import available, frames, multipart
from lamina.api.dicomweb.frames import (
    EXPLICIT_LE,
    JPEG_BASELINE,
    MAX_DECODED_BYTES,
    parse_frame_numbers,
    read_frames,
)
from lamina.api.dicomweb.index import InstanceIndex
from lamina.api.dicomweb.retrieve import header_dataset
from lamina.api.urls import dicomweb_base
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.errors import NotFoundError
from lamina.mapping import dicom_json

__all__ = [
    "DICOM_JSON",
    "EXPLICIT_LE",
    "JPEG_BASELINE",
    "MAX_DECODED_BYTES",
    "dicomweb_base",
    "instance_url",
    "parse_frame_numbers",
    "read_frames",
]

DICOM_JSON = "application/dicom+json"


def instance_url(base: str, row: InstanceRow) -> str:
    series = f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
    return f"{series}/instances/{row.sop_instance_uid}"


#: Answers shorter than this go as they are (one packet either way).
GZIP_FROM_BYTES = 1400
#: gzip's level for metadata: 5 is within a few per cent of 9's size at a third of its time.
GZIP_LEVEL = 5
_GZIP = re.compile(r"(?:^|,)\s*gzip\s*(?:;\s*q\s*=\s*(?!0(?:\.0*)?\s*(?:,|$))[0-9.]+\s*)?(?:,|$)", re.I)


def accepts_gzip(request: Request) -> bool:
    """Whether Accept-Encoding lists gzip (and not with q=0)."""
    return bool(_GZIP.search(request.headers.get("accept-encoding", "")))


def json_answer(request: Request, body: bytes, media_type: str = DICOM_JSON) -> Response:
    """A JSON answer, gzip-compressed when the client takes it and it is worth it: a slide's
    metadata (tens of kilobytes of DICOM JSON) shrinks about tenfold, which a thin link feels."""
    headers = {"Vary": "Accept-Encoding"}
    if len(body) >= GZIP_FROM_BYTES and accepts_gzip(request):
        body = gzip.compress(body, GZIP_LEVEL, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=media_type, headers=headers)


def _metadata_response(request: Request, rows: list[InstanceRow]) -> Response:
    base = dicomweb_base(request)
    items = [dicom_json.absolute(dicom_json.unpack(row.metadata), instance_url(base, row)) for row in rows]
    return json_answer(request, b"[" + b",".join(items) + b"]")


def study_metadata(request: Request) -> Response:
    """Retrieve Study Metadata (410 when the study's slides all expired)."""
    rows = study_instances(request)
    if not rows:
        available.nothing_in_study(request, "no such study in this archive")
    return _metadata_response(request, rows)


def series_metadata(request: Request) -> Response:
    """Retrieve Series Metadata: what a viewer asks for when it opens a slide (its opening is
    recorded in the audit log by the route's rule, :meth:`lamina.governance.access.Access.read`):
    410 when the slide expired."""
    available.opening(request)
    archive: Archive = request.app.state.archive
    params = request.path_params
    rows = archive.catalog.instances_in(params["study"], params["series"])
    if not rows:
        available.nothing_in_series(request, "no such study or series in this archive")
    return _metadata_response(request, rows)


def instance_metadata(request: Request) -> Response:
    """Retrieve Instance Metadata."""
    index: InstanceIndex = request.app.state.index
    params = request.path_params
    found = index.get(params["study"], params["series"], params["instance"])
    return _metadata_response(request, [found.row])


def _element_at(dataset: pydicom.Dataset, path: str) -> bytes:
    """The value of the element at a bulk data path (``00480105/0/00282000``) as bytes."""
    node: Any = dataset
    pieces = path.split("/")
    try:
        for index in range(0, len(pieces) - 1, 2):
            node = node[int(pieces[index], 16)].value[int(pieces[index + 1])]
        element = node[int(pieces[-1], 16)]
    except (KeyError, IndexError, ValueError) as exc:
        raise NotFoundError(f"no bulk data at {path!r} in this instance") from exc
    value = element.value
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise NotFoundError(f"the element at {path!r} is not bulk data")


def bulkdata(request: Request) -> Response:
    """Retrieve Bulkdata by the URIs the metadata gives: Pixel Data as its frames, with the
    frames' media types and transfer syntaxes (``frames.py``), else the element's value."""
    index: InstanceIndex = request.app.state.index
    params = request.path_params
    found = index.get(params["study"], params["series"], params["instance"])
    path = params["path"].strip("/").upper()
    archive: Archive = request.app.state.archive
    if path == "7FE00010":
        numbers = list(range(1, found.row.number_of_frames + 1))
        limit = request.app.state.settings.max_frames_bytes
        return frames.answer(index, found, numbers, request.headers.get("accept"), archive, limit, "bulkdata")
    value = _element_at(header_dataset(archive, found.row), path)
    boundary = multipart.boundary()
    return Response(
        multipart.body([("application/octet-stream", value)], boundary),
        headers={"Content-Type": multipart.content_type("application/octet-stream", boundary)},
    )
