"""The frames route as plain ASGI, on the event loop: the request pathologists' viewers make
thousands of times a minute skips the router, the request objects and the thread pool (together
most of the cost of a frame).

It answers only what it can answer without blocking the loop: one frame, of an instance the
index holds (one due for its confirmation in the catalog is served meanwhile, the confirmation
running in the thread pool: ``InstanceIndex.revalidate_in_background``), asked for as stored
(``transfer-syntax=*`` or the stored syntax): from a local file, one ``pread`` of a few
kilobytes on a descriptor kept open; from S3, a copy from the blob cache's memory
(``BlobStore.cached_range``, which never blocks), else one ranged read awaited on the loop
(``BlobStore.read_range_async``: an asyncio request on S3, else the bounded thread pool),
without the router, its middleware and the thread hop, which cost two thirds of lamina's CPU per
frame on S3. Anything else (an instance not cached or unconfirmed for too long, several frames,
a transcoding, a short or failed read, a malformed request) goes on to the routed handler, which
runs in the thread pool and gives the same answer or the proper error. The authorization decision
is taken here too, from what is kept (``Access.allowed_now``: the series' owner known, the
principal allowed to read it, its opening recorded in the audit log); else the routed handler
decides (and records the opening).

A viewer's tile, a rendered frame asked for without parameters (``.../frames/N/rendered`` as
JPEG) of a stored JPEG baseline colour frame, is its stored bytes (``rendered.stored_as_rendered``):
it is answered here too, with the routed handler's headers. Both carry the frames' caching headers
(``frames.caching_headers``: private, a day, immutable, an ETag) and answer a matching
If-None-Match with 304 before anything is read.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.api.auth import signed_in
from lamina.api.dicomweb import multipart
from lamina.api.dicomweb.frames import caching_headers, can_decode, frames_etag, matches, negotiated_frames
from lamina.api.dicomweb.index import InstanceIndex
from lamina.api.dicomweb.rendered import (
    JPEG,
    STORED_JPEG,
    frame_etag,
    rendered_media_type,
    stored_as_rendered,
)
from lamina.archive.blobstore import BlobStore
from lamina.errors import LaminaError

_PREFIX = "/dicomweb/studies/"


class FramesFastPath:
    def __init__(self, app: ASGIApp, state_owner: object) -> None:
        self.app = app
        self.owner = state_owner  # the application whose state holds the index after start-up

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(_PREFIX):
            answer = self._answer(scope)
            if isinstance(answer, _Fetch):  # an S3 read, awaited (or in a thread: the store's choice)
                answer = answer.complete(await answer.read())
            if answer is not None:
                headers, body = answer
                status = 304 if not body else 200
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> tuple[list[tuple[bytes, bytes]], bytes] | _Fetch | None:
        parts = scope["path"].split("/")
        # ['', 'dicomweb', 'studies', study, 'series', series, 'instances', sop, 'frames', number]
        # and [..., 'rendered']: a viewer's tile, a stored JPEG frame sent as it is (no parameters)
        as_image = len(parts) == 11 and parts[10] == "rendered" and not scope.get("query_string")
        if len(parts) != 10 and not as_image:
            return None
        if parts[4] != "series" or parts[6] != "instances" or parts[8] != "frames":
            return None
        if not parts[9].isdigit():  # one frame only: a list goes to the thread pool
            return None
        state = getattr(self.owner, "state", None)
        index: InstanceIndex | None = getattr(state, "index", None)
        if index is None:
            return None
        found = index.cached(parts[3], parts[5], parts[7])
        if found is None:
            return None
        # the decision from what is kept (the owner, the opening recorded), else the routed check
        principal = signed_in(scope)
        if principal is None or not state.access.allowed_now(principal, parts[3], parts[5]):  # type: ignore[union-attr]
            return None
        accept = origin = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"origin":
                origin = value
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        row = found.row
        number = int(parts[9])
        if as_image:
            # what rendered.Renderer.frame_rendered sends as stored, and nothing else
            if not (stored_as_rendered(row) and rendered_media_type(accept) == JPEG):
                return None
            part_type = ""
            tag = frame_etag(row, number, STORED_JPEG)
        else:
            try:
                output = negotiated_frames(accept, row.transfer_syntax_uid, can_decode(row))
            except LaminaError:
                return None
            if output.target is not None:
                return None
            part_type = output.part_type
            tag = frames_etag(row, [number], part_type)
        if not 1 <= number <= row.number_of_frames:
            return None
        if matches(if_none_match, tag):  # the browser has it: 304, nothing read
            return _cached(tag, origin), b""
        offset, length = found.frame_span(number)
        if length > state.settings.max_frames_bytes:  # type: ignore[union-attr]
            return None
        index.revalidate_in_background(found)  # answered from the index meanwhile, if due
        try:
            fd = found.fd()
            if fd is not None:
                frame = os.pread(fd, length, offset)
            else:  # a network store: what its cache holds in memory, else a read in a thread
                store = state.archive.store  # type: ignore[union-attr]
                cached = store.cached_range(row.blob_sha256, offset, length)
                if cached is None:
                    return _Fetch(store, row.blob_sha256, offset, length, part_type, origin, tag)
                frame = cached
        except OSError:
            return None
        return _framed(frame, length, part_type, origin, tag)


def _cached(tag: str, origin: bytes | None) -> list[tuple[bytes, bytes]]:
    """The caching headers of a frame (``frames.caching_headers``: a rendered one's are the
    same), and CORS's."""
    headers = [(name.lower().encode(), value.encode()) for name, value in caching_headers(tag).items()]
    if origin is not None:
        headers += [(b"access-control-allow-origin", b"*"), (b"access-control-expose-headers", b"ETag")]
    return headers


def _framed(
    frame: bytes, length: int, part_type: str, origin: bytes | None, tag: str
) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
    if len(frame) != length:  # damaged or gone: the routed handler reports it
        return None
    if not part_type:  # a rendered frame: the stored JPEG itself
        headers = [(b"content-type", b"image/jpeg"), (b"content-length", b"%d" % len(frame))]
        return [*headers, *_cached(tag, origin)], frame
    head, content_type = _framing(part_type)
    body = b"".join((head, frame, _TAIL))
    # with its length, uvicorn sends the body as it is; without, chunked (one more copy of it)
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *_cached(tag, origin)]
    return headers, body


@dataclass(frozen=True)
class _Fetch:
    """A frame of an instance the index holds, to be read from a network store: one ranged read
    awaited (``read_range_async``), without the router (an error or a short read goes to the routed
    handler, which reads again and reports it)."""

    store: BlobStore
    sha256: str
    offset: int
    length: int
    part_type: str  # empty: a rendered frame (the stored JPEG, no multipart)
    origin: bytes | None
    tag: str

    async def read(self) -> bytes:
        try:
            return await self.store.read_range_async(self.sha256, self.offset, self.length)
        except LaminaError:
            return b""

    def complete(self, frame: bytes) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
        return _framed(frame, self.length, self.part_type, self.origin, self.tag)


#: One boundary per process: 96 random bits, which no frame will contain.
_BOUNDARY = multipart.boundary()
_TAIL = f"\r\n--{_BOUNDARY}--\r\n".encode()


@functools.lru_cache(maxsize=64)
def _framing(part_type: str) -> tuple[bytes, bytes]:
    """(the bytes before the part, the response Content-Type) for a part of ``part_type``."""
    head = f"--{_BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode()
    media_type = part_type.split(";", 1)[0]
    return head, multipart.content_type(media_type, _BOUNDARY).encode()
