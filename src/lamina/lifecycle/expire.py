"""Expiring a slide after its care retention: its pyramid's objects go, its trace stays.

The order is deletion's (:mod:`lamina.archive.delete`), with the trace written first:

1. the thumbnail (when the rule keeps one) is drawn from the smallest level that covers its size
   and written to the blob store;
2. one catalog transaction, with the slide locked, checks again that no hold and no flag of
   interest came since the plan (either one keeps the slide: nothing is done), removes the
   slide's instances, marks the slide expired, writes its trace (the rule and its digest, the
   report's date, the thumbnail, the SHA-256 and size of every object deleted) and the ``expire``
   audit entry;
3. the objects no instance references any more are removed from the store, and the trace says
   so (``objects_removed_at``).

A crash before 2 commits leaves the slide whole (and a thumbnail nothing references, which the
sweep removes); after it, objects that nothing references, which the next lifecycle run removes
(:func:`leftovers`: the traces without ``objects_removed_at``; the trace names the objects).
So an expired slide never shows a missing object, and a slide is either whole or expired. The
slide, its series and its case stay in the catalog: the slide is still listed, flagged expired,
with its thumbnail; its frames and instances answer 410 Gone.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from lamina.archive import audit
from lamina.archive.blobstore import BlobStore
from lamina.archive.catalog import Catalog, availability
from lamina.archive.catalog import tables as t
from lamina.errors import ConfigurationError, LaminaError, NotFoundError
from lamina.lifecycle import trace

__all__ = ["Expired", "expire_slide", "leftovers"]


@dataclass
class Expired:
    """What expiring one slide did: ``status`` ``expired``, ``already expired`` (only leftover
    objects removed), or ``kept`` (a hold or a flag of interest came since the plan: ``reason``)."""

    slide_id: str
    status: str
    reason: str = ""
    objects: list[tuple[str, str, int]] = field(default_factory=list)  # (SOP Instance UID, sha256, bytes)
    bytes_freed: int = 0
    objects_removed: int = 0
    objects_left: int = 0
    thumbnail_sha256: str | None = None
    error: str | None = None
    seconds: float = 0.0


def expire_slide(
    catalog: Catalog,
    store: BlobStore,
    slide_id: str,
    *,
    rule: str,
    rule_digest: str,
    report_at: dt.datetime | None,
    thumbnail_side: int | None,
    actor: str,
    cold_store: BlobStore | None = None,
) -> Expired:
    """Expire ``slide_id`` (see the module's docstring); ``thumbnail_side`` None keeps the record
    only. With ``cold_store`` (the cold tier), the slide's objects leave it too (a cold slide's,
    and the copy a restored slide keeps there). :class:`NotFoundError` when there is no such slide."""
    started = time.perf_counter()
    slide = catalog.slide(slide_id)
    if slide is None:
        raise NotFoundError(f"no slide {slide_id} on this node")
    if slide.expired_at is not None:
        result = _already(catalog, slide_id)
        _remove_objects(catalog, [store, cold_store], result)
        result.seconds = time.perf_counter() - started
        return result
    rows = catalog.instances(slide_id)
    # the thumbnail is drawn from where the slide's objects are (a background read of the cold
    # tier is what an archive storage class allows; the viewer's reads wait for a restore)
    source = store
    if slide.tier == "cold":
        if cold_store is None:
            raise ConfigurationError(
                f"slide {slide_id} is on the cold tier, which is not configured here: set "
                "LAMINA_COLD_URL (or url in tiers.cold of lamina.toml) to expire it"
            )
        source = cold_store
    picture = trace.render(source, rows, thumbnail_side) if thumbnail_side and rows else None
    thumbnail_ref = None
    if picture is not None:
        writer = store.writer()
        writer.write(picture.jpeg)
        thumbnail_ref = writer.commit()
    now = dt.datetime.now(dt.UTC)
    objects = [(row.sop_instance_uid, row.blob_sha256, row.bytes) for row in rows]
    result = Expired(slide_id, "expired", objects=objects, bytes_freed=sum(size for _, _, size in objects))
    with catalog.begin() as conn:
        locked = conn.execute(
            select(t.slides.c.expired_at, t.slides.c.tenant)
            .where(t.slides.c.id == slide_id)
            .with_for_update()
        ).first()
        if locked is None:
            raise NotFoundError(f"no slide {slide_id} on this node")
        if locked[0] is not None:  # expired by another run meanwhile
            result = _already(catalog, slide_id)
        else:
            kept = _kept_by(conn, slide_id)
            if kept:
                result.status, result.reason, result.objects, result.bytes_freed = "kept", kept, [], 0
            else:
                conn.execute(delete(t.instances).where(t.instances.c.slide_id == slide_id))
                # the source's digest moves to the trace: the same file ingested again (a slide
                # scanned again, restored from elsewhere) is a new series of the case, not a duplicate
                conn.execute(
                    update(t.slides)
                    .where(t.slides.c.id == slide_id)
                    .values(expired_at=now, source_blake3=f"expired:{slide_id}")
                )
                availability.refresh(conn, slide.study_instance_uid)
                deleted = [{"sop": sop, "sha256": digest, "bytes": size} for sop, digest, size in objects]
                conn.execute(
                    insert(t.slide_traces).values(
                        slide_id=slide_id,
                        expired_at=now,
                        rule=rule,
                        rule_digest=rule_digest,
                        report_at=report_at,
                        source_blake3=slide.source_blake3,
                        thumbnail_sha256=thumbnail_ref.sha256 if thumbnail_ref else None,
                        thumbnail_width=picture.width if picture else None,
                        thumbnail_height=picture.height if picture else None,
                        deleted=json.dumps(deleted),
                        bytes_freed=result.bytes_freed,
                        actor=actor,
                    )
                )
                audit.append(
                    conn,
                    actor,
                    "expire",
                    f"slide/{slide_id}",
                    {
                        "tenant": locked[1],
                        "rule": rule,
                        "rule_digest": rule_digest,
                        "report_at": report_at.isoformat() if report_at else None,
                        "thumbnail": thumbnail_ref.sha256 if thumbnail_ref else None,
                        "bytes_freed": result.bytes_freed,
                        "instances": deleted,
                    },
                )
                result.thumbnail_sha256 = thumbnail_ref.sha256 if thumbnail_ref else None
    if result.status != "kept":
        _remove_objects(catalog, [store, cold_store], result)
    result.seconds = time.perf_counter() - started
    return result


def _kept_by(conn: Connection, slide_id: str) -> str:
    """Why the slide must be kept now (a hold, a flag of interest), or ""."""
    held = conn.execute(
        select(t.holds.c.reason)
        .where(t.holds.c.slide_id == slide_id, t.holds.c.released_at.is_(None))
        .limit(1)
    ).first()
    if held is not None:
        return f"held: {held[0]}"
    interest = conn.execute(
        select(t.slide_interest.c.category).where(t.slide_interest.c.slide_id == slide_id)
    ).first()
    return f"slide of interest ({interest[0]})" if interest is not None else ""


def _already(catalog: Catalog, slide_id: str) -> Expired:
    with catalog.engine.connect() as conn:
        row = conn.execute(
            select(t.slide_traces.c.deleted, t.slide_traces.c.thumbnail_sha256).where(
                t.slide_traces.c.slide_id == slide_id
            )
        ).first()
    deleted = json.loads(row[0]) if row is not None else []
    objects = [(str(item["sop"]), str(item["sha256"]), int(item["bytes"])) for item in deleted]
    return Expired(slide_id, "already expired", objects=objects, thumbnail_sha256=row[1] if row else None)


def _remove_objects(catalog: Catalog, stores: list[BlobStore | None], result: Expired) -> None:
    digests = sorted({digest for _, digest, _ in result.objects})
    pending = list(digests)
    try:
        kept = catalog.blobs_in_use(digests) if digests else set()
        for store in stores:
            if store is None:
                continue
            pending = [digest for digest in digests if digest not in kept]
            removed = 0
            while pending:
                existed = store.exists(pending[-1])
                store.delete(pending[-1])
                pending.pop()
                removed += existed
            result.objects_removed += removed
        with catalog.begin() as conn:
            conn.execute(
                update(t.slide_traces)
                .where(
                    t.slide_traces.c.slide_id == result.slide_id,
                    t.slide_traces.c.objects_removed_at.is_(None),
                )
                .values(objects_removed_at=dt.datetime.now(dt.UTC))
            )
    except LaminaError as exc:
        result.objects_left = len(pending)
        result.error = (
            f"slide {result.slide_id} is expired, but {len(pending)} of its objects could not be removed "
            f"({exc}); the next 'lamina lifecycle run' removes them"
        )


def leftovers(catalog: Catalog, limit: int = 1000) -> list[str]:
    """The expired slides whose objects may not all have left the store (a crash or a storage
    error after the commit): :func:`expire_slide` on each removes them."""
    query = (
        select(t.slide_traces.c.slide_id)
        .where(t.slide_traces.c.objects_removed_at.is_(None))
        .order_by(t.slide_traces.c.slide_id)
        .limit(limit)
    )
    with catalog.engine.connect() as conn:
        return [str(row[0]) for row in conn.execute(query)]
