"""Hot and cold tiers: moving a slide's objects between the archive's store and the cold store.

The hot tier is the archive's blob store (``blob_url``); the cold tier is a second store,
``[tiers.cold]`` in lamina.toml (:class:`lamina.config.ColdTierSettings`): a folder, or an S3
bucket and prefix, optionally in a storage class. ``slides.tier`` says where a slide is read from.

A move (:meth:`TierMover.move_slide`) of a slide from tier S to tier T goes:

1. **copy**: each object of the slide's instances is copied from S to T, in parallel ranges
   (:func:`~lamina.archive.blobstore.transfer.copy_object`; an object T already has, of the right
   size, is kept: both stores are content-addressed, so an object's name is the SHA-256 its
   writer computed and checked as it was committed; a copy is idempotent);
2. **verify**: each object copied is read back from T, in parallel ranges, and its SHA-256
   computed again;
3. **switch**: one catalog transaction, with the slide locked, checks it again (not expired, not
   under a legal hold for a move to cold, still on S), sets ``slides.tier`` to T and appends the
   ``tier-move`` audit entry (``tier-restore`` for a restore) with every object's SHA-256 and size;
   a switch to hot also ends the slide's restore request (:mod:`lamina.lifecycle.restore`); a
   switch to cold records the deletion to come (a ``job_reports`` row, kind ``tier-delete``,
   under :func:`delete_key`);
4. **delete**: the objects on S that nothing read from S references any more are removed, on a
   move to cold only, and the deletion's record with them. A move to hot keeps the cold copy, so
   that a restored slide returns to cold by rule as a catalog switch and a removal from the hot
   store, without copying again.

A crash before 3 commits leaves the slide on S, whole, with objects on T that nothing references
yet (the next move takes them as they are); after it, the slide is on T, whole and verified, and
objects on S that the next move removes (it finds the slide on T and goes straight to 4). So the
slide is always readable from where the catalog says, and running the move again finishes it.
The lifecycle's run moves no cold slide again (nothing is due for it), and the hot copies of a
cold slide are referenced (by its instances): neither the run nor the sweep would see them. So
the run starts with :meth:`TierMover.finish`, step 4 of every move to cold whose deletion is
still recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import Connection

from lamina.archive import audit
from lamina.archive.blobstore import BlobStore, open_blobstore
from lamina.archive.blobstore.transfer import copy_object, object_sha256
from lamina.archive.catalog import Catalog, availability
from lamina.archive.catalog import tables as t
from lamina.errors import IntegrityError, NotFoundError, RequestError
from lamina.lifecycle.rules import Tier

if TYPE_CHECKING:
    from lamina.archive.archive import Archive
    from lamina.config import Settings

__all__ = ["ColdTier", "Moved", "TierMover", "delete_key", "restore_key"]

#: The steps of a move, as :class:`TierMover`'s ``on_step`` hears them (crash tests kill there).
STEPS = ("copy", "verify", "switch", "delete")


def restore_key(slide_id: str) -> str:
    """The key of a slide's restore request (a ``job_reports`` row, kind ``restore``)."""
    return f"restore:{slide_id}"


#: The kind of the ``job_reports`` rows that record a move to cold's deletion to come.
DELETE_KIND = "tier-delete"


def delete_key(slide_id: str) -> str:
    """The key of the record of a move to cold's deletion from the hot store, written with the
    switch and removed once the deletion is done (a ``job_reports`` row, kind ``tier-delete``)."""
    return f"{DELETE_KIND}:{slide_id}"


