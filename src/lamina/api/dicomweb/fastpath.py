"""The frames route as plain ASGI, on the event loop: the request pathologists' viewers make
thousands of times a minute skips the router, the request objects and the thread pool (together
most of the cost of a frame).

It answers only what it can answer without blocking: one frame, of an instance the index holds
and confirmed in the catalog within the last ``InstanceIndex.revalidate_s``, stored in a local
file, asked for as stored (``transfer-syntax=*`` or the stored syntax): one ``pread`` of a few
kilobytes on a descriptor kept open, or, for an object on S3, a copy from the blob cache's
memory (``BlobStore.cached_range``, which never blocks). Anything else (an instance not cached or due for its
confirmation, several frames, an object on S3, a transcoding, a short read, a malformed
request) goes on to the routed handler, which runs in the thread pool and gives the same answer
or the proper error. When sign-in comes, the authorization decision goes here too.
"""

from __future__ import annotations

import functools
import os

from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.api.dicomweb import multipart
from lamina.api.dicomweb.frames import can_decode, negotiated_frames
from lamina.api.dicomweb.index import InstanceIndex
from lamina.errors import LaminaError

_PREFIX = "/dicomweb/studies/"


class FramesFastPath:
    def __init__(self, app: ASGIApp, state_owner: object) -> None:
        self.app = app
        self.owner = state_owner  # the application whose state holds the index after start-up

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(_PREFIX):
            answer = self._answer(scope)
            if answer is not None:
                headers, body = answer
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
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
        try:
            fd = found.fd()
            if fd is not None:
                frame = os.pread(fd, length, offset)
            else:  # a network store: only what its cache holds in memory, else the thread pool
                cached = state.archive.store.cached_range(row.blob_sha256, offset, length)  # type: ignore[union-attr]
                if cached is None:
                    return None
                frame = cached
        except OSError:
            return None
        if len(frame) != length:  # damaged or gone: the routed handler reports it
            return None
        head, content_type = _framing(output.part_type)
        headers = [(b"content-type", content_type)]
        if origin is not None:
            headers.append((b"access-control-allow-origin", b"*"))
        return headers, b"".join((head, frame, _TAIL))


#: One boundary per process: 96 random bits, which no frame will contain.
_BOUNDARY = multipart.boundary()
_TAIL = f"\r\n--{_BOUNDARY}--\r\n".encode()


@functools.lru_cache(maxsize=64)
def _framing(part_type: str) -> tuple[bytes, bytes]:
    """(the bytes before the part, the response Content-Type) for a part of ``part_type``."""
    head = f"--{_BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode()
    media_type = part_type.split(";", 1)[0]
    return head, multipart.content_type(media_type, _BOUNDARY).encode()
