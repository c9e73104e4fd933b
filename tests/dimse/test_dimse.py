"""The DIMSE server against dcmtk's own tools: echoscu, storescu and findscu as the peers."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lamina.archive.archive import Archive, ExportedSlide
from lamina.archive.discover import Candidate
from lamina.archive.ingest import Ingestor, IngestResult
from lamina.archive.manifest import load_manifest
from lamina.archive.receive.association import RELEASED
from lamina.config import Settings
from lamina.dimse import DimseOptions, DimseServer
from lamina.errors import ConfigurationError
from tests.dimse.peers import calling
from tests.support import shared_file, tool

PATIENT_ID = "PAT-DIMSE-1"
PATIENT_NAME = "MÜLLER^ANNA"
ACCESSION = "ACC-42"
SCU_AE = "SCANNER1"
#: storescu proposes one transfer syntax per context from this profile, so that the JPEG levels and
#: the JPEG 2000 associated images of one slide go in one association, as a scanner sends them.
SCU_PROFILE = r"""
[[TransferSyntaxes]]
[JPEGBaseline]
TransferSyntax1 = 1.2.840.10008.1.2.4.50
[JPEG2000Lossless]
TransferSyntax1 = 1.2.840.10008.1.2.4.90
[Uncompressed]
TransferSyntax1 = 1.2.840.10008.1.2.1
TransferSyntax2 = 1.2.840.10008.1.2
[[PresentationContexts]]
[Slides]
PresentationContext1 = 1.2.840.10008.5.1.4.1.1.77.1.6\JPEGBaseline
PresentationContext2 = 1.2.840.10008.5.1.4.1.1.77.1.6\JPEG2000Lossless
PresentationContext3 = 1.2.840.10008.5.1.4.1.1.77.1.6\Uncompressed
PresentationContext4 = 1.2.840.10008.5.1.4.1.1.2\Uncompressed
[[Profiles]]
[Slides]
PresentationContexts = Slides
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ExportedSlide:
    """A real slide (Aperio SVS) ingested with its patient's identity into archive A, exported."""
    root = tmp_path_factory.mktemp("source")
    source = shared_file("aperio/CMU-1-Small-Region.svs")
    manifest = root / "manifest.csv"
    manifest.write_text(
        f"file,patient_id,patient_name,accession_number\n{source.name},{PATIENT_ID},{PATIENT_NAME},{ACCESSION}\n",
        "utf-8",
    )
    archive = Archive.open(Settings.load(root / "a", env={}))
    try:
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
        result = ingestor.ingest(Candidate(source, (source,)), load_manifest(manifest))
        assert result.status == "ingested", result.reason
        [slide] = archive.export(root / "export")
    finally:
        archive.close()
    return slide


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    path = tmp_path / "storescu.cfg"
    path.write_text(SCU_PROFILE, "ascii")
    return path


@pytest.fixture
def results() -> list[IngestResult]:
    return []


@pytest.fixture
def options() -> DimseOptions:
    return DimseOptions()


@pytest.fixture
def server(archive: Archive, results: list[IngestResult], options: DimseOptions) -> Iterator[DimseServer]:
    """Archive B, fresh, served on a free port; SCANNER1 and dcmtk's default FINDSCU may call it."""
    calling(archive, SCU_AE, "FINDSCU", "PACS1")
    served = DimseServer(archive, ae_title="LAMINA", port=0, options=options, listener=results.append)
    served.start()
    yield served
    served.stop()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


def _store(
    server: DimseServer, profile: Path, files: list[Path], *extra: str
) -> subprocess.CompletedProcess[str]:
    return _run(
        tool("storescu"),
        "-xf",
        str(profile),
        "Slides",
        "-aet",
        SCU_AE,
        "-aec",
        server.ae_title,
        *extra,
        "127.0.0.1",
        str(server.port),
        *[str(file) for file in files],
    )


def _find(server: DimseServer, folder: Path, level: str, *keys: str) -> list[Dataset]:
    folder.mkdir()
    run = _run(
        tool("findscu"),
        "-S",
        "-aet",
        SCU_AE,
        "-aec",
        server.ae_title,
        "-X",
        "-od",
        str(folder),
        "127.0.0.1",
        str(server.port),
        "-k",
        f"QueryRetrieveLevel={level}",
        *[arg for key in keys for arg in ("-k", key)],
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return [pydicom.dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))]


