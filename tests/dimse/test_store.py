"""C-STORE through the archive's receive path, with dcmtk's storescu as the peer: objects other
than slides kept as they are, and a full disk answered "Refused: Out of Resources" (0xA700) with
nothing left behind."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, KeyObjectSelectionDocumentStorage, generate_uid

from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestResult, IngestStatus
from lamina.config import Settings
from lamina.dimse import DimseServer
from tests.dimse.peers import calling
from tests.smalldisk import fill, small_disk
from tests.support import shared_file, tool

SCU_AE = "SCANNER2"
#: storescu proposes these contexts: the slide's JPEG levels, its JPEG 2000 associated images,
#: and key objects, uncompressed
SCU_PROFILE = r"""
[[TransferSyntaxes]]
[JPEGBaseline]
TransferSyntax1 = 1.2.840.10008.1.2.4.50
[JPEG2000Lossless]
TransferSyntax1 = 1.2.840.10008.1.2.4.90
[Uncompressed]
TransferSyntax1 = 1.2.840.10008.1.2.1
[[PresentationContexts]]
[Contexts]
PresentationContext1 = 1.2.840.10008.5.1.4.1.1.77.1.6\JPEGBaseline
PresentationContext2 = 1.2.840.10008.5.1.4.1.1.77.1.6\JPEG2000Lossless
PresentationContext3 = 1.2.840.10008.5.1.4.1.1.77.1.6\Uncompressed
PresentationContext4 = 1.2.840.10008.5.1.4.1.1.88.59\Uncompressed
[[Profiles]]
[Store]
PresentationContexts = Contexts
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("exported")
    source = Archive.open(Settings.load(root / "source", env={}))
    try:
        (candidate,) = discover([shared_file("aperio/CMU-1-Small-Region.svs")])
        result = source.receiver().ingest(candidate)
        assert result.status is IngestStatus.INGESTED, result.reason
        return source.export(root / "export", [result.slide_id or ""])[0].files
    finally:
        source.close()


@pytest.fixture
def results() -> list[IngestResult]:
    return []


@pytest.fixture
def server(archive: Archive, results: list[IngestResult]) -> Iterator[DimseServer]:
    calling(archive, SCU_AE)
    served = DimseServer(archive, ae_title="LAMINA", port=0, listener=results.append)
    served.start()
    yield served
    served.stop()


def _store(port: int, files: list[Path], folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = folder / "storescu.cfg"
    profile.write_text(SCU_PROFILE, "ascii")
    called = ["-aet", SCU_AE, "-aec", "LAMINA", "127.0.0.1", str(port)]
    return subprocess.run(
        [tool("storescu"), "-xf", str(profile), "Store", *extra, *called, *(str(file) for file in files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _key_object(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = KeyObjectSelectionDocumentStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = KeyObjectSelectionDocumentStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.InstanceNumber = "KO", "PAT-KO", 1
    ds.save_as(path, enforce_file_format=True)
    return path


def _spools(archive: Archive) -> list[Path]:
    root = archive.settings.home / "incoming" / "dimse"
    return [path for path in root.iterdir() if path.is_dir()]


def test_an_object_other_than_a_slide_is_kept_as_it_is(
    server: DimseServer, archive: Archive, tmp_path: Path, results: list[IngestResult]
) -> None:
    key_object = _key_object(tmp_path / "ko.dcm")
    run = _store(server.port, [key_object], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert server.wait_idle(60)
    uid = str(pydicom.dcmread(key_object).SOPInstanceUID)
    row = archive.catalog.instance(uid)
    assert row is not None and row.sop_class_uid == KeyObjectSelectionDocumentStorage
    assert results == []  # no slide
    assert archive.catalog.count_slides() == 0
    assert _spools(archive) == []


def test_a_full_disk_is_refused_out_of_resources_and_nothing_is_left(
    tmp_path: Path, backend_env: dict[str, str], exported: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lamina.dimse")
    with small_disk(tmp_path / "disk", 8 << 20) as disk:
        archive = Archive.open(Settings.load(disk / "home", env=backend_env))
        results: list[IngestResult] = []
        try:
            calling(archive, SCU_AE)
            with DimseServer(archive, port=0, listener=results.append) as server:
                fill(disk, 600 << 10)  # the small levels fit, level 0 (1.3 MB) does not
                # Act: the smallest first, and on after a failure, as a scanner may go on
                run = _store(server.port, exported[::-1], tmp_path, "-d", "--no-halt")
                assert server.wait_idle(60)
            # Assert: the peer was told why, the series is not ingested without its level 0
            said = run.stdout + run.stderr
            assert "DIMSE Status                  : 0xa700: Refused: Out of resources" in said, said
            assert "(0000,0902) LO [the archive's disk is full]" in said
            assert results == []
            assert archive.catalog.count_slides() == 0
            assert list(archive.store.iter_digests()) == []
            assert _spools(archive) == []
            assert any("must be sent again whole" in r.getMessage() for r in caplog.records)
        finally:
            archive.close()


def test_an_association_that_cannot_be_stored_for_space_is_kept_for_the_next_start(
    tmp_path: Path, exported: list[Path]
) -> None:
    with small_disk(tmp_path / "disk", 16 << 20) as disk:
        archive = Archive.open(Settings.load(disk / "home", env={}))
        results: list[IngestResult] = []
        try:
            calling(archive, SCU_AE)
            with DimseServer(archive, port=0, listener=results.append) as server:
                # room for the association's spool, not for the slide's objects too
                ballast = fill(disk, sum(path.stat().st_size for path in exported) + (600 << 10))
                run = _store(server.port, exported, tmp_path)
                assert run.returncode == 0, run.stdout + run.stderr
                assert server.wait_idle(60)
            # Assert: told Success, not stored, kept sealed; then stored once there is room
            assert [(r.status, r.no_space) for r in results] == [(IngestStatus.FAILED, True)]
            assert archive.catalog.count_slides() == 0
            (kept,) = _spools(archive)
            assert (kept / "RELEASED").exists()
            ballast.unlink()
            with DimseServer(archive, port=0, listener=results.append) as server:
                assert server.wait_idle(60)
            assert results[-1].status is IngestStatus.INGESTED
            assert archive.catalog.count_slides() == 1
            assert _spools(archive) == []
        finally:
            archive.close()
