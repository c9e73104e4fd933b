"""The blob store contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class BlobRef:
    """A stored object: its SHA-256 (hex), its size, and whether this write created it."""

    sha256: str
    size: int
    created: bool = True


class BlobWriter(ABC):
    """Receives an object's bytes in order. ``commit`` returns once it is durable and verified;
    ``abort`` (or leaving the ``with`` block on an exception) leaves nothing behind."""

    @abstractmethod
    def write(self, data: bytes | bytearray) -> None: ...

    def write_parts(self, parts: list[bytes | bytearray | memoryview], size: int) -> None:
        """Write the concatenation of ``parts`` (``size`` bytes); stores that can, write them
        without joining."""
        self.write(b"".join(parts))

    @abstractmethod
    def commit(self) -> BlobRef: ...

    @abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()


class BlobStore(ABC):
    @abstractmethod
    def writer(self) -> BlobWriter: ...

    @abstractmethod
    def read_range(self, sha256: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of the object; fewer at its end (like ``pread``).
        May block on the network: call it off the event loop."""

    async def read_range_async(self, sha256: str, offset: int, length: int) -> bytes:
        """:meth:`read_range` for an event loop: by default in the thread pool (anyio's,
        bounded); a store with an asyncio client awaits it instead."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.read_range, sha256, offset, length)

    def cached_range(self, sha256: str, offset: int, length: int) -> bytes | None:
        """The range if the store holds it in memory now, else None; never blocks, so an
        event loop may call it. An optional speed-up (:class:`~.cache.CachedBlobStore`)."""
        return None

    @abstractmethod
    def open(self, sha256: str) -> Iterator[bytes]:
        """The whole object, in chunks."""

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def size(self, sha256: str) -> int: ...

    @abstractmethod
    def delete(self, sha256: str) -> None: ...

    @abstractmethod
    def iter_digests(self) -> Iterator[str]: ...

    def modified_at(self, sha256: str) -> float | None:
        """When the object was written (POSIX time), or None when it is gone or unknown."""
        return None

    def sweep_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove partial writes an interrupted process left, older than ``older_than_s``."""
        return 0

    def local_path(self, sha256: str) -> str | None:
        """A filesystem path to the object when the store has one (export uses it to copy fast)."""
        return None
