"""Blob store in a folder: ``sha256/ab/cd/<digest>``, written through ``tmp/`` and renamed.

Durability: the temporary file is fsynced, renamed into place, and the folders that changed
are fsynced, so a committed object survives a power cut. Hashing and writing run on a
background thread while the caller prepares the next chunk.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from lamina.archive.blobstore.base import BlobRef, BlobStore, BlobWriter
from lamina.errors import IntegrityError, NotFoundError, StorageError

_READ_CHUNK = 8 << 20
_QUEUE_DEPTH = 8


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as fh:
        while chunk := fh.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _FileWriter(BlobWriter):
    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        self._tmp = store.tmp / f"{uuid.uuid4().hex}.part"
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._hash = hashlib.sha256()
        self._size = 0
        self._queue: queue.Queue[bytes | bytearray | None] = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="blob-writer", daemon=True)
        self._thread.start()
        self._done = False

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                self._hash.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view) :]
            except BaseException as exc:  # reported by commit()
                self._error = exc

    def write(self, data: bytes | bytearray) -> None:
        if self._error is not None:
            raise StorageError(f"writing {self._tmp} failed: {self._error}")
        self._size += len(data)
        self._queue.put(data)

    def _finish_thread(self) -> None:
        if not self._done:
            self._queue.put(None)
            self._thread.join()
            self._done = True

    def commit(self) -> BlobRef:
        self._finish_thread()
        try:
            if self._error is not None:
                raise StorageError(f"writing {self._tmp} failed: {self._error}")
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        digest = self._hash.hexdigest()
        final = self._store.path_for(digest)
        if final.exists():
            self._tmp.unlink()
            return BlobRef(digest, self._size, created=False)
        new_dirs = [d for d in (final.parent.parent, final.parent) if not d.exists()]
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, final)
        fsync_dir(final.parent)
        for folder in new_dirs:
            fsync_dir(folder.parent)
        if self._store.verify_after_write:
            found = file_sha256(final)
            if found != digest:
                final.unlink()
                raise IntegrityError(f"{final}: read back as {found}, written as {digest}; check the disk")
        return BlobRef(digest, self._size, created=True)

    def abort(self) -> None:
        self._finish_thread()
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._tmp.unlink(missing_ok=True)


class FileBlobStore(BlobStore):
    def __init__(self, root: Path, verify_after_write: bool = True) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.verify_after_write = verify_after_write
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            (root / "sha256").mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the blob folder {root}: {exc.strerror}") from exc

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise NotFoundError(f"{sha256!r} is not a SHA-256 digest")
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def writer(self) -> BlobWriter:
        return _FileWriter(self)

    def read_range(self, sha256: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self.path_for(sha256), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise NotFoundError(f"object {sha256} is missing from {self.root}") from exc
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def open(self, sha256: str) -> Iterator[bytes]:
        path = self.path_for(sha256)
        if not path.exists():
            raise NotFoundError(f"object {sha256} is missing from {self.root}")
        with path.open("rb", buffering=0) as fh:
            while chunk := fh.read(_READ_CHUNK):
                yield chunk

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def size(self, sha256: str) -> int:
        return self.path_for(sha256).stat().st_size

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def iter_digests(self) -> Iterator[str]:
        base = self.root / "sha256"
        for path in base.glob("*/*/*"):
            if len(path.name) == 64:
                yield path.name

    def local_path(self, sha256: str) -> str | None:
        return str(self.path_for(sha256))

    def sweep_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove partial writes an interrupted process left, older than ``older_than_s``."""
        import time

        cutoff = time.time() - older_than_s
        removed = 0
        for part in self.tmp.glob("*.part"):
            try:
                if older_than_s <= 0 or part.stat().st_mtime < cutoff:
                    part.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
