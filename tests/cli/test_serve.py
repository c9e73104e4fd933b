"""``lamina serve`` as a real process: it stops within a second of SIGTERM when idle, lets a
request in flight finish first, and closes its DIMSE server; on both backends."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, text

from lamina.archive.archive import Archive
from lamina.archive.catalog import SlideRow
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from tests.dimse.peers import calling as calling_aes
from tests.signin import auth_headers, sign_in_process, signed
from tests.support import lamina_env, shared_file, tool


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def lamina_serve(settings: Settings, *args: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A ``lamina serve`` process on the archive of ``settings`` (and ``env``); (process, base URL)."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lamina", "serve", "--port", str(port), *args],
        env=lamina_env(settings, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "lamina serve did not start"
            with contextlib.suppress(httpx.TransportError):
                if signed.get(f"{base}/healthz", timeout=1).status_code == 200:
                    sign_in_process(settings, port)
                    break
            time.sleep(0.1)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def _stop(process: subprocess.Popen[str]) -> float:
    """SIGTERM; the seconds until the process is gone."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    return time.monotonic() - started


@pytest.mark.parametrize("dimse", [False, True], ids=["http", "http+dimse"])
def test_an_idle_server_stops_at_once_on_sigterm(settings: Settings, dimse: bool) -> None:
    Archive.open(settings).close()
    extra = ["--dimse-port", str(_free_port())] if dimse else []
    with (
        lamina_serve(settings, *extra) as (process, base),
        httpx.Client(headers=auth_headers(base)) as client,
    ):
        # a client that keeps its connection open, as a browser does
        assert client.get(f"{base}/healthz").status_code == 200
        assert client.get(f"{base}/dicomweb/studies").status_code == 200

        took = _stop(process)

        output = process.communicate()[0]
        # a server that waited for the client's open connection would take the whole grace
        # (30 s); an idle one stops at once (about 0.3 s here; the bound leaves room for a
        # loaded machine, where the interpreter's exit alone took 1.3 s once)
        assert took < 5.0, (took, output)
        assert process.returncode == 0, output
        assert "Traceback" not in output, output


@contextlib.contextmanager
def held_audit_log(settings: Settings) -> Iterator[None]:
    """The catalog's audit log locked by another connection, as a long transaction would: a
    request that appends to it waits (SQLite: the write lock; PostgreSQL: a table lock)."""
    if settings.database_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("COMMIT")
            conn.close()
    else:
        engine = create_engine(settings.database_url)
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE"))
            try:
                yield
            finally:
                conn.rollback()
        engine.dispose()


def _waiting_on_lock(settings: Settings) -> bool:
    """Whether a request is in flight, held by the lock (known on PostgreSQL; on SQLite, assumed
    after a moment)."""
    if settings.database_url.startswith("sqlite"):
        time.sleep(1.0)
        return True
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one())
    finally:
        engine.dispose()


def _slide(settings: Settings) -> SlideRow:
    archive = Archive.open(settings)
    (candidate,) = discover([shared_file("aperio/CMU-1-Small-Region.svs")])
    result = Ingestor(archive.catalog, archive.store).ingest(candidate)
    slide = archive.catalog.slide(result.slide_id or "")
    archive.close()
    assert slide is not None
    return slide


def _metadata_url(base: str, slide: SlideRow) -> str:
    return f"{base}/dicomweb/studies/{slide.study_instance_uid}/series/{slide.series_instance_uid}/metadata"


def _in_flight(settings: Settings, url: str, answers: list[httpx.Response | Exception]) -> threading.Thread:
    """A request that waits on the held catalog, once it is there."""

    def get() -> None:
        try:
            answers.append(signed.get(url, timeout=60))
        except httpx.HTTPError as exc:
            answers.append(exc)

    request = threading.Thread(target=get)
    request.start()
    deadline = time.monotonic() + 30
    while not _waiting_on_lock(settings):
        assert time.monotonic() < deadline, "the request never reached the catalog"
        time.sleep(0.05)
    return request


def test_a_request_in_flight_finishes_before_the_server_stops(settings: Settings) -> None:
    slide = _slide(settings)
    answers: list[httpx.Response | Exception] = []
    with lamina_serve(settings) as (process, base):
        with held_audit_log(settings):
            # opening a slide is audited: the request waits for the lock inside its handler
            request = _in_flight(settings, _metadata_url(base, slide), answers)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert process.poll() is None, "the server stopped with a request in flight"
        request.join(timeout=60)
        process.wait(timeout=30)
        output = process.communicate()[0]
    (answer,) = answers
    assert isinstance(answer, httpx.Response) and answer.status_code == 200, output
    assert len(answer.json()) == slide.instances
    assert process.returncode == 0, output


