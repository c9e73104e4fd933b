"""A multipart/related request body split into its parts as it streams in, each part spooled
to a file, never held in memory whole.

What is kept between two chunks is bounded, whatever the body: inside a part, only a tail short
enough to hold the start of a delimiter cut by the chunk's end; in a part's headers, at most
their limit. Before the first delimiter (RFC 2046's preamble, which DICOMweb clients leave
empty) the same tail is kept and the preamble itself is bounded: a body whose boundary is not
the one its Content-Type names is refused after :data:`PREAMBLE_LIMIT` bytes (400, naming the
boundary), not read to its end.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from lamina.archive.receive.spool import spool_error
from lamina.errors import PayloadTooLargeError, RequestError

#: The most bytes of a part's headers.
HEADER_LIMIT = 16 << 10
#: The most bytes before the first delimiter.
PREAMBLE_LIMIT = 64 << 10
#: The body is handed to the spool's thread in pieces of about this many bytes.
BATCH_BYTES = 1 << 20


@dataclass
class Part:
    headers: dict[str, str]
    path: Path
    size: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/octet-stream")


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


class MultipartSpooler:
    """Splits a body into its parts as its chunks are fed, each part written to a file.

    Parameters
    ----------
    boundary
        The Content-Type's boundary parameter.
    folder
        Where the parts' files go (the request's spool).
    max_bytes
        The largest body accepted (413 beyond it).
    """

    def __init__(self, boundary: str, folder: Path, max_bytes: int) -> None:
        self.delimiter = b"\r\n--" + boundary.encode()
        self.boundary = boundary
        self.folder = folder
        self.max_bytes = max_bytes
        self.parts: list[Part] = []
        self.done = False
        #: the most bytes ever kept between two chunks
        self.peak_kept = 0
        self._buffer = b"\r\n"  # the first delimiter has no preceding line break
        self._total = 0
        self._in_headers = False
        self._preamble = True
        self._handle: int | None = None

    @property
    def in_preamble(self) -> bool:
        """No delimiter found yet."""
        return self._preamble

    @property
    def kept(self) -> int:
        """Bytes kept now, waiting for the next chunk."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True once the closing delimiter is found (the rest is ignored)."""
        if self.done:
            return True
        self._total += len(chunk)
        if self._total > self.max_bytes:
            raise PayloadTooLargeError(f"the upload is over the {self.max_bytes} byte limit")
        buffer = self._buffer + chunk
        while True:
            if self._in_headers:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > HEADER_LIMIT:
                        raise RequestError("body", f"a part's headers are over {HEADER_LIMIT} bytes")
                    break
                self._start_part(buffer[:end])
                buffer = buffer[end + 4 :]
                self._in_headers = False
                continue
            found = buffer.find(self.delimiter)
            if found < 0:
                # keep what may be the start of a delimiter cut by the chunk's end
                keep = len(self.delimiter) + 1
                if len(buffer) > keep:
                    self._write(buffer[:-keep])
                    buffer = buffer[-keep:]
                break
            self._write(buffer[:found])
            self._close()
            self._preamble = False
            rest = buffer[found + len(self.delimiter) :]
            if rest.startswith(b"--"):
                self.done = True
                buffer = b""
                break
            if len(rest) < 2:
                buffer = buffer[found:]
                break
            buffer = rest[2:] if rest.startswith(b"\r\n") else rest
            self._in_headers = True
        self._buffer = buffer
        self.peak_kept = max(self.peak_kept, len(buffer))
        if self._preamble and self._total > PREAMBLE_LIMIT:
            raise RequestError(
                "Content-Type",
                f"no delimiter '--{self.boundary}' in the first {PREAMBLE_LIMIT} bytes of the body: the "
                "boundary parameter is not the one the body uses; send the body's own boundary",
            )
        return self.done

    def close(self) -> None:
        self._close()

    def _start_part(self, raw: bytes) -> None:
        headers: dict[str, str] = {}
        for line in raw.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        try:
            fd, name = tempfile.mkstemp(prefix="part-", suffix=".dcm", dir=self.folder)
        except OSError as exc:
            raise spool_error(self.folder, exc) from exc
        self._handle = fd
        self.parts.append(Part(headers, Path(name)))

    def _write(self, data: bytes) -> None:
        if self._preamble or self._handle is None or not data:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._handle, view) :]
        except OSError as exc:
            raise spool_error(self.folder, exc) from exc
        self.parts[-1].size += len(data)

    def _close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None


async def spool_parts(
    chunks: AsyncIterator[bytes], boundary: str, folder: Path, max_bytes: int
) -> list[Part]:
    """Write each part of the body to a file in ``folder``; 413 beyond ``max_bytes`` in all,
    400 when the body does not end with its closing delimiter or does not use ``boundary``."""
    spooler = MultipartSpooler(boundary, folder, max_bytes)
    pending: list[bytes] = []
    size = 0
    try:
        async for chunk in chunks:
            pending.append(chunk)
            size += len(chunk)
            if size < BATCH_BYTES and not spooler.in_preamble:  # a wrong boundary is seen at once
                continue
            # in the thread pool: a write to the spool can wait on the disk for milliseconds
            # (measured up to 18 ms while an ingest writes back its blobs), which on the event
            # loop would stall every frame being served; the chunks (64 kB each) go over in
            # batches, since every hop to a thread and back costs the loop two hand-overs of the GIL
            if await anyio.to_thread.run_sync(spooler.feed, b"".join(pending)):
                return spooler.parts
            pending, size = [], 0
        ended: bool = bool(pending) and await anyio.to_thread.run_sync(spooler.feed, b"".join(pending))
        if ended:
            return spooler.parts
        raise RequestError("body", "the multipart body ends without its closing delimiter")
    finally:
        spooler.close()
