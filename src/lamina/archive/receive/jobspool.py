"""Where the instances of a queued request wait for its job: ``<blob store>/spool/<job key>``.

A STOW-RS request on a PostgreSQL catalog copies its instances into a store of its own, of the
archive's kind (a folder, or a prefix of the S3 bucket), so that a worker on another host reads
them; then it queues one job, named by the same key. Layout, beside the archive's objects but
never listed, verified or swept with them::

    <blob store>/spool/<job key>/sha256/...   the instances, as objects of a blob store
                                 /tmp/...      their partial writes

Each spool has one owner, its job, which removes it whole (objects, partial writes, folders)
when it ends: stored, or failed for good; a job to be retried keeps it. What nobody removes
otherwise (the API process killed between spooling and queueing, a job that could not remove
its spool, a job failed and left in the queue) is removed by :func:`lamina.archive.sweep.sweep_job_spools`,
which lists the spools here with the time of their newest write.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.archive.blobstore import BlobStore, open_blobstore
from lamina.config import Settings
from lamina.errors import StorageError

if TYPE_CHECKING:
    from lamina.archive.blobstore.s3 import S3BlobStore

SPOOL = "spool"
#: DeleteObjects takes 1,000 keys at most.
_DELETE_BATCH = 1000


class JobSpools:
    """The job spools of the blob store at ``blob_url`` (``file://`` or ``s3://``).

    Parameters
    ----------
    blob_url
        The archive's blob store; the spools are under its ``spool/``.
    verify_after_write
        As for the archive's objects: every spooled instance is read back before it counts.
    s3_env
        The S3 connection (the ``AWS_*`` settings) of an ``s3://`` store.
    """

    def __init__(
        self, blob_url: str, verify_after_write: bool = True, s3_env: Mapping[str, str] | None = None
    ) -> None:
        self.url = f"{blob_url.rstrip('/')}/{SPOOL}"
        self.verify_after_write = verify_after_write
        self.s3_env = dict(s3_env or {})
        self._parent: S3BlobStore | None = None  # the bucket's client, once reached

    @classmethod
    def of(cls, settings: Settings) -> JobSpools:
        """The job spools of the archive of ``settings``."""
        return cls(settings.blob_url, settings.verify_after_write, settings.s3)

    @property
    def folder(self) -> Path | None:
        """Where the spools are on a folder store; None on S3."""
        return Path(self.url.removeprefix("file://")) if self.url.startswith("file://") else None

    def open(self, key: str) -> BlobStore:
        """The spool of job ``key``, as a blob store (made when first written)."""
        return open_blobstore(f"{self.url}/{_checked(key)}", self.verify_after_write, self.s3_env)

    def newest_writes(self) -> dict[str, float]:
        """Every spool, by job key, with the POSIX time of its newest write (an object, a partial
        write, a folder; on S3 an object, or the start of an unfinished upload)."""
        if self.folder is not None:
            return _folder_spools(self.folder)
        store = self._s3()
        newest: dict[str, float] = {}

        def seen(key: str, when: float) -> None:
            name = key[len(store.prefix) :].split("/", 1)[0]
            if _valid(name):
                newest[name] = max(newest.get(name, 0.0), when)

        with store.errors("listing the job spools"):
            for item in _listed(store, store.prefix, "list_objects_v2", "Contents"):
                seen(str(item["Key"]), item["LastModified"].timestamp())
            for upload in _listed(store, store.prefix, "list_multipart_uploads", "Uploads"):
                seen(str(upload["Key"]), upload["Initiated"].timestamp())
        return newest

    def remove(self, key: str) -> None:
        """Remove the spool of job ``key`` whole (nothing when there is none)."""
        _checked(key)
        if self.folder is not None:
            try:
                shutil.rmtree(self.folder / key)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(
                    f"cannot remove the job spool {self.folder / key} ({exc.strerror}); check its permissions"
                ) from exc
            return
        store = self._s3()
        start = f"{store.prefix}{key}/"
        with store.errors(f"removing the job spool {key}"):
            # listed in full before any is removed: removing while paging could skip some
            keys = [str(item["Key"]) for item in _listed(store, start, "list_objects_v2", "Contents")]
            uploads = list(_listed(store, start, "list_multipart_uploads", "Uploads"))
            for first in range(0, len(keys), _DELETE_BATCH):
                batch = [{"Key": name} for name in keys[first : first + _DELETE_BATCH]]
                store.client.delete_objects(Bucket=store.bucket, Delete={"Objects": batch, "Quiet": True})
            for upload in uploads:
                store.client.abort_multipart_upload(
                    Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )

    def _s3(self) -> S3BlobStore:
        """The bucket's client at ``spool/`` (one for every call)."""
        if self._parent is None:
            from lamina.archive.blobstore.s3 import S3BlobStore

            self._parent = S3BlobStore.from_url(self.url, self.s3_env, check=False)
        return self._parent


def _valid(key: str) -> bool:
    return key.isascii() and key.isalnum()


def _checked(key: str) -> str:
    if not _valid(key):
        raise ValueError(f"spool key {key!r}: letters and digits only")
    return key


def _listed(store: S3BlobStore, prefix: str, operation: str, field: str) -> list[dict[str, Any]]:
    """Every item of a paginated S3 listing under ``prefix``."""
    pages = store.client.get_paginator(operation).paginate(Bucket=store.bucket, Prefix=prefix)
    return [item for page in pages for item in page.get(field, [])]


def _folder_spools(root: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    try:
        folders = [path for path in root.iterdir() if path.is_dir() and _valid(path.name)]
    except FileNotFoundError:
        return found
    for folder in folders:
        newest = 0.0
        for top, _dirs, files in os.walk(folder):
            base = Path(top)
            for path in (base, *(base / name for name in files)):
                try:
                    newest = max(newest, path.stat().st_mtime)
                except FileNotFoundError:  # removed meanwhile (its job ended)
                    continue
        if newest:
            found[folder.name] = newest
    return found
