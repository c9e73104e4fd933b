"""Who may call the DIMSE server and what each calling AE sees, on both backends: an unknown AE
title rejected at association (pynetdicom and dcmtk), an operation not allowed refused with 0x0124,
C-FIND, C-GET and C-MOVE of lab A's AE blind to lab B's studies, C-STORE into the AE's lab, and
DIMSE over TLS with client certificates (pynetdicom and dcmtk)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association

from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions, Ingestor
from lamina.dimse import DimseOptions, DimseServer, status
from lamina.dimse.contexts import STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE, VERIFICATION, VL_WSI
from lamina.peers import ApplicationEntity, Operation, PeerDirectory
from lamina.sample import write_samples
from tests.dimse.peers import LAB, OTHER_LAB, calling, received, storescp
from tests.support import tool

LAB_A_AE, LAB_B_AE = "LABA", "LABB"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("samples")
    written = write_samples(folder, ["aperio_svs", "dicom_wsi"], size=(1024, 768))
    return {sample.format: sample.path for sample in written}


def _ingest(archive: Archive, path: Path, tenant: str) -> list[InstanceRow]:
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
    [candidate] = discover([path])
    result = ingestor.ingest(candidate, options=IngestOptions(tenant=tenant))
    assert result.status == "ingested", result.reason
    assert result.slide_id is not None
    return archive.catalog.instances(result.slide_id)


@dataclass
class TwoLabs:
    server: DimseServer
    a: list[InstanceRow]  # lab A's slide
    b: list[InstanceRow]  # lab B's slide


@pytest.fixture
def labs(archive: Archive, samples: dict[str, Path]) -> Iterator[TwoLabs]:
    """Lab A (LAB_A_AE, every operation) and lab B (LAB_B_AE), each with one slide of its own."""
    calling(archive, LAB_A_AE, tenant=LAB)
    calling(archive, LAB_B_AE, tenant=OTHER_LAB)
    a = _ingest(archive, samples["aperio_svs"], LAB)
    b = _ingest(archive, samples["dicom_wsi"], OTHER_LAB)
    assert a[0].study_instance_uid != b[0].study_instance_uid
    with DimseServer(archive, ae_title="LAMINA", port=0) as server:
        yield TwoLabs(server, a, b)


def _associate(port: int, title: str, *contexts: str) -> Association:
    ae = AE(ae_title=title)
    for context in contexts or (VERIFICATION,):
        ae.add_requested_context(context)
    return ae.associate("127.0.0.1", port, ae_title="LAMINA")


def _identifier(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


# -- association ---------------------------------------------------------------------------------
def test_an_unknown_calling_ae_is_rejected_at_association(labs: TwoLabs) -> None:
    # Act
    assoc = _associate(labs.server.port, "STRANGER")
    known = _associate(labs.server.port, LAB_A_AE)
    echoscu = subprocess.run(
        [tool("echoscu"), "-v", "-aet", "STRANGER", "-aec", "LAMINA", "127.0.0.1", str(labs.server.port)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # Assert: A-ASSOCIATE-RJ, rejected-permanent, service user, calling AE title not recognized
    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert rejection is not None
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, 0x03)
    assert known.is_established
    assert known.send_c_echo().Status == status.SUCCESS
    known.release()
    assert echoscu.returncode != 0
    assert "Calling AE Title Not Recognized" in echoscu.stdout + echoscu.stderr


def test_a_removed_ae_is_refused_once_its_cache_entry_expires(archive: Archive) -> None:
    calling(archive, LAB_A_AE)
    with DimseServer(archive, port=0, options=DimseOptions(calling_cache_s=0)) as server:
        first = _associate(server.port, LAB_A_AE)
        assert first.is_established
        first.release()
        PeerDirectory(archive.catalog).remove(LAB_A_AE)
        assert _associate(server.port, LAB_A_AE).is_rejected


# -- operations ----------------------------------------------------------------------------------
def test_operations_not_allowed_are_refused_not_authorized(archive: Archive, labs: TwoLabs) -> None:
    calling(archive, "ECHOONLY", allow=frozenset({Operation.ECHO}))
    assoc = _associate(labs.server.port, "ECHOONLY", VERIFICATION, STUDY_ROOT_FIND, STUDY_ROOT_GET)
    assert assoc.is_established
    try:
        echoed = assoc.send_c_echo()
        found = list(assoc.send_c_find(_identifier("STUDY", StudyInstanceUID=""), STUDY_ROOT_FIND))
        got = list(
            assoc.send_c_get(
                _identifier("STUDY", StudyInstanceUID=labs.a[0].study_instance_uid), STUDY_ROOT_GET
            )
        )
    finally:
        assoc.release()
    assert echoed.Status == status.SUCCESS
    [(final, _)] = found
    assert final.Status == status.NOT_AUTHORIZED == 0x0124
    assert "find is not allowed" in final.ErrorComment
    [(final, _)] = got
    assert final.Status == 0x0124


# -- what each lab sees --------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
def test_find_answers_only_the_labs_own_studies(labs: TwoLabs, level: str) -> None:
    unique = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}[level]
    keys = {"StudyInstanceUID": "", "SeriesInstanceUID": "", "SOPInstanceUID": ""}
    answers: dict[str, set[str]] = {}
    for title in (LAB_A_AE, LAB_B_AE):
        assoc = _associate(labs.server.port, title, STUDY_ROOT_FIND)
        try:
            responses = list(assoc.send_c_find(_identifier(level, **keys), STUDY_ROOT_FIND))
        finally:
            assoc.release()
        assert responses[-1][0].Status == status.SUCCESS
        answers[title] = {
            str(getattr(ds, unique)) for state, ds in responses if state.Status == status.PENDING
        }
    # Assert: each lab its own, whatever the level (a query by another lab's UID finds nothing)
    field = {"STUDY": "study_instance_uid", "SERIES": "series_instance_uid", "IMAGE": "sop_instance_uid"}[
        level
    ]
    assert answers[LAB_A_AE] == {getattr(row, field) for row in labs.a}
    assert answers[LAB_B_AE] == {getattr(row, field) for row in labs.b}


def test_find_by_another_labs_uid_finds_nothing(labs: TwoLabs) -> None:
    assoc = _associate(labs.server.port, LAB_A_AE, STUDY_ROOT_FIND)
    try:
        found = list(
            assoc.send_c_find(
                _identifier("IMAGE", SeriesInstanceUID=labs.b[0].series_instance_uid, SOPInstanceUID=""),
                STUDY_ROOT_FIND,
            )
        )
    finally:
        assoc.release()
    assert [int(state.Status) for state, _ in found] == [status.SUCCESS]


def test_get_and_move_of_another_labs_study_retrieve_nothing(
    archive: Archive, labs: TwoLabs, tmp_path: Path
) -> None:
    stored: list[str] = []

    def on_store(event: evt.Event) -> int:
        stored.append(str(getattr(event.request, "AffectedSOPInstanceUID", "")))
        return 0x0000

    ae = AE(ae_title=LAB_A_AE)
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(STUDY_ROOT_MOVE)
    for syntax in (JPEGBaseline8Bit, JPEG2000Lossless, JPEG2000, ExplicitVRLittleEndian):
        ae.add_requested_context(VL_WSI, [syntax])  # one context each: every stored syntax taken
    folder = tmp_path / "moved"
    with storescp(folder, "+xa") as port:
        PeerDirectory(archive.catalog).add(ApplicationEntity("STORESCP", "127.0.0.1", port))
        assoc = ae.associate(
            "127.0.0.1", labs.server.port, ae_title="LAMINA",
            ext_neg=[build_role(VL_WSI, scp_role=True)], evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )  # fmt: skip
        assert assoc.is_established
        try:
            other = _identifier("STUDY", StudyInstanceUID=labs.b[0].study_instance_uid)
            got = list(assoc.send_c_get(other, STUDY_ROOT_GET))
            moved = list(assoc.send_c_move(other, "STORESCP", STUDY_ROOT_MOVE))
            mine = _identifier("STUDY", StudyInstanceUID=labs.a[0].study_instance_uid)
            own = list(assoc.send_c_get(mine, STUDY_ROOT_GET))
        finally:
            assoc.release()
    # Assert: lab B's study is as if absent (Success, no sub-operation); lab A's own comes back
    for responses in (got, moved):
        [(final, _)] = responses
        assert final.Status == status.SUCCESS
        assert final.NumberOfCompletedSuboperations == 0
    assert own[-1][0].Status == status.SUCCESS
    assert set(stored) == {row.sop_instance_uid for row in labs.a}
    assert not folder.exists() or received(folder) == {}


def test_store_lands_in_the_calling_aes_lab(archive: Archive, samples: dict[str, Path]) -> None:
    calling(archive, LAB_A_AE, tenant=LAB)
    calling(archive, LAB_B_AE, tenant=OTHER_LAB)
    files = (
        sorted(samples["dicom_wsi"].glob("*.dcm"))
        if samples["dicom_wsi"].is_dir()
        else [samples["dicom_wsi"]]
    )
    with DimseServer(archive, port=0) as server:
        assoc = _associate(server.port, LAB_B_AE)
        assoc.release()
        ae = AE(ae_title=LAB_B_AE)
        ae.add_requested_context(VL_WSI, [JPEGBaseline8Bit, ExplicitVRLittleEndian])
        sending = ae.associate("127.0.0.1", server.port, ae_title="LAMINA")
        assert sending.is_established
        try:
            for file in files:
                assert sending.send_c_store(file).Status == status.SUCCESS
        finally:
            sending.release()
        assert server.wait_idle(60)
    [slide] = archive.catalog.slides()
    assert slide.tenant == OTHER_LAB
