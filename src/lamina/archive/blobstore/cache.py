"""A bounded read-through cache of object blocks, in memory and optionally on a local disk.

A pathologist reading a slide asks for the same few thousand frames over and over, and on an S3
store each one is a round trip to the object server (1 to 10 ms, and the server's CPU).
:class:`CachedBlobStore` sits in front of the store that serves reads and keeps the blocks of
objects that were read: ``block_size`` bytes aligned in the object (1 MiB by default), so that
one fetch brings a frame's neighbours of the same row with it (a level's frames are stored row
after row). Everything but :meth:`~CachedBlobStore.read_range` goes to the store behind it.

What it holds, and why it can be trusted
    Objects are content-addressed and never change: the bytes at an offset of object ``sha256``
    are the same for as long as the object exists, so a cached block never goes stale and needs
    no expiry. A block is what the store answered, so it is trusted exactly as an uncached read
    is (a range cannot be checked against the object's SHA-256; ``lamina verify`` checks whole
    objects). A block shorter than the object's size says is never kept (the caller sees the
    short read). An object deleted or written again through this store (a repair deletes the
    damaged copy and writes the replica's) is forgotten on this host; on other hosts the blocks
    of a deleted object are never asked for again, since the catalog no longer lists it, and
    age out.

    The memory tier is the process's own memory. The disk tier can be damaged (a bad sector, a
    full disk, a crash in the middle of a write): each block file starts with its length and its
    XXH3-64, both checked every time the file is read; a file that fails the check is deleted
    and the block fetched again from the store. A damaged block is therefore never served.

Bounds
    ``memory_bytes`` and ``disk_bytes`` bound what each tier holds (least recently used blocks
    are evicted first); reads of more than ``bypass_bytes`` (a block, at least 1 MiB: ingest's
    windows of consecutive frames, whole instances) go straight to the store and are not cached,
    so that they do not evict the frames being read. Concurrent reads of one missing block make
    one fetch (single flight): the first thread fetches it, the others wait for it.

One process per disk folder: the folder is locked (``flock``) by the first process that opens
it, for the rest of its life; a second process caches in memory only, and says so in its log.
Within a process every store opened on the folder shares one disk tier (one bound).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from lamina.archive.blobstore.base import BlobRef, BlobStore, BlobWriter
from lamina.config import Settings
from lamina.errors import ConfigurationError, NotFoundError

log = logging.getLogger("lamina.archive.cache")

DEFAULT_BLOCK = 1 << 20
_MAGIC = b"LBC1"
_HEADER = struct.Struct("<4sQQ")  # magic, length, XXH3-64 of the block
_SIZES_KEPT = 4096

Key = tuple[str, int]  # (object digest, block number)


@dataclass
class CacheStats:
    """Counts since the cache was opened (not locked: exact when one thread reads)."""

    hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    bypassed: int = 0
    damaged: int = 0
    evicted: int = 0


@dataclass
class _Flight:
    """A fetch in progress, that other readers of the same block wait for."""

    done: threading.Event = field(default_factory=threading.Event)
    data: bytes = b""
    error: BaseException | None = None


class _MemoryTier:
    """Blocks in an LRU dictionary, at most ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._blocks: OrderedDict[Key, bytes] = OrderedDict()
        self._numbers: dict[str, set[int]] = {}  # the blocks held of each object
        self._lock = threading.Lock()

    def get(self, key: Key) -> bytes | None:
        with self._lock:
            data = self._blocks.get(key)
            if data is not None:
                self._blocks.move_to_end(key)
            return data

    def put(self, key: Key, data: bytes) -> int:
        """Keep ``data``; returns how many blocks were evicted for it."""
        if len(data) > self.limit:
            return 0
        evicted = 0
        with self._lock:
            old = self._blocks.pop(key, None)
            self.bytes += len(data) - (len(old) if old is not None else 0)
            self._blocks[key] = data
            self._numbers.setdefault(key[0], set()).add(key[1])
            while self.bytes > self.limit:
                dropped, block = self._blocks.popitem(last=False)
                self.bytes -= len(block)
                _discard(self._numbers, dropped)
                evicted += 1
        return evicted

    def forget(self, sha256: str) -> None:
        with self._lock:
            for number in self._numbers.pop(sha256, ()):
                self.bytes -= len(self._blocks.pop((sha256, number)))


