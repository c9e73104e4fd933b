"""Whole objects from one store to another, and their digests, in parallel ranges.

A cold slide's objects are large (a 2 GB slide is a few objects of hundreds of MB); one stream
per object leaves most of an S3 server's bandwidth unused. :func:`copy_object` reads the source
in ``part``-byte ranges, ``workers`` at a time, and hashes them in order as they arrive:

- into an S3 store, each range is sent as a part of one multipart upload **under the object's
  final key** (the name is its SHA-256, known beforehand): S3 makes the object visible only when
  the upload completes, and it is completed only once the SHA-256 of the bytes read equals the
  name (and each part was checked by the server against its own checksum); a mismatch aborts it
  and nothing appears. So no temporary object and no server-side copy into place (a whole extra
  pass over the data on most servers). An upload a crash leaves incomplete is removed by the
  store's sweep (:meth:`~.s3.S3BlobStore.sweep_tmp`);
- into any other store, through its writer (which computes and checks the digest itself).

:func:`object_sha256` reads an object back the same way to verify it.
Memory: at most ``workers + 1`` ranges in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from lamina.archive.blobstore.base import BlobRef, BlobStore
from lamina.errors import IntegrityError

__all__ = ["PART_BYTES", "WORKERS", "copy_object", "object_sha256"]

#: The range read (and part sent) at a time.
PART_BYTES = 16 << 20
#: Ranges in flight at once.
WORKERS = 4

T = TypeVar("T")


def _in_order(count: int, task: Callable[[int], T], workers: int) -> Iterator[T]:
    """``task(0)``, ``task(1)``, … run ``workers`` at a time, their results yielded in order;
    an error stops the rest (those queued are cancelled)."""
    if workers <= 1 or count <= 1:
        for index in range(count):
            yield task(index)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lamina-transfer") as pool:
        pending: deque[Future[T]] = deque()
        try:
            for index in range(count):
                pending.append(pool.submit(task, index))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _ranges(size: int, part: int) -> list[tuple[int, int]]:
    return [(offset, min(part, size - offset)) for offset in range(0, size, part)]


def _read(store: BlobStore, digest: str, offset: int, length: int, what: str) -> bytes:
    data = store.read_range(digest, offset, length)
    if len(data) != length:
        raise IntegrityError(
            f"object {digest} in {what}: {len(data)} bytes at offset {offset}, {length} expected "
            "(shorter than the catalog says)"
        )
    return data


def object_sha256(
    store: BlobStore, digest: str, size: int, *, workers: int = WORKERS, part: int = PART_BYTES
) -> str:
    """The SHA-256 of ``size`` bytes of object ``digest`` read back from ``store``."""
    ranges = _ranges(size, part)
    hasher = hashlib.sha256()
    for data in _in_order(len(ranges), lambda i: _read(store, digest, *ranges[i], "the store"), workers):
        hasher.update(data)
    return hasher.hexdigest()


def copy_object(
    source: BlobStore,
    target: BlobStore,
    digest: str,
    size: int,
    *,
    workers: int = WORKERS,
    part: int = PART_BYTES,
) -> BlobRef:
    """Copy object ``digest`` (``size`` bytes) from ``source`` to ``target`` (the module's
    docstring). :class:`IntegrityError` when the bytes read are not the object they name."""
    from lamina.archive.blobstore.s3 import S3BlobStore

    if isinstance(target, S3BlobStore) and size > part:
        part = max(part, target.part_size, -(-size // 10_000))  # S3's 10,000 parts at most
        return _multipart(source, target, digest, size, workers, part)
    ranges = _ranges(size, part)
    with target.writer() as writer:
        for data in _in_order(
            len(ranges), lambda i: _read(source, digest, *ranges[i], "the source"), workers
        ):
            writer.write(data)
        ref = writer.commit()
    if ref.sha256 != digest or ref.size != size:
        raise IntegrityError(
            f"object {digest} reads from the source as {ref.sha256} ({ref.size} bytes): damaged there"
        )
    return ref


def _multipart(source: BlobStore, target: Any, digest: str, size: int, workers: int, part: int) -> BlobRef:
    from lamina.archive.blobstore.s3 import CONTENT_TYPE

    client, bucket, key = target.client, target.bucket, target.key_for(digest)
    extra = {"ChecksumAlgorithm": "SHA256"} if target.checksum == "SHA256" else {}
    with target.errors("starting a multipart upload", key):
        upload_id = str(
            client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=CONTENT_TYPE, **extra)[
                "UploadId"
            ]
        )
    ranges = _ranges(size, part)

    def send(index: int) -> tuple[bytes, dict[str, Any]]:
        data = _read(source, digest, *ranges[index], "the source")
        checksum = target.body_checksum(data)
        with target.errors(f"uploading part {index + 1}", key):
            response = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=index + 1, Body=data, **checksum
            )
        entry: dict[str, Any] = {"PartNumber": index + 1, "ETag": response["ETag"]}
        if "ChecksumSHA256" in checksum:
            entry["ChecksumSHA256"] = response.get("ChecksumSHA256") or checksum["ChecksumSHA256"]
        return data, entry

    hasher = hashlib.sha256()
    parts = []
    try:
        for data, entry in _in_order(len(ranges), send, workers):
            hasher.update(data)
            parts.append(entry)
        if hasher.hexdigest() != digest:
            raise IntegrityError(
                f"object {digest} reads from the source as {hasher.hexdigest()}: damaged there, not copied"
            )
        with target.errors("completing the multipart upload", key):
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the sweep removes what is left
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return BlobRef(digest, size, created=True)
