"""An opened archive: settings, catalog and blob store together, with the operations on slides."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lamina.archive import audit
from lamina.archive.blobstore import BlobStore, open_blobstore
from lamina.archive.blobstore.replicated import ReplicatedBlobStore
from lamina.archive.catalog import Catalog, SlideRow
from lamina.config import Settings
from lamina.errors import ConfigurationError, IntegrityError, NotFoundError, StorageError


@dataclass(frozen=True)
class ExportedSlide:
    slide: SlideRow
    folder: Path
    files: list[Path]


class Archive:
    def __init__(self, settings: Settings, catalog: Catalog, store: BlobStore) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store

    @classmethod
    def open(cls, settings: Settings) -> Archive:
        try:
            settings.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the data folder {settings.home} ({exc.strerror}); "
                "set LAMINA_HOME to a writable folder"
            ) from exc
        store = open_blobstore(settings.blob_url, settings.verify_after_write, settings.s3)
        if settings.replica_url:
            if settings.replica_url.rstrip("/") == settings.blob_url.rstrip("/"):
                raise ConfigurationError(
                    f"LAMINA_REPLICA_URL={settings.replica_url!r} is the blob store itself; "
                    "point it at another folder or bucket"
                )
            replica = open_blobstore(settings.replica_url, settings.verify_after_write, settings.s3)
            store = ReplicatedBlobStore(store, replica)
        return cls(settings, Catalog.open(settings.database_url), store)

    def close(self) -> None:
        self.catalog.close()

    def export(
        self, dest: Path, slide_ids: list[str] | None = None, actor: str = "lamina"
    ) -> list[ExportedSlide]:
        """Copy each slide's instances as Part-10 files into ``dest/<slide id>/``, checking digests."""
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
                files.append(target)
            with self.catalog.begin() as conn:
                audit.append(conn, actor, "export", f"slide/{slide.id}", {"dest": str(folder)})
            exported.append(ExportedSlide(slide, folder, files))
        return exported

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
            raise IntegrityError(
                f"object {sha256} is damaged in the blob store (it reads as {digest.hexdigest()}); "
                "re-ingest the slide's source"
            )
        shutil.move(tmp, target)
