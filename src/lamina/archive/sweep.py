"""Find and remove what a crash can leave behind: objects no slide references, partial writes.

Every store is swept the same way through the :class:`BlobStore` contract (a folder, an S3
bucket): ``iter_digests`` lists the objects, ``modified_at`` gives their age, ``sweep_tmp``
removes partial writes (``tmp/`` files, or S3 temporary keys and multipart uploads). With a
replica, the replica's own listing is swept too: a crash between the primary's and the
replica's removal of an object leaves it in the replica only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lamina.archive.blobstore import BlobStore
from lamina.archive.blobstore.replicated import ReplicatedBlobStore
from lamina.archive.catalog import Catalog


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
