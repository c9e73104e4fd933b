"""The scaled deployment for real: two ``lamina serve`` processes that run no jobs and two
``lamina worker`` processes, each with a data folder of its own, sharing only a PostgreSQL
catalog and an S3 bucket (SeaweedFS). Slides are posted concurrently through both APIs, some
through both at once; every slide ends complete, once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom
import pytest

from lamina.archive.archive import Archive
from lamina.archive.blobstore.s3 import S3BlobStore
from lamina.archive.discover import discover
from lamina.archive.fixity import verify
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.sample import write_samples
from tests.backends import Backend
from tests.s3server import free_ports
from tests.signin import sign_in_process, signed

LAMINA = str(Path(sys.executable).parent / "lamina")
FORMATS = ["aperio_svs", "tiled_tiff", "ome_tiff", "philips_tiff", "histech_tiff"]


def _exported(tmp_path: Path) -> list[list[Path]]:
    """Five small slides as exported DICOM series (what another system would send)."""
    write_samples(tmp_path / "sources", FORMATS, size=(1536, 1024), seed=7)
    source = Archive.open(Settings.load(tmp_path / "source-archive", env={}))
    try:
        ingestor = Ingestor(source.catalog, source.store)
        ids = []
        for candidate in discover([tmp_path / "sources"]):
            result = ingestor.ingest(candidate)
            assert result.ok, result.reason
            ids.append(result.slide_id or "")
        return [item.files for item in source.export(tmp_path / "export", ids)]
    finally:
        source.close()


def _body(files: list[Path], boundary: str = "lamina-test-boundary") -> bytes:
    parts = [
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
        for path in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([LAMINA, *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if signed.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"lamina serve on {port} did not start:\n{log.read_text()}")


def test_two_apis_and_two_workers_store_every_slide_once(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    backend = Backend.open("postgresql-s3", request)
    try:
        _run(tmp_path, backend)
    finally:
        backend.close()


def _run(tmp_path: Path, backend: Backend) -> None:
    slides = _exported(tmp_path)
    shared = backend.env("scaled")
    base = {**os.environ, **shared, "LAMINA_VERIFY_CRON": "off"}
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    ports = free_ports(2)
    try:
        for n in range(2):
            log = tmp_path / f"worker{n}.log"
            env = {**base, "LAMINA_HOME": str(tmp_path / f"worker{n}")}
            procs.append((_start(["worker", "--concurrency", "2"], env, log), log))
        for n, port in enumerate(ports):
            log = tmp_path / f"api{n}.log"
            env = {**base, "LAMINA_HOME": str(tmp_path / f"api{n}"), "LAMINA_WORKERS": "0"}
            procs.append((_start(["serve", "--port", str(port)], env, log), log))
        for port, (proc, log) in zip(ports, procs[2:], strict=True):
            _wait_healthy(port, proc, log)
        # each API host has its own issuer (its $LAMINA_HOME): the operator signs in at each
        for n, port in enumerate(ports):
            sign_in_process(Settings.load(tmp_path / f"api{n}", env=dict(shared)), port)

        # every slide through one API, and the first two through both at the same time
        sends = [(ports[i % 2], files) for i, files in enumerate(slides)]
        sends += [(ports[(i + 1) % 2], slides[i]) for i in range(2)]
        boundary = "lamina-test-boundary"

        def post(item: tuple[int, list[Path]]) -> httpx.Response:
            port, files = item
            return signed.post(
                f"http://127.0.0.1:{port}/dicomweb/studies",
                content=_body(files, boundary),
                headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
                timeout=300,
            )

        with ThreadPoolExecutor(len(sends)) as pool:
            answers = list(pool.map(post, sends))
        for (_, files), answer in zip(sends, answers, strict=True):
            assert answer.status_code == 200, answer.text
            stored = answer.json()["00081199"]["Value"]
            uids = {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files}
            assert {item["00081155"]["Value"][0] for item in stored} == uids

        # each API answers for every slide, whichever API received it
        for port in ports:
            series = signed.get(f"http://127.0.0.1:{port}/dicomweb/series", timeout=30).json()
            assert len(series) == len(slides)
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, log in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"{proc.args} did not stop on SIGTERM:\n{log.read_text()}")

    logs = "".join(log.read_text() for _, log in procs)
    assert "Traceback" not in logs, logs
    # the jobs ran in the workers (the APIs run none)
    worker_logs = "".join(log.read_text() for _, log in procs[:2])
    assert worker_logs.count("stored job") == len(sends), worker_logs
    archive = Archive.open(Settings.load(tmp_path / "check", env=shared))
    try:
        rows = archive.catalog.slides()
        assert len(rows) == len(slides)
        expected = sorted(len(files) for files in slides)
        assert sorted(row.instances for row in rows) == expected
        assert sorted(len(archive.catalog.instances(row.id)) for row in rows) == expected
        report = verify(archive.catalog, archive.store, orphan_grace_s=0)
        assert report.ok and report.checked == sum(expected), report.as_dict()
        assert report.orphaned == []
        # spooled uploads are gone
        store = archive.store
        assert isinstance(store, S3BlobStore)
        listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.prefix}spool/")
        assert listed.get("KeyCount", 0) == 0, listed.get("Contents")
    finally:
        archive.close()
