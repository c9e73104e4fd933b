"""Deleting a slide: one catalog transaction, then the objects nothing references any more.

The order is ingest's, reversed. One transaction removes the slide's instances, the slide, its
series, its study when nothing else is left in it (patients stay), and appends the ``delete``
audit entry, which names the reason and every SOP Instance UID with its object's SHA-256. Only
after that commits are the objects removed from the blob store (and from its replica: see
:class:`~lamina.archive.blobstore.replicated.ReplicatedBlobStore`), and only those that no
instance references: the store is content-addressed, so another instance may share an object.

A crash before the commit leaves the slide whole; a crash after it leaves objects that nothing
references, which :func:`lamina.archive.sweep.sweep` removes, and which deleting the slide again
removes too (the audit entry names them). So a slide is either whole or gone, never visible with
an object missing.

One race remains, shared with the sweep: an ingest that writes an object identical to one being
removed here, and commits after this removal, refers to an object that is gone (``lamina
verify`` reports it as missing). Instances carry their own UIDs in their bytes, so two slides
share an object only when one is a byte copy of the other.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from lamina.archive import audit
from lamina.archive.blobstore import BlobStore
from lamina.archive.catalog import Catalog, availability, modalities
from lamina.archive.catalog import tables as t
from lamina.errors import LaminaError, NotFoundError, RequestError, StorageError

#: The longest reason kept in the audit log (characters).
MAX_REASON = 1000
_MAX_ACTOR = 128  # the audit log's actor column


@dataclass(frozen=True)
class RemovedInstance:
    sop_instance_uid: str
    sha256: str


@dataclass
class DeletedSlide:
    """What deleting one slide did.

    ``status`` is ``deleted``, or ``already deleted`` when an earlier deletion had committed
    (this one only removed the objects that were left). ``objects_removed`` counts the objects
    removed from the store now, ``objects_kept`` those another instance still references, and
    ``objects_left`` those that could not be removed (``error`` says why; deleting the slide
    again, or the sweep, removes them).
    """

    slide_id: str
    status: str
    instances: list[RemovedInstance] = field(default_factory=list)
    study_removed: bool = False
    audit_seq: int | None = None
    objects_removed: int = 0
    objects_kept: int = 0
    objects_left: int = 0
    error: str | None = None
    seconds: float = 0.0


def check_reason(reason: str) -> str:
    """The reason, stripped; an error naming the parameter when it is empty or too long."""
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise RequestError(
            "reason", "a deletion needs a reason, kept in the audit log (e.g. --reason 'wrong patient')"
        )
    if len(text) > MAX_REASON:
        raise RequestError(
            "reason", f"{len(text)} characters, over the {MAX_REASON} kept in the audit log; shorten it"
        )
    return text


def _check_actor(actor: str) -> str:
    if not actor.strip() or len(actor) > _MAX_ACTOR:
        raise RequestError("actor", f"{actor!r}: give a name of 1 to {_MAX_ACTOR} characters")
    return actor


def delete_slide(
    catalog: Catalog,
    store: BlobStore,
    slide_id: str,
    actor: str,
    reason: str,
    *,
    where: str = "the archive",
) -> DeletedSlide:
    """Delete the slide ``slide_id`` (see the module's docstring); ``where`` names the archive in
    the error raised when there is no such slide (:class:`~lamina.errors.NotFoundError`)."""
    started = time.perf_counter()
    reason, actor = check_reason(reason), _check_actor(actor)
    try:
        with catalog.begin() as conn:
            result = _remove_from_catalog(conn, slide_id, actor, reason)
    except SqlIntegrityError as exc:  # a slide or object was added to the study meanwhile
        raise StorageError(
            f"slide {slide_id} could not be deleted: the catalog changed meanwhile ({exc.orig}); "
            "run the deletion again"
        ) from exc
    if result is None:
        result = _earlier_deletion(catalog, slide_id)
        if result is None:
            raise NotFoundError(f"no slide {slide_id!r} in {where}; 'lamina slides' lists them")
    _remove_objects(catalog, store, result)
    result.seconds = time.perf_counter() - started
    return result


def _remove_from_catalog(conn: Connection, slide_id: str, actor: str, reason: str) -> DeletedSlide | None:
    """The catalog half, inside the caller's write transaction; None when there is no such slide."""
    # FOR UPDATE (PostgreSQL): a second deletion of the same slide waits, then finds it gone
    slide = (
        conn.execute(
            select(
                t.slides.c.id,
                t.slides.c.series_instance_uid,
                t.slides.c.study_instance_uid,
                t.slides.c.source_blake3,
                t.slides.c.container_id,
            )
            .where(t.slides.c.id == slide_id)
            .with_for_update()
        )
        .mappings()
        .first()
    )
    if slide is None:
        return None
    rows = conn.execute(
        select(t.instances.c.sop_instance_uid, t.instances.c.blob_sha256)
        .where(t.instances.c.slide_id == slide_id)
        .order_by(t.instances.c.instance_number, t.instances.c.sop_instance_uid)
    ).all()
    removed = [RemovedInstance(str(sop), str(digest)) for sop, digest in rows]
    series, study = str(slide["series_instance_uid"]), str(slide["study_instance_uid"])
    conn.execute(delete(t.instances).where(t.instances.c.slide_id == slide_id))
    conn.execute(delete(t.slides).where(t.slides.c.id == slide_id))
    # a deleted slide leaves the collections that held it (lamina.governance.collections), and
    # its flag of interest and trace go with it (the trace's thumbnail is then swept)
    for table in (t.collection_slides, t.slide_interest, t.slide_traces):
        conn.execute(delete(table).where(table.c.slide_id == slide_id))
    # the series goes unless other objects (an annotation stored into it) are still in it
    conn.execute(
        delete(t.series).where(
            t.series.c.series_instance_uid == series,
            ~exists().where(t.instances.c.series_instance_uid == series),
        )
    )
    study_removed = (
        conn.execute(
            delete(t.studies).where(
                and_(
                    t.studies.c.study_instance_uid == study,
                    ~exists().where(t.series.c.study_instance_uid == study),
                    ~exists().where(t.slides.c.study_instance_uid == study),
                )
            )
        ).rowcount
        == 1
    )
    if not study_removed:
        modalities.refresh(conn, study)
        availability.refresh(conn, study)
    detail: dict[str, Any] = {
        "reason": reason,
        "series": series,
        "study": study,
        "study_removed": study_removed,
        "container_id": slide["container_id"],
        "source_blake3": slide["source_blake3"],
        "instances": [{"sop_instance_uid": r.sop_instance_uid, "sha256": r.sha256} for r in removed],
    }
    seq = audit.append(conn, actor, "delete", f"slide/{slide_id}", detail)
    return DeletedSlide(slide_id, "deleted", removed, study_removed, seq)


def _earlier_deletion(catalog: Catalog, slide_id: str) -> DeletedSlide | None:
    """The last committed deletion of this slide, from its audit entry (None when never deleted)."""
    with catalog.engine.connect() as conn:
        found = audit.entries(conn, slide=slide_id, action="delete", limit=1)
    if not found or found[-1].entity != f"slide/{slide_id}":
        return None
    entry = found[-1]
    removed = [
        RemovedInstance(str(item["sop_instance_uid"]), str(item["sha256"]))
        for item in entry.detail.get("instances", [])
        if isinstance(item, dict) and "sop_instance_uid" in item and "sha256" in item
    ]
    return DeletedSlide(
        slide_id, "already deleted", removed, bool(entry.detail.get("study_removed")), entry.seq
    )


def _referenced(catalog: Catalog, digests: Sequence[str]) -> set[str]:
    """Which of ``digests`` an instance references now (through the index on blob_sha256)."""
    found: set[str] = set()
    with catalog.engine.connect() as conn:
        for start in range(0, len(digests), 500):
            chunk = list(digests[start : start + 500])
            query = select(t.instances.c.blob_sha256).where(t.instances.c.blob_sha256.in_(chunk)).distinct()
            found.update(str(row[0]) for row in conn.execute(query))
    return found


def _remove_objects(catalog: Catalog, store: BlobStore, result: DeletedSlide) -> None:
    """Remove the slide's objects that nothing references; count what was kept and left."""
    digests = sorted({item.sha256 for item in result.instances})
    pending = list(digests)
    try:
        # read after the commit: an instance added since (sharing an object) keeps it
        kept = _referenced(catalog, digests)
        result.objects_kept = len(kept)
        pending = [digest for digest in digests if digest not in kept]
        while pending:
            existed = store.exists(pending[-1])
            # removed even when the primary has it no more: a replica may still hold it
            store.delete(pending[-1])
            pending.pop()
            result.objects_removed += existed
    except LaminaError as exc:
        result.objects_left = len(pending)
        result.error = (
            f"slide {result.slide_id} is deleted from the catalog, but {len(pending)} of its "
            f"objects could not be removed ({exc}); run the deletion again, or the sweep, to remove them"
        )
