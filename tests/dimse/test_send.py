"""``send_slides``, the C-STORE SCU behind ``lamina send``, against dcmtk's storescp and lamina's
own DIMSE server, on both backends: the stored bytes arrive, a peer that takes uncompressed data
only gets the pixels transcoded (or a reason past the limit), and peers that cannot be reached or
refuse the association are one clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.dimse import DimseOptions, DimseServer
from lamina.dimse.contexts import VL_WSI
from lamina.dimse.send import send_slides
from lamina.dimse.storescu import Sent, storage_contexts
from lamina.dimse.transcode import native_bytes
from lamina.peers import ApplicationEntity, PeerError
from lamina.sample import write_samples
from tests.dimse.peers import decoded_frames, free_port, received, stored_data_set_sha256, storescp

#: The default of LAMINA_MAX_TRANSCODE_BYTES.
LIMIT = 1 << 30


@pytest.fixture(scope="module")
def svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample Aperio SVS: JPEG levels, JPEG 2000 associated images."""
    [sample] = write_samples(tmp_path_factory.mktemp("samples"), ["aperio_svs"], size=(1024, 768))
    return sample.path


@pytest.fixture
def slide(archive: Archive, svs: Path) -> list[InstanceRow]:
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
    [candidate] = discover([svs])
    result = ingestor.ingest(candidate)
    assert result.status == "ingested" and result.slide_id is not None, result.reason
    return archive.catalog.instances(result.slide_id)


def test_every_instance_arrives_as_stored_and_is_audited(
    archive: Archive, slide: list[InstanceRow], tmp_path: Path
) -> None:
    # Arrange
    folder = tmp_path / "received"
    progress: list[Sent] = []
    slide_id = slide[0].slide_id
    assert slide_id is not None
    with storescp(folder, "+xa") as port:
        peer = ApplicationEntity("STORESCP", "127.0.0.1", port)
        # Act
        [report] = send_slides(
            archive, [slide_id], peer, "LAMINA", on_sent=progress.append, max_transcode_bytes=LIMIT
        )
    # Assert
    assert report.ok and report.completed == len(slide) == len(progress)
    assert [item.row.sop_instance_uid for item in progress] == [row.sop_instance_uid for row in slide]
    assert not any(item.transcoded for item in progress)
    got = received(folder)
    for row in slide:
        assert got[row.sop_instance_uid].transfer_syntax == row.transfer_syntax_uid
        assert got[row.sop_instance_uid].data_set_sha256 == stored_data_set_sha256(archive.store, row)
    with archive.catalog.engine.connect() as conn:
        [entry] = audit.entries(conn, action="send")
    assert (entry.actor, entry.entity) == ("lamina", f"slide/{slide_id}")
    assert entry.detail["to"] == f"STORESCP@127.0.0.1:{port}" and entry.detail["service"] == "C-STORE"
    assert entry.detail["completed"] == len(slide)


def test_a_peer_taking_uncompressed_data_only_gets_the_pixels_transcoded(
    archive: Archive, slide: list[InstanceRow], tmp_path: Path
) -> None:
    folder = tmp_path / "received"
    with storescp(folder) as port:  # storescp's default: uncompressed transfer syntaxes only
        [report] = send_slides(
            archive,
            [str(slide[0].slide_id)],
            ApplicationEntity("PLAIN", "127.0.0.1", port),
            max_transcode_bytes=LIMIT,
        )
    assert report.ok and all(item.transcoded for item in report.sent)
    got = received(folder)
    for row in slide:
        copy = pydicom.dcmread(got[row.sop_instance_uid].path)
        assert copy.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert copy.PhotometricInterpretation == "RGB" and "ExtendedOffsetTable" not in copy
        assert copy.SOPInstanceUID == row.sop_instance_uid and copy.NumberOfFrames == row.number_of_frames
        pixels = copy.pixel_array.reshape(-1, row.rows, row.columns, row.samples_per_pixel)
        assert np.array_equal(pixels, decoded_frames(archive.store, row))


