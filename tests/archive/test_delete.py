"""Deleting a slide: one catalog transaction with its audit entry, then the objects nothing
references; shared objects and studies stay while something else uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.blobstore import BlobStore, BlobWriter
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.search import Criterion, Single, find_instances, find_series, find_studies
from lamina.archive.delete import MAX_REASON
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.archive.sweep import sweep
from lamina.config import Settings
from lamina.errors import NotFoundError, RequestError, StorageError
from tests.support import ingest_path, shared_file


def _ingest(ingestor: Ingestor, relative: str) -> str:
    result = ingest_path(ingestor, shared_file(relative))
    assert result.status == "ingested", result.reason
    assert result.slide_id is not None
    return result.slide_id


def _digests(archive: Archive, slide_id: str) -> set[str]:
    return {row.blob_sha256 for row in archive.catalog.instances(slide_id)}


def _count(archive: Archive, table: t.Table) -> int:
    with archive.catalog.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_deleted_slide_leaves_the_catalog_the_search_and_the_store(
    archive: Archive, ingestor: Ingestor
) -> None:
    # Arrange: the slide to delete, and another that must not be touched
    gone = _ingest(ingestor, "aperio/CMU-1-Small-Region.svs")
    kept = _ingest(ingestor, "aperio-synthetic/small.svs")
    slide = archive.catalog.slide(gone)
    assert slide is not None
    rows = archive.catalog.instances(gone)
    gone_objects, kept_objects = _digests(archive, gone), _digests(archive, kept)

    # Act
    result = archive.delete_slide(gone, "tester", "wrong patient")

    # Assert: the catalog
    assert result.status == "deleted" and result.error is None
    assert result.objects_removed == len(gone_objects) and result.objects_kept == 0
    assert result.study_removed
    assert archive.catalog.slide(gone) is None and archive.catalog.instances(gone) == []
    assert [s.id for s in archive.catalog.slides()] == [kept]
    # ... the QIDO search, at every level
    engine = archive.catalog.engine
    study = [Criterion("StudyInstanceUID", Single(slide.study_instance_uid))]
    assert find_studies(engine, study, 10, 0).hits == []
    series = [Criterion("SeriesInstanceUID", Single(slide.series_instance_uid))]
    assert find_series(engine, series, 10, 0).hits == []
    for row in rows:
        sop = [Criterion("SOPInstanceUID", Single(row.sop_instance_uid))]
        assert find_instances(engine, sop, 10, 0).hits == []
    assert len(find_studies(engine, [], 10, 0).hits) == 1
    # ... the store: exactly what the catalog references is left
    assert not any(archive.store.exists(digest) for digest in gone_objects)
    assert set(archive.store.iter_digests()) == kept_objects == archive.catalog.referenced_blobs()
    # ... the audit log: the chain holds, and names the reason, the instances and their objects
    with engine.connect() as conn:
        assert audit.verify(conn).ok
        (entry,) = audit.entries(conn, slide=gone, action="delete")
    assert (entry.actor, entry.entity, entry.seq) == ("tester", f"slide/{gone}", result.audit_seq)
    assert entry.detail["reason"] == "wrong patient"
    assert entry.detail["instances"] == [
        {"sop_instance_uid": row.sop_instance_uid, "sha256": row.blob_sha256} for row in rows
    ]


def test_objects_another_slide_references_are_kept(archive: Archive, ingestor: Ingestor) -> None:
    gone = _ingest(ingestor, "aperio/CMU-1-Small-Region.svs")
    other = _ingest(ingestor, "aperio-synthetic/small.svs")
    # two instances share an object only when their bytes are the same; make one refer to the
    # other's object, as a byte copy would
    shared = archive.catalog.instances(gone)[0].blob_sha256
    first = archive.catalog.instances(other)[0]
    with archive.catalog.begin() as conn:
        conn.execute(
            update(t.instances)
            .where(t.instances.c.sop_instance_uid == first.sop_instance_uid)
            .values(blob_sha256=shared)
        )

    result = archive.delete_slide(gone, "tester", "duplicate scan")

    assert result.objects_kept == 1
    assert result.objects_removed == len({r.sha256 for r in result.instances}) - 1
    assert archive.store.exists(shared)
    assert all(archive.store.exists(digest) for digest in _digests(archive, other))


def test_the_study_stays_while_another_slide_of_the_case_uses_it(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "file,patient_id,accession_number\nCMU-1-Small-Region.svs,P9,S26-9\nsmall.svs,P9,S26-9\n"
    )
    loaded = load_manifest(manifest)
    paths = [shared_file("aperio/CMU-1-Small-Region.svs"), shared_file("aperio-synthetic/small.svs")]
    first, second = (ingestor.ingest(candidate, loaded) for candidate in discover(paths))
    assert first.slide_id and second.slide_id
    slide = archive.catalog.slide(first.slide_id)
    assert slide is not None and slide.accession_number == "S26-9"
    assert _count(archive, t.studies) == 1  # the case's one study
    study = [Criterion("StudyInstanceUID", Single(slide.study_instance_uid))]
    patients = _count(archive, t.patients)

    archive.delete_slide(first.slide_id, "tester", "mislabelled")

    (hit,) = find_studies(archive.catalog.engine, study, 10, 0).hits
    assert hit.series == 1 and hit.patient_id == "P9"
    assert _count(archive, t.studies) == 1

    result = archive.delete_slide(second.slide_id, "tester", "mislabelled")

    assert result.study_removed
    assert find_studies(archive.catalog.engine, study, 10, 0).hits == []
    assert _count(archive, t.studies) == 0 and _count(archive, t.series) == 0
    assert _count(archive, t.patients) == patients  # patients are kept


def test_an_unknown_slide_or_a_missing_reason_changes_nothing(archive: Archive, ingestor: Ingestor) -> None:
    slide_id = _ingest(ingestor, "aperio/CMU-1-Small-Region.svs")
    entries = _count(archive, t.audit_log)

    with pytest.raises(NotFoundError, match=r"no slide 'nope'.*'lamina slides' lists them"):
        archive.delete_slide("nope", "tester", "typo")
    for reason in ("", "   ", "x" * (MAX_REASON + 1)):
        with pytest.raises(RequestError, match=r"^reason: "):
            archive.delete_slide(slide_id, "tester", reason)

    assert archive.catalog.slide(slide_id) is not None
    assert _count(archive, t.audit_log) == entries


class _DeletesFailAfter(BlobStore):
    """A store whose deletions fail after ``allowed`` of them, as an S3 endpoint that goes away."""

    def __init__(self, store: BlobStore, allowed: int) -> None:
        self.store, self.allowed = store, allowed

    def delete(self, sha256: str) -> None:
        if self.allowed <= 0:
            raise StorageError("the store went away")
        self.allowed -= 1
        self.store.delete(sha256)

    def writer(self) -> BlobWriter:
        return self.store.writer()

    def read_range(self, sha256: str, offset: int, length: int) -> bytes:
        return self.store.read_range(sha256, offset, length)

    def open(self, sha256: str) -> Iterator[bytes]:
        return self.store.open(sha256)

    def exists(self, sha256: str) -> bool:
        return self.store.exists(sha256)

    def size(self, sha256: str) -> int:
        return self.store.size(sha256)

    def iter_digests(self) -> Iterator[str]:
        return self.store.iter_digests()


def test_deleting_again_finishes_a_deletion_whose_objects_were_left(
    archive: Archive, ingestor: Ingestor
) -> None:
    slide_id = _ingest(ingestor, "aperio/CMU-1-Small-Region.svs")
    objects = _digests(archive, slide_id)
    failing = Archive(archive.settings, archive.catalog, _DeletesFailAfter(archive.store, 3))

    interrupted = failing.delete_slide(slide_id, "tester", "consent withdrawn")

    assert interrupted.status == "deleted" and archive.catalog.slide(slide_id) is None
    assert interrupted.objects_removed == 3 and interrupted.objects_left == len(objects) - 3
    assert interrupted.error is not None and "run the deletion again" in interrupted.error

    again = archive.delete_slide(slide_id, "tester", "consent withdrawn")

    assert again.status == "already deleted" and again.error is None
    assert again.objects_removed == len(objects) - 3
    assert list(archive.store.iter_digests()) == []
    with archive.catalog.engine.connect() as conn:
        assert len(audit.entries(conn, slide=slide_id, action="delete")) == 1
        assert audit.verify(conn).ok


def test_a_replicated_store_loses_the_objects_in_both_copies(settings: Settings, tmp_path: Path) -> None:
    replicated = Archive.open(settings.with_(replica_url=f"file://{tmp_path / 'replica'}"))
    try:
        ingestor = Ingestor(replicated.catalog, replicated.store)
        gone = _ingest(ingestor, "aperio/CMU-1-Small-Region.svs")
        kept = _ingest(ingestor, "aperio-synthetic/small.svs")
        store = replicated.store
        primary, replica = store.primary, store.replica  # type: ignore[attr-defined]

        replicated.delete_slide(gone, "tester", "wrong patient")

        expected = _digests(replicated, kept)
        assert set(primary.iter_digests()) == expected == set(replica.iter_digests())
        # an object left in the replica alone (a crash between the two removals) is swept too
        with replica.writer() as writer:
            writer.write(b"left in the replica")
            lone = writer.commit().sha256
        assert lone in sweep(replicated.catalog, store, older_than_s=0).orphans
        assert set(replica.iter_digests()) == expected
    finally:
        replicated.close()


def _lamina(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The command, on the archive of ``settings`` (its catalog and store, whichever they are)."""
    env = {
        **os.environ,
        "LAMINA_HOME": str(settings.home),
        "LAMINA_DATABASE_URL": settings.database_url,
        "LAMINA_BLOB_URL": settings.blob_url,
        **settings.s3,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "lamina", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_the_delete_command_asks_reports_each_slide_and_fails_on_an_unknown_one(settings: Settings) -> None:
    ingested = _lamina(settings, "ingest", "--json", str(shared_file("aperio/CMU-1-Small-Region.svs")))
    assert ingested.returncode == 0, ingested.stderr
    (slide,) = json.loads(ingested.stdout)

    declined = _lamina(settings, "delete", slide["slide_id"], "--reason", "test", stdin="n\n")
    assert declined.returncode == 1 and "This cannot be undone" in declined.stderr
    assert "Aborted" in declined.stderr
    no_reason = _lamina(settings, "delete", slide["slide_id"], "--reason", " ", "--yes")
    assert no_reason.returncode == 2 and "reason: a deletion needs a reason" in no_reason.stderr

    done = _lamina(
        settings, "delete", "nope", slide["slide_id"], "--reason", "wrong patient", "--yes", "--json"
    )

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    outcome = {item["slide_id"]: item for item in json.loads(done.stdout)}
    assert outcome["nope"]["status"] == "not found" and "'lamina slides'" in outcome["nope"]["error"]
    assert outcome[slide["slide_id"]]["status"] == "deleted"
    assert outcome[slide["slide_id"]]["objects_removed"] == slide["instances"]
    assert json.loads(_lamina(settings, "slides", "--json").stdout) == []
    again = _lamina(settings, "delete", slide["slide_id"], "--reason", "wrong patient", "--yes")
    assert again.returncode == 0 and "already deleted" in again.stdout
    shown = _lamina(settings, "audit", "show", "--slide", slide["slide_id"], "--json")
    assert [entry["action"] for entry in json.loads(shown.stdout)] == ["ingest", "delete"]
