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
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.api.auth import signed_in
from lamina.api.dicomweb import multipart
from lamina.api.dicomweb.frames import can_decode, negotiated_frames
from lamina.api.dicomweb.index import InstanceIndex
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
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> tuple[list[tuple[bytes, bytes]], bytes] | _Fetch | None:
        parts = scope["path"].split("/")
        # ['', 'dicomweb', 'studies', study, 'series', series, 'instances', sop, 'frames', number]
        if len(parts) != 10 or parts[4] != "series" or parts[6] != "instances" or parts[8] != "frames":
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
        accept = origin = None
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"origin":
                origin = value
        row = found.row
        number = int(parts[9])
        try:
            output = negotiated_frames(accept, row.transfer_syntax_uid, can_decode(row))
        except LaminaError:
            return None
        if output.target is not None or not 1 <= number <= row.number_of_frames:
            return None
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
                    return _Fetch(store, row.blob_sha256, offset, length, output.part_type, origin)
                frame = cached
        except OSError:
            return None
        return _framed(frame, length, output.part_type, origin)


def _framed(
    frame: bytes, length: int, part_type: str, origin: bytes | None
) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
    if len(frame) != length:  # damaged or gone: the routed handler reports it
        return None
    head, content_type = _framing(part_type)
    body = b"".join((head, frame, _TAIL))
    # with its length, uvicorn sends the body as it is; without, chunked (one more copy of it)
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if origin is not None:
        headers.append((b"access-control-allow-origin", b"*"))
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
    part_type: str
    origin: bytes | None

    async def read(self) -> bytes:
        try:
            return await self.store.read_range_async(self.sha256, self.offset, self.length)
        except LaminaError:
            return b""

    def complete(self, frame: bytes) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
        return _framed(frame, self.length, self.part_type, self.origin)


#: One boundary per process: 96 random bits, which no frame will contain.
_BOUNDARY = multipart.boundary()
_TAIL = f"\r\n--{_BOUNDARY}--\r\n".encode()


@functools.lru_cache(maxsize=64)
def _framing(part_type: str) -> tuple[bytes, bytes]:
    """(the bytes before the part, the response Content-Type) for a part of ``part_type``."""
    head = f"--{_BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode()
    media_type = part_type.split(";", 1)[0]
    return head, multipart.content_type(media_type, _BOUNDARY).encode()