def _wait_for_slides(archive: Archive, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while archive.catalog.count_slides() < count:
        assert time.monotonic() < deadline, "the slide did not appear in the catalog"
        time.sleep(0.05)


def _spools(archive: Archive) -> list[Path]:
    return [path for path in (archive.settings.home / "incoming" / "dimse").iterdir() if path.is_dir()]


def _stored_slide(server: DimseServer, archive: Archive, profile: Path, exported: ExportedSlide) -> None:
    run = _store(server, profile, exported.files)
    assert run.returncode == 0, run.stdout + run.stderr
    _wait_for_slides(archive, 1)
    assert server.wait_idle(60)


def test_echo(server: DimseServer) -> None:
    run = _run(tool("echoscu"), "-aet", SCU_AE, "-aec", server.ae_title, "127.0.0.1", str(server.port))
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_slide_pushed_in_one_association_is_ingested_whole(
    server: DimseServer,
    archive: Archive,
    profile: Path,
    exported: ExportedSlide,
    results: list[IngestResult],
) -> None:
    # Act
    run = _store(server, profile, exported.files)
    # Assert
    assert run.returncode == 0, run.stdout + run.stderr
    _wait_for_slides(archive, 1)
    assert server.wait_idle(60)
    [slide] = archive.catalog.slides()
    assert slide.series_instance_uid == exported.slide.series_instance_uid
    assert slide.instances == len(exported.files) == exported.slide.instances
    assert slide.levels == exported.slide.levels
    assert slide.patient_id == PATIENT_ID
    sent = {str(pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID) for file in exported.files}
    assert {row.sop_instance_uid for row in archive.catalog.instances(slide.id)} == sent
    assert [result.status for result in results] == ["ingested"]
    assert _spools(archive) == []


def test_sending_the_slide_again_is_a_duplicate(
    server: DimseServer,
    archive: Archive,
    profile: Path,
    exported: ExportedSlide,
    results: list[IngestResult],
) -> None:
    _stored_slide(server, archive, profile, exported)
    stored = set(archive.store.iter_digests())
    # Act
    run = _store(server, profile, exported.files)
    # Assert
    assert run.returncode == 0, run.stdout + run.stderr
    deadline = time.monotonic() + 60
    while len(results) < 2:
        assert time.monotonic() < deadline, "the second association was not ingested"
        time.sleep(0.05)
    assert server.wait_idle(60)
    assert [result.status for result in results] == ["ingested", "duplicate"]
    assert results[1].slide_id == results[0].slide_id
    assert archive.catalog.count_slides() == 1
    assert set(archive.store.iter_digests()) == stored
    assert _spools(archive) == []


def test_a_series_that_cannot_be_ingested_is_logged_in_one_line(
    server: DimseServer,
    archive: Archive,
    profile: Path,
    exported: ExportedSlide,
    results: list[IngestResult],
    caplog: pytest.LogCaptureFixture,
) -> None:
    label = [file for file in exported.files if file.name.endswith("label.dcm")]
    caplog.set_level(logging.INFO, logger="lamina.dimse")
    # Act: a label alone is no slide
    run = _store(server, profile, label)
    # Assert
    assert run.returncode == 0, run.stdout + run.stderr
    deadline = time.monotonic() + 60
    while not results:
        assert time.monotonic() < deadline, "the association was not ingested"
        time.sleep(0.05)
    assert server.wait_idle(60)
    assert results[0].status == "failed"
    [line] = [r for r in caplog.records if r.name == "lamina.dimse" and r.levelno == logging.WARNING]
    assert "not ingested" in line.getMessage()
    assert "VOLUME" in line.getMessage()
    assert "\n" not in line.getMessage() and line.exc_info is None
    assert archive.catalog.count_slides() == 0
    assert _spools(archive) == []


def test_find_at_study_series_and_image_level(
    server: DimseServer, archive: Archive, profile: Path, exported: ExportedSlide, tmp_path: Path
) -> None:
    _stored_slide(server, archive, profile, exported)
    study, series = exported.slide.study_instance_uid, exported.slide.series_instance_uid
    # Act
    studies = _find(
        server,
        tmp_path / "study",
        "STUDY",
        f"PatientID={PATIENT_ID}",
        "StudyInstanceUID",
        "PatientName",
        "AccessionNumber",
        "StudyDate",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
    )
    series_found = _find(
        server,
        tmp_path / "series",
        "SERIES",
        f"StudyInstanceUID={study}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
        "Manufacturer",
    )
    images = _find(
        server,
        tmp_path / "image",
        "IMAGE",
        f"SeriesInstanceUID={series}",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "ImageType",
    )
    # Assert
    [found] = studies
    assert found.QueryRetrieveLevel == "STUDY"
    assert found.StudyInstanceUID == study
    assert str(found.PatientName) == PATIENT_NAME
    assert found.AccessionNumber == ACCESSION
    assert found.StudyDate == pydicom.dcmread(exported.files[0], stop_before_pixels=True).StudyDate
    assert found.ModalitiesInStudy == "SM"
    assert int(found.NumberOfStudyRelatedInstances) == len(exported.files)
    [found] = series_found
    assert found.SeriesInstanceUID == series
    assert found.Modality == "SM"
    assert int(found.NumberOfSeriesRelatedInstances) == len(exported.files)
    assert found.Manufacturer == "Aperio"  # not in the catalog: from the stored DICOM JSON
    headers = [pydicom.dcmread(file, stop_before_pixels=True) for file in exported.files]
    assert {str(image.SOPInstanceUID) for image in images} == {str(h.SOPInstanceUID) for h in headers}
    by_uid = {str(h.SOPInstanceUID): h for h in headers}
    for image in images:
        assert image.SeriesInstanceUID == series
        assert image.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.6"
        assert list(image.ImageType) == list(by_uid[image.SOPInstanceUID].ImageType)


#: C-FIND keys and how many studies of the stored slide each matches.
FIND_CASES: list[tuple[tuple[str, ...], int]] = [
    (("PatientName=m*",), 1),  # PN: wild card, any case
    (("PatientName=MÜLLER^ANNA", "SpecificCharacterSet=ISO_IR 192"), 1),
    ((f"PatientID={PATIENT_ID[:4]}*",), 1),
    ((f"PatientID={PATIENT_ID.lower()}",), 0),  # other strings: exact case
    ((f"AccessionNumber={ACCESSION}",), 1),
    (("StudyDate=20000101-20301231",), 1),
    (("StudyDate=-19991231",), 0),
    (("PatientID=NOBODY",), 0),
    (("StudyInstanceUID=1.2.3\\1.2.4",), 0),
    (("PatientID=",), 1),  # universal matching
    ((f"AccessionNumber=OTHER\\{ACCESSION}",), 1),  # several values: any of them
    (("ModalitiesInStudy=SM",), 1),
    (("ModalitiesInStudy=CT",), 0),
]


def test_find_matching(
    server: DimseServer, archive: Archive, profile: Path, exported: ExportedSlide, tmp_path: Path
) -> None:
    # one stored slide, every matching rule asked of it (one association each, as findscu does)
    _stored_slide(server, archive, profile, exported)
    found = {
        keys: len(_find(server, tmp_path / f"found{n}", "STUDY", "StudyInstanceUID", *keys))
        for n, (keys, _) in enumerate(FIND_CASES)
    }
    assert found == dict(FIND_CASES)


def test_find_with_a_bad_identifier_fails(server: DimseServer, tmp_path: Path) -> None:
    folder = tmp_path / "found"
    folder.mkdir()
    run = _run(
        tool("findscu"),
        "-v",
        "-S",
        "-aec",
        server.ae_title,
        "-X",
        "-od",
        str(folder),
        "127.0.0.1",
        str(server.port),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyDate=yesterday",
    )
    assert "Error: DataSetDoesNotMatchSOPClass" in run.stdout + run.stderr  # dcmtk's name for 0xA900
    assert list(folder.glob("rsp*.dcm")) == []


@pytest.mark.parametrize("options", [DimseOptions(max_find_matches=0)])
def test_find_over_the_match_limit_says_out_of_resources(
    server: DimseServer, archive: Archive, profile: Path, exported: ExportedSlide, tmp_path: Path
) -> None:
    _stored_slide(server, archive, profile, exported)
    run = _run(
        tool("findscu"),
        "-v",
        "-S",
        "-aec",
        server.ae_title,
        "127.0.0.1",
        str(server.port),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID",
    )
    assert "Refused: OutOfResources" in run.stdout + run.stderr  # dcmtk's name for 0xA700


def _ct(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.ImageType = "CT", "PAT-CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(8 * 8 * 2)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_non_wsi_object_is_refused(
    server: DimseServer, archive: Archive, profile: Path, tmp_path: Path, results: list[IngestResult]
) -> None:
    # Act
    run = _store(server, profile, [_ct(tmp_path / "ct.dcm")], "-v")
    # Assert
    assert run.returncode != 0
    assert "Refused: SOPClassNotSupported" in run.stdout + run.stderr  # dcmtk's name for 0x0122
    assert server.wait_idle(10)
    assert archive.catalog.count_slides() == 0
    assert results == []
    assert _spools(archive) == []


def test_an_aborted_association_leaves_nothing(
    server: DimseServer, archive: Archive, profile: Path, exported: ExportedSlide, results: list[IngestResult]
) -> None:
    run = _store(server, profile, exported.files, "--abort")
    assert run.returncode == 0, run.stdout + run.stderr
    deadline = time.monotonic() + 10
    while _spools(archive):
        assert time.monotonic() < deadline, "the aborted association's spool is still there"
        time.sleep(0.05)
    assert server.wait_idle(10)
    assert archive.catalog.count_slides() == 0
    assert results == []


@pytest.mark.parametrize("options", [DimseOptions(max_dataset_bytes=100_000)])
def test_a_data_set_over_the_limit_aborts_the_association(
    server: DimseServer, archive: Archive, profile: Path, exported: ExportedSlide, results: list[IngestResult]
) -> None:
    large = [file for file in exported.files if file.stat().st_size > 200_000]
    run = _store(server, profile, large)
    assert run.returncode != 0
    deadline = time.monotonic() + 10
    while _spools(archive):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.wait_idle(10)
    assert archive.catalog.count_slides() == 0
    assert results == []


def test_released_spools_left_by_a_crash_are_ingested_at_start(
    archive: Archive, exported: ExportedSlide, results: list[IngestResult]
) -> None:
    # Arrange: one association released before the crash, one cut off by it
    incoming = archive.settings.home / "incoming" / "dimse"
    for name, sealed in (("released", True), ("cut-off", False)):
        series = incoming / name / exported.slide.series_instance_uid
        series.mkdir(parents=True)
        for file in exported.files:
            uid = pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID
            shutil.copyfile(file, series / f"{uid}.dcm")
        if sealed:
            (incoming / name / RELEASED).write_text(SCU_AE, "utf-8")
    calling(archive, SCU_AE)  # received into its lab
    server = DimseServer(archive, port=0, listener=results.append)
    # Act
    server.start()
    try:
        assert server.wait_idle(60)
    finally:
        server.stop()
    # Assert
    assert [result.status for result in results] == ["ingested"]
    assert archive.catalog.count_slides() == 1
    assert _spools(archive) == []


@pytest.mark.parametrize("options", [DimseOptions(calling_ae_titles=("PACS1",))])
def test_only_allowed_calling_ae_titles_associate(server: DimseServer) -> None:
    refused = _run(tool("echoscu"), "-aet", SCU_AE, "-aec", server.ae_title, "127.0.0.1", str(server.port))
    allowed = _run(tool("echoscu"), "-aet", "PACS1", "-aec", server.ae_title, "127.0.0.1", str(server.port))
    assert refused.returncode != 0
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_one_server_per_data_folder(archive: Archive) -> None:
    with DimseServer(archive, port=0), pytest.raises(ConfigurationError, match="another DIMSE server"):
        DimseServer(archive, port=0).start()


def test_the_options_come_from_the_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "lamina.toml").write_text(
        'dimse_ae_title = "ARCHIVE1"\ndimse_calling_ae_titles = ["PACS1", "SCANNER1"]\n'
        'dimse_max_dataset_bytes = "2 GiB"\ndimse_max_find_matches = 500\ndimse_network_timeout_s = 30\n',
        "utf-8",
    )
    settings = Settings.load(home, env={})
    assert settings.dimse_ae_title == "ARCHIVE1"
    assert DimseOptions.from_settings(settings) == DimseOptions(
        max_dataset_bytes=2 << 30,
        max_find_matches=500,
        calling_ae_titles=("PACS1", "SCANNER1"),
        network_timeout_s=30.0,
    )
    assert DimseOptions.from_settings(Settings.load(tmp_path / "other", env={})) == DimseOptions()
    for variable, bad in [
        ("LAMINA_DIMSE_MAX_FIND_MATCHES", "0"),
        ("LAMINA_DIMSE_NETWORK_TIMEOUT_S", "0"),
        ("LAMINA_DIMSE_MAX_DATASET_BYTES", "lots"),
        ("LAMINA_DIMSE_AE_TITLE", "A" * 17),
    ]:
        with pytest.raises(ConfigurationError, match=variable):
            Settings.load(home, env={variable: bad})
