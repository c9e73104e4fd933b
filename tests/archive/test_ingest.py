"""The ingest transaction: duplicates, identity, studies, and bad input that loses nothing."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pydicom
import pytest

from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor, IngestResult, IngestStatus, IngestStep
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.model.geometry import SizeMm
from tests.backends import Backend
from tests.support import ingest_path, partial_writes, shared_file, single, stored_file

HEADER = (
    "file,patient_id,patient_name,birth_date,sex,accession_number,specimen_id,stain,organ,diagnosis_code,"
    "specimen_type"
)


def _stored(archive: Archive) -> set[str]:
    return set(archive.store.iter_digests())


def test_reingesting_the_same_file_is_a_duplicate_and_stores_nothing(
    archive: Archive, ingestor: Ingestor
) -> None:
    source = shared_file("aperio/CMU-1-Small-Region.svs")
    first = ingest_path(ingestor, source)
    before = _stored(archive)
    second = ingest_path(ingestor, source)
    assert first.status == "ingested"
    assert second.status == "duplicate"
    assert second.slide_id == first.slide_id
    assert _stored(archive) == before
    assert archive.catalog.count_slides() == 1
    assert partial_writes(archive.store) == []


def test_manifest_gives_identity_to_the_dicom_and_the_catalog(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    source = shared_file("aperio/CMU-1-Small-Region.svs")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        f"{HEADER}\nCMU-1-Small-Region.svs,P123,DUPONT^MARIE,1961-04-12,F,S26-00123,S26-00123-A1,HE,Colon,8140/3\n"
    )
    result = ingestor.ingest(single(source), load_manifest(manifest))
    assert result.status == "ingested" and result.identified
    slide = archive.catalog.slide(result.slide_id or "")
    assert slide is not None
    assert (slide.patient_id, slide.accession_number, slide.stain, slide.organ) == (
        "P123",
        "S26-00123",
        "HE",
        "Colon",
    )
    for row in archive.catalog.instances(slide.id):
        ds = pydicom.dcmread(stored_file(archive.store, row.blob_sha256, tmp_path), stop_before_pixels=True)
        assert ds.PatientID == "P123"
        assert str(ds.PatientName) == "DUPONT^MARIE"
        assert ds.PatientBirthDate == "19610412"
        assert ds.AccessionNumber == "S26-00123"
        assert ds.ContainerIdentifier == slide.container_id
        assert ds.FrameOfReferenceUID == ds.FrameOfReferenceUID  # same on every instance, below
        specimen = ds.SpecimenDescriptionSequence[0]
        assert specimen.SpecimenIdentifier == "S26-00123-A1"
        assert specimen.PrimaryAnatomicStructureSequence[0].CodeMeaning == "Colon"
    uids = {
        pydicom.dcmread(
            stored_file(archive.store, r.blob_sha256, tmp_path), stop_before_pixels=True
        ).FrameOfReferenceUID
        for r in archive.catalog.instances(slide.id)
    }
    assert len(uids) == 1


def test_json_manifest_by_barcode_and_shared_study_per_case(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    a = shared_file("dicom-wsi2dcm/jpeg.dicom")
    b = shared_file("dicom-openslide-python")
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps(
            [
                {"file": "jpeg.dicom", "patient_id": "P9", "accession_number": "S26-9"},
                {"barcode": "SLIDE_1", "patient_id": "P9", "accession_number": "S26-9", "stain": "PAS"},
            ]
        )
    )
    loaded = load_manifest(manifest)
    results = [ingestor.ingest(c, loaded) for c in discover([a, b])]
    assert [r.status for r in results] == ["ingested", "ingested"]
    slides = {s.container_id: s for s in archive.catalog.slides()}
    assert slides["SLIDE_1"].stain == "PAS"
    assert all(s.patient_id == "P9" for s in slides.values())


def test_slide_without_identity_is_stored_unidentified(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    result = ingest_path(ingestor, shared_file("aperio/CMU-1-Small-Region.svs"))
    assert result.status == "ingested" and not result.identified
    row = archive.catalog.instances(result.slide_id or "")[0]
    ds = pydicom.dcmread(stored_file(archive.store, row.blob_sha256, tmp_path), stop_before_pixels=True)
    assert ds.PatientID == "" and str(ds.PatientName) == ""


def test_manifest_mpp_lets_a_file_without_spacing_in(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    source = shared_file("aperio/tcga-cr-7395-01a-01-ts1.svs")
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,mpp\ntcga-cr-7395-01a-01-ts1.svs,0.2525\n")
    result = ingestor.ingest(single(source), load_manifest(manifest))
    assert result.status == "ingested", result.reason
    slide = archive.catalog.slide(result.slide_id or "")
    assert slide is not None and slide.mpp == pytest.approx(0.2525)


def _bad_files(folder: Path) -> dict[str, Path]:
    good = shared_file("aperio/CMU-1-Small-Region.svs").read_bytes()
    files = {
        "truncated.svs": good[: len(good) * 2 // 3],
        "header-only.svs": good[:4096],
        "empty.svs": b"",
        "notes.svs": b"this is not a slide\n" * 50,
        "corrupt-ifd.tif": b"II*\x00" + b"\xff" * 5000,
    }
    paths = {}
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths[name] = path
    return paths


def test_bad_inputs_fail_with_a_reason_and_store_nothing(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad = _bad_files(folder)
    shutil.copy(shared_file("aperio/CMU-1-Small-Region.svs"), folder / "good.svs")
    results = {
        r.path.name: r for r in (ingestor.ingest(c) for c in discover([folder, tmp_path / "missing.svs"]))
    }
    assert results["good.svs"].status == "ingested"
    for name in [*bad, "missing.svs"]:
        result = results[name]
        assert result.status == "failed", name
        assert result.reason and "\n" not in result.reason, name
        assert "Traceback" not in result.reason
    assert "truncated" in (results["truncated.svs"].reason or "")
    assert "no such file" in (results["missing.svs"].reason or "")
    slide = archive.catalog.slides()
    assert len(slide) == 1
    assert _stored(archive) == archive.catalog.referenced_blobs()
    assert partial_writes(archive.store) == []


def test_16_bit_tiff_is_refused_not_truncated(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    import numpy as np
    import tifffile

    path = tmp_path / "deep.tif"
    data = (np.arange(512 * 512 * 3, dtype=np.uint32) % 65536).astype(np.uint16).reshape(512, 512, 3)
    tifffile.imwrite(
        path, data, tile=(256, 256), photometric="rgb", resolution=(40000, 40000), resolutionunit="CENTIMETER"
    )
    result = ingest_path(ingestor, path)
    assert result.status == "failed"
    assert "16-bit samples" in (result.reason or "")
    assert _stored(archive) == set()


def test_the_files_own_spacing_wins_over_a_given_one(archive: Archive, ingestor: Ingestor) -> None:
    result = ingest_path(
        ingestor, shared_file("aperio/CMU-1-Small-Region.svs"), pixel_spacing=SizeMm.from_mpp(0.3)
    )
    slide = archive.catalog.slide(result.slide_id or "")
    assert slide is not None and slide.mpp == pytest.approx(0.499)


def test_a_damaged_member_of_a_dicom_series_is_named(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    folder = tmp_path / "series"
    shutil.copytree(shared_file("dicom-openslide-python"), folder)
    member = folder / "boxes_1.dcm"
    member.write_bytes(member.read_bytes()[:-40])
    (candidate,) = discover([folder])
    result = ingestor.ingest(candidate)
    assert result.status == "failed"
    assert (result.reason or "").startswith("boxes_1.dcm: ")
    assert "truncated" in (result.reason or "")


def test_catalog_records_the_sources_fingerprint(archive: Archive, ingestor: Ingestor) -> None:
    import blake3

    source = shared_file("aperio/CMU-1-Small-Region.svs")
    result = ingest_path(ingestor, source)
    slide = archive.catalog.slide(result.slide_id or "")
    assert slide is not None
    assert slide.source_blake3 == blake3.blake3(source.read_bytes()).hexdigest()
    assert slide.source_bytes == source.stat().st_size


def test_an_mrxs_slide_is_one_candidate_its_slidedat_named(ingestor: Ingestor, tmp_path: Path) -> None:
    scanner = tmp_path / "scanner"
    (scanner / "scan").mkdir(parents=True)
    (scanner / "scan.mrxs").write_text("[GENERAL]\nSLIDE_VERSION=01.02\n")
    for name in ("Slidedat.ini", "Data0000.dat", "Index.dat"):
        (scanner / "scan" / name).write_bytes(b"\x00" * 64)
    candidates = discover([scanner])
    assert [c.path.name for c in candidates] == ["scan.mrxs"]
    assert len(candidates[0].members) == 4
    result = ingestor.ingest(candidates[0])
    assert result.status == "failed"
    assert (result.reason or "").startswith("Slidedat.ini: line 1 is neither [group] nor key = value")


def test_a_dicom_source_reusing_stored_sop_instance_uids_is_refused_before_writing(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    first = ingest_path(ingestor, shared_file("aperio/CMU-1-Small-Region.svs"))
    assert first.status == "ingested", first.reason
    # the slide's own DICOM files, other bytes than the SVS: the same SOP Instance UIDs come back
    (exported,) = archive.export(tmp_path / "export", [first.slide_id or ""])
    before = _stored(archive)
    (candidate,) = discover([exported.files[0].parent])
    second = ingestor.ingest(candidate)
    assert second.status == "failed"
    assert "is already in the archive with other content" in (second.reason or ""), second.reason
    assert _stored(archive) == before
    assert archive.catalog.count_slides() == 1
    assert partial_writes(archive.store) == []


@pytest.mark.parametrize("gap", [IngestStep.DUPLICATES_CHECKED, IngestStep.WRITTEN])
def test_the_same_series_ingested_twice_at_once_is_one_slide_and_one_duplicate(
    settings: Settings, tmp_path: Path, gap: IngestStep
) -> None:
    """Two processes ingest one series at once: while the first is held at ``gap`` (after its
    duplicate check, before it probes the SOP Instance UIDs; or with its objects written, before
    its catalog transaction), the second stores the series whole."""
    # Arrange: one DICOM series in two folders (as two STOW-RS requests spool it), two archives
    # on the same catalog and store (two processes), the first held at the gap
    series = shared_file("dicom-openslide-python")
    first_copy, second_copy = tmp_path / "first", tmp_path / "second"
    shutil.copytree(series, first_copy)
    shutil.copytree(series, second_copy)
    held, release = threading.Event(), threading.Event()

    def hold(step: IngestStep) -> None:
        if step is gap:
            held.set()
            assert release.wait(120), "the test never released the first ingest"

    first, second = Archive.open(settings), Archive.open(settings)
    try:
        held_ingestor = Ingestor(first.catalog, first.store, spool_dir=settings.home, on_step=hold)
        results: list[IngestResult] = []
        (first_candidate,) = discover([first_copy])
        worker = threading.Thread(target=lambda: results.append(held_ingestor.ingest(first_candidate)))
        worker.start()
        assert held.wait(120), f"the first ingest never reached the step {gap}"
        # Act: the second stores the series while the first waits, then the first goes on
        (second_candidate,) = discover([second_copy])
        stored = Ingestor(second.catalog, second.store, spool_dir=settings.home).ingest(second_candidate)
        release.set()
        worker.join(120)
        # Assert
        assert stored.status == IngestStatus.INGESTED, stored.reason
        (late,) = results
        assert late.status == IngestStatus.DUPLICATE, late.reason
        assert late.slide_id == stored.slide_id
        assert second.catalog.count_slides() == 1
        assert _stored(second) == second.catalog.referenced_blobs()
        assert partial_writes(second.store) == []
    finally:
        release.set()
        first.close()
        second.close()


def test_a_slide_whose_study_another_process_inserts_meanwhile_is_stored(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """PostgreSQL reads committed rows: a slide's transaction may find no study, then meet the
    one another process committed meanwhile (a second slide of the same case arriving at once).
    The other process is this test's own transaction, holding the study's row until the slide's
    insert waits on it, then committing."""
    import datetime as dt

    from sqlalchemy import create_engine, insert, text

    from lamina.archive.catalog import tables as t

    series = tmp_path / "series"
    shutil.copytree(shared_file("dicom-openslide-python"), series)
    study = str(pydicom.dcmread(sorted(series.iterdir())[0], stop_before_pixels=True).StudyInstanceUID)
    # PostgreSQL only: SQLite serialises writers from BEGIN, so the gap does not exist there
    backend = Backend.open("postgresql-s3", request)
    settings = Settings.load(tmp_path / "home", env=backend.env("study-race"))
    archive = Archive.open(settings)
    other = create_engine(settings.database_url)
    try:
        with other.connect() as conn:
            transaction = conn.begin()
            now = dt.datetime.now(dt.UTC)
            conn.execute(insert(t.studies).values(study_instance_uid=study, created_at=now))
            results: list[IngestResult] = []
            (candidate,) = discover([series])
            ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
            worker = threading.Thread(target=lambda: results.append(ingestor.ingest(candidate)))
            worker.start()
            # Act: once the slide's insert of the study waits on this transaction's row, commit it
            deadline = time.monotonic() + 120
            waiting = text(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND a.datname = current_database()"
            )
            with other.connect() as probe:
                while not probe.execute(waiting).scalar():
                    assert worker.is_alive() and time.monotonic() < deadline, results
                    time.sleep(0.02)
            transaction.commit()
            worker.join(120)
        # Assert
        (result,) = results
        assert result.status == IngestStatus.INGESTED, result.reason
        slide = archive.catalog.slide(result.slide_id or "")
        assert slide is not None and slide.study_instance_uid == study
    finally:
        other.dispose()
        archive.close()
        backend.close()
