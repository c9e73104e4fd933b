"""S3 failing in the middle of an ingest: the slide does not become visible, the job is retried
with backoff and the reason logged; once S3 answers again the slide is stored whole. The S3
server is the real SeaweedFS, reached through a TCP relay that the test cuts and restores."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from lamina.archive.archive import Archive
from lamina.archive.fixity import verify
from lamina.archive.watch import Watcher
from lamina.config import Settings
from lamina.jobs import tasks
from lamina.jobs.queue import Worker, make_app
from lamina.sample import write_samples
from tests.backends import Backend


class Relay:
    """Forwards loopback TCP connections to ``target``; ``cut()`` refuses and drops them."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.open: list[socket.socket] = []
        self.up = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_an_ingest_retried_while_s3_is_down_completes_when_it_is_back(
    tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    backend = Backend.open("postgresql-s3", request)
    env = backend.env("retry")
    endpoint = urlsplit(env["AWS_ENDPOINT_URL"])
    relay = Relay((endpoint.hostname or "127.0.0.1", endpoint.port or 80))
    env = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}", "LAMINA_VERIFY_CRON": "off"}
    settings = Settings.load(tmp_path / "home", env=env)
    archive = Archive.open(settings)
    app = make_app(settings)
    worker_app = make_app(settings)
    tasks.register(worker_app, archive)
    worker = Worker(worker_app)
    folder = tmp_path / "scanner"
    write_samples(folder, ["aperio_svs"], size=(2048, 1536), seed=3)
    (slide,) = [path for path in folder.iterdir() if path.suffix == ".svs"]
    caplog.set_level(logging.WARNING, logger="lamina.jobs")
    try:
        app.open()
        watcher = Watcher(archive, folder, stable_s=0, submit=tasks.watched_submitter(app, folder, None))
        relay.cut()
        assert watcher.scan_once() == []  # claimed and queued, not ingested here
        worker.start()
        deadline = time.monotonic() + 60
        while "retried with backoff" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "retried with backoff" in caplog.text
        assert "unreachable" in caplog.text or "Error" in caplog.text  # the reason is in the log
        # nothing visible, nothing moved to failed/, the scan does not queue it again
        assert archive.catalog.count_slides() == 0
        assert slide.exists() and not (folder / "failed").exists()
        # the worker logs the retry before it records the attempt: wait for the record
        deadline = time.monotonic() + 30
        while True:
            (job,) = app.job_manager.list_jobs(task="lamina:ingest_watched")
            if job.attempts >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert job.attempts >= 1 and job.status == "todo"
        relay.restore()
        done = folder / "done" / slide.name
        deadline = time.monotonic() + 90
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.exists(), caplog.text
        (row,) = archive.catalog.slides()
        report = verify(archive.catalog, archive.store)
        assert report.ok and report.checked == row.instances
    finally:
        worker.stop()
        app.close()
        archive.close()
        relay.close()
        backend.close()
