"""A blob store that writes every object to two stores: the primary, which serves every read, and a
replica (another folder or bucket) that ``lamina verify --repair`` restores damaged objects from.

A write commits on both stores and checks that both computed the same digest; if either commit
fails, the object is removed again from the store(s) where this write created it, so a slide is
never recorded with an object that only one store holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from lamina.archive.blobstore.base import BlobRef, BlobStore, BlobWriter
from lamina.errors import IntegrityError

__all__ = ["ReplicatedBlobStore"]


class _ReplicatedWriter(BlobWriter):
    """Forwards every write to the primary's and the replica's writers."""

    def __init__(self, store: ReplicatedBlobStore) -> None:
        self._store = store
        self._primary = store.primary.writer()
        try:
            self._replica = store.replica.writer()
        except BaseException:
            self._primary.abort()
            raise
        self._closed = False

    def write(self, data: bytes | bytearray) -> None:
        self._primary.write(data)
        self._replica.write(data)

    def write_parts(self, parts: list[bytes | bytearray | memoryview], size: int) -> None:
        self._primary.write_parts(parts, size)
        self._replica.write_parts(parts, size)

    def commit(self) -> BlobRef:
        self._closed = True
        try:
            primary = self._primary.commit()
        except BaseException:
            self._replica.abort()
            raise
        try:
            replica = self._replica.commit()
        except BaseException:
            self._undo(self._store.primary, primary)
            raise
        if (primary.sha256, primary.size) != (replica.sha256, replica.size):
            self._undo(self._store.primary, primary)
            self._undo(self._store.replica, replica)
            raise IntegrityError(
                f"the primary store computed {primary.sha256} ({primary.size} bytes) and the replica "
                f"{replica.sha256} ({replica.size} bytes) for the same object; check both stores' disks"
            )
        return primary

    @staticmethod
    def _undo(store: BlobStore, ref: BlobRef) -> None:
        if ref.created:
            with contextlib.suppress(Exception):
                store.delete(ref.sha256)

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._primary.abort()
        finally:
            self._replica.abort()


class ReplicatedBlobStore(BlobStore):
    """``primary`` serves reads and listings; every write and delete also goes to ``replica``."""

    def __init__(self, primary: BlobStore, replica: BlobStore) -> None:
        self.primary = primary
        self.replica = replica

    def writer(self) -> BlobWriter:
        return _ReplicatedWriter(self)

    def read_range(self, sha256: str, offset: int, length: int) -> bytes:
        return self.primary.read_range(sha256, offset, length)

    async def read_range_async(self, sha256: str, offset: int, length: int) -> bytes:
        return await self.primary.read_range_async(sha256, offset, length)

    def cached_range(self, sha256: str, offset: int, length: int) -> bytes | None:
        return self.primary.cached_range(sha256, offset, length)

    def open(self, sha256: str) -> Iterator[bytes]:
        return self.primary.open(sha256)

    def exists(self, sha256: str) -> bool:
        return self.primary.exists(sha256)

    def size(self, sha256: str) -> int:
        return self.primary.size(sha256)

    def delete(self, sha256: str) -> None:
        try:
            self.primary.delete(sha256)
        finally:
            self.replica.delete(sha256)

    def iter_digests(self) -> Iterator[str]:
        return self.primary.iter_digests()

    def modified_at(self, sha256: str) -> float | None:
        return self.primary.modified_at(sha256)

    def sweep_tmp(self, older_than_s: float = 3600.0) -> int:
        return self.primary.sweep_tmp(older_than_s) + self.replica.sweep_tmp(older_than_s)

    def local_path(self, sha256: str) -> str | None:
        return self.primary.local_path(sha256)
