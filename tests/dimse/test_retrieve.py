"""Study Root C-MOVE and C-GET against dcmtk's movescu and getscu (and pynetdicom where dcmtk
cannot say what is checked), on both backends: what arrives is the stored objects' bytes, at
each level; unknown destinations, bad identifiers, damaged objects, refused syntaxes and a
cancel get the PS3.4 statuses; every retrieve is audited per slide."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit
from pynetdicom import AE, build_role, evt

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions, Ingestor
from lamina.dimse import DimseOptions, DimseServer
from lamina.dimse.contexts import STUDY_ROOT_GET, VL_WSI
from lamina.dimse.transcode import native_bytes
from lamina.peers import ApplicationEntity, PeerDirectory
from lamina.sample import write_samples
from tests.dimse.peers import LAB, calling, decoded_frames, received, stored_data_set_sha256, storescp
from tests.support import flip_one_byte, tool

SCU_AE = "PULLER"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An Aperio SVS (JPEG levels, JPEG 2000 associated images) and a DICOM WSI (all JPEG)."""
    folder = tmp_path_factory.mktemp("samples")
    written = write_samples(folder, ["aperio_svs", "dicom_wsi"], size=(1024, 768))
    return {sample.format: sample.path for sample in written}


def _ingest(archive: Archive, path: Path) -> list[InstanceRow]:
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
    [candidate] = discover([path])
    result = ingestor.ingest(candidate, options=IngestOptions(tenant=LAB))
    assert result.status == "ingested", result.reason
    assert result.slide_id is not None
    return archive.catalog.instances(result.slide_id)


@pytest.fixture
def server(archive: Archive) -> Iterator[DimseServer]:
    calling(archive, SCU_AE)
    served = DimseServer(archive, ae_title="LAMINA", port=0)
    served.start()
    yield served
    served.stop()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


def _keys(level: str, rows: list[InstanceRow]) -> list[str]:
    keys = ["-k", f"QueryRetrieveLevel={level}", "-k", f"StudyInstanceUID={rows[0].study_instance_uid}"]
    if level in ("SERIES", "IMAGE"):
        keys += ["-k", f"SeriesInstanceUID={rows[0].series_instance_uid}"]
    if level == "IMAGE":
        keys += ["-k", "SOPInstanceUID=" + "\\".join(row.sop_instance_uid for row in rows)]
    return keys