def test_the_grace_period_bounds_the_wait(settings: Settings) -> None:
    slide = _slide(settings)
    answers: list[httpx.Response | Exception] = []
    with lamina_serve(settings, LAMINA_SHUTDOWN_GRACE_S="1") as (process, base), held_audit_log(settings):
        request = _in_flight(settings, _metadata_url(base, slide), answers)

        took = _stop(process)

        output = process.communicate()[0]
        request.join(timeout=60)
    assert 0.9 < took < 3.0, (took, output)
    assert process.returncode == 0, output
    assert not any(isinstance(answer, httpx.Response) and answer.status_code == 200 for answer in answers)


def _echo(port: int, calling: str, called: str) -> subprocess.CompletedProcess[str]:
    args = [tool("echoscu"), "-aet", calling, "-aec", called, "127.0.0.1", str(port)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_the_dimse_settings_reach_the_server(settings: Settings) -> None:
    """LAMINA_DIMSE_AE_TITLE, the calling AE allow-list and the network timeout, set as an operator
    sets them, decide what a real ``lamina serve --dimse-port`` accepts."""
    from pynetdicom import AE

    dimse_port = _free_port()
    env = {
        "LAMINA_DIMSE_AE_TITLE": "ARCHIVE1",
        "LAMINA_DIMSE_CALLING_AE_TITLES": "SCANNER1, PACS",
        "LAMINA_DIMSE_NETWORK_TIMEOUT_S": "1",
    }
    archive = Archive.open(settings)
    try:  # the calling AEs of the node's lab (INTRUDER is none)
        calling_aes(archive, "SCANNER1", "PACS")
    finally:
        archive.close()
    with lamina_serve(settings, "--dimse-port", str(dimse_port), **env) as (process, _):
        allowed = _echo(dimse_port, "SCANNER1", "ARCHIVE1")
        refused = _echo(dimse_port, "INTRUDER", "ARCHIVE1")
        wrong_called = _echo(dimse_port, "PACS", "LAMINA")
        # an association that stays silent past the timeout is aborted by the server
        scu = AE(ae_title="PACS")
        scu.add_requested_context("1.2.840.10008.1.1")
        association = scu.associate("127.0.0.1", dimse_port, ae_title="ARCHIVE1")
        assert association.is_established
        deadline = time.monotonic() + 10
        while association.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        silent_for = 10 - (deadline - time.monotonic())
        aborted = association.is_aborted
        association.release()
        _stop(process)
        output = process.communicate()[0]
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr + output
    assert refused.returncode != 0 and "Association Rejected" in refused.stdout + refused.stderr
    assert (
        wrong_called.returncode != 0 and "Association Rejected" in wrong_called.stdout + wrong_called.stderr
    )
    assert aborted and silent_for < 5, (silent_for, output)
    assert "DIMSE: ARCHIVE1 on 127.0.0.1" in output


def test_the_ae_title_option_overrides_the_setting_and_is_checked(settings: Settings) -> None:
    dimse_port = _free_port()
    args = ("--dimse-port", str(dimse_port), "--ae-title", "FROMOPTION")
    archive = Archive.open(settings)
    try:
        calling_aes(archive, "ANYONE")
    finally:
        archive.close()
    with lamina_serve(settings, *args, LAMINA_DIMSE_AE_TITLE="FROMSETTING"):
        assert _echo(dimse_port, "ANYONE", "FROMOPTION").returncode == 0
        assert _echo(dimse_port, "ANYONE", "FROMSETTING").returncode != 0
    bad = subprocess.run(
        [sys.executable, "-m", "lamina", "serve", "--dimse-port", "1", "--ae-title", "A" * 17],
        env=lamina_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--ae-title" in bad.stderr and "at most 16" in bad.stderr, bad.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "lamina", "serve", "--dimse-port", "1"],
        env=lamina_env(settings, LAMINA_DIMSE_CALLING_AE_TITLES="PACS,A\\B"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "LAMINA_DIMSE_CALLING_AE_TITLES (or dimse_calling_ae_titles in lamina.toml)" in bad.stderr
