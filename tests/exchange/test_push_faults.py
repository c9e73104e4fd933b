"""A push that goes wrong: an archive that answers 5xx, a push process killed, an archive killed.
Whatever the point of the SIGKILL, running the push again delivers every slide once: no loss, no
duplicate, every stored object whole (killed at 60 % of a push's duration by default; at ten
points spread over it with ``--slow``). The embedded default (the scaled deployment's own crash
safety is the crash campaigns'; the push's is its catalog state, the same on both)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions
from lamina.config import Settings
from lamina.lifecycle.marks import Interest, Marks, Target
from tests.cli.test_serve import lamina_serve
from tests.exchange.deid_world import SECRETS, convert, plant
from tests.exchange.test_push import LAB, _holdings, _lamina, _planted_case, _push
from tests.support import lamina_env


class _Busy(BaseHTTPRequestHandler):
    """An archive in maintenance: 503 with its words, to every request."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"detail": "down for maintenance until 02:00"}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def busy_archive() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _parts(world: dict[str, object]) -> tuple[Settings, Settings, dict[str, str], list[str]]:
    site, archive, tokens, slides = world["site"], world["archive"], world["tokens"], world["slides"]
    assert isinstance(site, Settings) and isinstance(archive, Settings)
    assert isinstance(tokens, dict) and isinstance(slides, list)
    return site, archive, tokens, slides


@pytest.mark.parametrize("backend", ["sqlite-folder"], indirect=True)
def test_an_archive_answering_5xx_leaves_the_slides_queued_with_its_words(
    world: dict[str, object], busy_archive: str
) -> None:
    site, _, tokens, slides = _parts(world)
    code, results = _push(site, busy_archive, tokens[LAB], *slides)
    assert code == 2 and [r["status"] for r in results] == ["queued", "queued"], results
    assert all("503 (down for maintenance until 02:00)" in str(r["reason"]) for r in results), results
    status = json.loads(_lamina(site, "push", "--status", "--json").stdout)["transfers"]
    assert all(row["next_attempt_at"] and row["attempts"] == 1 for row in status), status
    # not due yet: a push without names leaves them to their back-off
    code, later = _push(site, busy_archive, tokens[LAB])
    assert code == 0 and later == []


def _popen_push(site: Settings, base: str, token: str, slide: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lamina", "push", slide, "--to", base, "--token", token, "--json"],
        env=lamina_env(site, LAMINA_PUSH_CRON="off"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


#: where in a push's duration the processes are killed: once by default, across it with --slow
KILL_AT = [
    pytest.param(0.6, id="at-0.6"),
    *(
        pytest.param(round(0.05 + 0.1 * n, 2), id=f"at-{0.05 + 0.1 * n:.2f}", marks=pytest.mark.slow)
        for n in range(10)
    ),
]


@pytest.mark.parametrize("backend", ["sqlite-folder"], indirect=True)
@pytest.mark.parametrize("fraction", KILL_AT)
def test_a_push_killed_or_an_archive_killed_resumes_without_loss_or_duplicate(
    world: dict[str, object], tmp_path: Path, fraction: float
) -> None:
    site_settings, archive_settings, tokens, slides = _parts(world)
    site = Archive.open(site_settings)
    try:
        third = _planted_case(site, tmp_path / "in5", 5)
        Marks(site.catalog).flag(Target(slide=third), Interest.TEACHING, "a fine case", "patho")
    finally:
        site.close()
    first, second = slides
    token = tokens[LAB]
    with lamina_serve(archive_settings) as (_, base):
        started = time.monotonic()
        code, results = _push(site_settings, base, token, first)
        took = time.monotonic() - started
        assert code == 0 and results[0]["status"] == "verified", results
        # the push process killed halfway through its work, then run again
        process = _popen_push(site_settings, base, token, second)
        time.sleep(took * fraction)
        process.kill()
        process.communicate(timeout=30)
        code, results = _push(site_settings, base, token, second)
        # verified now, or before the kill (then nothing is left to push)
        assert code == 0 and all(r["status"] == "verified" for r in results), results
    # the archive killed while the third slide goes
    with lamina_serve(archive_settings) as (server, base):
        process = _popen_push(site_settings, base, token, third)
        time.sleep(took * fraction)
        server.send_signal(signal.SIGKILL)
        process.communicate(timeout=120)
    with lamina_serve(archive_settings) as (_, base):
        code, results = _push(site_settings, base, token, third)
        assert code == 0 and all(r["status"] == "verified" for r in results), results
    # every slide once at the archive, whole
    archive = Archive.open(archive_settings)
    try:
        with archive.catalog.engine.connect() as conn:
            received = conn.execute(
                select(t.archive_received.c.status, func.count()).group_by(t.archive_received.c.status)
            ).all()
            slides_there = conn.execute(select(func.count()).select_from(t.slides)).scalar_one()
    finally:
        archive.close()
    assert dict(received) == {"verified": 3} and slides_there == 3
    checked = _lamina(archive_settings, "verify", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    status = json.loads(_lamina(site_settings, "push", "--status", "--json").stdout)["transfers"]
    assert sorted(row["status"] for row in status) == ["verified"] * 3


@pytest.mark.parametrize("backend", ["sqlite-folder"], indirect=True)
def test_dicom_slides_with_identity_everywhere_leave_none_of_it_or_wait_for_review(
    world: dict[str, object], tmp_path: Path
) -> None:
    """DICOM slides with identity in every attribute a header holds (nested sequences, other
    patient IDs, descriptions, comments, a private block of binary data or of text) leave
    without any of it; a private text block the site kept holds its slide back for review."""
    site_settings, archive_settings, tokens, _ = _parts(world)
    site = Archive.open(site_settings)
    try:
        received = {}
        for name, private_text in (("binary", False), ("text", True)):
            files = convert(tmp_path / name, seed=11 if private_text else 12)
            for path in files:
                plant(path, private_text=private_text)
            (candidate,) = discover(files)
            result = site.receiver().ingestor.ingest(candidate, None, IngestOptions(tenant=LAB))
            assert result.status == "ingested", result.reason
            received[name] = str(result.slide_id)
            Marks(site.catalog).flag(Target(slide=received[name]), Interest.EXPERTISE, "second opinion", "p")
    finally:
        site.close()
    with lamina_serve(archive_settings) as (_, base):
        code, results = _push(site_settings, base, tokens[LAB], received["binary"], received["text"])
    by_slide = {r["slide_id"]: r for r in results}
    assert by_slide[received["binary"]]["status"] == "verified", results
    # the private text, where the site's ingest kept it, holds its slide back for review
    at_site = b"".join(data for _, data in _holdings(site_settings))
    assert SECRETS["patient_id"].encode() in at_site  # the control: identity is at the site
    held = by_slide[received["text"]]
    if SECRETS["private"].encode() in at_site:
        assert code == 1 and held["status"] == "quarantined", held
        assert "private" in str(held["reason"]).lower(), held
        assert SECRETS["private"] not in str(held["reason"])  # reasons name attributes, never values
    else:
        assert code == 0 and held["status"] == "verified", held
    for where, data in _holdings(archive_settings):
        for secret in SECRETS.values():
            for form in {secret, secret.upper(), secret.replace("^", " ")}:
                assert form.encode() not in data, f"{form!r} found in {where}"
