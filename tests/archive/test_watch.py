"""Watched folders: a slide is taken once complete, ingested once, then moved to done/ or failed/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lamina.archive.archive import Archive
from lamina.archive.watch import Watcher
from lamina.config import Settings
from lamina.sample import write_samples
from tests.support import REPO, lamina_env, shared_file

SVS = "aperio/CMU-1-Small-Region.svs"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_file_copied_in_two_steps_is_taken_only_once_stable(archive: Archive, tmp_path: Path) -> None:
    folder = tmp_path / "scanner"
    folder.mkdir()
    data = shared_file(SVS).read_bytes()
    clock = FakeClock()
    watcher = Watcher(archive, folder, stable_s=5.0, clock=clock)
    target = folder / "slide.svs"
    target.write_bytes(data[: len(data) // 2])
    assert watcher.scan_once() == []
    clock.now += 3
    assert watcher.scan_once() == []
    with target.open("ab") as out:  # the rest arrives: the wait starts again
        out.write(data[len(data) // 2 :])
    clock.now += 3
    assert watcher.scan_once() == []
    assert watcher.pending == 1
    assert archive.catalog.count_slides() == 0
    assert target.exists()
    clock.now += 5
    (result,) = watcher.scan_once()
    assert result.status == "ingested", result.reason
    assert archive.catalog.slide(result.slide_id or "") is not None
    assert not target.exists()
    assert (folder / "done" / "slide.svs").read_bytes() == data
    assert watcher.pending == 0
    assert watcher.scan_once() == []  # done/ is never scanned
    assert not (folder / ".claims").exists() or not any((folder / ".claims").rglob("*.claim"))


def test_a_bad_file_goes_to_failed_with_its_reason(archive: Archive, tmp_path: Path) -> None:
    folder = tmp_path / "scanner"
    (folder / "run1").mkdir(parents=True)
    (folder / "run1" / "broken.svs").write_bytes(b"not a slide at all" * 100)
    watcher = Watcher(archive, folder, stable_s=0)
    (result,) = watcher.scan_once()
    assert result.status == "failed"
    moved = folder / "failed" / "run1" / "broken.svs"
    assert moved.exists() and not (folder / "run1" / "broken.svs").exists()
    reason = (folder / "failed" / "run1" / "broken.svs.reason.txt").read_text()
    assert reason.strip() == result.reason
    assert "\n" not in reason.strip()
    assert archive.catalog.count_slides() == 0
    assert watcher.scan_once() == []  # failed/ is never scanned


def test_a_done_marker_makes_it_immediate_and_goes_along(archive: Archive, tmp_path: Path) -> None:
    folder = tmp_path / "scanner"
    folder.mkdir()
    shutil.copy(shared_file(SVS), folder / "a.svs")
    watcher = Watcher(archive, folder, stable_s=3600, done_marker=".done")
    assert watcher.scan_once() == []
    (folder / "a.svs.done").touch()
    (result,) = watcher.scan_once()
    assert result.status == "ingested", result.reason
    assert (folder / "done" / "a.svs").exists()
    assert (folder / "done" / "a.svs.done").exists()
    assert not (folder / "a.svs").exists() and not (folder / "a.svs.done").exists()


def test_a_duplicate_is_moved_to_done_and_a_name_clash_is_numbered(archive: Archive, tmp_path: Path) -> None:
    folder = tmp_path / "scanner"
    folder.mkdir()
    watcher = Watcher(archive, folder, stable_s=0)
    shutil.copy(shared_file(SVS), folder / "a.svs")
    (first,) = watcher.scan_once()
    shutil.copy(shared_file(SVS), folder / "a.svs")
    (again,) = watcher.scan_once()
    assert (first.status, again.status) == ("ingested", "duplicate")
    assert again.slide_id == first.slide_id
    assert (folder / "done" / "a.svs").exists() and (folder / "done" / "a-1.svs").exists()
    assert archive.catalog.count_slides() == 1


def test_an_mrxs_slide_with_its_folder_is_one_unit(archive: Archive, tmp_path: Path) -> None:
    folder = tmp_path / "scanner"
    (folder / "scan").mkdir(parents=True)
    (folder / "scan.mrxs").write_text("[GENERAL]\nSLIDE_VERSION=01.02\n")
    for name in ("Slidedat.ini", "Data0000.dat", "Index.dat"):
        (folder / "scan" / name).write_bytes(b"\x00" * 64)
    watcher = Watcher(archive, folder, stable_s=0)
    (result,) = watcher.scan_once()
    assert result.status == "failed"
    assert (result.reason or "").startswith("Slidedat.ini: line 1 is neither [group] nor key = value")
    failed = folder / "failed"
    assert (failed / "scan.mrxs").is_file()
    assert sorted(p.name for p in (failed / "scan").iterdir()) == [
        "Data0000.dat",
        "Index.dat",
        "Slidedat.ini",
    ]
    assert (failed / "scan.mrxs.reason.txt").read_text().strip() == result.reason
    assert not (folder / "scan").exists() and not (folder / "scan.mrxs").exists()


def test_a_dicom_series_folder_is_one_unit(archive: Archive, tmp_path: Path) -> None:
    folder = tmp_path / "scanner"
    write_samples(folder, ["dicom_wsi"], size=(1024, 768), seed=7)
    files = sorted(p.name for p in (folder / "dicom_wsi").iterdir())
    watcher = Watcher(archive, folder, stable_s=0)
    (result,) = watcher.scan_once()
    assert result.status == "ingested", result.reason
    assert sorted(p.name for p in (folder / "done" / "dicom_wsi").iterdir()) == files
    assert not (folder / "dicom_wsi").exists()
    assert archive.catalog.count_slides() == 1


def test_a_dicom_object_that_is_not_a_slide_is_kept_as_it_is(archive: Archive, tmp_path: Path) -> None:
    """The watched folder takes what STOW-RS and C-STORE take: an annotation or a key object
    dropped beside the slides is stored as it is (the one receive path), not failed as no slide."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, KeyObjectSelectionDocumentStorage, generate_uid

    folder = tmp_path / "scanner"
    folder.mkdir()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = KeyObjectSelectionDocumentStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = KeyObjectSelectionDocumentStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "KO"
    ds.save_as(folder / "selection.dcm", enforce_file_format=True)
    watcher = Watcher(archive, folder, stable_s=0)
    (result,) = watcher.scan_once()
    assert result.status == "ingested", result.reason
    assert (folder / "done" / "selection.dcm").exists()
    assert archive.catalog.instance(str(ds.SOPInstanceUID)) is not None
    assert archive.catalog.count_slides() == 0