class ColdTier:
    """The cold store and how it is read: ``restore_delay_s`` before restored objects may be read
    (tape, an archive storage class), ``storage_class`` its S3 objects are put in."""

    def __init__(
        self,
        store: BlobStore,
        *,
        restore_delay_s: float = 0.0,
        storage_class: str | None = None,
        url: str = "",
    ) -> None:
        self.store = store
        self.restore_delay_s = restore_delay_s
        self.storage_class = storage_class
        self.url = url

    @classmethod
    def open(cls, settings: Settings) -> ColdTier | None:
        """The cold tier of ``settings``; None when none is configured."""
        config = settings.cold_tier
        if config is None:
            return None
        if config.url.rstrip("/") == settings.blob_url.rstrip("/"):
            from lamina.errors import ConfigurationError

            raise ConfigurationError(
                f"LAMINA_COLD_URL (or url in tiers.cold)={config.url!r} is the hot store (blob_url) "
                "itself; point it at another folder or bucket"
            )
        store = open_blobstore(config.url, settings.verify_after_write, settings.s3)
        return cls(
            store, restore_delay_s=config.restore_delay_s, storage_class=config.storage_class, url=config.url
        )

    def put_in_class(self, sha256: str, size: int) -> None:
        """Put a freshly copied object in the tier's storage class (S3 only): a copy onto itself
        (its metadata replaced, as S3 requires, with the same content type)."""
        if self.storage_class is None:
            return
        from lamina.archive.blobstore.s3 import _COPY_OBJECT_LIMIT, CONTENT_TYPE, S3BlobStore

        store = self.store
        if not isinstance(store, S3BlobStore):
            return
        key = store.key_for(sha256)
        source = {"Bucket": store.bucket, "Key": key}
        with store.errors(f"putting the object in storage class {self.storage_class}", key):
            if size <= _COPY_OBJECT_LIMIT:
                store.client.copy_object(
                    Bucket=store.bucket,
                    Key=key,
                    CopySource=source,
                    StorageClass=self.storage_class,
                    MetadataDirective="REPLACE",
                    ContentType=CONTENT_TYPE,
                )
            else:  # over CopyObject's limit: boto3's managed (multipart) copy
                extra = {"StorageClass": self.storage_class, "ContentType": CONTENT_TYPE}
                store.client.copy(source, store.bucket, key, ExtraArgs=extra)


@dataclass
class Moved:
    """What one move did. ``status``: ``moved``; ``already`` (the slide was on the tier: only
    leftovers of an interrupted move removed); ``expired`` (nothing to move)."""

    slide_id: str
    target: Tier
    status: str
    objects: list[tuple[str, int]] = field(default_factory=list)  # (sha256, bytes)
    copied: int = 0
    present: int = 0
    removed: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0


