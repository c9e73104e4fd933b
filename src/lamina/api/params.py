"""What several routes read from a request the same way: a DICOM UID given as a parameter, and a
body read whole within a byte limit (never past it, whatever Content-Length says)."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from lamina.errors import PayloadTooLargeError, RequestError

__all__ = ["read_body", "uid"]

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def uid(value: Any, name: str) -> str:
    """``value`` when it is a DICOM UID (digits and dots, at most 64 characters); else a
    RequestError naming ``name``."""
    if not isinstance(value, str) or len(value) > 64 or not _UID.fullmatch(value):
        raise RequestError(name, "a DICOM UID (digits and dots, at most 64 characters)")
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes: PayloadTooLargeError as soon as it declares or
    sends more."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body of {declared} bytes is over the {limit} byte limit")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLargeError(f"the body is over the {limit} byte limit")
    return bytes(raw)