def test_a_stale_claim_of_a_dead_process_is_taken_over(archive: Archive, tmp_path: Path) -> None:
    folder = tmp_path / "scanner"
    folder.mkdir()
    shutil.copy(shared_file(SVS), folder / "a.svs")
    watcher = Watcher(archive, folder, stable_s=0)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    claims = folder / ".claims"
    claims.mkdir()
    record = {
        "host": watcher.host,
        "pid": int(dead.stdout),
        "time": "2020-01-01T00:00:00+00:00",
        "token": "x",
    }
    (claims / "a.svs.claim").write_text(json.dumps(record))
    live = {**record, "pid": os.getpid(), "host": "another-host", "time": "2999-01-01T00:00:00+00:00"}
    (folder / "b.svs").write_bytes(b"x" * 10)
    (claims / "b.svs.claim").write_text(json.dumps(live))
    (result,) = watcher.scan_once()
    assert result.status == "ingested", result.reason
    assert (folder / "done" / "a.svs").exists()
    assert (folder / "b.svs").exists()  # another host's fresh claim is respected


WATCH = "from lamina.cli.watch import watch; watch(prog_name='lamina watch')"


def test_two_watcher_processes_ingest_each_slide_exactly_once(
    archive: Archive, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "scanner"
    formats = ["aperio_svs", "tiled_tiff", "dicom_wsi"]
    for seed in range(1, 4):
        write_samples(folder / f"case{seed}", formats, size=(1024, 768), seed=seed)
    expected = 3 * len(formats)
    command = [sys.executable, "-c", WATCH, str(folder), "--stable-seconds", "0.2", "--once"]
    procs = [
        subprocess.Popen(
            command,
            cwd=REPO,
            env=lamina_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "Traceback" not in out + err
    lines = [line for out, _ in outputs for line in out.splitlines() if line.strip()]
    assert len(lines) == expected, lines
    # the embedded catalog ingests in the watcher; PostgreSQL queues each unit as a job
    verb = "ingested " if settings.database_url.startswith("sqlite") else "queued "
    assert all(line.startswith(verb) for line in lines), lines
    assert archive.catalog.count_slides() == expected
    assert not (folder / "failed").exists()
    left = [p for p in folder.rglob("*") if p.is_file() and "done" not in p.relative_to(folder).parts]
    assert all(p.name == "manifest.csv" for p in left), left
    assert len([p for p in (folder / "done").rglob("*") if p.is_file()]) >= expected


def test_watch_runs_until_interrupted(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "scanner"
    folder.mkdir()
    command = [sys.executable, "-c", WATCH, str(folder), "--stable-seconds", "0.2", "--interval", "0.1"]
    proc = subprocess.Popen(
        command, cwd=REPO, env=lamina_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        shutil.copy(shared_file(SVS), folder / "a.part")
        (folder / "a.part").rename(folder / "a.svs")
        deadline = time.monotonic() + 120
        while not (folder / "done" / "a.svs").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (folder / "done" / "a.svs").exists()
    finally:
        proc.send_signal(2)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in out + err
    verb = "ingested" if settings.database_url.startswith("sqlite") else "queued"
    assert f"{verb} a.svs" in out
