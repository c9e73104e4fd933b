"""The source's fingerprint (BLAKE3), computed from the reads the conversion makes anyway.

Reading a 1.5 GB slide twice (once to fingerprint it, once to convert it) costs a copy of every
byte and, on a cold cache, a race for the disk. Instead, readers offer what they read
(``offer(path, offset, data)``); a background thread hashes each file in order, using the
offered bytes where they follow on and reading only the gaps itself, and the rest of the file
(headers, pages the conversion never reads) when ``finish`` is called.

A duplicate must be caught before a conversion is wasted on it, so :func:`source_head` gives a
cheap key (sizes and the BLAKE3 of each file's first MiB): only when the catalog already holds a
slide with the same key is the whole fingerprint computed up front (:func:`full_digest`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import blake3

_CHUNK = 8 << 20
_HEAD = 1 << 20
_OFFERS_IN_FLIGHT = 16


class CancelledError(Exception):
    """The ingest stopped; the fingerprint is not needed any more."""


def _combine(digests: Sequence[str]) -> str:
    if len(digests) == 1:
        return digests[0]
    return blake3.blake3("\n".join(sorted(digests)).encode()).hexdigest()


def source_head(members: Sequence[Path]) -> str:
    """Sizes and the BLAKE3 of each file's first MiB: equal for any two identical sources, whatever
    the files are called (a series posted twice is spooled under other names)."""
    parts = []
    for member in members:
        with member.open("rb", buffering=0) as handle:
            head = handle.read(_HEAD)
            size = os.fstat(handle.fileno()).st_size
        parts.append(f"{size}:{blake3.blake3(head).hexdigest()}")
    return blake3.blake3("\n".join(sorted(parts)).encode()).hexdigest()


def _hash_range(digest: blake3.blake3, fd: int, start: int, end: int, buffer: memoryview) -> int:
    """Hash bytes [start, end) of ``fd``; return where it stopped (the end, or the file's end)."""
    while start < end:
        read = os.preadv(fd, [buffer[: min(len(buffer), end - start)]], start)
        if read == 0:
            break
        digest.update(buffer[:read])
        start += read
    return start


def full_digest(members: Sequence[Path], cancelled: threading.Event | None = None) -> str:
    """The fingerprint, reading every file from start to end."""
    digests = []
    buffer = memoryview(bytearray(_CHUNK))
    for member in members:
        digest = blake3.blake3(max_threads=1)
        fd = os.open(member, os.O_RDONLY)
        try:
            size, position = os.fstat(fd).st_size, 0
            while position < size:
                if cancelled is not None and cancelled.is_set():
                    raise CancelledError
                stop = min(size, position + _CHUNK)
                reached = _hash_range(digest, fd, position, stop, buffer)
                if reached < stop:
                    break  # the file shrank while being read
                position = reached
        finally:
            os.close(fd)
        digests.append(digest.hexdigest())
    return _combine(digests)


class _FileHasher:
    """One file hashed in order: offered chunks where they follow on, gaps read directly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.digest = blake3.blake3(max_threads=1)
        self.position = 0

    def take(self, offset: int, data: bytes | memoryview, buffer: memoryview) -> None:
        end = offset + len(data)
        if end <= self.position:
            return  # already hashed
        if offset > self.position:
            self.position = _hash_range(self.digest, self.fd, self.position, offset, buffer)
            if self.position < offset:
                return  # the file is shorter than what was read: finish() will tell
        self.digest.update(memoryview(data)[self.position - offset :])
        self.position = end

    def finish(self, buffer: memoryview) -> str:
        size = os.fstat(self.fd).st_size
        self.position = _hash_range(self.digest, self.fd, self.position, size, buffer)
        return self.digest.hexdigest()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SourceFingerprint:
    """Fingerprint of a source, fed by the conversion's own reads (see the module docstring)."""

    def __init__(self, members: Sequence[Path], cancelled: threading.Event | None = None) -> None:
        self._hashers = {member: _FileHasher(member) for member in members}
        self._cancelled = cancelled
        self._queue: queue.Queue[tuple[Path, int, bytes | memoryview] | None] = queue.Queue(_OFFERS_IN_FLIGHT)
        self._buffer = memoryview(bytearray(_CHUNK))
        self._error: BaseException | None = None
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="source-fingerprint", daemon=True)
        self._thread.start()

    def offer(self, path: Path, offset: int, data: bytes | memoryview) -> None:
        """Bytes ``data`` were read at ``offset`` of ``path``. Never blocks: when the hasher is
        behind, the offer is dropped and the hasher reads those bytes itself later."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait((path, offset, data))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue
            path, offset, data = item
            hasher = self._hashers.get(path)
            if hasher is None:
                continue
            try:
                hasher.take(offset, data, self._buffer)
            except OSError as exc:
                self._error = exc

    def _stop(self) -> bool:
        """End the thread once; False when it had already ended."""
        if self._ended:
            return False
        self._ended = True
        self._queue.put(None)
        self._thread.join()
        return True

    def finish(self) -> str:
        """Hash what the conversion did not read, and return the fingerprint."""
        if not self._stop():
            raise CancelledError
        try:
            if self._error is not None:
                raise self._error
            if self._cancelled is not None and self._cancelled.is_set():
                raise CancelledError
            return _combine([hasher.finish(self._buffer) for hasher in self._hashers.values()])
        finally:
            for hasher in self._hashers.values():
                hasher.close()

    def abandon(self) -> None:
        """Stop without a result (the ingest failed); safe after ``finish``."""
        if self._stop():
            for hasher in self._hashers.values():
                hasher.close()
