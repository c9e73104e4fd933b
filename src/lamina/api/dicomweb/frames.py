"""WADO-RS frames (PS3.18 10.4.1.1.2): one ranged read per frame, from the frame index.

A frame is sent as stored (no DICOM parsing, no decoding) unless the client asks for another
transfer syntax. What the Accept header gives (PS3.18 8.7.3.3, Tables 8.7.3-4 and 8.7.3-5):

- ``transfer-syntax=*`` (any media type): the stored bytes, each part labelled with the media
  type of its transfer syntax (``image/jpeg``, ``image/jp2``, ``image/jls``, ``image/jphc``, or
  ``application/octet-stream`` for uncompressed frames). This is what viewers ask for.
- no transfer syntax (no Accept header, ``*/*``, ``multipart/related; type="application/octet-stream"``):
  Explicit VR Little Endian, decoded here; a lossy frame too large to decode is sent as stored,
  which PS3.18 allows when the server holds only lossy data.
- ``application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1``: decoded.
- ``image/jpeg``, ``image/jp2``, ``image/jls``, ``image/jphc`` with no transfer syntax, or with
  the stored one: the stored bytes when they are of that media type.
- ``image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50``: the stored bytes when they are JPEG
  baseline, else re-encoded (lossy, so only when the client names that syntax).

Anything else is 406, naming what can be had.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass

import numpy as np
from pydicom import uid
from starlette.requests import Request
from starlette.responses import Response

from lamina.api.dicomweb import multipart
from lamina.api.dicomweb.accept import (
    LOSSY_SYNTAXES,
    MediaRange,
    bulk_media_type,
    bulk_part_type,
    parse_accept,
)
from lamina.api.dicomweb.available import lost_object
from lamina.api.dicomweb.index import IndexedInstance, InstanceIndex
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.errors import GoneError, IntegrityError, NotAcceptableError, NotFoundError, RequestError
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax

EXPLICIT_LE = str(uid.ExplicitVRLittleEndian)
JPEG_BASELINE = str(uid.JPEGBaseline8Bit)
#: Decoded size above which a frame is not decoded (no decompression bombs).
MAX_DECODED_BYTES = 64 << 20
#: The most frame numbers one request may list (its answer's bytes are bounded by a setting).
MAX_FRAMES_PER_REQUEST = 4096
#: Frames of one SOP instance never change: kept by the browser (never a shared cache: sign-in)
#: for a day without asking again, then revalidated with If-None-Match.
CACHE_FRAMES = "private, max-age=86400, immutable"
#: Transfer syntaxes whose frames lamina can decode (``codec.decode``) or take as they are.
_NATIVE = frozenset({EXPLICIT_LE, str(uid.ImplicitVRLittleEndian)})
_DECODED = frozenset(str(syntax) for syntax in TransferSyntax if syntax.encapsulated)


@dataclass(frozen=True)
class FrameOutput:
    """What a frames answer carries: each part's Content-Type, and the transfer syntax to
    transcode to (None: the stored bytes)."""

    part_type: str
    target: str | None

    @property
    def media_type(self) -> str:
        return self.part_type.split(";", 1)[0]


def decoded_frame_bytes(row: InstanceRow) -> int:
    """The size of one frame of ``row`` as uncompressed pixels (8 bits a sample)."""
    return row.rows * row.columns * row.samples_per_pixel


def can_decode(row: InstanceRow) -> bool:
    """Whether frames of ``row`` can be given as Explicit VR Little Endian here."""
    syntax = row.transfer_syntax_uid
    return syntax in _NATIVE or (syntax in _DECODED and decoded_frame_bytes(row) <= MAX_DECODED_BYTES)


def choose_frame_output(ranges: list[MediaRange], stored: str, decodable: bool) -> FrameOutput:
    """The first of the client's media ranges (in its order of preference) that can be produced
    from frames stored as ``stored``; 406 when none can."""
    as_stored = FrameOutput(bulk_part_type(stored), None)
    native = FrameOutput(bulk_part_type(EXPLICIT_LE), None if stored == EXPLICIT_LE else EXPLICIT_LE)
    for wanted in ranges:
        if wanted.quality <= 0:
            continue
        part, syntax = wanted.part_type, wanted.transfer_syntax
        if wanted.media_type == "*/*" or part in ("*/*", "application/octet-stream"):
            if syntax == "*" or (syntax == stored and syntax is not None):
                return as_stored
            if syntax is None or syntax == EXPLICIT_LE:
                if decodable:
                    return native
                if syntax is None and stored in LOSSY_SYNTAXES:
                    return as_stored  # PS3.18 8.7.3.3: the server holds only lossy data
                continue
            if syntax == JPEG_BASELINE and decodable:
                return FrameOutput(bulk_part_type(JPEG_BASELINE), JPEG_BASELINE)
        elif part == bulk_media_type(stored) and syntax in (None, "*", stored):
            return as_stored
        elif part == "image/jpeg" and syntax == JPEG_BASELINE and decodable:
            return FrameOutput(bulk_part_type(JPEG_BASELINE), JPEG_BASELINE)
    raise NotAcceptableError(
        f"frames of this instance are stored as {stored} ({bulk_media_type(stored)}); ask for "
        'them as stored (multipart/related; type="application/octet-stream"; transfer-syntax=*), '
        f'decoded (type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}) or as JPEG '
        f'baseline (type="image/jpeg"; transfer-syntax={JPEG_BASELINE})'
    )


@functools.lru_cache(maxsize=256)
def negotiated_frames(accept: str | None, stored: str, decodable: bool) -> FrameOutput:
    """Clients send the same few Accept headers over and over: parse each once."""
    return choose_frame_output(parse_accept(accept), stored, decodable)


def frame_output(accept: str | None, row: InstanceRow) -> FrameOutput:
    return negotiated_frames(accept, row.transfer_syntax_uid, can_decode(row))


def parse_frame_numbers(text: str, count: int) -> list[int]:
    """``1,3,5`` -> [1, 3, 5]; 400 when malformed, 404 when out of range."""
    try:
        numbers = [int(item) for item in text.split(",") if item.strip()]
    except ValueError as exc:
        raise RequestError("frames", f"{text!r} is not a comma-separated list of frame numbers") from exc
    if not numbers:
        raise RequestError("frames", "give at least one frame number")
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise RequestError("frames", f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    bad = [number for number in numbers if not 1 <= number <= count]
    if bad:
        raise NotFoundError(f"frame {bad[0]} does not exist: the instance has frames 1 to {count}")
    return numbers


def answer_bytes(found: IndexedInstance, numbers: list[int], target: str | None) -> int:
    """The bytes an answer of these frames reads, or decodes when it transcodes: what the
    answer-size limit is checked against before anything is read."""
    stored = sum(found.frame_span(number)[1] for number in numbers)
    if target is None:
        return stored
    return max(stored, len(numbers) * decoded_frame_bytes(found.row))


def check_answer_size(
    found: IndexedInstance, numbers: list[int], target: str | None, limit: int, parameter: str = "frames"
) -> None:
    """400 when the answer would be over ``limit`` bytes (a frame repeated 4,096 times is one
    short URL and a 50 MB answer)."""
    size = answer_bytes(found, numbers, target)
    if size > limit:
        how = "decoded" if target is not None else "as stored"
        raise RequestError(
            parameter,
            f"the {len(numbers)} frames asked for come to {size} bytes {how}, over the {limit}-byte "
            "limit of one answer (LAMINA_MAX_FRAMES_BYTES); ask for fewer frames per request",
        )


def read_frames(found: IndexedInstance, numbers: list[int], archive: Archive) -> list[bytes]:
    """The frames' stored bytes; an object that is gone or shorter than its frame index is
    reported damaged (audited, repair queued) and the request fails, unless its slide expired
    (410) or the instance was deleted (404) since it was read (``available.lost_object``).

    Blocking: called in the thread pool, never on the event loop. Reads go through
    ``archive.store.read_range`` unless the object is a local file, so a cache in the store layer
    serves them.
    """
    sha256 = found.row.blob_sha256
    spans = [found.frame_span(number) for number in numbers]
    try:
        fd = found.fd()  # FileNotFoundError: the object went since the instance was cached
        if fd is not None:
            data = [os.pread(fd, length, offset) for offset, length in spans]
        else:
            data = [archive.store.read_range(sha256, offset, length) for offset, length in spans]
    except (NotFoundError, FileNotFoundError):
        data = []
    short = any(len(got) != length for got, (_, length) in zip(data, spans, strict=False))
    if len(data) != len(spans) or short:  # expired (410), deleted (404) or damaged
        lost_object(
            archive,
            found.row,
            f"frames of {found.row.sop_instance_uid}",
            f"the stored object of instance {found.row.sop_instance_uid} is damaged; "
            "its repair has been queued",
        )
    return data


def decode_frame(row: InstanceRow, data: bytes) -> bytes:
    """One stored frame as Explicit VR Little Endian pixel bytes (RGB or grey, 8 bits)."""
    syntax = row.transfer_syntax_uid
    if syntax in _NATIVE:
        return data
    pixels = codec.decode(data, FrameEncoding(TransferSyntax(syntax), row.photometric_interpretation))
    expected = (row.rows, row.columns, row.samples_per_pixel)
    if pixels.shape != expected:
        raise IntegrityError(
            f"a frame of instance {row.sop_instance_uid} decodes to {pixels.shape[1]} x {pixels.shape[0]} "
            f"pixels with {pixels.shape[2]} samples, not the {row.columns} x {row.rows} x "
            f"{row.samples_per_pixel} its attributes say"
        )
    return np.ascontiguousarray(pixels).tobytes()


def transcode(row: InstanceRow, data: bytes, target: str) -> bytes:
    """One stored frame in ``target`` (Explicit VR Little Endian or JPEG baseline)."""
    if target == EXPLICIT_LE:
        return decode_frame(row, data)
    pixels = np.frombuffer(decode_frame(row, data), np.uint8).reshape(row.rows, row.columns, -1)
    return codec.encode(pixels, codec.lossy_encoding(row.samples_per_pixel))


def frames_etag(row: InstanceRow, numbers: list[int], part_type: str) -> str:
    """The ETag of a frames answer: weak, since the multipart boundary differs from answer to
    answer while the frames (the stored object's, by content, in ``part_type``) are the same."""
    key = f"{row.sop_instance_uid}|{row.blob_sha256}|{','.join(map(str, numbers))}|{part_type}"
    return 'W/"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """If-None-Match's weak comparison (RFC 9110 13.1.2): ``*`` or the tag, W/ or not."""
    if not if_none_match:
        return False
    wanted = tag.removeprefix("W/")
    return any(
        item.strip() == "*" or item.strip().removeprefix("W/") == wanted for item in if_none_match.split(",")
    )


def caching_headers(tag: str) -> dict[str, str]:
    return {"ETag": tag, "Cache-Control": CACHE_FRAMES, "Vary": "Accept"}


def frames_body(parts: list[bytes], output: FrameOutput, tag: str | None = None) -> Response:
    boundary = multipart.boundary()
    headers = {"Content-Type": multipart.content_type(output.media_type, boundary)}
    if tag is not None:
        headers.update(caching_headers(tag))
    return Response(multipart.body(((output.part_type, part) for part in parts), boundary), headers=headers)


def answer(
    index: InstanceIndex,
    found: IndexedInstance,
    numbers: list[int],
    accept: str | None,
    archive: Archive,
    limit: int,
    parameter: str = "frames",
    if_none_match: str | None = None,
) -> Response:
    """The frames ``numbers`` of ``found`` as the Accept header asks, in at most ``limit`` bytes;
    304 when ``if_none_match`` names them."""
    output = frame_output(accept, found.row)
    tag = frames_etag(found.row, numbers, output.part_type)
    if matches(if_none_match, tag):
        return Response(status_code=304, headers=caching_headers(tag))
    check_answer_size(found, numbers, output.target, limit, parameter)
    try:
        data = read_frames(found, numbers, archive)
    except (IntegrityError, NotFoundError, GoneError):
        index.forget(found.row.sop_instance_uid)  # reopened once repaired; gone once deleted or expired
        raise
    if output.target is not None:
        data = [transcode(found.row, frame, output.target) for frame in data]
    return frames_body(data, output, tag)


def frames(request: Request) -> Response:
    """Retrieve Frames. A plain function: Starlette runs it in the bounded thread pool, since it
    may query the catalog (an instance not cached), read from S3 or decode."""
    index: InstanceIndex = request.app.state.index
    params = request.path_params
    found = index.get(params["study"], params["series"], params["instance"])
    numbers = parse_frame_numbers(params["frames"], found.row.number_of_frames)
    state = request.app.state
    return answer(
        index,
        found,
        numbers,
        request.headers.get("accept"),
        state.archive,
        state.settings.max_frames_bytes,
        if_none_match=request.headers.get("if-none-match"),
    )
