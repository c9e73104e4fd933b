"""An opened archive: settings, catalog and blob store together, with the operations on slides."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lamina.archive import audit
from lamina.archive.blobstore import BlobStore, open_blobstore
from lamina.archive.blobstore.cache import cached
from lamina.archive.blobstore.replicated import ReplicatedBlobStore
from lamina.archive.catalog import Catalog, SlideRow
from lamina.archive.delete import DeletedSlide, delete_slide
from lamina.archive.fixity import verify_one
from lamina.archive.ingest import IngestStep
from lamina.archive.receive import Receiver, RequestSpools
from lamina.archive.repair import repair
from lamina.config import Settings
from lamina.errors import ConfigurationError, IntegrityError, NotFoundError, StorageError

log = logging.getLogger("lamina.archive")


@dataclass(frozen=True)
class ExportedSlide:
    slide: SlideRow
    folder: Path
    files: list[Path]


class Archive:
    """The archive of ``settings``: its ``catalog`` and blob ``store``.

    Parameters
    ----------
    on_damaged
        Called with the digest of an object found damaged when read, to have it repaired (a
        server with a job queue queues the repair); by default :meth:`repair` runs on a thread of
        this process.
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: BlobStore,
        on_damaged: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.on_damaged: Callable[[str], None] = on_damaged or self._repair_in_thread
        #: where this process's requests wait until they are stored (``incoming/stow/``)
        self.incoming = RequestSpools(settings.home / "incoming")
        self._damaged_seen: dict[str, float] = {}
        self._damaged_lock = threading.Lock()

    def receiver(self, on_step: Callable[[IngestStep], None] | None = None) -> Receiver:
        """The way instances and slide files enter this archive (:mod:`lamina.archive.receive`)."""
        admit = None
        if self.settings.role == "archive":  # only de-identified, announced slides arrive here
            from lamina.exchange.receiving import arrival_problem

            catalog = self.catalog

            def admit(path: Path, tenant: str) -> str | None:
                return arrival_problem(catalog, tenant, path)

        return Receiver(
            self.catalog,
            self.store,
            work_dir=self.settings.home,
            on_step=on_step,
            admit=admit,
            lossless=self.settings.lossless_codec,
        )

    def spool(self, key: str) -> BlobStore:
        """Where the uploads of one request wait for their job (STOW-RS through the queue):
        ``<blob store>/spool/<key>``, beside the objects but never listed, verified or swept with
        them, and one per request, so that two requests with the same content do not share it."""
        if not key.isalnum():
            raise ValueError(f"spool key {key!r}: letters and digits only")
        url = f"{self.settings.blob_url.rstrip('/')}/spool/{key}"
        return open_blobstore(url, self.settings.verify_after_write, self.settings.s3)

    def damaged(self, sha256: str, where: str, actor: str = "lamina") -> None:
        """An object read back wrong (missing, short, or not its SHA-256): audit it and queue its
        repair, once per object every ten minutes however many reads hit it."""
        now = time.monotonic()
        with self._damaged_lock:
            last = self._damaged_seen.get(sha256)
            if last is not None and now - last < 600:
                return
            self._damaged_seen[sha256] = now
        with self.catalog.begin() as conn:
            audit.append(conn, actor, "damaged", f"blob/{sha256}", {"found_by": where})
        try:
            self.on_damaged(sha256)
        except Exception as exc:  # the audit entry stays; lamina verify finds it again
            log.warning("repair of %s not queued: %s", sha256, exc)

    def repair(self, sha256: str, actor: str = "lamina-repair") -> bool:
        """Restore one object from the replica, when there is one; audited either way. True when
        the object is whole (again)."""
        report = verify_one(self.catalog, self.store, sha256)
        if report.ok:
            return True
        if not isinstance(self.store, ReplicatedBlobStore):
            with self.catalog.begin() as conn:
                audit.append(
                    conn,
                    actor,
                    "repair",
                    f"blob/{sha256}",
                    {"outcome": "unrepairable", "reason": "no replica"},
                )
            return False
        return repair(report, self.store, self.catalog, actor=actor).ok

    def _repair_in_thread(self, sha256: str) -> None:
        threading.Thread(target=self.repair, args=(sha256,), name="lamina-repair", daemon=True).start()

    @classmethod
    def open(cls, settings: Settings, on_damaged: Callable[[str], None] | None = None) -> Archive:
        try:
            settings.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the data folder {settings.home} ({exc.strerror}); "
                "set LAMINA_HOME to a writable folder"
            ) from exc
        # the cache serves the primary's reads; a replica is read only to repair, never cached
        store = cached(open_blobstore(settings.blob_url, settings.verify_after_write, settings.s3), settings)
        if settings.replica_url:
            if settings.replica_url.rstrip("/") == settings.blob_url.rstrip("/"):
                raise ConfigurationError(
                    f"LAMINA_REPLICA_URL={settings.replica_url!r} is the blob store itself; "
                    "point it at another folder or bucket"
                )
            replica = open_blobstore(settings.replica_url, settings.verify_after_write, settings.s3)
            store = ReplicatedBlobStore(store, replica)
        return cls(settings, Catalog.open(settings.database_url), store, on_damaged)

    def close(self) -> None:
        self.incoming.close()
        self.catalog.close()

    def export(
        self,
        dest: Path,
        slide_ids: list[str] | None = None,
        actor: str = "lamina",
        transfer_syntax: str | None = None,
    ) -> list[ExportedSlide]:
        """Copy each slide's instances as Part-10 files into ``dest/<slide id>/``, checking digests.

        ``transfer_syntax`` ``"jpeg2000"``: instances stored in JPEG-LS or HTJ2K lossless are
        written with their frames in JPEG 2000 lossless instead, pixels unchanged (for readers
        such as OpenSlide 4 that take no other lossless codec); the others as stored."""
        from lamina.formats.transcode import REWRITTEN, to_jpeg2000

        slides = self.catalog.slides() if not slide_ids else [self._slide(sid) for sid in slide_ids]
        exported = []
        for slide in slides:
            folder = dest / slide.id
            folder.mkdir(parents=True, exist_ok=True)
            files = []
            for row in self.catalog.instances(slide.id):
                suffix = f"level-{row.level}" if row.level is not None else row.flavor.lower()
                target = folder / f"{row.instance_number:02d}-{suffix}.dcm"
                self._copy_verified(row.blob_sha256, target)
                if transfer_syntax == "jpeg2000" and row.transfer_syntax_uid in REWRITTEN:
                    try:
                        to_jpeg2000(target, target, spool_dir=folder)
                    except BaseException:
                        target.unlink(missing_ok=True)  # never a file in another syntax than asked
                        raise
                files.append(target)
            with self.catalog.begin() as conn:
                detail = {"dest": str(folder)}
                if transfer_syntax is not None:
                    detail["transfer_syntax"] = transfer_syntax
                audit.append(conn, actor, "export", f"slide/{slide.id}", detail)
            exported.append(ExportedSlide(slide, folder, files))
        return exported

    def delete_slide(self, slide_id: str, actor: str, reason: str) -> DeletedSlide:
        """Delete a slide: one catalog transaction with its audit entry, then the objects nothing
        references any more (see :mod:`lamina.archive.delete`). ``reason`` is kept in the audit log."""
        return delete_slide(self.catalog, self.store, slide_id, actor, reason, where=str(self.settings.home))

    def _slide(self, slide_id: str) -> SlideRow:
        slide = self.catalog.slide(slide_id)
        if slide is None:
            raise NotFoundError(f"no slide {slide_id!r} in {self.settings.home}; 'lamina slides' lists them")
        return slide

    def _copy_verified(self, sha256: str, target: Path) -> None:
        tmp = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for chunk in self.store.open(sha256):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            tmp.unlink()
            self.damaged(sha256, "export")
            raise IntegrityError(
                f"object {sha256} is damaged in the blob store (it reads as {digest.hexdigest()}); "
                "its repair from the replica has been queued ('lamina verify --repair'), or "
                "re-ingest the slide's source"
            )
        shutil.move(tmp, target)
