"""Find and remove what a crash can leave behind: objects no slide references, partial writes."""

from __future__ import annotations

import time
from dataclasses import dataclass

from lamina.archive.blobstore import BlobStore, FileBlobStore
from lamina.archive.catalog import Catalog


@dataclass(frozen=True)
class SweepReport:
    orphans: list[str]
    partial_writes: int
    removed: bool


def sweep(
    catalog: Catalog, store: BlobStore, older_than_s: float = 3600.0, dry_run: bool = False
) -> SweepReport:
    """Objects referenced by no instance, older than ``older_than_s`` (so that an ingest still in
    progress elsewhere keeps its objects), are orphans; removed unless ``dry_run``."""
    referenced = catalog.referenced_blobs()
    cutoff = time.time() - older_than_s
    orphans = []
    for digest in store.iter_digests():
        if digest in referenced:
            continue
        path = store.local_path(digest)
        if path is not None and older_than_s > 0:
            from pathlib import Path

            if Path(path).stat().st_mtime > cutoff:
                continue
        orphans.append(digest)
    partial = 0
    if not dry_run:
        # re-check against the catalog: a slide may have committed while we listed
        referenced = catalog.referenced_blobs()
        for digest in orphans:
            if digest not in referenced:
                store.delete(digest)
        if isinstance(store, FileBlobStore):
            partial = store.sweep_tmp(older_than_s)
    return SweepReport(orphans, partial, not dry_run)