def _discard(numbers: dict[str, set[int]], key: Key) -> None:
    held = numbers.get(key[0])
    if held is not None:
        held.discard(key[1])
        if not held:
            del numbers[key[0]]


class _DiskTier:
    """Blocks as files ``<folder>/<ab>/<digest>.<block size>.<number>``, at most ``limit`` bytes
    of files, each with its length and XXH3-64 in front (checked at every read)."""

    #: the tiers this process holds, by folder: the lock is per process, and so is the bound
    _opened: dict[Path, _DiskTier] = {}  # noqa: RUF012
    _opened_lock = threading.Lock()

    def __init__(self, folder: Path, limit: int, block_size: int, lock_fd: int) -> None:
        self.folder = folder
        self.limit = limit
        self.block_size = block_size
        self.bytes = 0
        self._lock_fd = lock_fd  # held (flock) for the life of the process
        self._files: OrderedDict[Key, int] = OrderedDict()
        self._numbers: dict[str, set[int]] = {}
        self._lock = threading.Lock()
        self._load()

    @classmethod
    def open(cls, folder: Path, limit: int, block_size: int) -> _DiskTier | None:
        """The tier of ``folder`` in this process, or None when another process holds it."""
        folder = folder.absolute()
        with cls._opened_lock:
            tier = cls._opened.get(folder)
            if tier is not None:
                if tier.block_size != block_size:
                    raise ConfigurationError(
                        f"block cache folder {folder} is already in use with blocks of "
                        f"{tier.block_size} bytes; give the other cache its own folder"
                    )
                tier.limit = min(tier.limit, limit)
                return tier
            try:
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ConfigurationError(
                    f"block cache folder {folder}: {exc.strerror or exc}; set LAMINA_BLOB_CACHE_DIR "
                    "to a writable folder"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            tier = cls._opened[folder] = cls(folder, limit, block_size, fd)
            return tier

    def _load(self) -> None:
        """Index the files a previous run left, oldest first; remove partial writes and the
        blocks of another block size."""
        found: list[tuple[float, Key, int]] = []
        for path in self.folder.glob("*/*"):
            name = path.name.split(".")
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if len(name) == 3 and name[1] == str(self.block_size) and name[2].isdigit():
                found.append((stat.st_mtime, (name[0], int(name[2])), stat.st_size))
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        for _, key, size in sorted(found):
            self._files[key] = size
            self._numbers.setdefault(key[0], set()).add(key[1])
            self.bytes += size
        self._evict()

    def path_for(self, key: Key) -> Path:
        return self.folder / key[0][:2] / f"{key[0]}.{self.block_size}.{key[1]}"

    def get(self, key: Key) -> bytes | bool | None:
        """The block; None when it is not here; False when its file was damaged (now removed)."""
        with self._lock:
            if key not in self._files:
                return None
            self._files.move_to_end(key)
        try:
            raw = self.path_for(key).read_bytes()
        except FileNotFoundError:
            self._drop(key)
            return None
        except OSError as exc:
            log.warning("block cache: %s unreadable (%s); fetched again", self.path_for(key), exc)
            self._remove(key)
            return False
        if len(raw) >= _HEADER.size:
            magic, length, digest = _HEADER.unpack_from(raw)
            data = raw[_HEADER.size :]
            if magic == _MAGIC and length == len(data) and xxhash.xxh3_64_intdigest(data) == digest:
                return data
        log.warning("block cache: %s is damaged (length or XXH3-64 wrong); fetched again", self.path_for(key))
        self._remove(key)
        return False

    def put(self, key: Key, data: bytes) -> int:
        """Write the block (through a temporary file, renamed: never half a file under its
        name); returns how many blocks were evicted. A write that fails is logged and skipped."""
        size = _HEADER.size + len(data)
        if size > self.limit:
            return 0
        path = self.path_for(key)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(exist_ok=True)
            with tmp.open("wb") as out:
                out.write(_HEADER.pack(_MAGIC, len(data), xxhash.xxh3_64_intdigest(data)))
                out.write(data)
            tmp.replace(path)
        except OSError as exc:  # a full or failing disk: the memory tier still serves
            log.warning("block cache: cannot write %s (%s)", path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return 0
        with self._lock:
            old = self._files.pop(key, None)
            self.bytes += size - (old or 0)
            self._files[key] = size
            self._numbers.setdefault(key[0], set()).add(key[1])
        return self._evict()

    def _evict(self) -> int:
        evicted = 0
        while True:
            with self._lock:
                if self.bytes <= self.limit or not self._files:
                    return evicted
                key, size = self._files.popitem(last=False)
                self.bytes -= size
                _discard(self._numbers, key)
            with contextlib.suppress(OSError):
                self.path_for(key).unlink()
            evicted += 1

    def _drop(self, key: Key) -> None:
        with self._lock:
            size = self._files.pop(key, None)
            if size is not None:
                self.bytes -= size
                _discard(self._numbers, key)

    def _remove(self, key: Key) -> None:
        self._drop(key)
        with contextlib.suppress(OSError):
            self.path_for(key).unlink()

    def forget(self, sha256: str) -> None:
        with self._lock:
            keys = [(sha256, number) for number in self._numbers.get(sha256, ())]
        for key in keys:
            self._remove(key)


class _ForgettingWriter(BlobWriter):
    """The origin's writer; once an object is committed (written again by a repair, say) this
    host forgets what it held of it, so that only the committed bytes are served."""

    def __init__(self, writer: BlobWriter, cache: CachedBlobStore) -> None:
        self._writer = writer
        self._cache = cache

    def write(self, data: bytes | bytearray) -> None:
        self._writer.write(data)

    def write_parts(self, parts: list[bytes | bytearray | memoryview], size: int) -> None:
        self._writer.write_parts(parts, size)

    def commit(self) -> BlobRef:
        ref = self._writer.commit()
        self._cache.forget(ref.sha256)
        return ref

    def abort(self) -> None:
        self._writer.abort()


class CachedBlobStore(BlobStore):
    """``origin`` with its ranged reads cached (see the module's docstring).

    Parameters
    ----------
    origin
        The store that holds the objects.
    memory_bytes
        Bytes of blocks kept in memory (0: none).
    folder, disk_bytes
        A local folder for a second, larger tier, and the bytes of files it may hold (0: none).
    block_size
        The unit fetched and kept, aligned in the object.
    bypass_bytes
        Reads larger than this go to ``origin`` uncached (default four blocks).
    """

    def __init__(
        self,
        origin: BlobStore,
        memory_bytes: int,
        *,
        folder: Path | None = None,
        disk_bytes: int = 0,
        block_size: int = DEFAULT_BLOCK,
        bypass_bytes: int | None = None,
    ) -> None:
        if block_size < 4096:
            raise ValueError(f"block size {block_size}: at least 4096 bytes")
        self.origin = origin
        self.block_size = block_size
        self.bypass_bytes = max(block_size, 1 << 20) if bypass_bytes is None else bypass_bytes
        self.memory = _MemoryTier(memory_bytes) if memory_bytes > 0 else None
        self.disk: _DiskTier | None = None
        if folder is not None and disk_bytes > 0:
            self.disk = _DiskTier.open(folder, disk_bytes, block_size)
            if self.disk is None:
                log.warning(
                    "block cache folder %s is held by another lamina process: this one caches in "
                    "memory only (give each process its own LAMINA_BLOB_CACHE_DIR)",
                    folder,
                )
        self.stats = CacheStats()
        self._flights: dict[Key, _Flight] = {}
        self._flights_lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._sizes_lock = threading.Lock()

    # ---------------------------------------------------------------- reads

    def read_range(self, sha256: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        if length > self.bypass_bytes or (self.memory is None and self.disk is None):
            self.stats.bypassed += 1
            return self.origin.read_range(sha256, offset, length)
        size = self.block_size
        end = offset + length
        parts = []
        for number in range(offset // size, (end - 1) // size + 1):
            block = self._block(sha256, number)
            start = number * size
            parts.append(block[max(offset - start, 0) : min(end - start, size)])
            if len(block) < size:  # the object's end
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def cached_range(self, sha256: str, offset: int, length: int) -> bytes | None:
        if self.memory is None or length <= 0 or length > self.bypass_bytes:
            return None
        size = self.block_size
        end = offset + length
        parts = []
        for number in range(offset // size, (end - 1) // size + 1):
            block = self.memory.get((sha256, number))
            if block is None:
                return None
            start = number * size
            parts.append(block[max(offset - start, 0) : min(end - start, size)])
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if len(data) != length:
            return None  # past the object's end: the regular read answers that
        self.stats.hits += 1
        return data

    async def read_range_async(self, sha256: str, offset: int, length: int) -> bytes:
        held = self.cached_range(sha256, offset, length)
        if held is not None:
            return held
        return await super().read_range_async(sha256, offset, length)  # a fetch: in a thread

    def _block(self, sha256: str, number: int) -> bytes:
        key = (sha256, number)
        if self.memory is not None:
            data = self.memory.get(key)
            if data is not None:
                self.stats.hits += 1
                return data
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            self.stats.hits += 1
            return flight.data
        try:
            flight.data = self._load(key)
            return flight.data
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._flights_lock:
                del self._flights[key]
            flight.done.set()

    def _load(self, key: Key) -> bytes:
        """The block from the disk tier, else from the origin (kept where it is whole)."""
        if self.disk is not None:
            found = self.disk.get(key)
            if isinstance(found, bytes):
                self.stats.disk_hits += 1
                self._keep_in_memory(key, found)
                return found
            if found is False:
                self.stats.damaged += 1
        self.stats.misses += 1
        data = self.origin.read_range(key[0], key[1] * self.block_size, self.block_size)
        if len(data) < self.block_size and not self._is_last(key, len(data)):
            return data  # short of what the object holds: damaged or truncated, never kept
        self._keep_in_memory(key, data)
        if self.disk is not None and data:
            self.stats.evicted += self.disk.put(key, data)
        return data

    def _keep_in_memory(self, key: Key, data: bytes) -> None:
        if self.memory is not None and data:
            self.stats.evicted += self.memory.put(key, data)

    def _is_last(self, key: Key, got: int) -> bool:
        """Whether a short block ends where the object ends (its size asked once, then kept)."""
        sha256 = key[0]
        with self._sizes_lock:
            size = self._sizes.get(sha256)
        if size is None:
            try:
                size = self.origin.size(sha256)
            except (NotFoundError, FileNotFoundError):
                return False
            with self._sizes_lock:
                self._sizes[sha256] = size
                while len(self._sizes) > _SIZES_KEPT:
                    self._sizes.popitem(last=False)
        return key[1] * self.block_size + got == size

    def forget(self, sha256: str) -> None:
        """Drop every cached block of ``sha256`` on this host."""
        if self.memory is not None:
            self.memory.forget(sha256)
        if self.disk is not None:
            self.disk.forget(sha256)
        with self._sizes_lock:
            self._sizes.pop(sha256, None)

    # ---------------------------------------------------------------- the rest: the origin's

    def writer(self) -> BlobWriter:
        return _ForgettingWriter(self.origin.writer(), self)

    def open(self, sha256: str) -> Iterator[bytes]:
        return self.origin.open(sha256)

    def exists(self, sha256: str) -> bool:
        return self.origin.exists(sha256)

    def size(self, sha256: str) -> int:
        return self.origin.size(sha256)

    def delete(self, sha256: str) -> None:
        self.origin.delete(sha256)
        self.forget(sha256)

    def iter_digests(self) -> Iterator[str]:
        return self.origin.iter_digests()

    def modified_at(self, sha256: str) -> float | None:
        return self.origin.modified_at(sha256)

    def sweep_tmp(self, older_than_s: float = 3600.0) -> int:
        return self.origin.sweep_tmp(older_than_s)

    def local_path(self, sha256: str) -> str | None:
        return self.origin.local_path(sha256)


def cached(store: BlobStore, settings: Settings) -> BlobStore:
    """``store`` behind the cache ``settings`` asks for (``blob_cache_*``), or as it is when the
    cache is off."""
    if settings.blob_cache_bytes <= 0 and settings.blob_cache_disk_bytes <= 0:
        return store
    folder = settings.blob_cache_dir or settings.home / "cache" / "blobs"
    return CachedBlobStore(
        store,
        settings.blob_cache_bytes,
        folder=folder if settings.blob_cache_disk_bytes > 0 else None,
        disk_bytes=settings.blob_cache_disk_bytes,
        block_size=settings.blob_cache_block_bytes,
    )
