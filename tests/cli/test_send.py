"""``lamina send`` as a user runs it, on both backends: to storescp by known AE title and by
AE@HOST:PORT, with progress, table, JSON and exit codes; and to Orthanc, whose DICOMweb then
serves every frame of the slides byte for byte as lamina stores them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from lamina.archive.archive import Archive
from lamina.config import Settings
from lamina.dimse.transcode import native_bytes
from lamina.sample import write_samples
from tests.dimse.peers import free_port, received, stored_data_set_sha256, stored_frames, storescp
from tests.signin import signed
from tests.support import need, shared_file

Run = Callable[..., subprocess.CompletedProcess[str]]
ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample Aperio SVS: JPEG levels, JPEG 2000 associated images."""
    [written] = write_samples(tmp_path_factory.mktemp("samples"), ["aperio_svs"], size=(1024, 768))
    return written.path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def lamina(backend_env: dict[str, str], home: Path) -> Run:
    """``lamina(*args)`` on a fresh archive of the test's backend."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LAMINA_HOME": str(home), "COLUMNS": "200", **backend_env}
        return subprocess.run(
            [sys.executable, "-m", "lamina", *args], capture_output=True, text=True, env=env, timeout=300
        )

    return run


def _ingest(lamina: Run, path: Path) -> str:
    done = lamina("ingest", "--json", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    [result] = json.loads(done.stdout)
    return str(result["slide_id"])


@pytest.fixture
def archive_of(home: Path, backend_env: dict[str, str]) -> Callable[[], Archive]:
    return lambda: Archive.open(Settings.load(home, env=backend_env))


def test_send_by_known_title_and_by_address_with_progress_table_and_json(
    lamina: Run, sample: Path, tmp_path: Path, archive_of: Callable[[], Archive]
) -> None:
    slide = _ingest(lamina, sample)
    folder = tmp_path / "received"
    with storescp(folder, "+xa") as port:
        assert lamina("ae", "add", "STORESCP", "--host", "127.0.0.1", "--port", str(port)).returncode == 0
        by_title = lamina("send", slide, "--to", "STORESCP")
        by_address = lamina("send", slide, "--to", f"STORESCP@127.0.0.1:{port}", "--json")
    assert by_title.returncode == 0, by_title.stderr
    archive = archive_of()
    try:
        rows = archive.catalog.instances(slide)
        progress = [line for line in by_title.stderr.splitlines() if f" {slide} " in line]
        assert len(progress) == len(rows) and all("completed as JPEG" in line for line in progress)
        assert slide in by_title.stdout and f"sent to STORESCP@127.0.0.1:{port}" in by_title.stdout
        assert by_address.returncode == 0, by_address.stderr
        answer = json.loads(by_address.stdout)
        [report] = answer["slides"]
        assert (report["slide_id"], report["ok"], report["completed"], report["failed"]) == (
            slide,
            True,
            len(rows),
            0,
        )
        assert {item["sop_instance_uid"] for item in report["sent"]} == {row.sop_instance_uid for row in rows}
        got = received(folder)
        for row in rows:
            assert got[row.sop_instance_uid].data_set_sha256 == stored_data_set_sha256(archive.store, row)
    finally:
        archive.close()
    shown = lamina("audit", "show", "--action", "send", "--json")
    assert shown.returncode == 0 and len(json.loads(shown.stdout)) == 2


def test_failures_exit_nonzero_with_one_line_or_the_table(lamina: Run, sample: Path, tmp_path: Path) -> None:
    slide = _ingest(lamina, sample)
    with storescp(tmp_path / "received", "+xa") as port:
        partly = lamina("send", slide, "000000000000", "--to", f"STORESCP@127.0.0.1:{port}")
    assert partly.returncode == 1
    assert "no slide '000000000000'" in partly.stdout and "Traceback" not in partly.stderr
    unknown = lamina("send", slide, "--to", "NOBODY")
    assert unknown.returncode == 2 and "lamina ae add NOBODY" in unknown.stderr
    silent = lamina("send", slide, "--to", f"NOBODY@127.0.0.1:{free_port()}")
    assert silent.returncode == 2 and "no DICOM association could be made" in silent.stderr
    malformed = lamina("send", slide, "--to", "NOBODY@host")
    assert malformed.returncode == 2 and "--to: 'NOBODY@host' is not AE@HOST:PORT" in malformed.stderr


def test_the_transcoding_limit_is_the_archives_setting(
    lamina: Run, sample: Path, tmp_path: Path, home: Path, archive_of: Callable[[], Archive]
) -> None:
    """max_transcode_bytes in lamina.toml just under level 0's decoded size: a peer taking
    uncompressed data only gets the other instances transcoded, and level 0 fails with the reason."""
    slide = _ingest(lamina, sample)
    archive = archive_of()
    try:
        rows = archive.catalog.instances(slide)
    finally:
        archive.close()
    level0 = next(row for row in rows if row.level == 0)
    (home / "lamina.toml").write_text(f"max_transcode_bytes = {native_bytes(level0) - 1}\n", "utf-8")
    with storescp(tmp_path / "received") as port:  # storescp's default: uncompressed syntaxes only
        sent = lamina("send", slide, "--to", f"STORESCP@127.0.0.1:{port}", "--json")
    assert sent.returncode == 1, sent.stderr
    [report] = json.loads(sent.stdout)["slides"]
    failed = [item for item in report["sent"] if item["outcome"] == "failed"]
    assert [item["sop_instance_uid"] for item in failed] == [level0.sop_instance_uid]
    assert "transcoding limit" in failed[0]["reason"]
    assert report["completed"] == len(rows) - 1 and all(
        item["transcoded"] for item in report["sent"] if item["outcome"] != "failed"
    )
    assert set(received(tmp_path / "received")) == {row.sop_instance_uid for row in rows} - {
        level0.sop_instance_uid
    }


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """Orthanc with its DICOMweb plug-in on loopback: (DICOM port, HTTP port); AE title ORTHANC."""
    need(
        ORTHANC.exists() and DICOMWEB_PLUGIN.exists(), "Orthanc with its DICOMweb plug-in (orthanc-dicomweb)"
    )
    work = tmp_path_factory.mktemp("orthanc")
    dicom, http = free_port(), free_port()
    config = {
        "Name": "lamina-tests",
        "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"),
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageCompression": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = work / "orthanc.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ORTHANC), str(work / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            with contextlib.suppress(httpx.HTTPError):
                if signed.get(f"http://127.0.0.1:{http}/system", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "Orthanc did not start"
            time.sleep(0.1)
        yield dicom, http
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _parts(answer: httpx.Response) -> list[bytes]:
    """The bodies of a multipart/related answer."""
    content_type = answer.headers["content-type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = next(
        item.split("=", 1)[1].strip('"')
        for item in content_type.split(";")
        if item.strip().startswith("boundary=")
    )
    chunks = answer.content.split(f"--{boundary}".encode())
    assert chunks[-1].strip() == b"--"
    return [chunk.partition(b"\r\n\r\n")[2].removesuffix(b"\r\n") for chunk in chunks[1:-1]]


@pytest.mark.parametrize(
    "source", ["sample", "aperio/CMU-1-Small-Region.svs", "hamamatsu-ndpi/test3-DAPI-2-(387).ndpi"]
)
def test_a_slide_sent_to_orthanc_is_read_back_frame_by_frame_identical(
    source: str,
    lamina: Run,
    sample: Path,
    orthanc: tuple[int, int],
    archive_of: Callable[[], Archive],
) -> None:
    # Arrange: a sample slide, or a real one
    path = sample if source == "sample" else shared_file(source)
    slide = _ingest(lamina, path)
    dicom, http = orthanc
    # Act
    sent = lamina("send", slide, "--to", f"ORTHANC@127.0.0.1:{dicom}", "--json")
    # Assert: every frame, through Orthanc's WADO-RS as stored (transfer-syntax=*), is the stored
    # frame: the encapsulated item's bytes, which carry a padding byte after an odd-length frame
    assert sent.returncode == 0, sent.stdout + sent.stderr
    archive = archive_of()
    try:
        rows = archive.catalog.instances(slide)
        assert len(rows) >= 5
        accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        with httpx.Client(base_url=f"http://127.0.0.1:{http}/dicom-web", timeout=120) as client:
            for row in rows:
                url = (
                    f"/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
                    f"/instances/{row.sop_instance_uid}/frames/"
                ) + ",".join(str(n) for n in range(1, row.number_of_frames + 1))
                answer = client.get(url, headers={"Accept": accept})
                assert answer.status_code == 200, answer.text[:300]
                theirs = _parts(answer)
                ours = stored_frames(archive.store, row)
                assert len(theirs) == len(ours) == row.number_of_frames
                for number, (their, our) in enumerate(zip(theirs, ours, strict=True), start=1):
                    assert their == our + b"\x00" * (len(our) & 1), f"{row.sop_instance_uid} frame {number}"
    finally:
        archive.close()
