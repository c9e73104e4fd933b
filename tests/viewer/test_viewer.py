"""The viewer and the rendered resources it reads, against a real server over sample slides.

The HTTP tests read the rendered and thumbnail resources (PS3.18 10.4.1.1.3-4) with httpx; the
browser test drives the viewer in headless Chromium through Node's playwright-core
(``tests/viewer/drive.mjs``): worklist, search, deep zoom, side by side.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import imagecodecs
import numpy as np
import pytest
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from lamina import viewer
from lamina.api.app import create_app
from lamina.api.dicomweb import qido, rendered, wado
from lamina.api.dicomweb.index import InstanceIndex
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow, SlideRow
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.errors import PayloadTooLargeError
from lamina.sample import write_samples
from tests.backends import Backend
from tests.signin import signed
from tests.support import REPO, need, tool

_CASE_KEYS = ("patient_id", "patient_name", "birth_date", "sex", "accession_number")
#: A renderer with a small pixel limit, mounted beside the real routes to test the 413 answer.
_CAPPED = "/capped"
_CAP = 1 << 20


class Served(NamedTuple):
    url: str  # http://127.0.0.1:PORT
    archive: Archive
    case: list[SlideRow]  # two slides of one case: the SVS (JPEG tiles, label, overview), the TIFF
    other: SlideRow  # a slide of another case
    accession: str


def _one_case(manifest: Path) -> None:
    """The tiled TIFF becomes a second slide (another stain) of the SVS's case."""
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    svs, tiff = rows
    tiff.update({key: svs[key] for key in _CASE_KEYS}, stain="PAS")
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(svs), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _ingest(archive: Archive, folder: Path) -> list[SlideRow]:
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
    manifest = load_manifest(folder / "manifest.csv")
    slides = []
    for candidate in discover([folder]):
        result = ingestor.ingest(candidate, manifest)
        assert result.status == "ingested", result.reason
        found = archive.catalog.slide(result.slide_id or "")
        assert found is not None
        slides.append(found)
    return slides


def _has(routes: list[BaseRoute], path: str) -> bool:
    return any(
        isinstance(route, Route) and route.path == path and "GET" in (route.methods or ()) for route in routes
    )


def compose(app: Any) -> Any:
    """create_app's application with QIDO-RS, the rendered resources and the viewer, for those
    that it does not register yet, and a renderer with a small pixel limit under /capped."""
    starlette: Starlette = getattr(app, "starlette", app)  # create_app may wrap it (frames fast path)
    routes = starlette.router.routes
    (dicomweb,) = [r for r in routes if isinstance(r, Mount) and r.path == "/dicomweb"]
    if not _has(dicomweb.routes, "/studies"):
        dicomweb.routes[:0] = qido.routes()
    if not _has(dicomweb.routes, "/studies/{study}/series/{series}/instances/{instance}/rendered"):
        dicomweb.routes[:0] = rendered.routes()
    routes.insert(0, Mount(_CAPPED, routes=rendered.routes(max_pixels=_CAP)))
    if not any(isinstance(r, Mount) and r.path == "" for r in routes):
        routes.extend(viewer.routes())
    return app


@pytest.fixture(scope="module")
def served(module_backend: Backend) -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-viewer-") as tmp:
        root = Path(tmp)
        write_samples(root / "case", ["aperio_svs", "tiled_tiff"], size=(2048, 1536))
        _one_case(root / "case" / "manifest.csv")
        write_samples(root / "other", ["tiled_tiff"], size=(1024, 768), seed=7)
        settings = Settings.load(root / "lamina-data", env=module_backend.env("viewer"))
        archive = Archive.open(settings)
        case = _ingest(archive, root / "case")
        (other,) = _ingest(archive, root / "other")
        case.sort(key=lambda slide: slide.format)  # aperio_svs, tiled_tiff
        assert case[0].study_instance_uid == case[1].study_instance_uid != other.study_instance_uid

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        app = compose(create_app(settings, archive))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.02)
        try:
            yield Served(f"http://127.0.0.1:{port}", archive, case, other, case[0].accession_number or "")
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()
            archive.close()


def _instances(served: Served, slide: SlideRow) -> list[InstanceRow]:
    return served.archive.catalog.instances(slide.id)


def _level(served: Served, slide: SlideRow, level: int) -> InstanceRow:
    return next(row for row in _instances(served, slide) if row.flavor == "VOLUME" and row.level == level)