def test_past_the_transcoding_limit_a_peer_taking_uncompressed_only_is_refused_with_the_reason(
    archive: Archive, slide: list[InstanceRow], tmp_path: Path
) -> None:
    folder = tmp_path / "received"
    with (
        storescp(folder) as port,
        pytest.raises(PeerError, match="accepted none of the presentation contexts"),
    ):
        send_slides(
            archive,
            [str(slide[0].slide_id)],
            ApplicationEntity("PLAIN", "127.0.0.1", port),
            max_transcode_bytes=1000,
        )
    assert not any(folder.iterdir())


def test_an_instance_over_the_limit_fails_alone_with_the_reason(
    archive: Archive, slide: list[InstanceRow], tmp_path: Path
) -> None:
    """Level 0 is past the limit, the smaller instances are not: those are transcoded, it fails."""
    level0 = next(row for row in slide if row.level == 0)
    limit = native_bytes(level0) - 1
    assert all(native_bytes(row) <= limit for row in slide if row is not level0)
    folder = tmp_path / "received"
    with storescp(folder) as port:
        [report] = send_slides(
            archive,
            [str(slide[0].slide_id)],
            ApplicationEntity("PLAIN", "127.0.0.1", port),
            max_transcode_bytes=limit,
        )
    failed = [item for item in report.sent if item.outcome == "failed"]
    assert [item.row for item in failed] == [level0]
    assert "over the" in failed[0].reason and "transcoding limit" in failed[0].reason, failed[0].reason
    assert set(received(folder)) == {row.sop_instance_uid for row in slide} - {level0.sop_instance_uid}


def test_an_unknown_slide_is_reported_and_the_others_sent(
    archive: Archive, slide: list[InstanceRow], tmp_path: Path
) -> None:
    with storescp(tmp_path / "received", "+xa") as port:
        reports = send_slides(
            archive,
            ["000000000000", str(slide[0].slide_id)],
            ApplicationEntity("STORESCP", "127.0.0.1", port),
            max_transcode_bytes=LIMIT,
        )
    assert [r.slide_id for r in reports] == ["000000000000", slide[0].slide_id]
    assert "no slide '000000000000'" in reports[0].reason and not reports[0].ok
    assert reports[1].ok and reports[1].completed == len(slide)


@pytest.fixture
def picky(archive: Archive, tmp_path: Path) -> Iterator[DimseServer]:
    """lamina's own DIMSE server, taking calls from the AE title ONLY alone."""
    served = DimseServer(archive, ae_title="PICKY", port=0, options=DimseOptions(calling_ae_titles=("ONLY",)))
    served.start()
    yield served
    served.stop()


def test_a_refused_association_or_a_silent_port_is_one_error_naming_the_peer(
    archive: Archive, slide: list[InstanceRow], picky: DimseServer
) -> None:
    slide_id = str(slide[0].slide_id)
    with pytest.raises(PeerError, match=r"PICKY@127.0.0.1:\d+: the association was rejected.*'LAMINA'"):
        send_slides(
            archive,
            [slide_id],
            ApplicationEntity("PICKY", "127.0.0.1", picky.port),
            "LAMINA",
            max_transcode_bytes=LIMIT,
        )
    silent = ApplicationEntity("NOBODY", "127.0.0.1", free_port())
    with pytest.raises(PeerError, match="no DICOM association could be made"):
        send_slides(archive, [slide_id], silent, max_transcode_bytes=LIMIT)
    with archive.catalog.engine.connect() as conn:
        assert audit.entries(conn, action="send") == []


def test_contexts_propose_each_stored_syntax_apart_and_uncompressed_where_transcodable(
    slide: list[InstanceRow],
) -> None:
    proposed = {(cx.abstract_syntax, tuple(cx.transfer_syntax)) for cx in storage_contexts(slide, LIMIT)}
    assert proposed == {
        (VL_WSI, (JPEGBaseline8Bit,)),
        (VL_WSI, (JPEG2000Lossless,)),
        (VL_WSI, (ExplicitVRLittleEndian,)),
    }
    only_stored = {tuple(cx.transfer_syntax) for cx in storage_contexts(slide, max_transcode_bytes=0)}
    assert only_stored == {(JPEGBaseline8Bit,), (JPEG2000Lossless,)}