def _movescu(server: DimseServer, destination: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(
        tool("movescu"), "-v", "-S", "-aet", SCU_AE, "-aec", server.ae_title, "-aem", destination,
        *args, "127.0.0.1", str(server.port),
    )  # fmt: skip


def _sends(archive: Archive) -> list[audit.AuditEntry]:
    with archive.catalog.engine.connect() as conn:
        return audit.entries(conn, action="send")


@pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
def test_move_sends_the_stored_bytes_at_each_level(
    level: str, archive: Archive, server: DimseServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    # Arrange: a slide with JPEG and JPEG 2000 instances, a destination that takes both
    rows = _ingest(archive, samples["aperio_svs"])
    wanted = rows[1:3] if level == "IMAGE" else rows
    folder = tmp_path / "received"
    with storescp(folder, "+xa") as port:
        PeerDirectory(archive.catalog).add(ApplicationEntity("STORESCP", "127.0.0.1", port))
        # Act
        run = _movescu(server, "STORESCP", *_keys(level, wanted))
    # Assert
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Received Final Move Response (Success)" in run.stderr
    got = received(folder)
    assert set(got) == {row.sop_instance_uid for row in wanted}
    assert {row.transfer_syntax_uid for row in rows} == {JPEGBaseline8Bit, JPEG2000Lossless}
    for row in wanted:
        assert got[row.sop_instance_uid].transfer_syntax == row.transfer_syntax_uid
        assert got[row.sop_instance_uid].data_set_sha256 == stored_data_set_sha256(archive.store, row)
    [entry] = _sends(archive)
    assert entry.actor == f"dimse:{SCU_AE}" and entry.entity == f"slide/{rows[0].slide_id}"
    assert entry.detail == {
        "to": f"STORESCP@127.0.0.1:{port}",
        "service": "C-MOVE",
        "instances": len(wanted),
        "completed": len(wanted),
        "warning": 0,
        "failed": 0,
        "transcoded": 0,
    }


@pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
def test_get_sends_the_stored_bytes_back_at_each_level(
    level: str, archive: Archive, server: DimseServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    # a slide whose every instance is JPEG: getscu proposes one syntax per SOP class (+xy: JPEG)
    rows = _ingest(archive, samples["dicom_wsi"])
    assert {row.transfer_syntax_uid for row in rows} == {JPEGBaseline8Bit}
    wanted = rows[:2] if level == "IMAGE" else rows
    folder = tmp_path / "got"
    folder.mkdir()
    run = _run(
        tool("getscu"), "-v", "-S", "-aet", SCU_AE, "-aec", server.ae_title, "+xy", "+B", "-od", str(folder),
        *_keys(level, wanted), "127.0.0.1", str(server.port),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Number of Completed Suboperations : {len(wanted)}" in run.stderr
    got = received(folder)
    assert set(got) == {row.sop_instance_uid for row in wanted}
    for row in wanted:
        assert got[row.sop_instance_uid].data_set_sha256 == stored_data_set_sha256(archive.store, row)
    [entry] = _sends(archive)
    assert (entry.detail["service"], entry.detail["completed"]) == ("C-GET", len(wanted))
    assert entry.detail["to"].startswith(f"{SCU_AE}@127.0.0.1")


def test_get_of_a_peer_taking_uncompressed_only_gets_the_pixels_transcoded(
    archive: Archive, server: DimseServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    rows = _ingest(archive, samples["aperio_svs"])
    folder = tmp_path / "got"
    folder.mkdir()
    run = _run(
        tool("getscu"), "-S", "-aet", SCU_AE, "-aec", server.ae_title, "-od", str(folder),
        *_keys("SERIES", rows), "127.0.0.1", str(server.port),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    got = received(folder)
    assert set(got) == {row.sop_instance_uid for row in rows}
    for row in rows:
        copy = pydicom.dcmread(got[row.sop_instance_uid].path)
        assert copy.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
        assert copy.PhotometricInterpretation == "RGB"
        pixels = copy.pixel_array.reshape(-1, row.rows, row.columns, row.samples_per_pixel)
        assert np.array_equal(pixels, decoded_frames(archive.store, row))
    [entry] = _sends(archive)
    assert entry.detail["transcoded"] == entry.detail["completed"] == len(rows)


@pytest.mark.parametrize("service", ["C-MOVE", "C-GET"])
def test_the_transcoding_limit_is_the_archives_setting(
    service: str, archive: Archive, samples: dict[str, Path], tmp_path: Path
) -> None:
    """LAMINA_MAX_TRANSCODE_BYTES just under level 0's decoded size: a peer taking uncompressed
    data only gets every other instance transcoded, and level 0 fails alone, with the reason."""
    rows = _ingest(archive, samples["aperio_svs"])
    level0 = next(row for row in rows if row.level == 0)
    limit = native_bytes(level0) - 1
    assert limit < 1 << 30 and all(native_bytes(row) <= limit for row in rows if row is not level0)
    settings = archive.settings.with_(max_transcode_bytes=limit)
    folder = tmp_path / "got"
    calling(archive, SCU_AE)
    with DimseServer(archive, port=0, options=DimseOptions.from_settings(settings)) as server:
        if service == "C-MOVE":
            with storescp(folder) as port:  # storescp's default: uncompressed syntaxes only
                PeerDirectory(archive.catalog).add(ApplicationEntity("PLAIN", "127.0.0.1", port))
                run = _movescu(server, "PLAIN", *_keys("SERIES", rows))
        else:
            folder.mkdir()
            run = _run(
                tool("getscu"), "-v", "-S", "-aet", SCU_AE, "-aec", server.ae_title, "-od", str(folder),
                *_keys("SERIES", rows), "127.0.0.1", str(server.port),
            )  # fmt: skip
    assert "Warning" in run.stderr, run.stdout + run.stderr  # 0xB000: some sub-operations failed
    assert set(received(folder)) == {row.sop_instance_uid for row in rows} - {level0.sop_instance_uid}
    [entry] = _sends(archive)
    assert entry.detail["service"] == service
    assert (entry.detail["failed"], entry.detail["transcoded"]) == (1, len(rows) - 1)


def test_an_unknown_destination_is_refused_with_a801(
    archive: Archive, server: DimseServer, samples: dict[str, Path]
) -> None:
    rows = _ingest(archive, samples["dicom_wsi"])
    run = _movescu(server, "NOBODY", *_keys("STUDY", rows))
    assert "Refused: MoveDestinationUnknown" in run.stderr, run.stderr
    assert _sends(archive) == []


@pytest.mark.parametrize(
    ("keys", "status"),
    [
        (["-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID=1.2.3"], "DataSetDoesNotMatchSOPClass"),
        (["-k", "QueryRetrieveLevel=PATIENT", "-k", "StudyInstanceUID=1.2.3"], "DataSetDoesNotMatchSOPClass"),
        (
            ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=not-a-uid"],
            "DataSetDoesNotMatchSOPClass",
        ),
    ],
)
def test_identifiers_outside_the_model_are_refused_with_a900(
    archive: Archive, server: DimseServer, keys: list[str], status: str, tmp_path: Path
) -> None:
    with storescp(tmp_path / "received") as port:
        PeerDirectory(archive.catalog).add(ApplicationEntity("STORESCP", "127.0.0.1", port))
        run = _movescu(server, "STORESCP", *keys)
    assert f"Final Move Response (Error: {status})" in run.stderr, run.stderr


def test_a_damaged_object_is_not_sent_and_the_rest_is(
    archive: Archive, server: DimseServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    rows = _ingest(archive, samples["dicom_wsi"])
    flip_one_byte(archive.store, rows[0].blob_sha256, random.Random(9))
    folder = tmp_path / "received"
    with storescp(folder, "+xa") as port:
        PeerDirectory(archive.catalog).add(ApplicationEntity("STORESCP", "127.0.0.1", port))
        run = _movescu(server, "STORESCP", *_keys("SERIES", rows))
    assert "Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)" in run.stderr, run.stderr
    assert set(received(folder)) == {row.sop_instance_uid for row in rows[1:]}
    with archive.catalog.engine.connect() as conn:
        assert [e.entity for e in audit.entries(conn, action="damaged")] == [f"blob/{rows[0].blob_sha256}"]
    [entry] = _sends(archive)
    assert (entry.detail["completed"], entry.detail["failed"]) == (len(rows) - 1, 1)


# the cancel is the DIMSE service's, whatever the catalog and store: the embedded default only
@pytest.mark.parametrize("backend", ["sqlite-folder"], indirect=True)
def test_a_cancel_stops_the_move_before_the_next_instance(
    archive: Archive, server: DimseServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    rows = _ingest(archive, samples["aperio_svs"])
    folder = tmp_path / "received"
    with storescp(folder, "+xa", "--sleep-during", "1") as port:  # one second a store
        PeerDirectory(archive.catalog).add(ApplicationEntity("STORESCP", "127.0.0.1", port))
        run = _movescu(server, "STORESCP", "--cancel", "1", *_keys("SERIES", rows))
    assert "Final Move Response (Cancel" in run.stderr, run.stderr
    sent = len(received(folder))
    assert 1 <= sent < len(rows)
    [entry] = _sends(archive)
    assert entry.detail["instances"] == sent


def test_get_reports_the_instances_the_requester_cannot_take(
    archive: Archive, server: DimseServer, samples: dict[str, Path]
) -> None:
    """A requester that takes JPEG only: the JPEG 2000 associated images fail, named in the final
    Warning's FailedSOPInstanceUIDList (read with pynetdicom: getscu does not read that list)."""
    rows = _ingest(archive, samples["aperio_svs"])
    j2k = {row.sop_instance_uid for row in rows if row.transfer_syntax_uid != JPEGBaseline8Bit}
    assert j2k
    stored: list[str] = []

    def on_store(event: evt.Event) -> int:
        stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(VL_WSI, [JPEGBaseline8Bit])
    assoc = ae.associate(
        "127.0.0.1",
        server.port,
        ae_title="LAMINA",
        ext_neg=[build_role(VL_WSI, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = rows[0].study_instance_uid
    query.SeriesInstanceUID = rows[0].series_instance_uid
    responses = list(assoc.send_c_get(query, STUDY_ROOT_GET))
    assoc.release()
    final, identifier = responses[-1]
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (
        len(rows) - len(j2k),
        len(j2k),
    )
    assert set(identifier.FailedSOPInstanceUIDList) == j2k
    assert "not JPEG 2000" in final.ErrorComment
    assert set(stored) == {row.sop_instance_uid for row in rows} - j2k
    pending = [status.NumberOfRemainingSuboperations for status, _ in responses[:-1]]
    assert pending == list(range(len(rows) - 1, 0, -1))


def test_every_level_of_a_study_with_two_slides_moves_both(
    archive: Archive, server: DimseServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    """Two studies named in one STUDY-level identifier (a UID list) move every instance of both."""
    first = _ingest(archive, samples["aperio_svs"])
    second = _ingest(archive, samples["dicom_wsi"])
    folder = tmp_path / "received"
    with storescp(folder, "+xa") as port:
        PeerDirectory(archive.catalog).add(ApplicationEntity("STORESCP", "127.0.0.1", port))
        studies = f"{first[0].study_instance_uid}\\{second[0].study_instance_uid}"
        run = _movescu(
            server, "STORESCP", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={studies}"
        )
    assert run.returncode == 0, run.stderr
    assert set(received(folder)) == {row.sop_instance_uid for row in first + second}
    assert sorted(entry.entity for entry in _sends(archive)) == sorted(
        [f"slide/{first[0].slide_id}", f"slide/{second[0].slide_id}"]
    )