def _flavor(served: Served, slide: SlideRow, flavor: str) -> InstanceRow:
    return next(row for row in _instances(served, slide) if row.flavor == flavor)


def _url(served: Served, row: InstanceRow, prefix: str = "/dicomweb") -> str:
    return (
        f"{served.url}{prefix}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}"
    )


def _image(answer: httpx.Response, media_type: str = "image/jpeg") -> Image.Image:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == media_type
    image = Image.open(io.BytesIO(answer.content))
    image.load()
    return image


# -- rendered resources over HTTP ----------------------------------------------------------------
def test_a_stored_jpeg_frame_is_sent_as_stored(served: Served) -> None:
    row = _level(served, served.case[0], 0)
    assert row.transfer_syntax_uid == wado.JPEG_BASELINE
    found = InstanceIndex(served.archive).get(
        row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid
    )
    stored = wado.read_frames(found, [1, 7], served.archive)

    first = signed.get(f"{_url(served, row)}/frames/1/rendered")
    seventh = signed.get(f"{_url(served, row)}/frames/7/rendered", headers={"Accept": "image/jpeg"})

    assert [first.content, seventh.content] == stored
    assert _image(first).size == (row.columns, row.rows)


def test_png_is_the_decoded_frame(served: Served) -> None:
    row = _level(served, served.case[1], 0)
    found = InstanceIndex(served.archive).get(
        row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid
    )
    (stored,) = wado.read_frames(found, [2], served.archive)

    by_header = _image(
        signed.get(f"{_url(served, row)}/frames/2/rendered", headers={"Accept": "image/png"}), "image/png"
    )
    by_query = _image(signed.get(f"{_url(served, row)}/frames/2/rendered?accept=image/png"), "image/png")

    assert by_header.size == (row.columns, row.rows) and by_header.mode == "RGB"
    decoded = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))
    assert np.abs(np.asarray(by_query).astype(int) - decoded.astype(int)).max() <= 2


def test_a_whole_level_is_composed_from_its_tiles(served: Served) -> None:
    row = _level(served, served.case[0], 1)  # 512 x 384 in 240-pixel tiles: edge tiles cropped

    image = _image(signed.get(f"{_url(served, row)}/rendered?accept=image/png"), "image/png")
    smaller = _image(signed.get(f"{_url(served, _level(served, served.case[0], 2))}/rendered"))

    assert image.size == (row.total_pixel_matrix_columns, row.total_pixel_matrix_rows)
    # the same slide at a quarter of the size: the composed level matches the next one down
    reduced = np.asarray(image.resize(smaller.size, Image.Resampling.BOX)).astype(int)
    assert np.abs(reduced - np.asarray(smaller).astype(int)).mean() < 8


def test_viewport_scales_down_to_fit_and_never_up(served: Served) -> None:
    row = _level(served, served.case[1], 0)  # 2048 x 1536

    fitted = _image(signed.get(f"{_url(served, row)}/rendered?viewport=300,300"))
    by_width = _image(signed.get(f"{_url(served, row)}/rendered?viewport=512,"))
    region = _image(signed.get(f"{_url(served, row)}/rendered?viewport=100,100,256,256,400,200"))
    frame = _image(signed.get(f"{_url(served, row)}/frames/1/rendered?viewport=1000,1000"))
    lower_quality = signed.get(f"{_url(served, row)}/frames/1/rendered?quality=20")

    assert fitted.size == (300, 225)
    assert by_width.size == (512, 384)
    assert region.size == (100, 50)
    assert frame.size == (row.columns, row.rows)
    assert len(lower_quality.content) < len(
        signed.get(f"{_url(served, row)}/frames/1/rendered?quality=95").content
    )


def test_thumbnails_of_instance_series_and_study(served: Served) -> None:
    svs = served.case[0]
    series = f"{served.url}/dicomweb/studies/{svs.study_instance_uid}/series/{svs.series_instance_uid}"

    of_series = _image(signed.get(f"{series}/thumbnail"))
    small = _image(
        signed.get(f"{series}/thumbnail?viewport=64,64", headers={"Accept": "image/png"}), "image/png"
    )
    of_study = _image(signed.get(f"{served.url}/dicomweb/studies/{svs.study_instance_uid}/thumbnail"))
    label = _flavor(served, svs, "LABEL")
    of_label = _image(signed.get(f"{_url(served, label)}/thumbnail"))

    assert of_series.size == (256, 192)
    assert small.size == (64, 48)
    assert max(of_study.size) == 256
    assert max(of_label.size) == 256 and of_label.size[0] < of_label.size[1]  # the label is portrait
    # the thumbnail shows the slide: stained tissue (pink, purple) on a light background
    pixels = np.asarray(of_series).astype(int)
    assert ((pixels.max(axis=2) - pixels.min(axis=2)) > 40).mean() > 0.05


