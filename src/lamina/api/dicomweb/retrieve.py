"""WADO-RS Retrieve Study, Series and Instance (PS3.18 10.4.1.1.1): whole instances, streamed.

An instance goes out as its stored object, hashed on the way, or transcoded to Explicit VR
Little Endian: its data set re-encoded up to Pixel Data, then its frames decoded a window at a
time, so a slide level is never whole in memory. What the Accept header gives:

- ``transfer-syntax=*``: every instance as stored (what Orthanc's DICOMweb plug-in asks for);
- ``transfer-syntax=1.2.840.10008.1.2.1``: Explicit VR Little Endian, decoded here up to
  ``max_transcode_bytes`` of pixels per answer (406 beyond, naming the limit);
- ``transfer-syntax=`` another UID: the instances stored in it; 406 when one is not;
- no transfer syntax: Explicit VR Little Endian as PS3.18 8.7.3 asks, except for an instance
  whose pixel data is held only lossy-compressed, or too large to transcode within the limit,
  which PS3.18 lets the server send as stored.

Every function here blocks (catalog, store, decoding): the handlers are plain functions that
Starlette runs in the bounded thread pool, and the streamed body's iterator runs there too.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom import uid
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lamina.api.auth import study_instances
from lamina.api.dicomweb import available, multipart
from lamina.api.dicomweb.accept import LOSSY_SYNTAXES, MediaRange, parse_accept
from lamina.api.dicomweb.available import lost_object
from lamina.api.dicomweb.frames import EXPLICIT_LE, can_decode, decode_frame, decoded_frame_bytes
from lamina.api.dicomweb.index import InstanceIndex
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.errors import IntegrityError, NotAcceptableError, NotFoundError
from lamina.formats.dicom_modules import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

#: Frames are read from the store in windows of about this many bytes while transcoding.
_WINDOW = 4 << 20
#: The longest value a Pixel Data element of defined length can have (even, under 2**32 - 1).
_MAX_ELEMENT = 0xFFFFFFFE
_NATIVE_DATA_SETS = frozenset({EXPLICIT_LE, str(uid.ImplicitVRLittleEndian)})
#: Attributes of encapsulated Pixel Data only: dropped when the pixels go out native.
_ENCAPSULATED_ONLY = (0x7FE00001, 0x7FE00002, 0x7FE00003)


@dataclass(frozen=True)
class Planned:
    """One instance of an answer: sent as stored (``target`` None) or transcoded."""

    row: InstanceRow
    target: str | None

    @property
    def transfer_syntax(self) -> str:
        return self.target or self.row.transfer_syntax_uid


def pixel_bytes(row: InstanceRow) -> int:
    """The length of ``row``'s Pixel Data once decoded (even, as DICOM pads values)."""
    size = row.number_of_frames * decoded_frame_bytes(row)
    return size + size % 2


def transcodable(row: InstanceRow) -> bool:
    if row.number_of_frames == 0:  # no pixel data: only the data set is re-encoded
        return row.transfer_syntax_uid in _NATIVE_DATA_SETS
    return can_decode(row) and pixel_bytes(row) <= _MAX_ELEMENT


def _explicit_le(rows: list[InstanceRow], limit: int) -> list[Planned] | str:
    """Every instance in Explicit VR Little Endian, or the reason why not."""
    plans = [Planned(row, None if row.transfer_syntax_uid == EXPLICIT_LE else EXPLICIT_LE) for row in rows]
    for plan in plans:
        if plan.target is not None and not transcodable(plan.row):
            return (
                f"instance {plan.row.sop_instance_uid} is stored as {plan.row.transfer_syntax_uid}, which "
                "lamina cannot transcode to Explicit VR Little Endian; ask for transfer-syntax=* (as stored)"
            )
    total = sum(pixel_bytes(plan.row) for plan in plans if plan.target is not None)
    if total > limit:
        return (
            f"in Explicit VR Little Endian these instances come to {total} bytes of pixels, over the "
            f"{limit}-byte transcoding limit (LAMINA_MAX_TRANSCODE_BYTES); ask for them as stored "
            '(multipart/related; type="application/dicom"; transfer-syntax=*), or for their frames'
        )
    return plans


