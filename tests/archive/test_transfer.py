"""Whole objects between stores in parallel ranges (blobstore.transfer), against the real S3
server (SeaweedFS on loopback) and a folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lamina.archive.blobstore import open_blobstore
from lamina.archive.blobstore.filesystem import FileBlobStore
from lamina.archive.blobstore.s3 import MIN_PART_SIZE, S3BlobStore
from lamina.archive.blobstore.transfer import copy_object, object_sha256
from lamina.errors import IntegrityError
from tests.s3server import BUCKET, S3Server


@pytest.fixture
def s3store(s3_server: S3Server, request: pytest.FixtureRequest) -> S3BlobStore:
    prefix = f"t/{request.node.name[:60]}-{os.urandom(4).hex()}"
    return S3BlobStore.from_url(f"s3://{BUCKET}/{prefix}", s3_server.env())


def _folder(path: Path) -> FileBlobStore:
    store = open_blobstore(f"file://{path}")
    assert isinstance(store, FileBlobStore)
    return store


def _put(store: FileBlobStore, data: bytes) -> str:
    with store.writer() as writer:
        writer.write(data)
        return writer.commit().sha256


def _keys_and_uploads(store: S3BlobStore) -> tuple[list[str], list[str]]:
    listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    return (
        [item["Key"] for item in listed.get("Contents", [])],
        [item["Key"] for item in uploads.get("Uploads", [])],
    )


def test_a_large_object_goes_to_s3_in_parallel_parts_under_its_final_key(
    s3store: S3BlobStore, tmp_path: Path
) -> None:
    folder = _folder(tmp_path / "hot")
    data = os.urandom(2 * MIN_PART_SIZE + 12345)  # three parts, the last one short
    digest = _put(folder, data)
    ref = copy_object(folder, s3store, digest, len(data), part=MIN_PART_SIZE, workers=3)
    assert (ref.sha256, ref.size) == (digest, len(data))
    assert _keys_and_uploads(s3store) == ([s3store.key_for(digest)], [])  # no temporary key
    assert object_sha256(s3store, digest, len(data), part=5 << 20) == digest
    assert s3store.read_range(digest, MIN_PART_SIZE - 3, 6) == data[MIN_PART_SIZE - 3 : MIN_PART_SIZE + 3]
    # and back, through the folder's writer
    back = _folder(tmp_path / "back")
    assert copy_object(s3store, back, digest, len(data), part=MIN_PART_SIZE).sha256 == digest
    assert hashlib.sha256(back.path_for(digest).read_bytes()).hexdigest() == digest


def test_a_damaged_source_aborts_the_upload_and_leaves_nothing(s3store: S3BlobStore, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "hot")
    data = os.urandom(2 * MIN_PART_SIZE + 1)
    digest = _put(folder, data)
    path = folder.path_for(digest)
    path.chmod(0o644)
    damaged = bytearray(data)
    damaged[MIN_PART_SIZE + 7] ^= 0xFF  # a bit flipped in the second part, same size
    path.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match=digest):
        copy_object(folder, s3store, digest, len(data), part=MIN_PART_SIZE)
    assert _keys_and_uploads(s3store) == ([], [])
    other = _folder(tmp_path / "other")
    with pytest.raises(IntegrityError, match="damaged"):
        copy_object(folder, other, digest, len(data), part=MIN_PART_SIZE)
    assert not other.exists(digest)
    # a size shorter than the catalog's is named too
    path.write_bytes(data[:100])
    with pytest.raises(IntegrityError, match="shorter than the catalog says"):
        object_sha256(folder, digest, len(data))


def test_the_sweep_aborts_an_upload_a_crash_left_under_a_final_key(s3store: S3BlobStore) -> None:
    key = s3store.key_for("ab" * 32)
    s3store.client.create_multipart_upload(Bucket=s3store.bucket, Key=key)
    assert _keys_and_uploads(s3store)[1] == [key]
    assert s3store.sweep_tmp(older_than_s=0) == 1
    assert _keys_and_uploads(s3store) == ([], [])
