"""The sweep: objects no instance references and partial writes are removed, on every store."""

from __future__ import annotations

import os

from lamina.archive.archive import Archive
from lamina.archive.blobstore import FileBlobStore
from lamina.archive.blobstore.s3 import MIN_PART_SIZE, S3BlobStore
from lamina.archive.ingest import Ingestor
from lamina.archive.sweep import find_orphans, sweep
from tests.support import ingest_path, shared_file


def _leave_partial_writes(archive: Archive) -> int:
    """What a process killed while writing leaves: a ``.part`` file, or on S3 a temporary key and
    an unfinished multipart upload; returns how many."""
    store = archive.store
    if isinstance(store, FileBlobStore):
        (store.tmp / "killed.part").write_bytes(b"half an object")
        return 1
    assert isinstance(store, S3BlobStore)
    store.client.put_object(Bucket=store.bucket, Key=store.tmp_key(), Body=b"half an object")
    upload = store.client.create_multipart_upload(Bucket=store.bucket, Key=store.tmp_key())
    store.client.upload_part(
        Bucket=store.bucket,
        Key=upload["Key"],
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=os.urandom(MIN_PART_SIZE),
    )
    return 2


def test_the_sweep_removes_orphans_and_partial_writes_and_keeps_the_rest(
    archive: Archive, ingestor: Ingestor
) -> None:
    result = ingest_path(ingestor, shared_file("aperio/CMU-1-Small-Region.svs"))
    assert result.status == "ingested"
    referenced = archive.catalog.referenced_blobs()
    with archive.store.writer() as writer:
        writer.write(b"an object no instance references")
        orphan = writer.commit().sha256
    partial = _leave_partial_writes(archive)

    # a recent orphan may belong to an ingest still running: the default grace period keeps it
    assert find_orphans(archive.catalog, archive.store) == []
    assert sweep(archive.catalog, archive.store, dry_run=True).orphans == []

    report = sweep(archive.catalog, archive.store, older_than_s=0)

    assert report.orphans == [orphan] and report.partial_writes == partial
    assert set(archive.store.iter_digests()) == referenced
    assert archive.store.sweep_tmp(0) == 0
    assert sweep(archive.catalog, archive.store, older_than_s=0).orphans == []
