"""The one receive path: instances examined, grouped, stored once; units of a folder; request
spools owned by their process and swept when it is gone; a full disk named, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    KeyObjectSelectionDocumentStorage,
    generate_uid,
)

from lamina.archive.archive import Archive
from lamina.archive.discover import Candidate, discover
from lamina.archive.ingest import IngestStatus, IngestStep
from lamina.archive.receive import FailureReason, Receipt, RequestSpools, StoreStatus
from lamina.archive.receive.association import RELEASED
from lamina.archive.receive.spool import OWNER
from lamina.config import Settings
from lamina.dimse import DimseServer
from tests.dimse.peers import calling
from tests.smalldisk import fill, small_disk
from tests.support import REPO, partial_writes, shared_file


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A real slide (Aperio SVS) as the DICOM files another archive would send."""
    root = tmp_path_factory.mktemp("exported")
    source = Archive.open(Settings.load(root / "source", env={}))
    try:
        (candidate,) = discover([shared_file("aperio/CMU-1-Small-Region.svs")])
        result = source.receiver().ingest(candidate)
        assert result.status is IngestStatus.INGESTED, result.reason
        return source.export(root / "export", [result.slide_id or ""])[0].files
    finally:
        source.close()


def _object(path: Path, sop_class: str, study: str | None = None, modality: str = "KO") -> Path:
    """A small DICOM object without pixels (a key object selection, or any class given)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.InstanceNumber = modality, "PAT-RECEIVE", 1
    ds.save_as(path, enforce_file_format=True)
    return path


# -- instances --------------------------------------------------------------------------------


def test_a_request_is_examined_grouped_and_stored_once(
    archive: Archive, exported: list[Path], tmp_path: Path
) -> None:
    # Arrange: a slide, an object kept as it is, an object of a class not kept, and no DICOM
    key_object = _object(tmp_path / "ko.dcm", KeyObjectSelectionDocumentStorage)
    ct = _object(tmp_path / "ct.dcm", CTImageStorage, modality="CT")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    files = [*exported, key_object, ct, junk]
    receiver = archive.receiver()
    # Act
    first = receiver.receive(files, actor="tests")
    again = receiver.receive(files, actor="tests")
    # Assert
    statuses = [outcome.status for outcome in first.outcomes]
    assert statuses == [StoreStatus.STORED] * (len(exported) + 1) + [StoreStatus.FAILED] * 2
    assert [o.failure_reason for o in first.outcomes[-2:]] == [
        FailureReason.SOP_CLASS_NOT_SUPPORTED,
        FailureReason.CANNOT_UNDERSTAND,
    ]
    assert "CT Image Storage" in first.outcomes[-2].reason
    assert [result.status for result in first.slides] == [IngestStatus.INGESTED]
    assert [o.status for o in again.outcomes[:-2]] == [StoreStatus.DUPLICATE] * (len(exported) + 1)
    assert archive.catalog.count_slides() == 1
    assert archive.catalog.instance(first.outcomes[len(exported)].sop_instance_uid) is not None


def test_instances_of_another_study_than_asked_are_refused(
    archive: Archive, exported: list[Path], tmp_path: Path
) -> None:
    key_object = _object(tmp_path / "ko.dcm", KeyObjectSelectionDocumentStorage, study="1.2.3.4")
    receipt = archive.receiver().receive([*exported, key_object], study="1.2.3.4")
    assert [o.failure_reason for o in receipt.outcomes[:-1]] == [
        FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    ] * len(exported)
    assert receipt.outcomes[-1].status is StoreStatus.STORED
    assert archive.catalog.count_slides() == 0


def test_a_folder_unit_of_dicom_objects_is_kept_as_it_is(archive: Archive, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    path = _object(folder / "ko.dcm", KeyObjectSelectionDocumentStorage)
    (candidate,) = discover([folder])
    first = archive.receiver().ingest(candidate)
    second = archive.receiver().ingest(candidate)
    assert (first.status, first.format, first.instances) == (IngestStatus.INGESTED, "dicom-objects", 1)
    assert second.status is IngestStatus.DUPLICATE
    assert archive.catalog.count_slides() == 0
    assert archive.catalog.instance(str(_sop(path))) is not None


def _sop(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_one_object_stored_by_two_requests_at_once_is_stored_once(settings: Settings, tmp_path: Path) -> None:
    """While one request is held after its duplicate check, another stores the same object (and
    so its study and series): the first ends as a duplicate, not as a catalog conflict."""
    key_object = _object(tmp_path / "ko.dcm", KeyObjectSelectionDocumentStorage)
    held, release = threading.Event(), threading.Event()

    def hold(step: IngestStep) -> None:
        if step is IngestStep.DUPLICATES_CHECKED:
            held.set()
            assert release.wait(120)

    first, second = Archive.open(settings), Archive.open(settings)
    try:
        receipts: list[Receipt] = []
        worker = threading.Thread(target=lambda: receipts.append(first.receiver(hold).receive([key_object])))
        worker.start()
        assert held.wait(120)
        # Act
        stored = second.receiver().receive([key_object])
        release.set()
        worker.join(120)
        # Assert
        assert [o.status for o in stored.outcomes] == [StoreStatus.STORED]
        (late,) = receipts
        assert [o.status for o in late.outcomes] == [StoreStatus.DUPLICATE], late.outcomes
        assert len(list(second.store.iter_digests())) == 1
    finally:
        release.set()
        first.close()
        second.close()


# -- request spools ---------------------------------------------------------------------------

_HOLDER = """
import sys, time
from pathlib import Path
from lamina.archive.receive import RequestSpools
spools = RequestSpools(Path(sys.argv[1]))
with spools.request() as folder:
    (folder / "part.dcm").write_bytes(b"x" * 1000)
    print(folder, flush=True)
    time.sleep(600)
