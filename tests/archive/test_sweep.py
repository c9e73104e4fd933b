"""The sweep: objects no instance references, partial writes and the spools of queued requests
that no job will read are removed, on every store."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from lamina.archive.archive import Archive
from lamina.archive.blobstore import FileBlobStore
from lamina.archive.blobstore.s3 import MIN_PART_SIZE, S3BlobStore
from lamina.archive.catalog import tables as t
from lamina.archive.ingest import Ingestor
from lamina.archive.receive.jobspool import JobSpools
from lamina.archive.sweep import find_orphans, sweep, sweep_job_reports, sweep_job_spools
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


def _spool(archive: Archive, key: str, *contents: bytes) -> None:
    """A job spool as a queued STOW-RS request writes it (``Archive.spool``), with the partial
    writes a kill leaves beside its objects: a ``.part`` file, or an S3 temporary key and an
    unfinished multipart upload."""
    spool = archive.spool(key)
    for data in contents:
        with spool.writer() as writer:
            writer.write(data)
            writer.commit()
    if isinstance(spool, FileBlobStore):
        (spool.tmp / "killed.part").write_bytes(b"half")
        return
    assert isinstance(spool, S3BlobStore)
    spool.client.put_object(Bucket=spool.bucket, Key=spool.tmp_key(), Body=b"half")
    spool.client.create_multipart_upload(Bucket=spool.bucket, Key=spool.tmp_key())


def _left(archive: Archive, spools: JobSpools) -> set[str]:
    """The job keys with anything left in the store: a folder (even empty), a key or an upload."""
    if spools.folder is not None:
        return {path.name for path in spools.folder.iterdir()} if spools.folder.is_dir() else set()
    store = archive.store
    assert isinstance(store, S3BlobStore)
    prefix = f"{store.prefix}spool/"
    found = set()
    for operation, field in (("list_objects_v2", "Contents"), ("list_multipart_uploads", "Uploads")):
        pages = store.client.get_paginator(operation).paginate(Bucket=store.bucket, Prefix=prefix)
        found |= {
            str(item["Key"])[len(prefix) :].split("/")[0] for page in pages for item in page.get(field, [])
        }
    return found


def test_job_spools_no_job_will_read_are_removed_whole_and_the_others_kept(archive: Archive) -> None:
    # Arrange: spools of jobs to run, running, to be retried, ended; one a killed API process left
    # (no job, written a while ago), one a request is writing now (no job yet)
    spools = JobSpools.of(archive.settings)
    statuses = {"todo": "todo", "doing": "doing", "aborting": "aborting", "failed": "failed"}
    statuses |= {"cancelled": "cancelled", "succeeded": "succeeded"}
    for key in [*statuses, "killed"]:
        _spool(archive, key, f"an instance of {key}".encode(), os.urandom(100))
    time.sleep(3)
    _spool(archive, "spooling", b"an instance on its way")
    assert set(spools.newest_writes()) == {*statuses, "killed", "spooling"}
    read: list[bool] = []

    def queue() -> dict[str, str]:
        read.append(True)
        return statuses

    # Act
    removed = sweep_job_spools(spools, queue, older_than_s=2)

    # Assert
    assert removed == ["cancelled", "failed", "killed", "succeeded"] and read == [True]
    assert _left(archive, spools) == {"todo", "doing", "aborting", "spooling"}
    assert set(spools.newest_writes()) == {"todo", "doing", "aborting", "spooling"}
    # with no bound, a spool without a job goes too; a job to run keeps its own
    assert sweep_job_spools(spools, dict, older_than_s=0) == ["aborting", "doing", "spooling", "todo"]
    assert sweep_job_spools(spools, queue) == [] and _left(archive, spools) == set()
    # the archive's objects are not touched by any of it
    assert list(archive.store.iter_digests()) == []


def test_a_job_spool_is_removed_whole_and_named_by_letters_and_digits(archive: Archive) -> None:
    spools = JobSpools.of(archive.settings)
    _spool(archive, "abc123", b"one", b"two")
    spools.remove("abc123")
    spools.remove("abc123")  # nothing left: nothing to do
    assert _left(archive, spools) == set() and spools.newest_writes() == {}
    for bad in ("../blobs", "a/b", ""):
        with pytest.raises(ValueError, match="letters and digits only"):
            spools.remove(bad)


def test_job_reports_no_request_took_are_kept_for_a_while_then_removed(archive: Archive) -> None:
    now = dt.datetime.now(dt.UTC)
    ages = {"eightdays": dt.timedelta(days=8), "sixdays": dt.timedelta(days=6), "now": dt.timedelta(0)}
    with archive.catalog.begin() as conn:
        for key, age in ages.items():
            conn.execute(
                t.job_reports.insert().values(job_key=key, kind="stow", created_at=now - age, report="[]")
            )

    removed = sweep_job_reports(archive.catalog, older_than_s=7 * 86400)

    with archive.catalog.engine.connect() as conn:
        left = {row.job_key for row in conn.execute(t.job_reports.select())}
    assert removed == 1 and left == {"sixdays", "now"}
    assert sweep_job_reports(archive.catalog, older_than_s=7 * 86400) == 0