def _default(rows: list[InstanceRow], limit: int) -> list[Planned]:
    """No transfer syntax asked for: Explicit VR Little Endian (PS3.18 8.7.3), but instances held
    only lossy, or that the limit keeps from being transcoded, as stored."""
    wanted = [
        row
        for row in rows
        if row.transfer_syntax_uid != EXPLICIT_LE
        and row.transfer_syntax_uid not in LOSSY_SYNTAXES
        and transcodable(row)
    ]
    if sum(pixel_bytes(row) for row in wanted) > limit:
        wanted = []
    chosen = {row.sop_instance_uid for row in wanted}
    return [Planned(row, EXPLICIT_LE if row.sop_instance_uid in chosen else None) for row in rows]


def plan_answer(ranges: list[MediaRange], rows: list[InstanceRow], limit: int) -> list[Planned]:
    """How each instance goes out, from the client's media ranges in its order of preference."""
    reason = 'instances are sent as multipart/related; type="application/dicom"'
    for wanted in ranges:
        untyped = wanted.media_type == "multipart/related" and "type" not in wanted.params
        if wanted.quality <= 0 or not (
            untyped or wanted.media_type == "*/*" or wanted.part_type in ("application/dicom", "*/*")
        ):
            continue
        syntax = wanted.transfer_syntax
        if syntax == "*":
            return [Planned(row, None) for row in rows]
        if syntax is None:
            return _default(rows, limit)
        if syntax == EXPLICIT_LE:
            plans = _explicit_le(rows, limit)
            if isinstance(plans, list):
                return plans
            reason = plans
        elif all(row.transfer_syntax_uid == syntax for row in rows):
            return [Planned(row, None) for row in rows]
        else:
            stored = sorted({row.transfer_syntax_uid for row in rows})
            reason = (
                f"the instances are stored as {', '.join(stored)}, not {syntax}; ask for transfer-syntax=* "
                f"(as stored) or {EXPLICIT_LE}"
            )
    raise NotAcceptableError(reason)


def header_dataset(archive: Archive, row: InstanceRow) -> pydicom.Dataset:
    """The instance's data set up to its pixel data: from its file, or, on a store without files
    (S3), from the object's bytes before its first frame (the whole object when it has none)."""
    path = archive.store.local_path(row.blob_sha256)
    try:
        if path is not None:
            return pydicom.dcmread(path, stop_before_pixels=True)
        offsets = np.frombuffer(row.frame_offsets, "<u8")
        if len(offsets):
            data = archive.store.read_range(row.blob_sha256, 0, int(offsets[0]))
        else:
            data = b"".join(archive.store.open(row.blob_sha256))
    except (NotFoundError, FileNotFoundError):
        lost_object(
            archive,
            row,
            f"retrieve of {row.sop_instance_uid}",
            f"the stored object of instance {row.sop_instance_uid} is missing; its repair has been queued",
        )
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def native_header(archive: Archive, row: InstanceRow) -> bytes:
    """The Part-10 bytes of the instance in Explicit VR Little Endian up to its pixels' value:
    preamble, file meta, data set, and the header of a native Pixel Data element."""
    dataset = header_dataset(archive, row)
    for tag in _ENCAPSULATED_ONLY:
        if tag in dataset:
            del dataset[tag]
    if row.number_of_frames and row.samples_per_pixel == 3:
        # lamina's decoders give RGB, whatever the compressed stream's colour space was
        dataset.PhotometricInterpretation = "RGB"
        dataset.PlanarConfiguration = 0
    meta = dataset.file_meta
    meta.TransferSyntaxUID = uid.UID(EXPLICIT_LE)
    meta.ImplementationClassUID = uid.UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    if row.number_of_frames:
        # (7FE0,0010) OB, explicit VR: tag, VR, two reserved bytes, 32-bit length
        buffer.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, pixel_bytes(row)))
    return buffer.getvalue()