def test_label_and_overview_render_in_full(served: Served) -> None:
    for flavor in ("LABEL", "OVERVIEW"):
        row = _flavor(served, served.case[0], flavor)

        image = _image(signed.get(f"{_url(served, row)}/rendered"))

        assert image.size == (row.total_pixel_matrix_columns, row.total_pixel_matrix_rows)


@pytest.mark.parametrize(
    ("suffix", "headers", "status", "words"),
    [
        ("/frames/1/rendered", {"Accept": "image/gif"}, 406, "image/jpeg or image/png"),
        ("/frames/1/rendered?accept=application/dicom", {}, 406, "image/jpeg or image/png"),
        ("/frames/1/rendered", {"Accept": "image/png;q=0, image/jpeg;q=0"}, 406, "image/png"),
        ("/frames/999/rendered", {}, 404, "frame 999 does not exist"),
        ("/frames/1,2/rendered", {}, 400, "one frame"),
        ("/rendered?viewport=0,10", {}, 400, "viewport"),
        ("/rendered?viewport=10,10,0,0,-5,5", {}, 400, "viewport"),
        ("/rendered?viewport=10,10,9999,0,5,5", {}, 400, "outside"),
        ("/rendered?quality=101", {}, 400, "quality"),
    ],
)
def test_bad_rendering_requests(
    served: Served, suffix: str, headers: dict[str, str], status: int, words: str
) -> None:
    row = _level(served, served.case[0], 0)

    answer = signed.get(_url(served, row) + suffix, headers=headers)

    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert words in answer.json()["detail"]


def test_too_large_a_rendering_is_refused_before_decoding(served: Served) -> None:
    row = _level(served, served.case[1], 0)  # 2048 x 1536 = 3.1 megapixels, over the 1-megapixel cap

    whole = signed.get(f"{_url(served, row, _CAPPED)}/rendered")
    region = signed.get(f"{_url(served, row, _CAPPED)}/rendered?viewport=256,256,0,0,1024,768")
    fits = signed.get(f"{_url(served, row, _CAPPED)}/rendered?viewport=256,256,0,0,1024,1024")

    assert whole.status_code == 413 and "1048576-pixel rendering limit" in whole.json()["detail"]
    assert _image(region).size == (256, 192)
    assert fits.status_code == 200


def _claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG stream with a frame header (SOF0) that claims another size."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


def test_a_frame_claiming_a_huge_size_is_refused_before_decoding(served: Served) -> None:
    row = _level(served, served.case[0], 0)
    found = InstanceIndex(served.archive).get(
        row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid
    )
    (stored,) = wado.read_frames(found, [1], served.archive)
    bomb = _claiming(stored, 60000, 60000)

    assert rendered.declared_size(stored, row.transfer_syntax_uid) == (row.columns, row.rows)
    assert rendered.declared_size(bomb, row.transfer_syntax_uid) == (60000, 60000)
    with pytest.raises(PayloadTooLargeError, match="60000 x 60000"):
        rendered.Renderer().decode(found, bomb)


def test_the_size_a_jpeg_2000_codestream_declares() -> None:
    codestream = imagecodecs.jpeg2k_encode(np.zeros((30, 70, 3), np.uint8), codecformat="J2K")

    assert rendered.declared_size(bytes(codestream), "1.2.840.10008.1.2.4.90") == (70, 30)


@pytest.mark.parametrize(
    "path",
    [
        "/studies/1.2.3/thumbnail",
        "/studies/{study}/series/1.2.3/thumbnail",
        "/studies/{study}/series/{series}/instances/1.2.3/rendered",
        "/studies/{study}/series/{series}/instances/1.2.3/frames/1/rendered",
        "/studies/{study}/series/{series}/instances/1.2.3/thumbnail",
        "/studies/1.2.3/series/{series}/instances/{instance}/rendered",
    ],
)
def test_unknown_uids_are_404(served: Served, path: str) -> None:
    row = _level(served, served.case[0], 0)
    filled = path.format(
        study=row.study_instance_uid, series=row.series_instance_uid, instance=row.sop_instance_uid
    )

    answer = signed.get(f"{served.url}/dicomweb{filled}")

    assert answer.status_code == 404, answer.text


