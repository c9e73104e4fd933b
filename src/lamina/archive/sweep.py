"""Find and remove what a crash can leave behind: objects no slide references, partial writes,
the spools of queued requests whose job will not read them again; and the job reports that no
request took, once old.

Every store is swept the same way through the :class:`BlobStore` contract (a folder, an S3
bucket): ``iter_digests`` lists the objects, ``modified_at`` gives their age, ``sweep_tmp``
removes partial writes (``tmp/`` files, or S3 temporary keys and multipart uploads). With a
replica, the replica's own listing is swept too: a crash between the primary's and the
replica's removal of an object leaves it in the replica only.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import delete

from lamina.archive.blobstore import BlobStore
from lamina.archive.blobstore.replicated import ReplicatedBlobStore
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.archive.receive.jobspool import JobSpools

#: A spool whose key no job in the queue has is taken for a request still spooling (its job is
#: queued once every instance is in) until this long after its newest write; past it, for what
#: an API process killed between spooling and queueing left.
SPOOL_GRACE_S = 3600.0
#: The statuses of a job that will run (again) or is running: its spool is never removed.
_WILL_RUN = frozenset({"todo", "doing", "aborting"})


@dataclass(frozen=True)
class SweepReport:
    orphans: list[str]
    partial_writes: int
    removed: bool


def find_orphans(catalog: Catalog, store: BlobStore, older_than_s: float = 3600.0) -> list[str]:
    """Objects no instance references, written more than ``older_than_s`` ago (an ingest still in
    progress elsewhere keeps its objects: an object of unknown age is never an orphan)."""
    referenced = catalog.referenced_blobs()
    cutoff = time.time() - older_than_s
    found = []
    for digest in store.iter_digests():
        if digest in referenced:
            continue
        if older_than_s > 0:
            written = store.modified_at(digest)
            if written is None or written > cutoff:
                continue
        found.append(digest)
    # a slide may have committed while we listed: what it references now is not an orphan
    referenced = catalog.referenced_blobs()
    return [digest for digest in found if digest not in referenced]


def sweep(
    catalog: Catalog, store: BlobStore, older_than_s: float = 3600.0, dry_run: bool = False
) -> SweepReport:
    """Remove the orphans (:func:`find_orphans`) and old partial writes, unless ``dry_run``.

    With a :class:`ReplicatedBlobStore`, an orphan of the primary is removed from both stores,
    and the replica's own orphans (those the primary no longer lists) from the replica."""
    orphans = find_orphans(catalog, store, older_than_s)
    replica = store.replica if isinstance(store, ReplicatedBlobStore) else None
    replica_only: list[str] = []
    if replica is not None:
        known = set(orphans)
        replica_only = [d for d in find_orphans(catalog, replica, older_than_s) if d not in known]
    partial = 0
    if not dry_run:
        referenced = catalog.referenced_blobs()
        for digest in orphans:
            if digest not in referenced:
                store.delete(digest)
        for digest in replica_only:
            if replica is not None and digest not in referenced:
                replica.delete(digest)
        partial = store.sweep_tmp(older_than_s)
    return SweepReport(orphans + replica_only, partial, not dry_run)


def sweep_job_spools(
    spools: JobSpools, statuses: Callable[[], Mapping[str, str]], older_than_s: float = SPOOL_GRACE_S
) -> list[str]:
    """Remove the job spools that no job will read again; returns their keys.

    ``statuses`` gives the status of each job of the queue by its key (Procrastinate's: ``todo``,
    ``doing``, ``aborting``, ``succeeded``, ``failed``, ``cancelled``, ``aborted``); it is read
    once the spools are listed, so that a job queued meanwhile counts. A spool is kept while its
    job is to run or running (a job to be retried later included); removed once its job has ended
    (whose own removal failed); and, when no job has its key, once its newest write is older than
    ``older_than_s``.
    """
    found = spools.newest_writes()
    if not found:
        return []
    known = statuses()
    cutoff = time.time() - older_than_s
    removed = []
    for key, newest in sorted(found.items()):
        status = known.get(key)
        if status in _WILL_RUN or (status is None and newest > cutoff):
            continue
        spools.remove(key)
        removed.append(key)
    return removed


def sweep_job_reports(catalog: Catalog, older_than_s: float) -> int:
    """Remove the job reports written more than ``older_than_s`` ago; how many. A report is taken
    (and deleted) by the request waiting for its job; one whose request answered 202 before the
    job ended stays, so that its outcome could still be told, until this sweep."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_s)
    with catalog.begin() as conn:
        return int(conn.execute(delete(t.job_reports).where(t.job_reports.c.created_at < cutoff)).rowcount)