def _windows(row: InstanceRow) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
    """(start, length, frame spans relative to start) of consecutive frames: one ranged read each,
    of at most ~4 MiB stored and ~4 MiB once decoded (so a window of small JPEG tiles does not
    decode to 40 MB at once)."""
    offsets = np.frombuffer(row.frame_offsets, "<u8").tolist()
    lengths = np.frombuffer(row.frame_lengths, "<u4").tolist()
    per_window = max(1, _WINDOW // max(1, decoded_frame_bytes(row)))
    start, end = 0, 0
    spans: list[tuple[int, int]] = []
    for offset, length in zip(offsets, lengths, strict=True):
        if spans and (offset < end or offset + length - start > _WINDOW or len(spans) >= per_window):
            yield start, end - start, spans
            spans = []
        if not spans:
            start = offset
        spans.append((offset - start, length))
        end = offset + length
    if spans:
        yield start, end - start, spans


def transcoded(archive: Archive, row: InstanceRow, header: bytes) -> Iterator[bytes]:
    """The instance in Explicit VR Little Endian, a window of frames at a time."""
    yield header
    for start, length, spans in _windows(row):
        try:
            data = archive.store.read_range(row.blob_sha256, start, length)
        except (NotFoundError, FileNotFoundError):
            data = b""
        if len(data) != length:
            lost_object(
                archive,
                row,
                f"retrieve of {row.sop_instance_uid}",
                f"the stored object of instance {row.sop_instance_uid} is damaged",
            )
        yield b"".join(decode_frame(row, data[at : at + size]) for at, size in spans)
    if (row.number_of_frames * decoded_frame_bytes(row)) % 2:
        yield b"\x00"


def stored(archive: Archive, row: InstanceRow) -> Iterator[bytes]:
    """The object's bytes, hashed on the way: a mismatch at the end is reported damaged and
    the response is cut short (the client sees a broken transfer, never a silent bad copy)."""
    digest = hashlib.sha256()
    try:
        for chunk in archive.store.open(row.blob_sha256):
            digest.update(chunk)
            yield chunk
    except (NotFoundError, FileNotFoundError):
        lost_object(
            archive,
            row,
            f"retrieve of {row.sop_instance_uid}",
            f"the stored object of instance {row.sop_instance_uid} is missing",
        )
    if digest.hexdigest() != row.blob_sha256:
        archive.damaged(row.blob_sha256, f"retrieve of {row.sop_instance_uid}", "dicomweb")
        raise IntegrityError(f"the stored object of instance {row.sop_instance_uid} is damaged")


def retrieve(request: Request, rows: list[InstanceRow]) -> Response:
    archive: Archive = request.app.state.archive
    plans = plan_answer(
        parse_accept(request.headers.get("accept")), rows, request.app.state.settings.max_transcode_bytes
    )
    # what can fail does so before anything is sent: a missing object, an unreadable header
    headers: dict[str, bytes] = {}
    for plan in plans:
        if plan.target is not None:
            headers[plan.row.sop_instance_uid] = native_header(archive, plan.row)
        elif not archive.store.exists(plan.row.blob_sha256):
            lost_object(
                archive,
                plan.row,
                f"retrieve of {plan.row.sop_instance_uid}",
                f"the stored object of instance {plan.row.sop_instance_uid} is missing; "
                "its repair has been queued",
            )
    boundary = multipart.boundary()
    parts = (
        (
            f"application/dicom; transfer-syntax={plan.transfer_syntax}",
            stored(archive, plan.row)
            if plan.target is None
            else transcoded(archive, plan.row, headers[plan.row.sop_instance_uid]),
        )
        for plan in plans
    )
    return StreamingResponse(
        multipart.stream(parts, boundary),
        headers={"Content-Type": multipart.content_type("application/dicom", boundary)},
    )


def retrieve_study(request: Request) -> Response:
    """Retrieve Study: its live slides; 410 when they all expired."""
    rows = study_instances(request)
    if not rows:
        available.nothing_in_study(request)
    return retrieve(request, rows)


def retrieve_series(request: Request) -> Response:
    """Retrieve Series: 410 when its slide expired."""
    available.opening(request)
    archive: Archive = request.app.state.archive
    params = request.path_params
    rows = archive.catalog.instances_in(params["study"], params["series"])
    if not rows:
        available.nothing_in_series(request)
    return retrieve(request, rows)


def retrieve_instance(request: Request) -> Response:
    index: InstanceIndex = request.app.state.index
    params = request.path_params
    return retrieve(request, [index.get(params["study"], params["series"], params["instance"]).row])
