"""The read-through block cache in front of the blob store, on both backends: what it answers is
what the store answers, its bounds hold, concurrent readers of one block make one fetch, and a
damaged block file on disk is never served."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.archive.archive import Archive
from lamina.archive.blobstore import BlobStore, BlobWriter
from lamina.archive.blobstore.cache import CachedBlobStore
from lamina.config import Settings
from lamina.errors import ConfigurationError, NotFoundError
from tests.support import overwrite_object

BLOCK = 16 << 10


def _put(store: BlobStore, data: bytes) -> str:
    with store.writer() as writer:
        writer.write(data)
        return writer.commit().sha256


class Counting(BlobStore):
    """The archive's real store, counting the ranged reads that reach it (and slowing them, to
    let concurrent readers meet)."""

    def __init__(self, store: BlobStore, delay_s: float = 0.0) -> None:
        self.store = store
        self.delay_s = delay_s
        self.reads: list[tuple[str, int, int]] = []
        self.short_once = False  # cut the next answer short by 10 bytes, as a dropped body would
        self._lock = threading.Lock()

    def read_range(self, sha256: str, offset: int, length: int) -> bytes:
        with self._lock:
            self.reads.append((sha256, offset, length))
        time.sleep(self.delay_s)
        data = self.store.read_range(sha256, offset, length)
        if self.short_once:
            self.short_once = False
            return data[:-10]
        return data

    def writer(self) -> BlobWriter:
        return self.store.writer()

    def open(self, sha256: str) -> Iterator[bytes]:
        return self.store.open(sha256)

    def exists(self, sha256: str) -> bool:
        return self.store.exists(sha256)

    def size(self, sha256: str) -> int:
        return self.store.size(sha256)

    def delete(self, sha256: str) -> None:
        self.store.delete(sha256)

    def iter_digests(self) -> Iterator[str]:
        return self.store.iter_digests()

    def local_path(self, sha256: str) -> str | None:
        return self.store.local_path(sha256)


def _ranges(size: int, rng: random.Random, count: int) -> list[tuple[int, int]]:
    spans = [(0, 1), (BLOCK - 3, 7), (BLOCK, BLOCK), (size - 5, 5), (size - 5, 50), (size, 10)]
    spans += [(size + BLOCK, 10), (2 * BLOCK - 1, 2 * BLOCK + 2)]
    for _ in range(count):
        offset = rng.randrange(size)
        spans.append((offset, rng.randrange(1, 3 * BLOCK)))
    return spans


def test_reads_through_the_cache_are_the_store_s(archive: Archive) -> None:
    rng = random.Random(1)
    blobs = [rng.randbytes(n) for n in (BLOCK // 2, 2 * BLOCK, 3 * BLOCK + 123)]
    digests = [_put(archive.store, blob) for blob in blobs]
    origin = Counting(archive.store)
    cache = CachedBlobStore(origin, 1 << 20, block_size=BLOCK, bypass_bytes=4 * BLOCK)
    for _ in range(2):
        for blob, digest in zip(blobs, digests, strict=True):
            for offset, length in _ranges(len(blob), rng, 40):
                assert cache.read_range(digest, offset, length) == blob[offset : offset + length]
    sizes = {digest: len(blob) for blob, digest in zip(blobs, digests, strict=True)}
    inside = [(sha, offset) for sha, offset, length in origin.reads if offset < sizes[sha]]
    assert len(inside) == len(set(inside)) == 1 + 2 + 4  # each block fetched once: then hits
    assert cache.stats.hits > 100
    first = cache.cached_range(digests[2], BLOCK + 10, 100)
    assert first == blobs[2][BLOCK + 10 : BLOCK + 110]
    across = cache.cached_range(digests[2], BLOCK - 10, 100)  # across two blocks
    assert across == blobs[2][BLOCK - 10 : BLOCK + 90]
    assert cache.cached_range(digests[2], 3 * BLOCK + 100, 100) is None  # past the end
    assert cache.cached_range("ab" * 32, 0, 10) is None  # not held: never fetched here
    with pytest.raises(NotFoundError):
        cache.read_range("cd" * 32, 0, 10)
    assert cache.local_path(digests[0]) == archive.store.local_path(digests[0])


def test_memory_and_disk_stay_within_their_bounds(archive: Archive, tmp_path: Path) -> None:
    rng = random.Random(2)
    blob = rng.randbytes(40 * BLOCK)
    digest = _put(archive.store, blob)
    folder = tmp_path / "cache"
    cache = CachedBlobStore(archive.store, 5 * BLOCK, folder=folder, disk_bytes=12 * BLOCK, block_size=BLOCK)
    assert cache.memory is not None and cache.disk is not None
    for offset, length in _ranges(len(blob), rng, 300):
        assert cache.read_range(digest, offset, length) == blob[offset : offset + length]
        assert cache.memory.bytes <= 5 * BLOCK
        on_disk = sum(path.stat().st_size for path in folder.glob("*/*"))
        assert on_disk == cache.disk.bytes <= 12 * BLOCK
    assert cache.stats.evicted > 0 and cache.stats.disk_hits > 0
    cache.delete(digest)  # forgets the object's blocks everywhere
    assert cache.memory.bytes == 0 and list(folder.glob("*/*")) == []
    with pytest.raises(NotFoundError):
        cache.read_range(digest, 0, 10)


def test_large_reads_bypass_the_cache(archive: Archive) -> None:
    blob = os.urandom(3 << 20)
    digest = _put(archive.store, blob)
    cache = CachedBlobStore(archive.store, 4 << 20, block_size=BLOCK)
    assert cache.read_range(digest, 5, 2 << 20) == blob[5 : 5 + (2 << 20)]  # a window of an ingest
    assert cache.stats.bypassed == 1 and cache.memory is not None and cache.memory.bytes == 0
    assert cache.read_range(digest, 5, 100_000) == blob[5:100_005]  # a large frame: kept
    assert cache.stats.bypassed == 1 and cache.memory.bytes == 7 * BLOCK


def test_concurrent_readers_of_a_block_make_one_fetch(archive: Archive) -> None:
    blob = os.urandom(8 * BLOCK)
    digest = _put(archive.store, blob)
    origin = Counting(archive.store, delay_s=0.2)
    cache = CachedBlobStore(origin, 1 << 20, block_size=BLOCK)
    start = threading.Barrier(16)
    got: list[bytes] = []

    def read(index: int) -> None:
        start.wait()
        got.append(cache.read_range(digest, 3 * BLOCK + index * 100, 50))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == sorted(blob[3 * BLOCK + i * 100 : 3 * BLOCK + i * 100 + 50] for i in range(16))
    assert origin.reads == [(digest, 3 * BLOCK, BLOCK)]


def test_many_threads_with_evictions_read_right(archive: Archive, tmp_path: Path) -> None:
    rng = random.Random(3)
    blobs = [rng.randbytes(n) for n in (9 * BLOCK + 7, 13 * BLOCK)]
    digests = [_put(archive.store, blob) for blob in blobs]
    cache = CachedBlobStore(
        archive.store, 4 * BLOCK, folder=tmp_path / "c", disk_bytes=8 * BLOCK, block_size=BLOCK
    )
    failures: list[str] = []

    def read(seed: int) -> None:
        local = random.Random(seed)
        for _ in range(60):
            which = local.randrange(2)
            blob, digest = blobs[which], digests[which]
            offset, length = local.randrange(len(blob) + 10), local.randrange(1, 2 * BLOCK)
            if cache.read_range(digest, offset, length) != blob[offset : offset + length]:
                failures.append(f"{which} {offset} {length}")

    threads = [threading.Thread(target=read, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert cache.memory is not None and cache.memory.bytes <= 4 * BLOCK
    assert cache.disk is not None and cache.disk.bytes <= 8 * BLOCK


def test_a_damaged_block_file_is_detected_and_fetched_again(
    archive: Archive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blob = os.urandom(4 * BLOCK)
    digest = _put(archive.store, blob)
    folder = tmp_path / "cache"
    origin = Counting(archive.store)
    cache = CachedBlobStore(origin, 0, folder=folder, disk_bytes=1 << 20, block_size=BLOCK)
    assert cache.read_range(digest, 0, 4 * BLOCK) == blob  # four blocks, now on disk
    files = sorted(folder.glob("*/*"), key=lambda path: int(path.name.rsplit(".", 1)[1]))
    assert len(files) == 4 and len(origin.reads) == 4
    flipped = bytearray(files[1].read_bytes())
    flipped[-100] ^= 0x40  # a bit flipped in the block's bytes
    files[1].write_bytes(bytes(flipped))
    files[2].write_bytes(files[2].read_bytes()[: BLOCK // 2])  # a torn write
    files[3].write_bytes(b"")  # a file left empty by a crash
    with caplog.at_level(logging.WARNING, "lamina.archive.cache"):
        assert cache.read_range(digest, 0, 4 * BLOCK) == blob
    assert cache.stats.damaged == 3 and cache.stats.disk_hits == 1
    assert len(origin.reads) == 7  # the three damaged blocks fetched again, the sound one not
    assert sum("damaged" in message for message in caplog.messages) == 3
    assert cache.read_range(digest, BLOCK, 2 * BLOCK) == blob[BLOCK : 3 * BLOCK]  # rewritten whole
    assert cache.stats.disk_hits == 3 and cache.stats.damaged == 3


def test_a_short_read_is_not_kept_and_a_repaired_object_is_read_again(archive: Archive) -> None:
    blob = os.urandom(3 * BLOCK)
    digest = _put(archive.store, blob)
    origin = Counting(archive.store)
    cache = CachedBlobStore(origin, 1 << 20, block_size=BLOCK)
    origin.short_once = True  # an answer cut short: less than the object's size says
    end = 2 * BLOCK
    assert cache.read_range(digest, end - 50, 50) == blob[end - 50 : end - 10]
    assert cache.read_range(digest, end - 50, 50) == blob[end - 50 : end]  # not kept: fetched again
    assert len(origin.reads) == 2
    overwrite_object(archive.store, digest, blob[: 2 * BLOCK + 10])  # truncated behind its back
    assert cache.read_range(digest, 2 * BLOCK, 100) == blob[2 * BLOCK : 2 * BLOCK + 10]
    cache.delete(digest)  # a repair through the store, as repair.py does it
    assert _put(cache, blob) == digest
    assert cache.read_range(digest, 2 * BLOCK, 100) == blob[2 * BLOCK : 2 * BLOCK + 100]
    assert cache.read_range(digest, BLOCK, 100) == blob[BLOCK : BLOCK + 100]


def test_the_settings_put_the_cache_in_front_of_the_primary(settings: Settings, tmp_path: Path) -> None:
    tuned = settings.with_(
        blob_cache_bytes=1 << 20, blob_cache_disk_bytes=4 << 20, blob_cache_block_bytes=BLOCK
    )
    archive = Archive.open(tuned)
    try:
        assert isinstance(archive.store, CachedBlobStore)
        blob = os.urandom(3 * BLOCK)
        digest = _put(archive.store, blob)
        assert archive.store.read_range(digest, 100, 2 * BLOCK) == blob[100 : 100 + 2 * BLOCK]
        assert hashlib.sha256(b"".join(archive.store.open(digest))).hexdigest() == digest
        assert len(list((settings.home / "cache" / "blobs").glob("*/*"))) == 3
    finally:
        archive.close()
    assert not isinstance(Archive.open(settings).store, CachedBlobStore)  # off by default


def test_cache_settings_from_the_environment(tmp_path: Path) -> None:
    env = {
        "LAMINA_BLOB_CACHE_BYTES": "512 MiB",
        "LAMINA_BLOB_CACHE_DISK_BYTES": "2GB",
        "LAMINA_BLOB_CACHE_DIR": str(tmp_path / "c"),
        "LAMINA_BLOB_CACHE_BLOCK_BYTES": "256KiB",
    }
    settings = Settings.load(tmp_path / "home", env=env)
    assert settings.blob_cache_bytes == 512 << 20 and settings.blob_cache_disk_bytes == 2 * 10**9
    assert settings.blob_cache_dir == tmp_path / "c" and settings.blob_cache_block_bytes == 256 << 10
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "lamina.toml").write_text('blob_cache_bytes = "1.5 GiB"\n')
    assert Settings.load(tmp_path / "home", env={}).blob_cache_bytes == 3 << 29
    for name, value in [("LAMINA_BLOB_CACHE_BYTES", "lots"), ("LAMINA_BLOB_CACHE_BLOCK_BYTES", "100")]:
        with pytest.raises(ConfigurationError, match=name):
            Settings.load(tmp_path / "home", env={name: value})


_CHILD = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.WARNING)
from lamina.archive.blobstore import FileBlobStore
from lamina.archive.blobstore.cache import CachedBlobStore
store = FileBlobStore(Path(sys.argv[1]))
cache = CachedBlobStore(store, 0, folder=Path(sys.argv[2]), disk_bytes=1 << 20, block_size=16384)
data = cache.read_range(sys.argv[3], 0, 4 * 16384)
print(cache.disk is not None, cache.stats.disk_hits, cache.stats.misses, len(data))
"""


