"""The lifecycle on a real archive, on both backends: a final report starts the clock (kept when
it comes before the slides), an amended one restarts it, no report means no expiry; interest and
holds keep slides; expiry deletes the pyramid's objects and keeps a trace (a JPEG thumbnail in
the store, the SHA-256 of every object deleted, the rule, an audit entry); running again does
nothing more."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.fixity import verify
from lamina.errors import NotFoundError, RequestError
from lamina.governance.registry import Registry
from lamina.lifecycle.evaluate import Action
from lamina.lifecycle.marks import Interest, Marks, Target
from lamina.lifecycle.plan import plan
from lamina.lifecycle.policy import Policies
from lamina.lifecycle.reports import record_report
from lamina.lifecycle.run import run
from tests.support import ingest_case

LAB = "690781810"
DAY = dt.timedelta(days=1)
T0 = dt.datetime(2026, 3, 2, 14, 0, tzinfo=dt.UTC)


def _ingest(archive: Archive, root: Path, name: str, accession: str, seed: int) -> str:
    return ingest_case(
        archive.receiver().ingestor, root / name, seed=seed, tenant=LAB, size=(1536, 1024),
        patient_id=f"P{seed}", accession_number=accession, specimen_id=f"{accession}-A1",
    )  # fmt: skip


@pytest.fixture
def lab(archive: Archive, tmp_path: Path) -> dict[str, str]:
    Registry(archive.catalog).add_tenant(LAB, "HCL")
    return {
        name: _ingest(archive, tmp_path, name, accession, seed)
        for seed, (name, accession) in enumerate(
            [("care", "A26-1"), ("interest", "A26-2"), ("held", "A26-3"), ("unreported", "A26-4")], start=1
        )
    }


def _due(archive: Archive, when: dt.datetime) -> dict[str, Action]:
    return {item.slide_id: item.action for item in plan(archive.catalog, when)}


def test_expiry_follows_the_report_and_spares_interest_and_holds(
    archive: Archive, lab: dict[str, str]
) -> None:
    # Arrange: reports for three cases; a flag of interest and a hold
    for accession in ("A26-1", "A26-2", "A26-3"):
        record_report(archive.catalog, LAB, accession, "final", T0, source="cli", actor="operator:test")
    marks = Marks(archive.catalog)
    marks.flag(Target(slide=lab["interest"]), Interest.TEACHING, "a fine sarcoma", "dr-a")
    marks.hold(Target(tenant=LAB, accession="A26-3"), "court order 2026/123", "operator:test")
    # Act and Assert: nothing before 30 days, then the care slide alone
    assert _due(archive, T0 + 29 * DAY) == {}
    assert _due(archive, T0 + 31 * DAY) == {lab["care"]: Action.EXPIRE}
    # an amended report restarts the clock
    record_report(
        archive.catalog, LAB, "A26-1", "amended", T0 + 20 * DAY, source="cli", actor="operator:test"
    )
    assert _due(archive, T0 + 31 * DAY) == {}
    when = T0 + 51 * DAY
    assert _due(archive, when) == {lab["care"]: Action.EXPIRE}
    rows = archive.catalog.instances(lab["care"])
    digests = {row.blob_sha256 for row in rows}
    done = run(archive.catalog, archive.store, when, "operator:test")
    # Assert: the pyramid is gone, the trace stays
    assert done.done.actions == {"expire": 1} and not done.failed and not done.kept
    assert archive.catalog.instances(lab["care"]) == []
    assert not any(archive.store.exists(digest) for digest in digests)
    slide = archive.catalog.slide(lab["care"])
    assert slide is not None and slide.expired_at is not None
    with archive.catalog.engine.connect() as conn:
        trace = (
            conn.execute(select(t.slide_traces).where(t.slide_traces.c.slide_id == lab["care"]))
            .mappings()
            .one()
        )
        entries = audit.entries(conn, slide=lab["care"], action="expire")
    assert trace["rule"] == "default" and trace["bytes_freed"] == sum(row.bytes for row in rows)
    assert {item["sha256"] for item in json.loads(trace["deleted"])} == digests
    picture = Image.open(io.BytesIO(b"".join(archive.store.open(trace["thumbnail_sha256"]))))
    assert picture.format == "JPEG" and max(picture.size) == 1024 == max(
        trace["thumbnail_width"], trace["thumbnail_height"]
    )
    assert len(entries) == 1 and entries[0].actor == "operator:test"
    assert entries[0].detail["rule_digest"] == Policies(archive.catalog).for_tenant(LAB).digest
    # the others stay whole; running again does nothing more
    for name in ("interest", "held", "unreported"):
        assert archive.catalog.instances(lab[name])
    again = run(archive.catalog, archive.store, when + 400 * DAY, "operator:test")
    assert again.done.actions == {} and not again.failed
    assert archive.catalog.referenced_blobs() >= {trace["thumbnail_sha256"]}
    # fixity reads the trace's thumbnail too, and finds nothing missing nor orphaned
    checked = verify(archive.catalog, archive.store, orphan_grace_s=0)
    assert checked.ok and not checked.orphaned
    assert any(trace["thumbnail_sha256"] == m for m in archive.store.iter_digests())


def test_a_report_before_the_slides_counts_when_they_come(archive: Archive, tmp_path: Path) -> None:
    Registry(archive.catalog).add_tenant(LAB, "HCL")
    early = record_report(archive.catalog, LAB, "A26-9", "final", T0, source="cli", actor="lis")
    slide_id = _ingest(archive, tmp_path, "late", "A26-9", 9)
    assert early.slides == 0
    assert _due(archive, T0 + 31 * DAY) == {slide_id: Action.EXPIRE}


def test_a_hold_or_a_flag_placed_after_the_plan_keeps_the_slide(
    archive: Archive, lab: dict[str, str]
) -> None:
    record_report(archive.catalog, LAB, "A26-4", "final", T0, source="cli", actor="lis")
    items = [item for item in plan(archive.catalog, T0 + 40 * DAY) if item.slide_id == lab["unreported"]]
    assert [item.action for item in items] == [Action.EXPIRE]
    Marks(archive.catalog).hold(Target(slide=lab["unreported"]), "late request", "operator:test")
    from lamina.lifecycle.expire import expire_slide

    kept = expire_slide(
        archive.catalog, archive.store, lab["unreported"], rule="default", rule_digest="x",
        report_at=T0, thumbnail_side=256, actor="operator:test",
    )  # fmt: skip
    assert kept.status == "kept" and kept.reason.startswith("held")
    assert archive.catalog.instances(lab["unreported"])


def test_marks_name_what_is_wrong(archive: Archive, lab: dict[str, str]) -> None:
    marks = Marks(archive.catalog)
    with pytest.raises(NotFoundError, match="no slide nope"):
        marks.hold(Target(slide="nope"), "x", "a")
    with pytest.raises(NotFoundError, match="no case A26-404"):
        marks.flag(Target(tenant=LAB, accession="A26-404"), Interest.RESEARCH, "x", "a")
    with pytest.raises(RequestError, match="--reason"):
        marks.hold(Target(slide=lab["care"]), "   ", "a")
    with pytest.raises(NotFoundError, match="no hold in force"):
        marks.release(Target(slide=lab["care"]), "x", "a")
    with pytest.raises(RequestError, match="issued"):
        record_report(
            archive.catalog, LAB, "A26-1", "final", dt.datetime(2026, 1, 1), source="cli", actor="a"
        )
    with pytest.raises(RequestError, match="status"):
        record_report(archive.catalog, LAB, "A26-1", "validated", T0, source="cli", actor="a")


def test_a_slide_scanned_again_after_expiry_comes_back_in_its_case(archive: Archive, tmp_path: Path) -> None:
    Registry(archive.catalog).add_tenant(LAB, "HCL")
    first = _ingest(archive, tmp_path, "scan", "A26-7", 7)
    record_report(archive.catalog, LAB, "A26-7", "final", T0, source="cli", actor="lis")
    run(archive.catalog, archive.store, T0 + 40 * DAY, "operator:test")
    with archive.catalog.engine.connect() as conn:
        expired_state = conn.execute(select(t.studies.c.availability)).scalar_one()
    assert expired_state == "UNAVAILABLE"
    # Act: the same file again (the manifest of the first ingest is still beside it)
    again = _ingest(archive, tmp_path, "scan", "A26-7", 7)
    # Assert: a new slide, a new series, in the same case
    old, new = archive.catalog.slide(first), archive.catalog.slide(again)
    assert old is not None and new is not None and again != first
    assert old.expired_at is not None and new.expired_at is None
    assert new.study_instance_uid == old.study_instance_uid
    assert new.series_instance_uid != old.series_instance_uid
    with archive.catalog.engine.connect() as conn:
        kept = conn.execute(
            select(t.slide_traces.c.source_blake3).where(t.slide_traces.c.slide_id == first)
        ).one()
    assert kept[0] == new.source_blake3
    # the case is ONLINE again (its new slide), as it was UNAVAILABLE once its only slide expired
    with archive.catalog.engine.connect() as conn:
        state = conn.execute(
            select(t.studies.c.availability).where(t.studies.c.study_instance_uid == new.study_instance_uid)
        ).scalar_one()
    assert state == "ONLINE"


def test_a_study_is_as_available_as_its_most_available_slide() -> None:
    from lamina.archive.catalog.availability import of_slides

    now = dt.datetime.now(dt.UTC)
    assert of_slides([]) == "ONLINE"
    assert of_slides([("hot", now), ("cold", None)]) == "NEARLINE"
    assert of_slides([("hot", now), ("hot", now)]) == "UNAVAILABLE"
    assert of_slides([("cold", None), ("hot", None), ("hot", now)]) == "ONLINE"


def test_objects_left_by_a_failed_removal_are_removed_by_the_next_run(
    archive: Archive, lab: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lamina.errors import StorageError
    from lamina.lifecycle.expire import expire_slide, leftovers

    digests = {row.blob_sha256 for row in archive.catalog.instances(lab["care"])}

    def broken(sha256: str) -> None:
        raise StorageError("the store is read-only for a moment")

    # Arrange: the expiry commits, then the store refuses to delete (as a crash after the commit)
    monkeypatch.setattr(archive.store, "delete", broken)
    failed = expire_slide(
        archive.catalog, archive.store, lab["care"], rule="default", rule_digest="x",
        report_at=T0, thumbnail_side=None, actor="operator:test",
    )  # fmt: skip
    monkeypatch.undo()
    assert failed.status == "expired" and failed.objects_left == len(digests)
    assert "next 'lamina lifecycle run'" in (failed.error or "")
    assert leftovers(archive.catalog) == [lab["care"]]
    assert all(archive.store.exists(digest) for digest in digests)
    # Act: the next run, whatever is due, finishes it first
    done = run(archive.catalog, archive.store, T0, "operator:test")
    # Assert
    assert done.finished == 1 and not done.failed
    assert not any(archive.store.exists(digest) for digest in digests)
    assert leftovers(archive.catalog) == []