# -- the viewer's files ---------------------------------------------------------------------------
def test_the_viewer_and_its_library_are_served(served: Served) -> None:
    need((REPO / "node_modules" / "openseadragon").is_dir(), "OpenSeadragon in node_modules (npm ci)")

    page = signed.get(f"{served.url}/")
    module = signed.get(f"{served.url}/app.js")
    library = signed.get(f"{served.url}/vendor/openseadragon/openseadragon.min.js")
    icon = signed.get(f"{served.url}/vendor/openseadragon/images/home_rest.png")

    assert page.status_code == 200 and 'type="module" src="app.js"' in page.text
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    assert library.status_code == 200 and "OpenSeadragon" in library.text[:2000]
    assert icon.status_code == 200
    assert signed.get(f"{served.url}/healthz").status_code == 200  # the catch-all mount leaves the API alone


def test_a_missing_library_is_explained(tmp_path: Path) -> None:
    (route, _) = viewer.routes(openseadragon_dir=tmp_path / "nowhere")
    app = Starlette(routes=[route])

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://viewer"
        ) as client:
            return await client.get("/vendor/openseadragon/openseadragon.min.js")

    answer = asyncio.run(call())

    assert answer.status_code == 404 and "scripts/install" in answer.text


# -- the viewer in a browser ----------------------------------------------------------------------
def _browser() -> tuple[str, str]:
    node = tool("node")
    chromium = os.environ.get("LAMINA_CHROMIUM") or tool("chromium")
    need((REPO / "node_modules" / "playwright-core").is_dir(), "playwright-core in node_modules (npm ci)")
    need((REPO / "node_modules" / "openseadragon").is_dir(), "OpenSeadragon in node_modules (npm ci)")
    return node, chromium


def test_worklist_search_slide_zoom_and_side_by_side(served: Served, tmp_path: Path) -> None:
    node, chromium = _browser()
    svs, tiff = served.case
    shots = Path(tempfile.gettempdir())

    run = subprocess.run(
        [node, str(Path(__file__).with_name("drive.mjs"))],
        input=json.dumps(
            {
                "url": served.url,
                "chromium": chromium,
                "profile": str(tmp_path / "profile"),
                "accession": served.accession,
                "shots": str(shots / "lamina-viewer"),
            }
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-4000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])

    # the worklist lists the two cases; the search by accession number keeps the one asked for
    assert seen["cases_before"] == 2
    assert seen["cases_found"] == [served.accession]
    assert seen["thumbnails_in_row"] == 2 and seen["thumbnails_loaded"]
    # the slide view: tiles drawn (stained tissue on the canvas), label and overview, the case's slides
    assert seen["slide"]["series"] in {svs.series_instance_uid, tiff.series_instance_uid}
    assert seen["slide"]["pixels"]["stained"] > 0.02, seen["slide"]["pixels"]
    assert seen["slide"]["case_slides"] == 2
    assert seen["slide"]["scale_bar"].endswith(("µm", "mm"))
    # zooming in to 40x fetches frames of the full-resolution level
    level0 = _level(served, svs if seen["slide"]["series"] == svs.series_instance_uid else tiff, 0)
    assert seen["zoom"]["readout"] == "40×"
    assert seen["zoom"]["frames_after"] > seen["zoom"]["frames_before"] > 0
    assert level0.sop_instance_uid in seen["zoom"]["instances_after"]
    assert seen["zoom"]["pixels"]["stained"] > 0.02 or seen["zoom"]["pixels"]["distinct"] > 50
    # side by side: both slides drawn, at one magnification; a zoom in one pane is followed by the other
    assert seen["compare"]["series"] == sorted([svs.series_instance_uid, tiff.series_instance_uid])
    assert all(p["stained"] > 0.02 for p in seen["compare"]["pixels"]), seen["compare"]["pixels"]
    before, after = seen["compare"]["readouts_before"], seen["compare"]["readouts_after"]
    assert before[0] == before[1] and after[0] == after[1] and before != after, (before, after)
    assert seen["errors"] == [], seen["errors"]
    for name in ("slide", "compare"):
        assert (shots / f"lamina-viewer-{name}.png").stat().st_size > 10_000
