"""The frames route as plain ASGI: the request pathologists' viewers make thousands of times a
minute skips the router and request objects (a third of the cost of a frame).

Only successful answers are produced here: any request this path cannot answer fully (an unknown
UID, a malformed frame list, a transcoding) goes on to the regular route, which gives the same
answer or the proper error. When sign-in comes, the authorization decision goes here too.
"""

from __future__ import annotations

import functools

from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.api.dicomweb import multipart
from lamina.api.dicomweb.index import InstanceIndex
from lamina.api.dicomweb.wado import negotiated_frames, parse_frame_numbers, read_frames
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
        # ['', 'dicomweb', 'studies', study, 'series', series, 'instances', sop, 'frames', numbers]
        if len(parts) != 10 or parts[4] != "series" or parts[6] != "instances" or parts[8] != "frames":
            return None
        accept = origin = None
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"origin":
                origin = value
        state = getattr(self.owner, "state", None)
        index: InstanceIndex | None = getattr(state, "index", None)
        if index is None:
            return None
        try:
            found = index.get(parts[3], parts[5], parts[7])
            if found.path is None:  # a network store: read off the loop, by the routed handler
                return None
            numbers = parse_frame_numbers(parts[9], found.row.number_of_frames)
            part_type, target = negotiated_frames(accept, found.transfer_syntax_uid)
            if target is not None:
                return None
            frames = read_frames(found, numbers, state.archive)  # type: ignore[union-attr]
        except LaminaError:
            return None
        head, content_type = _framing(part_type)
        headers = [(b"content-type", content_type)]
        if origin is not None:
            headers.append((b"access-control-allow-origin", b"*"))
        if len(frames) == 1:
            return headers, b"".join((head, frames[0], _TAIL))
        return headers, b"".join(head + frame + b"\r\n" for frame in frames) + _CLOSE


#: One boundary per process: 96 random bits, which no frame will contain.
_BOUNDARY = multipart.boundary()
_TAIL = f"\r\n--{_BOUNDARY}--\r\n".encode()
_CLOSE = f"--{_BOUNDARY}--\r\n".encode()


@functools.lru_cache(maxsize=64)
def _framing(part_type: str) -> tuple[bytes, bytes]:
    """(the bytes before each part, the response Content-Type) for parts of ``part_type``."""
    head = f"--{_BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode()
    media_type = part_type.split(";", 1)[0]
    return head, multipart.content_type(media_type, _BOUNDARY).encode()
