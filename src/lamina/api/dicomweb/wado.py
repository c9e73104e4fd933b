"""WADO-RS (PS3.18 10.4): metadata, frames, instances.

A frame is served from the frame index by one ranged read of the stored object: no DICOM
parsing and no decoding unless the client asks for another transfer syntax. Metadata is the
DICOM JSON stored at ingest, with its bulk data URIs made absolute.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydicom
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lamina.api.dicomweb import multipart
from lamina.api.dicomweb.accept import MediaRange, parse_accept
from lamina.api.dicomweb.index import IndexedInstance, InstanceIndex
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.errors import (
    IntegrityError,
    NotAcceptableError,
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
)
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax
from lamina.mapping import dicom_json

DICOM_JSON = "application/dicom+json"
EXPLICIT_LE = TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN.value
JPEG_BASELINE = TransferSyntax.JPEG_BASELINE_8BIT.value
_J2K = {TransferSyntax.JPEG_2000.value, TransferSyntax.JPEG_2000_LOSSLESS.value}
#: Decoded size above which a frame is not transcoded (no decompression bombs).
MAX_DECODED_BYTES = 64 << 20
_MAX_FRAMES_PER_REQUEST = 4096
_CHUNK = 1 << 20


def dicomweb_base(request: Request) -> str:
    """The absolute URL of the DICOMweb root: ``LAMINA_PUBLIC_URL`` when set (behind a reverse
    proxy), else as the client addressed this server. Some clients (dicomweb-client) send a Host
    header without the port: the port the connection came in on is added back."""
    archive: Archive = request.app.state.archive
    public = archive.settings.public_url
    if public:
        return public.rstrip("/") + "/dicomweb"
    root = str(request.scope.get("root_path", "")).rstrip("/")
    if not root.endswith("/dicomweb"):
        root += "/dicomweb"
    netloc = request.url.netloc
    server = request.scope.get("server")
    default = {"http": 80, "https": 443}.get(request.url.scheme)
    if ":" not in netloc.rsplit("]", 1)[-1] and server and server[1] != default:
        netloc = f"{netloc}:{server[1]}"
    return f"{request.url.scheme}://{netloc}{root}"


def instance_url(base: str, row: InstanceRow) -> str:
    series = f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
    return f"{series}/instances/{row.sop_instance_uid}"


def _metadata_response(request: Request, rows: list[InstanceRow]) -> Response:
    if not rows:
        raise NotFoundError("no such study or series in this archive")
    base = dicomweb_base(request)
    items = [dicom_json.absolute(dicom_json.unpack(row.metadata), instance_url(base, row)) for row in rows]
    return Response(b"[" + b",".join(items) + b"]", media_type=DICOM_JSON)


async def study_metadata(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    return _metadata_response(request, archive.catalog.instances_in(request.path_params["study"]))


async def series_metadata(request: Request) -> Response:
    """A series' metadata: what a viewer asks for when it opens a slide, so the opening is audited
    (not every tile)."""
    archive: Archive = request.app.state.archive
    params = request.path_params
    rows = archive.catalog.instances_in(params["study"], params["series"])
    answer = _metadata_response(request, rows)
    client = request.client.host if request.client else "unknown"
    slide = next((row.slide_id for row in rows if row.slide_id), None)
    entity = f"slide/{slide}" if slide else f"series/{params['series']}"
    await run_in_threadpool(_audit_read, archive, entity, client)
    return answer


def _audit_read(archive: Archive, entity: str, client: str) -> None:
    with archive.catalog.begin() as conn:
        audit.append(conn, "dicomweb", "read", entity, {"client": client})


async def instance_metadata(request: Request) -> Response:
    index: InstanceIndex = request.app.state.index
    params = request.path_params
    found = index.get(params["study"], params["series"], params["instance"])
    return _metadata_response(request, [found.row])


def parse_frame_numbers(text: str, count: int) -> list[int]:
    """``1,3,5`` -> [1, 3, 5]; 400 when malformed, 404 when out of range."""
    try:
        numbers = [int(item) for item in text.split(",") if item.strip()]
    except ValueError as exc:
        raise RequestError("frames", f"{text!r} is not a comma-separated list of frame numbers") from exc
    if not numbers:
        raise RequestError("frames", "give at least one frame number")
    if len(numbers) > _MAX_FRAMES_PER_REQUEST:
        raise RequestError("frames", f"at most {_MAX_FRAMES_PER_REQUEST} frames per request")
    bad = [number for number in numbers if not 1 <= number <= count]
    if bad:
        raise NotFoundError(f"frame {bad[0]} does not exist: the instance has frames 1 to {count}")
    return numbers


def choose_frame_output(ranges: list[MediaRange], stored: str) -> tuple[str, str | None]:
    """(part Content-Type, transfer syntax to transcode to, or None to send the stored bytes)."""
    for wanted in ranges:
        part, syntax = wanted.part_type, wanted.transfer_syntax
        if part in ("*/*", "multipart/related") or wanted.media_type == "*/*":
            return f"application/octet-stream; transfer-syntax={stored}", None
        if part == "application/octet-stream":
            if syntax in ("*", stored):
                return f"application/octet-stream; transfer-syntax={stored}", None
            if syntax in (None, EXPLICIT_LE):
                return f"application/octet-stream; transfer-syntax={EXPLICIT_LE}", EXPLICIT_LE
            if syntax == JPEG_BASELINE:
                return f"application/octet-stream; transfer-syntax={JPEG_BASELINE}", JPEG_BASELINE
        elif part == "image/jpeg" and syntax in (None, "*", JPEG_BASELINE):
            target = None if stored == JPEG_BASELINE else JPEG_BASELINE
            return f"image/jpeg; transfer-syntax={JPEG_BASELINE}", target
        elif part in ("image/jp2", "image/jpx") and stored in _J2K and syntax in (None, "*", stored):
            return f"{part}; transfer-syntax={stored}", None
    raise NotAcceptableError(
        f"frames of this instance are stored as {stored}; ask for it (transfer-syntax=*), "
        f"for {EXPLICIT_LE} or for {JPEG_BASELINE}"
    )


def _transcode(found: IndexedInstance, data: bytes, target: str) -> bytes:
    row = found.row
    decoded = row.rows * row.columns * row.samples_per_pixel
    if decoded > MAX_DECODED_BYTES:
        raise PayloadTooLargeError(
            f"a frame of {decoded} bytes decoded is over the {MAX_DECODED_BYTES} limit"
        )
    pixels = codec.decode(
        data, FrameEncoding(TransferSyntax(row.transfer_syntax_uid), row.photometric_interpretation)
    )
    if target == EXPLICIT_LE:
        return np.ascontiguousarray(pixels).tobytes()
    return codec.encode(pixels, codec.lossy_encoding(row.samples_per_pixel))


def read_frames(found: IndexedInstance, numbers: list[int], archive: Archive) -> list[bytes]:
    """The frames' stored bytes; an object that is gone or shorter than its frame index is
    reported damaged (audited, repair queued) and the request fails."""
    sha256 = found.row.blob_sha256
    spans = [found.frame_span(number) for number in numbers]
    fd = found.fd()
    try:
        if fd is not None:
            data = [os.pread(fd, length, offset) for offset, length in spans]
        else:
            data = [archive.store.read_range(sha256, offset, length) for offset, length in spans]
    except (NotFoundError, FileNotFoundError):
        data = []
    short = any(len(got) != length for got, (_, length) in zip(data, spans, strict=False))
    if len(data) != len(spans) or short:
        if archive.catalog.instance(found.row.sop_instance_uid) is None:  # deleted by another process
            raise NotFoundError(f"instance {found.row.sop_instance_uid} is not in this archive")
        archive.damaged(sha256, f"frames of {found.row.sop_instance_uid}", "dicomweb")
        raise IntegrityError(
            f"the stored object of instance {found.row.sop_instance_uid} is damaged; "
            "its repair has been queued"
        )
    return data


@functools.lru_cache(maxsize=256)
def negotiated_frames(accept: str | None, stored: str) -> tuple[str, str | None]:
    """Clients send the same few Accept headers over and over: parse each once."""
    return choose_frame_output(parse_accept(accept), stored)


async def frames(request: Request) -> Response:
    index: InstanceIndex = request.app.state.index
    params = request.path_params
    found = index.get(params["study"], params["series"], params["instance"])
    numbers = parse_frame_numbers(params["frames"], found.row.number_of_frames)
    part_type, target = negotiated_frames(request.headers.get("accept"), found.transfer_syntax_uid)
    archive = request.app.state.archive

    def read() -> list[bytes]:
        data = read_frames(found, numbers, archive)
        return data if target is None else [_transcode(found, frame, target) for frame in data]

    try:
        # a local pread of stored bytes stays on the loop; a network read or a transcode does not
        local = found.path is not None and target is None
        data = read() if local else await run_in_threadpool(read)
    except (IntegrityError, NotFoundError):
        index.forget(found.row.sop_instance_uid)  # reopened once repaired; gone once deleted
        raise
    boundary = multipart.boundary()
    media_type = part_type.split(";", 1)[0]
    return Response(
        multipart.body(((part_type, frame) for frame in data), boundary),
        headers={"Content-Type": multipart.content_type(media_type, boundary)},
    )


def _file_chunks(archive: Archive, row: InstanceRow) -> Iterator[bytes]:
    """The object's bytes, hashed on the way: a mismatch at the end is reported damaged and
    the response is cut short (the client sees a broken transfer, never a silent bad copy)."""
    digest = hashlib.sha256()
    try:
        for chunk in archive.store.open(row.blob_sha256):
            digest.update(chunk)
            yield chunk
    except (NotFoundError, FileNotFoundError):
        archive.damaged(row.blob_sha256, f"retrieve of {row.sop_instance_uid}", "dicomweb")
        raise IntegrityError(f"the stored object of instance {row.sop_instance_uid} is missing") from None
    if digest.hexdigest() != row.blob_sha256:
        archive.damaged(row.blob_sha256, f"retrieve of {row.sop_instance_uid}", "dicomweb")
        raise IntegrityError(f"the stored object of instance {row.sop_instance_uid} is damaged")


def _retrieve(request: Request, rows: list[InstanceRow]) -> Response:
    if not rows:
        raise NotFoundError("no such study, series or instance in this archive")
    for wanted in parse_accept(request.headers.get("accept")):
        if wanted.media_type == "*/*" or wanted.part_type in ("application/dicom", "*/*"):
            if wanted.transfer_syntax not in (None, "*") and any(
                row.transfer_syntax_uid != wanted.transfer_syntax for row in rows
            ):
                continue
            break
    else:
        raise NotAcceptableError('instances are sent as multipart/related; type="application/dicom"')
    archive: Archive = request.app.state.archive
    for row in rows:  # a missing object fails the request before anything is sent
        if not archive.store.exists(row.blob_sha256):
            archive.damaged(row.blob_sha256, f"retrieve of {row.sop_instance_uid}", "dicomweb")
            raise IntegrityError(
                f"the stored object of instance {row.sop_instance_uid} is missing; its repair has been queued"
            )
    boundary = multipart.boundary()
    parts = (
        (f"application/dicom; transfer-syntax={row.transfer_syntax_uid}", _file_chunks(archive, row))
        for row in rows
    )
    return StreamingResponse(
        multipart.stream(parts, boundary),
        headers={"Content-Type": multipart.content_type("application/dicom", boundary)},
    )


async def retrieve_study(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    return _retrieve(request, archive.catalog.instances_in(request.path_params["study"]))


async def retrieve_series(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    params = request.path_params
    return _retrieve(request, archive.catalog.instances_in(params["study"], params["series"]))


async def retrieve_instance(request: Request) -> Response:
    index: InstanceIndex = request.app.state.index
    params = request.path_params
    return _retrieve(request, [index.get(params["study"], params["series"], params["instance"]).row])


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


def _header(found: IndexedInstance, archive: Archive) -> pydicom.Dataset:
    """The instance's data set up to its pixel data: from its file, or, on a store without files
    (S3), from the object's bytes before its first frame (the whole object when it has none)."""
    if found.path is not None:
        return pydicom.dcmread(found.path, stop_before_pixels=True)
    sha256 = found.row.blob_sha256
    if len(found.offsets):
        data = archive.store.read_range(sha256, 0, int(found.offsets[0]))
    else:
        data = b"".join(archive.store.open(sha256))
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


async def bulkdata(request: Request) -> Response:
    """Bulk data by the URIs the metadata gives: Pixel Data as the frames, else the element's value."""
    index: InstanceIndex = request.app.state.index
    params = request.path_params
    found = index.get(params["study"], params["series"], params["instance"])
    path = params["path"].strip("/").upper()
    archive: Archive = request.app.state.archive
    if path == "7FE00010":
        numbers = list(range(1, found.row.number_of_frames + 1))
        if len(numbers) > _MAX_FRAMES_PER_REQUEST:
            raise RequestError("bulkdata", "the pixel data is too large for one answer; ask for frames")
        data = read_frames(found, numbers, archive)
        part = f"application/octet-stream; transfer-syntax={found.transfer_syntax_uid}"
    else:
        dataset = await run_in_threadpool(_header, found, archive)
        data = [_element_at(dataset, path)]
        part = "application/octet-stream"
    boundary = multipart.boundary()
    return Response(
        multipart.body(((part, item) for item in data), boundary),
        headers={"Content-Type": multipart.content_type("application/octet-stream", boundary)},
    )
