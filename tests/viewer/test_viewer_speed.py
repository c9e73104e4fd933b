"""The viewer's speed, kept from regressing (issue 14; the figures are ``benchmarks/viewer.py``'s).

- Frames and rendered frames are immutable: ``private`` (sign-in: never a shared cache), a day,
  ``immutable``, an ETag (strong for a rendered frame, which is the same bytes; weak for a
  multipart frames answer, whose boundary changes), and 304 without a body on If-None-Match,
  from the routed handler and from the frames fast path alike. A slide's metadata is gzipped.
- In headless Chromium with software WebGL (SwiftShader, as on a PC without a GPU), through the
  benchmark's relay (75 ms each way, 10 Mbit/s): the viewer picks the canvas drawer, opens the
  slide and draws a few random fields of view at 40x within generous bounds (a regression to the
  WebGL drawer on software GL, or to one tile asked a frame, takes several times longer).
- Opening a slide is audited once: the metadata request records it; its tiles do not.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import httpx
import pytest

from lamina.api.app import create_app
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow, SlideRow
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.sample import write_samples
from tests.backends import Backend
from tests.signin import OPERATOR, signed, token_for
from tests.support import REPO, need, serving, tool

DRIVER = REPO / "benchmarks" / "viewer.mjs"
#: Generous: the benchmark measures ~1 s a view over this link; the viewer as shipped took ~9 s.
VIEW_BOUND_MS = 5000
OPEN_BOUND_MS = 15000


def _relay_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lamina_bench_relay", REPO / "benchmarks" / "_relay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Served(NamedTuple):
    url: str
    port: int
    archive: Archive
    slide: SlideRow
    level0: InstanceRow


@pytest.fixture(scope="module")
def served(module_backend: Backend) -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-speed-") as tmp:
        root = Path(tmp)
        (sample,) = write_samples(root / "case", ["aperio_svs"], size=(4096, 3072))
        settings = Settings.load(root / "lamina-data", env=module_backend.env("viewer-speed"))
        archive = Archive.open(settings)
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
        (candidate,) = discover([sample.path])
        result = ingestor.ingest(candidate, load_manifest(root / "case" / "manifest.csv"))
        assert result.status == "ingested", result.reason
        slide = archive.catalog.slide(result.slide_id or "")
        assert slide is not None
        level0 = next(r for r in archive.catalog.instances(slide.id) if r.flavor == "VOLUME" and r.level == 0)
        try:
            with serving(create_app(settings, archive)) as port:
                yield Served(f"http://127.0.0.1:{port}", port, archive, slide, level0)
        finally:
            archive.close()


def _instance(served: Served) -> str:
    row = served.level0
    return (
        f"{served.url}/dicomweb/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}"
    )


def _metadata(served: Served, **headers: str) -> httpx.Response:
    slide = served.slide
    series = f"{served.url}/dicomweb/studies/{slide.study_instance_uid}/series/{slide.series_instance_uid}"
    return signed.get(f"{series}/metadata", headers=headers)


def _caching(answer: httpx.Response) -> None:
    directives = {d.strip() for d in answer.headers["cache-control"].split(",")}
    assert {"private", "immutable"} <= directives, directives
    assert any(d.startswith("max-age=") and int(d.split("=")[1]) >= 3600 for d in directives), directives
    assert "public" not in directives


def test_rendered_frames_are_immutable_with_an_etag_and_304(served: Served) -> None:
    url = f"{_instance(served)}/frames/3/rendered"

    first = signed.get(url)  # before the opening: the routed handler
    _metadata(served)  # the opening, recorded: then the frames fast path answers
    second = signed.get(url)
    again = signed.get(url, headers={"If-None-Match": first.headers["etag"]})
    other = signed.get(url, headers={"If-None-Match": '"not-this-one"'})
    png = signed.get(url, headers={"Accept": "image/png"})
    png_again = signed.get(url, headers={"Accept": "image/png", "If-None-Match": png.headers["etag"]})

    for answer in (first, second, other, png):
        assert answer.status_code == 200, answer.text
        _caching(answer)
    assert first.headers["etag"] == second.headers["etag"] and not first.headers["etag"].startswith("W/")
    assert first.content == second.content == other.content
    assert (
        again.status_code == 304 and again.content == b"" and again.headers["etag"] == first.headers["etag"]
    )
    _caching(again)
    # another rendering of the same frame is another representation: another tag
    assert png.headers["etag"] != first.headers["etag"] and png_again.status_code == 304


def test_frames_answers_are_cached_and_revalidated(served: Served) -> None:
    stored = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    single = f"{_instance(served)}/frames/2"
    listed = f"{_instance(served)}/frames/2,3"

    one = signed.get(single, headers=stored)
    two = signed.get(listed, headers=stored)
    one_again = signed.get(single, headers={**stored, "If-None-Match": one.headers["etag"]})
    two_again = signed.get(listed, headers={**stored, "If-None-Match": two.headers["etag"]})

    for answer in (one, two):
        assert answer.status_code == 200
        _caching(answer)
        assert answer.headers["etag"].startswith('W/"')  # the multipart boundary varies
    assert one.headers["etag"] != two.headers["etag"]
    assert one_again.status_code == two_again.status_code == 304
    assert one_again.content == two_again.content == b""


def test_metadata_is_gzipped_for_a_client_that_takes_it(served: Served) -> None:
    with httpx.Client() as client:  # httpx would decode it: read the bytes sent
        slide = served.slide
        url = (
            f"{served.url}/dicomweb/studies/{slide.study_instance_uid}/series/"
            f"{slide.series_instance_uid}/metadata"
        )
        token = token_for(served.port)
        headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}
        with client.stream("GET", url, headers=headers) as answer:
            raw = b"".join(answer.iter_raw())
            encoding = answer.headers.get("content-encoding")
    plain = _metadata(served, **{"Accept-Encoding": "identity"})

    assert encoding == "gzip" and "accept-encoding" in plain.headers["vary"].lower()
    assert plain.headers.get("content-encoding") is None
    assert json.loads(gzip.decompress(raw)) == plain.json()
    assert len(raw) * 4 < len(plain.content)


def _chromium() -> tuple[str, str]:
    node = tool("node")
    chromium = os.environ.get("LAMINA_CHROMIUM") or tool("chromium")
    need((REPO / "node_modules" / "playwright-core").is_dir(), "playwright-core in node_modules (npm ci)")
    need((REPO / "node_modules" / "openseadragon").is_dir(), "OpenSeadragon in node_modules (npm ci)")
    return node, chromium


def _reads(served: Served) -> list[audit.AuditEntry]:
    with served.archive.catalog.begin() as conn:
        entries = audit.entries(conn, action="read", actor=OPERATOR)
    return [entry for entry in entries if entry.entity == f"slide/{served.slide.id}"]


@pytest.mark.backend_independent  # the viewer's drawing and the link; the headers are checked on both
def test_over_a_slow_link_the_viewer_draws_views_in_time_and_audits_one_opening(
    served: Served, tmp_path: Path
) -> None:
    node, chromium = _chromium()
    relay_module = _relay_module()
    row, slide = served.level0, served.slide
    rng = random.Random(14)
    width, height = row.total_pixel_matrix_columns, row.total_pixel_matrix_rows
    views = [
        [round(rng.uniform(0.15, 0.85) * width), round(rng.uniform(0.15, 0.85) * height)] for _ in range(4)
    ]
    token = token_for(served.port)
    assert token and slide.mpp
    before = len(_reads(served))

    with relay_module.Relay(served.port, 0.075, 10.0) as relay:
        run = subprocess.run(
            [node, str(DRIVER)],
            input=json.dumps(
                {
                    "client": "lamina",
                    "url": relay.url,
                    "chromium": chromium,
                    "profile": str(tmp_path / "profile"),
                    "token": token,
                    "person": OPERATOR,
                    "study": slide.study_instance_uid,
                    "series": slide.series_instance_uid,
                    "width": 1280,
                    "height": 800,
                    "views": views,
                    "mpp": slide.mpp,
                    "magnification": 40,
                    "wait_ms": 90000,
                }
            ),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-2000:]
    seen: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])

    # the drawer chosen for software WebGL, and used: canvas
    software = any(name in (seen["renderer"] or "").lower() for name in ("swiftshader", "llvmpipe"))
    assert software or seen["renderer"] is None, seen["renderer"]
    assert seen["drawer"] == seen["drawer_attribute"] == "canvas", seen
    # generous bounds (the benchmark has the figures): a regression is several times over them
    assert seen["open_ms"] < OPEN_BOUND_MS, seen
    assert statistics.median(seen["views_ms"]) < VIEW_BOUND_MS, seen["views_ms"]
    # each view fetched full-resolution tiles, several a request (frame lists)
    assert all(frames >= 4 for frames in seen["views_frames"]), seen["views_frames"]
    assert sum(seen["views_requests"]) * 2 <= sum(seen["views_frames"]), seen
    assert seen["errors"] == [], seen["errors"]
    assert set(seen["statuses"]) <= {"200", "304"}, seen["statuses"]
    # one opening, one audit entry (at most: one may have been recorded by the tests above)
    assert len(_reads(served)) - before <= 1 and len(_reads(served)) == 1