"""


def _holder(incoming: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process holding one request spool open (as a server mid-request)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(incoming)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line, "the holder did not open its spool"
    return process, Path(line)


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def test_the_spool_of_a_killed_process_is_swept_and_a_live_ones_is_kept(
    archive: Archive, holders: list[subprocess.Popen[str]]
) -> None:
    # Arrange: two processes mid-request; one is killed
    incoming = archive.settings.home / "incoming"
    dead, dead_request = _holder(incoming)
    live, live_request = _holder(incoming)
    holders += [dead, live]
    dead.send_signal(signal.SIGKILL)
    dead.wait(30)
    assert (dead_request / "part.dcm").exists()  # what a kill leaves
    # Act: a DIMSE server starts (its recovery is its own), then a sweep (a server's start)
    with DimseServer(archive, port=0):
        pass
    survived_dimse = dead_request.exists() and live_request.exists()
    removed = RequestSpools(incoming).sweep()
    # Assert
    assert survived_dimse, "the DIMSE recovery removed a STOW spool"
    assert removed == 1
    assert not dead_request.parent.exists()
    assert (live_request / "part.dcm").exists()
    live.send_signal(signal.SIGKILL)
    live.wait(30)
    assert RequestSpools(incoming).sweep() == 1
    assert list((incoming / "stow").iterdir()) == []


def test_spools_of_earlier_releases_are_swept_by_their_owner(archive: Archive, exported: list[Path]) -> None:
    incoming = archive.settings.home / "incoming"
    old_stow, new_stow = incoming / f"stow-{'a' * 32}", incoming / f"stow-{'b' * 32}"
    for folder in (old_stow, new_stow):
        folder.mkdir(parents=True)
        (folder / "part.dcm").write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old_stow, (two_hours_ago, two_hours_ago))
    sealed = incoming / "20250101T000000000000-0123abcd"
    series = sealed / "1.2.3"
    series.mkdir(parents=True)
    for index, file in enumerate(exported):
        (series / f"1.2.3.{index}.dcm").write_bytes(file.read_bytes())
    (sealed / RELEASED).write_text("OLDSCU", "utf-8")
    calling(archive, "OLDSCU")  # the association's calling AE, still configured: its lab receives it
    # Act
    swept = RequestSpools(incoming).sweep()
    server = DimseServer(archive, port=0)
    server.start()
    try:
        assert server.wait_idle(60)
    finally:
        server.stop()
    # Assert: the old STOW spool gone, the recent one kept (its process may still run), the
    # sealed association ingested
    assert swept == 1
    assert not old_stow.exists() and new_stow.exists()
    assert archive.catalog.count_slides() == 1
    assert not sealed.exists() and list((incoming / "dimse").iterdir()) == [incoming / "dimse" / ".lock"]


def test_a_session_folder_made_by_a_process_killed_before_it_locked_is_swept(archive: Archive) -> None:
    root = archive.settings.home / "incoming" / "stow"
    young, old = root / "1-aaaa", root / "2-bbbb"
    young.mkdir(parents=True)
    old.mkdir()
    os.utime(old, (time.time() - 600, time.time() - 600))
    assert RequestSpools(root.parent).sweep() == 1
    assert young.exists() and not old.exists()
    # a session's own lock keeps it, within this process too
    spools = RequestSpools(root.parent)
    with spools.request() as folder:
        assert (folder.parent / OWNER).exists()
        assert RequestSpools(root.parent).sweep() == 0
        assert folder.exists()
    spools.close()
    assert not folder.parent.exists()


# -- a full disk ------------------------------------------------------------------------------


def test_a_full_blob_store_is_named_and_nothing_is_left(tmp_path: Path, exported: list[Path]) -> None:
    with small_disk(tmp_path / "disk", 16 << 20) as disk:
        archive = Archive.open(Settings.load(disk / "home", env={}))
        try:
            ballast = fill(disk, 1 << 20)  # room for the catalog, not for the slide
            candidate = Candidate(exported[0], tuple(exported))
            # Act
            result = archive.receiver().ingest(candidate)
            # Assert
            assert result.status is IngestStatus.FAILED and result.no_space
            assert result.reason == (
                f"the blob store folder {disk / 'home' / 'blobs'} is full (No space left on device); free "
                "space there or move the store (LAMINA_BLOB_URL), then send or ingest again"
            )
            assert list(archive.store.iter_digests()) == []
            assert partial_writes(archive.store) == []
            assert archive.catalog.count_slides() == 0
            ballast.unlink()
            assert archive.receiver().ingest(candidate).status is IngestStatus.INGESTED
        finally:
            archive.close()


def test_a_full_catalog_is_named_not_blamed_on_the_slide(tmp_path: Path, exported: list[Path]) -> None:
    with small_disk(tmp_path / "disk", 4 << 20) as disk:
        catalog = disk / "catalog.sqlite"
        archive = Archive.open(
            Settings.load(tmp_path / "home", env={"LAMINA_DATABASE_URL": f"sqlite:///{catalog}"})
        )
        try:
            ballast = fill(disk, 0)
            candidate = Candidate(exported[0], tuple(exported))
            # Act
            result = archive.receiver().ingest(candidate)
            # Assert
            assert result.status is IngestStatus.FAILED and result.no_space, result.reason
            assert (result.reason or "").startswith(
                f"the catalog {catalog} is full (database or disk is full)"
            )
            assert "damaged" not in (result.reason or "")
            assert list(archive.store.iter_digests()) == []  # the objects written were removed
            ballast.unlink()
            assert archive.receiver().ingest(candidate).status is IngestStatus.INGESTED
            assert archive.catalog.count_slides() == 1
        finally:
            archive.close()


def test_lamina_ingest_says_what_is_full_in_one_line(tmp_path: Path, exported: list[Path]) -> None:
    with small_disk(tmp_path / "disk", 16 << 20) as disk:
        home = disk / "home"
        Archive.open(Settings.load(home, env={})).close()
        fill(disk, 1 << 20)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMINA_", "AWS_"))}
        run = subprocess.run(
            [str(Path(sys.executable).parent / "lamina"), "ingest", str(exported[0].parent)],
            env={**env, "LAMINA_HOME": str(home), "COLUMNS": "300"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 1, run.stdout + run.stderr
        lines = [line for line in run.stdout.splitlines() if line.startswith("failed")]
        assert lines == [
            f"failed {exported[0]}: the blob store folder {home / 'blobs'} is full (No space left on "
            "device); free space there or move the store (LAMINA_BLOB_URL), then send or ingest again"
        ], run.stdout
        assert "Traceback" not in run.stdout + run.stderr


def test_a_full_disk_while_spooling_leaves_no_request_spool(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 2 << 20) as disk:
        spools = RequestSpools(disk / "incoming")
        with pytest.raises(OSError), spools.request() as folder:
            (folder / "part.dcm").write_bytes(b"\0" * (4 << 20))
        assert [path.name for path in folder.parent.iterdir()] == [OWNER]
        spools.close()
        assert list((disk / "incoming" / "stow").iterdir()) == []
