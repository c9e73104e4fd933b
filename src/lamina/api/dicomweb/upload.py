"""A multipart/related request body split into its parts as it streams in, each part spooled
to a file, never held in memory whole."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from lamina.errors import PayloadTooLargeError, RequestError

_HEADER_LIMIT = 16 << 10


@dataclass
class Part:
    headers: dict[str, str]
    path: Path
    size: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/octet-stream")


@dataclass
class _State:
    parts: list[Part] = field(default_factory=list)
    handle: int | None = None
    total: int = 0


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart/related Content-Type; 400 when missing."""
    media, *params = [piece.strip() for piece in content_type.split(";")]
    if media.lower() != "multipart/related":
        raise RequestError(
            "Content-Type", f'{media!r}: STOW-RS takes multipart/related; type="application/dicom"'
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"')
    raise RequestError("Content-Type", "multipart/related needs a boundary parameter")


async def spool_parts(
    chunks: AsyncIterator[bytes], boundary: str, folder: Path, max_bytes: int
) -> list[Part]:
    """Write each part of the body to a file in ``folder``; 413 beyond ``max_bytes`` in all."""
    delimiter = b"\r\n--" + boundary.encode()
    state = _State()
    buffer = b"\r\n"  # the first delimiter has no preceding line break
    in_headers = False
    preamble = True
    try:
        async for chunk in chunks:
            state.total += len(chunk)
            if state.total > max_bytes:
                raise PayloadTooLargeError(f"the upload is over the {max_bytes} byte limit")
            buffer += chunk
            while True:
                if in_headers:
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buffer) > _HEADER_LIMIT:
                            raise RequestError("body", "a part's headers are too long")
                        break
                    _start_part(state, buffer[:end], folder)
                    buffer = buffer[end + 4 :]
                    in_headers = False
                    continue
                found = buffer.find(delimiter)
                if found < 0:
                    keep = len(delimiter) + 2
                    if not preamble and len(buffer) > keep:
                        _write(state, buffer[:-keep])
                        buffer = buffer[-keep:]
                    break
                if not preamble:
                    _write(state, buffer[:found])
                    _close(state)
                preamble = False
                rest = buffer[found + len(delimiter) :]
                if rest.startswith(b"--"):
                    return state.parts
                if len(rest) < 2:
                    buffer = buffer[found:]
                    break
                buffer = rest[2:] if rest.startswith(b"\r\n") else rest
                in_headers = True
        raise RequestError("body", "the multipart body ends without its closing delimiter")
    finally:
        _close(state)


def _start_part(state: _State, raw: bytes, folder: Path) -> None:
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip():
            headers[name.strip().lower()] = value.strip()
    fd, name = tempfile.mkstemp(prefix="stow-", suffix=".dcm", dir=folder)
    state.handle = fd
    state.parts.append(Part(headers, Path(name)))


def _write(state: _State, data: bytes) -> None:
    if state.handle is None or not data:
        return
    view = memoryview(data)
    while view:
        view = view[os.write(state.handle, view) :]
    state.parts[-1].size += len(data)


def _close(state: _State) -> None:
    if state.handle is not None:
        os.close(state.handle)
        state.handle = None
