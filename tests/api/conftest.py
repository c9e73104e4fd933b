"""Fixtures for the HTTP API: a real uvicorn server on loopback over an archive of sample slides.

The archive and the server are built once per test session and backend (the ingest takes
seconds): SQLite + a folder, and PostgreSQL + S3; tests read from them and must not change them.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.sample import write_samples
from tests.backends import Backend
from tests.support import serving

#: The sample formats ingested; the first two are two slides of one case, hence one study.
SERVED_FORMATS = ("aperio_svs", "tiled_tiff", "dicom_wsi", "ome_tiff")
_SAME_CASE = ("patient_id", "patient_name", "birth_date", "sex", "accession_number")


class ServedArchive(NamedTuple):
    base_url: str  # http://127.0.0.1:PORT/dicomweb
    archive: Archive
    slide_ids: list[str]  # in SERVED_FORMATS order


def _one_case(manifest: Path) -> None:
    """Give the tiled TIFF the patient and case of the SVS, as a second slide (another stain)."""
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    svs, tiff = rows[0], rows[1]
    tiff.update({key: svs[key] for key in _SAME_CASE})
    tiff.update(stain="PAS", specimen_id=f"{svs['accession_number']}-B1")
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _ingest(settings: Settings, folder: Path) -> tuple[Archive, list[str]]:
    samples = write_samples(folder, list(SERVED_FORMATS), size=(1024, 768))
    _one_case(folder / "manifest.csv")
    manifest = load_manifest(folder / "manifest.csv")
    archive = Archive.open(settings)
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
    slide_ids = []
    for sample in samples:
        (candidate,) = discover([sample.path])
        result = ingestor.ingest(candidate, manifest)
        assert result.status == "ingested", result.reason
        slide_ids.append(result.slide_id or "")
    return archive, slide_ids


@pytest.fixture(scope="session")
def served_archive(
    session_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedArchive]:
    """(base URL, archive, slide ids) of a running server; see SERVED_FORMATS for what is in it."""
    root = tmp_path_factory.mktemp("served")
    settings = Settings.load(root / "lamina-data", env=session_backend.env("served"))
    archive, slide_ids = _ingest(settings, root / "samples")
    app = create_app(settings, archive)
    try:
        with serving(app) as port:
            yield ServedArchive(f"http://127.0.0.1:{port}/dicomweb", archive, slide_ids)
    finally:
        archive.close()


@pytest.fixture
def local_archive(tmp_path: Path) -> Iterator[Archive]:
    """An archive of CMU-1-Small-Region on SQLite and a folder (where cached frames are read on the
    event loop), for a test that may change it."""
    from tests.support import shared_file

    archive = Archive.open(Settings.load(tmp_path / "lamina-data", env={}))
    (candidate,) = discover([shared_file("aperio/CMU-1-Small-Region.svs")])
    assert Ingestor(archive.catalog, archive.store).ingest(candidate).status == "ingested"
    yield archive
    archive.close()


def multipart_parts(answer: Any) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related answer (an httpx response),
    split on the boundary its Content-Type names."""
    content_type = answer.headers["content-type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = next(
        item.split("=", 1)[1].strip('"')
        for item in content_type.split(";")
        if item.strip().startswith("boundary=")
    )
    body: bytes = answer.content
    chunks = body.split(f"--{boundary}".encode())
    assert chunks[-1].strip() == b"--", "the answer does not end with its closing delimiter"
    found = []
    for chunk in chunks[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = dict(
            line.split(":", 1) for line in head.decode("latin-1").strip().splitlines() if ":" in line
        )
        found.append((headers["Content-Type"].strip(), data.removesuffix(b"\r\n")))
    return found


@contextlib.contextmanager
def serving_as_lamina(app: Any, settings: Settings) -> Iterator[int]:
    """Run ``app`` under uvicorn configured as ``lamina serve`` configures it (no proxy headers
    of uvicorn's own, the graceful shutdown), in a thread on a free loopback port; yield the port."""
    import socket
    import threading
    import time

    import uvicorn

    from lamina.cli.serve import server_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(server_config(app, settings, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    from tests.signin import forget, sign_in_operator

    sign_in_operator(app.state.archive.catalog, settings.home, port)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        forget(port)
