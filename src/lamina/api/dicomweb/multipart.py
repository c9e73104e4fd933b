"""multipart/related bodies as PS3.18 8.6.1 frames them."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator


def boundary() -> str:
    return f"lamina-{secrets.token_hex(12)}"


def content_type(part_type: str, boundary_: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary_}'
    return value


def body(parts: Iterable[tuple[str, bytes]], boundary_: str) -> bytes:
    """A whole body: each part with its Content-Type, then the closing delimiter."""
    return b"".join(stream(parts, boundary_))


def stream(parts: Iterable[tuple[str, bytes | Iterable[bytes]]], boundary_: str) -> Iterator[bytes]:
    delimiter = f"--{boundary_}\r\n".encode()
    for part_content_type, data in parts:
        yield delimiter + f"Content-Type: {part_content_type}\r\n\r\n".encode()
        if isinstance(data, bytes | bytearray | memoryview):
            yield bytes(data)
        else:
            yield from data
        yield b"\r\n"
    yield f"--{boundary_}--\r\n".encode()