def test_the_disk_tier_outlives_the_process_and_is_locked_to_one(tmp_path: Path) -> None:
    from lamina.archive.blobstore import FileBlobStore

    store = FileBlobStore(tmp_path / "blobs")
    digest = _put(store, os.urandom(4 * BLOCK))
    folder = tmp_path / "cache"

    def child() -> tuple[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(tmp_path / "blobs"), str(folder), digest],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip(), done.stderr

    assert child()[0] == f"True 0 4 {4 * BLOCK}"  # fetched from the store, kept on disk
    assert child()[0] == f"True 4 0 {4 * BLOCK}"  # the next process finds them
    held = CachedBlobStore(store, 0, folder=folder, disk_bytes=1 << 20, block_size=BLOCK)
    assert held.disk is not None
    out, err = child()  # this process holds the folder now: the child caches nothing on disk
    assert out == f"False 0 0 {4 * BLOCK}" and "held by another lamina process" in err
    with pytest.raises(ConfigurationError, match="blocks of 16384 bytes"):
        CachedBlobStore(store, 0, folder=folder, disk_bytes=1 << 20, block_size=2 * BLOCK)


def test_async_reads_are_answered_from_memory_or_fetched(archive: Archive, tmp_path: Path) -> None:
    import asyncio

    from lamina.archive.blobstore import FileBlobStore
    from lamina.archive.blobstore.replicated import ReplicatedBlobStore

    blob = os.urandom(3 * BLOCK)
    digest = _put(archive.store, blob)
    origin = Counting(archive.store)
    cache = CachedBlobStore(origin, 1 << 20, block_size=BLOCK)
    replicated = ReplicatedBlobStore(cache, FileBlobStore(tmp_path / "replica"))  # as Archive.open builds it

    async def reads() -> list[bytes]:
        return [
            await replicated.read_range_async(digest, BLOCK - 5, 10),  # two blocks fetched
            await replicated.read_range_async(digest, BLOCK + 5, 10),  # held
        ]

    assert asyncio.run(reads()) == [blob[BLOCK - 5 : BLOCK + 5], blob[BLOCK + 5 : BLOCK + 15]]
    assert len(origin.reads) == 2
    assert replicated.cached_range(digest, 2 * BLOCK - 5, 10) is None  # the third block is not held
    assert replicated.cached_range(digest, 5, 10) == blob[5:15]
