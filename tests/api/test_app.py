"""The application as a whole: its health route, and an event loop that never waits on the
catalog or the store. Handler threads are held inside real slow catalog calls (a lock held by
another connection) while frames and other requests are answered."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, text

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from tests.api.conftest import ServedArchive, multipart_parts
from tests.backends import Backend
from tests.signin import colleague_token, signed
from tests.support import serving, shared_file

STORED = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}


def test_health_counts_the_slides(served_archive: ServedArchive) -> None:
    root = served_archive.base_url.removesuffix("/dicomweb")
    answer = signed.get(f"{root}/healthz")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer.json()["slides"] == served_archive.archive.catalog.count_slides() >= 1


@contextlib.contextmanager
def catalog_held(settings: Settings) -> Iterator[None]:
    """Another connection holds the catalog as a long transaction would: on SQLite the write lock
    (a request that writes, such as the audit of a slide's opening, waits); on PostgreSQL an
    exclusive lock on the instances and the audit log (reading a series waits too)."""
    if settings.database_url.startswith("sqlite"):
        conn = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("COMMIT")
            conn.close()
        return
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        conn.execute(text("LOCK TABLE instances, audit_log IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


def _wait_until_held(settings: Settings, requests: int) -> None:
    """Until ``requests`` requests wait on the lock (seen on PostgreSQL; on SQLite, a moment)."""
    if settings.database_url.startswith("sqlite"):
        time.sleep(1.0)
        return
    engine = create_engine(settings.database_url)
    deadline = time.monotonic() + 30
    try:
        while True:
            with engine.connect() as conn:
                waiting = conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one()
            if waiting >= requests:
                return
            assert time.monotonic() < deadline, "the requests never reached the catalog"
            time.sleep(0.05)
    finally:
        engine.dispose()


def _urls(base: str, row: InstanceRow) -> tuple[str, str]:
    series = f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
    return series, f"{series}/instances/{row.sop_instance_uid}"


def _in_background(url: str, answers: list[int], token: str | None = None) -> threading.Thread:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    thread = threading.Thread(
        target=lambda: answers.append(signed.get(url, headers=headers, timeout=60).status_code)
    )
    thread.start()
    return thread


def test_the_loop_answers_while_handlers_wait_on_the_catalog(served_archive: ServedArchive) -> None:
    archive = served_archive.archive
    settings = archive.settings.with_(workers=0, verify_cron=None, api_threads=8)
    row = next(r for r in archive.catalog.instances(served_archive.slide_ids[0]) if r.level == 0)
    with serving(create_app(settings, archive)) as port:
        _, instance = _urls(f"http://127.0.0.1:{port}/dicomweb", row)
        expected = signed.get(f"{instance}/frames/1", headers=STORED)  # caches the instance
        assert expected.status_code == 200
        answers: list[int] = []
        # two slides not opened yet by the operator: their opening is written in the audit log
        others = [
            _urls(f"http://127.0.0.1:{port}/dicomweb", archive.catalog.instances(slide)[0])[0]
            for slide in served_archive.slide_ids[1:3]
        ]
        with catalog_held(settings):
            held = [_in_background(f"{other}/metadata", answers) for other in others]
            _wait_until_held(settings, 2)

            # Act: while two handler threads wait inside the catalog, within a second each
            frame = signed.get(f"{instance}/frames/1", headers=STORED, timeout=1)
            decoded = signed.get(f"{instance}/frames/2", timeout=1)
            metadata = signed.get(f"{instance}/metadata", timeout=1)
            health = signed.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            assert answers == []  # still held
        for thread in held:
            thread.join(timeout=60)

    assert frame.status_code == 200 and multipart_parts(frame) == multipart_parts(expected)
    assert (decoded.status_code, metadata.status_code, health.status_code) == (200, 200, 200)
    assert answers == [200, 200]


def test_frames_are_answered_with_every_thread_held(local_archive: Archive) -> None:
    """The pool is bounded (LAMINA_API_THREADS): with its two threads held, a request that needs a
    thread waits, while a cached frame of a local object is still read on the event loop."""
    settings = local_archive.settings.with_(workers=0, verify_cron=None, api_threads=2)
    (slide,) = local_archive.catalog.slides()
    row = next(r for r in local_archive.catalog.instances(slide.id) if r.level == 0)
    with serving(create_app(settings, local_archive)) as port:
        series, instance = _urls(f"http://127.0.0.1:{port}/dicomweb", row)
        assert signed.get(f"{instance}/frames/3", headers=STORED).status_code == 200
        answers: list[int] = []
        health: list[int] = []
        # two people opening the slide: each opening is written in the audit log, and waits
        tokens = [colleague_token(local_archive.catalog, settings.home, f"reader-{i}") for i in range(2)]
        with catalog_held(settings):
            held = [_in_background(f"{series}/metadata", answers, token) for token in tokens]
            _wait_until_held(settings, 2)
            waiting = _in_background(f"http://127.0.0.1:{port}/healthz", health)

            frame = signed.get(f"{instance}/frames/3", headers=STORED, timeout=1)
            time.sleep(0.5)
            assert health == []  # no thread free for it
        for thread in [*held, waiting]:
            thread.join(timeout=60)

    assert frame.status_code == 200
    assert answers == [200, 200] and health == [200]


class HeldRelay:
    """A loopback TCP relay to ``target`` whose traffic can be held (``hold``) and let go
    (``release``): an S3 server that stops answering for a while, as a real one under load does."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.flowing = threading.Event()
        self.flowing.set()
        self.held = 0  # chunks waiting while held
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                if not self.flowing.is_set():
                    self.held += 1
                    self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def hold(self) -> None:
        self.flowing.clear()

    def release(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.release()
        self.listener.close()


def test_the_loop_answers_while_a_handler_waits_on_s3(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A whole instance asked for while S3 does not answer: its handler waits in a thread (its
    existence check, then its body), and the other requests are answered meanwhile."""
    backend = Backend.open("postgresql-s3", request)
    env = backend.env("held-s3")
    endpoint = urlsplit(env["AWS_ENDPOINT_URL"])
    relay = HeldRelay((endpoint.hostname or "127.0.0.1", endpoint.port or 80))
    env |= {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}"}
    settings = Settings.load(tmp_path / "lamina-data", env=env).with_(workers=0, verify_cron=None)
    archive = Archive.open(settings)
    try:
        (candidate,) = discover([shared_file("aperio/CMU-1-Small-Region.svs")])
        assert Ingestor(archive.catalog, archive.store).ingest(candidate).status == "ingested"
        (slide,) = archive.catalog.slides()
        row = next(r for r in archive.catalog.instances(slide.id) if r.level == 0)
        answers: list[httpx.Response] = []
        with serving(create_app(settings, archive)) as port:
            series, instance = _urls(f"http://127.0.0.1:{port}/dicomweb", row)
            assert signed.get(f"{instance}/metadata").status_code == 200  # the instance is cached
            relay.hold()
            accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
            retrieve = threading.Thread(
                target=lambda: answers.append(signed.get(instance, headers=accept, timeout=60))
            )
            retrieve.start()
            deadline = time.monotonic() + 30
            while relay.held == 0:
                assert time.monotonic() < deadline, "the retrieve never reached S3"
                time.sleep(0.05)

            health = signed.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            metadata = signed.get(f"{instance}/metadata", timeout=1)
            opened = signed.get(f"{series}/metadata", timeout=1)
            assert answers == []  # still waiting on S3
            relay.release()
            retrieve.join(timeout=60)
    finally:
        relay.close()
        archive.close()
        backend.close()

    assert (health.status_code, metadata.status_code, opened.status_code) == (200, 200, 200)
    ((part, data),) = multipart_parts(answers[0])
    assert part == f"application/dicom; transfer-syntax={row.transfer_syntax_uid}"
    assert hashlib.sha256(data).hexdigest() == row.blob_sha256
