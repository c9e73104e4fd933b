"""Blob store in a folder: ``sha256/ab/cd/<digest>``, written through ``tmp/`` and renamed.

Durability: the temporary file is fsynced, renamed into place, and the folders that changed
are fsynced, so a committed object survives a power cut. Hashing and writing run on a
background thread while the caller prepares the next chunk.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import xxhash

from lamina.archive.blobstore.base import BlobRef, BlobStore, BlobWriter
from lamina.errors import InsufficientStorageError, IntegrityError, NotFoundError, StorageError

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


Parts = list[bytes | bytearray | memoryview]
_IOV_MAX = 1024
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int], None]:
    """Start write-back of a range without waiting (Linux ``sync_file_range``), so dirty pages
    never pile up: the writer is not throttled and the final fsync has little left to do."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return lambda fd, offset, length: None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]

    def start_writeback(fd: int, offset: int, length: int) -> None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)

    return start_writeback


start_writeback = _sync_file_range()


def _write_all(fd: int, parts: Parts, size: int) -> None:
    """``writev`` the parts, IOV_MAX at a time, finishing any short write."""
    for start in range(0, len(parts), _IOV_MAX):
        group = parts[start : start + _IOV_MAX]
        expected = size if len(parts) <= _IOV_MAX else sum(map(len, group))
        done = os.writev(fd, group)
        if done < expected:
            rest = memoryview(b"".join(group))[done:]
            while rest:
                rest = rest[os.write(fd, rest) :]


class _Verifier:
    """Re-reads each written range behind the writer and checks it against what was sent.

    The check is a 128-bit XXH3 of the bytes sent (computed by the writer beside the SHA-256)
    against the XXH3 of the bytes read back: any changed, missing or extra byte shows, at a
    fraction of the cost of a second SHA-256 pass. Since the SHA-256 was computed over the bytes
    sent, a match proves the file holds exactly the bytes its digest names.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._sent = xxhash.xxh3_128()
        self._read = xxhash.xxh3_128()
        self._queue: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="blob-verifier", daemon=True)
        self._thread.start()

    def sent(self, part: bytes | bytearray | memoryview) -> None:
        self._sent.update(part)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue
            offset, length = item
            try:
                self._check(offset, length)
            except (OSError, ValueError) as exc:
                self._error = f"reading back failed: {exc}"

    def _check(self, offset: int, length: int) -> None:
        """Hash the range straight from the page cache through a memory map (no copy)."""
        if os.fstat(self._fd).st_size < offset + length:
            self._error = f"the file ends before byte {offset + length}, which was written"
            return
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        with mmap.mmap(self._fd, offset + length - start, offset=start, access=mmap.ACCESS_READ) as window:
            view = memoryview(window)
            try:
                self._read.update(view[offset - start :])
            finally:
                view.release()

    def written(self, offset: int, length: int) -> None:
        self._queue.put((offset, length))

    def finish(self) -> str | None:
        """Wait for the last read; return what differs, or None."""
        self._queue.put(None)
        self._thread.join()
        os.close(self._fd)
        if self._error is None and self._read.digest() != self._sent.digest():
            self._error = "the bytes read back differ from the bytes written"
        return self._error


class _FileWriter(BlobWriter):
    """Writes on one background thread and hashes on another, so that SHA-256 and the copy into
    the page cache run side by side; a third re-reads what was written (``_Verifier``), so that
    verification overlaps the writing instead of following it."""

    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        self._tmp = store.tmp / f"{uuid.uuid4().hex}.part"
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._hash = hashlib.sha256()
        self._size = 0
        self._queue: queue.Queue[tuple[Parts, int] | None] = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._verifier = _Verifier(self._tmp) if store.verify_after_write else None
        self._hash_queue: queue.Queue[Parts | None] = queue.Queue(_QUEUE_DEPTH)
        self._hasher = threading.Thread(target=self._digest, name="blob-hasher", daemon=True)
        self._hasher.start()
        self._thread = threading.Thread(target=self._drain, name="blob-writer", daemon=True)
        self._thread.start()
        self._done = False

    def _drain(self) -> None:
        offset = 0
        while (item := self._queue.get()) is not None:
            parts, length = item
            if self._error is None:
                try:
                    _write_all(self._fd, parts, length)
                    start_writeback(self._fd, offset, length)
                    if self._verifier is not None:
                        self._verifier.written(offset, length)
                    offset += length
                except BaseException as exc:  # reported by commit()
                    self._error = exc
            self._hash_queue.put(parts)
        self._hash_queue.put(None)

    def _digest(self) -> None:
        verifier = self._verifier
        while (parts := self._hash_queue.get()) is not None:
            for part in parts:
                self._hash.update(part)
                if verifier is not None:
                    verifier.sent(part)

    def write(self, data: bytes | bytearray) -> None:
        self.write_parts([data], len(data))

    def _failed(self) -> StorageError:
        error = self._error
        if isinstance(error, OSError) and error.errno in InsufficientStorageError.ERRNOS:
            root = self._store.root
            return InsufficientStorageError(
                str(root),
                f"the blob store folder {root} is full ({error.strerror}); free space there or move the "
                "store (LAMINA_BLOB_URL), then send or ingest again",
            )
        return StorageError(f"writing {self._tmp} failed: {error}")

    def write_parts(self, parts: Parts, size: int) -> None:
        if self._error is not None:
            raise self._failed()
        self._size += size
        self._queue.put((parts, size))

    def _finish_thread(self) -> None:
        if not self._done:
            self._queue.put(None)
            self._thread.join()
            self._hasher.join()
            self._done = True

    def commit(self) -> BlobRef:
        self._finish_thread()
        try:
            if self._error is not None:
                raise self._failed()
            os.fsync(self._fd)
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = -1
        digest = self._hash.hexdigest()
        if self._verifier is not None:
            mismatch = self._verifier.finish()
            self._verifier = None
            if mismatch is not None:
                self._tmp.unlink(missing_ok=True)
                raise IntegrityError(f"{self._tmp}: {mismatch} (object {digest}); check the disk")
        final = self._store.path_for(digest)
        if final.exists():
            self._tmp.unlink()
            return BlobRef(digest, self._size, created=False)
        new_dirs = [d for d in (final.parent.parent, final.parent) if not d.exists()]
        final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp.replace(final)
        fsync_dir(final.parent)
        for folder in new_dirs:
            fsync_dir(folder.parent)
        return BlobRef(digest, self._size, created=True)

    def abort(self) -> None:
        self._finish_thread()
        if self._verifier is not None:
            self._verifier.finish()
            self._verifier = None
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
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
        path = self.path_for(sha256)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot remove object {sha256} from {self.root} ({exc.strerror}); "
                f"check the permissions of {path.parent}"
            ) from exc

    def iter_digests(self) -> Iterator[str]:
        base = self.root / "sha256"
        for path in base.glob("*/*/*"):
            if len(path.name) == 64:
                yield path.name

    def modified_at(self, sha256: str) -> float | None:
        try:
            return self.path_for(sha256).stat().st_mtime
        except FileNotFoundError:
            return None

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