class TierMover:
    """Moves slides between the hot store and the cold tier (the module's docstring).

    Parameters
    ----------
    on_step
        Called with a step of :data:`STEPS` and the object's SHA-256 ("" for the switch) after
        each object is copied, verified, or deleted, and after the switch commits.
    """

    def __init__(
        self,
        catalog: Catalog,
        hot: BlobStore,
        cold: ColdTier,
        *,
        on_step: Callable[[str, str], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.hot = hot
        self.cold = cold
        self.on_step = on_step

    @classmethod
    def for_archive(cls, archive: Archive) -> TierMover | None:
        """The mover of ``archive``'s settings; None when no cold tier is configured."""
        cold = ColdTier.open(archive.settings)
        return None if cold is None else cls(archive.catalog, archive.store, cold)

    def store(self, tier: Tier) -> BlobStore:
        return self.cold.store if tier is Tier.COLD else self.hot

    def move(self, slide_id: str, tier: Tier, actor: str) -> None:
        """:class:`lamina.lifecycle.run.Mover`: :meth:`move_slide`."""
        self.move_slide(slide_id, tier, actor)

    def finish(self) -> int:
        """Finish the moves to cold that a crash stopped after their switch (audited then): step 4
        (the deletion from the hot store) of each one still recorded (the module's docstring). A
        slide no longer cold (restored since) or expired has nothing left to delete: its record
        goes. A slide being restored is left to its restore, whose switch ends the record (its
        copy finds the hot objects there). Returns the number of moves finished."""
        with self.catalog.engine.connect() as conn:
            keys = [
                str(key)
                for key in conn.execute(
                    select(t.job_reports.c.job_key).where(t.job_reports.c.kind == DELETE_KIND)
                ).scalars()
            ]
        finished = 0
        for key in keys:
            slide_id = key.removeprefix(f"{DELETE_KIND}:")
            slide = self.catalog.slide(slide_id)
            if slide is None or slide.expired_at is not None or slide.tier != Tier.COLD.value:
                with self.catalog.begin() as conn:
                    conn.execute(delete(t.job_reports).where(t.job_reports.c.job_key == key))
                continue
            with self.catalog.engine.connect() as conn:
                restoring = conn.execute(
                    select(t.job_reports.c.job_key).where(t.job_reports.c.job_key == restore_key(slide_id))
                ).first()
            if restoring is not None:
                continue
            objects = sorted({(row.blob_sha256, row.bytes) for row in self.catalog.instances(slide_id)})
            self._delete(Tier.HOT, Moved(slide_id, Tier.COLD, "already", objects=objects))
            finished += 1
        return finished

    def move_slide(self, slide_id: str, tier: Tier, actor: str, *, action: str = "tier-move") -> Moved:
        """Move ``slide_id`` to ``tier`` (copy, verify, switch, delete); ``action`` names the
        audit entry. :class:`NotFoundError` for no such slide, :class:`RequestError` for a move
        to cold of a held slide, :class:`IntegrityError` when an object does not copy whole."""
        started = time.perf_counter()
        slide = self.catalog.slide(slide_id)
        if slide is None:
            raise NotFoundError(f"no slide {slide_id} on this node")
        objects = sorted({(row.blob_sha256, row.bytes) for row in self.catalog.instances(slide_id)})
        result = Moved(slide_id, tier, "moved", objects=objects)
        if slide.expired_at is not None:
            result.status = "expired"
            return result
        source = Tier.HOT if tier is Tier.COLD else Tier.COLD
        if slide.tier != tier.value:
            if tier is Tier.COLD:
                self._refuse_held(None, slide_id)
            self._copy(source, tier, result)
            switched = self._switch(slide_id, source, tier, actor, action, result)
            if self.on_step is not None:
                self.on_step("switch", "")
            if not switched:
                result.status = "already"
        else:
            result.status = "already"
        if tier is Tier.COLD:
            self._delete(source, result)
        result.seconds = time.perf_counter() - started
        return result

    # -- the steps ------------------------------------------------------------------------------

    def _copy(self, source: Tier, target: Tier, result: Moved) -> None:
        src, dst = self.store(source), self.store(target)
        copied = []
        for digest, size in result.objects:
            if dst.exists(digest) and dst.size(digest) == size:
                result.present += 1
                continue
            try:
                copy_object(src, dst, digest, size)
            except IntegrityError as exc:
                raise IntegrityError(
                    f"slide {result.slide_id}, the {source} tier: {exc}; not moved; "
                    "'lamina verify --repair' repairs it"
                ) from None
            if target is Tier.COLD:
                self.cold.put_in_class(digest, size)
            copied.append(digest)
            result.copied += 1
            result.bytes_copied += size
            if self.on_step is not None:
                self.on_step("copy", digest)
        sizes = dict(result.objects)
        for digest in copied:
            found = object_sha256(dst, digest, sizes[digest])
            if found != digest:
                raise IntegrityError(
                    f"slide {result.slide_id}: object {digest} reads back from the {target} tier as {found}; "
                    "not moved (the copy is left for the sweep)"
                )
            if self.on_step is not None:
                self.on_step("verify", digest)

    def _switch(
        self, slide_id: str, source: Tier, tier: Tier, actor: str, action: str, result: Moved
    ) -> bool:
        """The catalog transaction; False when another move switched it meanwhile."""
        with self.catalog.begin() as conn:
            locked = conn.execute(
                select(t.slides.c.tier, t.slides.c.expired_at, t.slides.c.tenant)
                .where(t.slides.c.id == slide_id)
                .with_for_update()
            ).first()
            if locked is None:
                raise NotFoundError(f"no slide {slide_id} on this node")
            if locked[1] is not None or locked[0] == tier.value:
                return False
            if tier is Tier.COLD:
                self._refuse_held(conn, slide_id)
            conn.execute(update(t.slides).where(t.slides.c.id == slide_id).values(tier=tier.value))
            study = conn.execute(
                select(t.slides.c.study_instance_uid).where(t.slides.c.id == slide_id)
            ).scalar_one()
            availability.refresh(conn, str(study))
            ended = [restore_key(slide_id), delete_key(slide_id)]
            conn.execute(delete(t.job_reports).where(t.job_reports.c.job_key.in_(ended)))
            if tier is Tier.COLD:  # the deletion from the hot store to come (step 4)
                conn.execute(
                    insert(t.job_reports).values(
                        job_key=delete_key(slide_id),
                        kind=DELETE_KIND,
                        created_at=dt.datetime.now(dt.UTC),
                        report=json.dumps({"slide": slide_id, "from": source.value}),
                    )
                )
            audit.append(
                conn,
                actor,
                action,
                f"slide/{slide_id}",
                {
                    "tenant": locked[2],
                    "from": source.value,
                    "to": tier.value,
                    "cold": self.cold.url,
                    "storage_class": self.cold.storage_class,
                    "at": dt.datetime.now(dt.UTC).isoformat(),
                    "objects": [{"sha256": digest, "bytes": size} for digest, size in result.objects],
                },
            )
        return True

    def _delete(self, source: Tier, result: Moved) -> None:
        digests = [digest for digest, _ in result.objects]
        if digests:
            with self.catalog.engine.connect() as conn:
                kept = in_use_on(conn, source, digests)
            store = self.store(source)
            for digest in digests:
                if digest in kept:
                    continue
                existed = store.exists(digest)
                store.delete(digest)
                result.removed += existed
                if self.on_step is not None:
                    self.on_step("delete", digest)
        with self.catalog.begin() as conn:  # done: the record of the deletion goes
            conn.execute(delete(t.job_reports).where(t.job_reports.c.job_key == delete_key(result.slide_id)))

    def _refuse_held(self, conn: Connection | None, slide_id: str) -> None:
        query = (
            select(t.holds.c.reason)
            .where(t.holds.c.slide_id == slide_id, t.holds.c.released_at.is_(None))
            .limit(1)
        )
        if conn is None:
            with self.catalog.engine.connect() as reader:
                held = reader.execute(query).first()
        else:
            held = conn.execute(query).first()
        if held is not None:
            raise RequestError(
                f"slide {slide_id}",
                f"held ({held[0]}): a held slide is never moved to the cold tier "
                "(it must be readable at once)",
            )


def in_use_on(conn: Connection, tier: Tier, digests: Sequence[str]) -> set[str]:
    """Those of ``digests`` that something read from ``tier`` references: an instance of a slide
    on that tier (not expired); on the hot tier also an instance of no slide (annotations,
    reports) and an expired slide's thumbnail."""
    wanted = list(digests)
    on_tier = t.slides.c.tier == tier.value
    where = or_(on_tier, t.instances.c.slide_id.is_(None)) if tier is Tier.HOT else on_tier
    query = (
        select(t.instances.c.blob_sha256)
        .select_from(t.instances.outerjoin(t.slides, t.slides.c.id == t.instances.c.slide_id))
        .where(t.instances.c.blob_sha256.in_(wanted), where)
    )
    found = {str(row[0]) for row in conn.execute(query)}
    if tier is Tier.HOT:
        traces = select(t.slide_traces.c.thumbnail_sha256).where(
            t.slide_traces.c.thumbnail_sha256.in_(wanted)
        )
        found |= {str(row[0]) for row in conn.execute(traces)}
    return found
