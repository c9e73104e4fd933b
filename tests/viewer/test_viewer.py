"""The viewer and the rendered resources it reads, against a real server over sample slides.

The server has sign-in on, as in production: the HTTP tests read the rendered and thumbnail
resources (PS3.18 10.4.1.1.3-4) with httpx as the tests' lab operator (``tests.signin.signed``).
The browser tests drive the viewer in headless Chromium through Node's playwright-core: the
operator, given a password, signs in through the viewer's form, then ``tests/viewer/drive.mjs``
goes through the worklist, search, deep zoom and side by side; ``tests/viewer/signin.mjs`` signs
in wrongly, then rightly, has its token refused, and signs out. A second lab's case is on the same
node: the operator never sees it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import imagecodecs
import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from lamina import viewer
from lamina.api.app import create_app
from lamina.api.auth import RULES, guard
from lamina.api.dicomweb import qido, rendered, wado
from lamina.api.dicomweb.index import InstanceIndex
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow, SlideRow
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions, Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.errors import PayloadTooLargeError
from lamina.governance.passwords import Passwords
from lamina.governance.registry import Registry
from lamina.sample import write_samples
from tests.backends import Backend
from tests.signin import OPERATOR, register_operator, signed
from tests.support import REPO, need, serving, tool

_CASE_KEYS = ("patient_id", "patient_name", "birth_date", "sex", "accession_number")
#: A renderer with a small pixel limit, mounted beside the real routes to test the 413 answer.
_CAPPED = "/capped"
_CAP = 1 << 20
#: Another lab on the node (a FINESS number of Lyon), with a case of its own.
OTHER_LAB = "690781810"
#: The password the tests' operator signs in to the viewer with.
PASSWORD = "correct horse battery staple"


class Served(NamedTuple):
    url: str  # http://127.0.0.1:PORT
    archive: Archive
    case: list[SlideRow]  # two slides of one case: the SVS (JPEG tiles, label, overview), the TIFF
    other: SlideRow  # a slide of another case
    accession: str
    other_lab: SlideRow  # a slide of another lab, which the tests' lab operator may not see


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


def _ingest(archive: Archive, folder: Path, tenant: str = "") -> list[SlideRow]:
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
    manifest = load_manifest(folder / "manifest.csv")
    slides = []
    for candidate in discover([folder]):
        result = ingestor.ingest(candidate, manifest, IngestOptions(tenant=tenant))
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
    # behind the rules of the routes it copies (guard() refuses a route without one)
    capped_rules = {key.replace(" /dicomweb/", f" {_CAPPED}/"): rule for key, rule in RULES.items()}
    routes[:0] = guard([Mount(_CAPPED, routes=rendered.routes(max_pixels=_CAP))], capped_rules)
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
        # the tests' lab first (it adopts the slides above), then another lab with a case of its own
        register_operator(archive.catalog)
        Registry(archive.catalog).add_tenant(OTHER_LAB, "Anatomie pathologique (Lyon)", "tests")
        write_samples(root / "lyon", ["tiled_tiff"], size=(1024, 768), seed=11)
        (other_lab,) = _ingest(archive, root / "lyon", tenant=OTHER_LAB)
        assert other_lab.tenant == OTHER_LAB and other_lab.accession_number not in {
            slide.accession_number for slide in [*case, other]
        }
        Passwords(archive.catalog).set(OPERATOR, PASSWORD, "tests")
        try:
            with serving(compose(create_app(settings, archive))) as port:
                accession = case[0].accession_number or ""
                yield Served(f"http://127.0.0.1:{port}", archive, case, other, accession, other_lab)
        finally:
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
def test_the_viewer_and_its_library_are_served_to_anyone_but_not_the_slides(served: Served) -> None:
    need((REPO / "node_modules" / "openseadragon").is_dir(), "OpenSeadragon in node_modules (npm ci)")
    svs = served.case[0]

    # no token: the viewer's code is public (it shows the sign-in form), the archive is not
    page = httpx.get(f"{served.url}/")
    module = httpx.get(f"{served.url}/app.js")
    sign_in = httpx.get(f"{served.url}/signin.js")
    library = httpx.get(f"{served.url}/vendor/openseadragon/openseadragon.min.js")
    icon = httpx.get(f"{served.url}/vendor/openseadragon/images/home_rest.png")
    studies = httpx.get(f"{served.url}/dicomweb/studies")
    thumbnail = httpx.get(
        f"{served.url}/dicomweb/studies/{svs.study_instance_uid}/series/{svs.series_instance_uid}/thumbnail"
    )

    assert page.status_code == 200 and 'type="module" src="app.js"' in page.text
    assert "Content-Security-Policy" in page.text and "script-src 'self'" in page.text
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    assert sign_in.status_code == 200 and "sessionStorage" in sign_in.text
    assert library.status_code == 200 and "OpenSeadragon" in library.text[:2000]
    assert icon.status_code == 200
    for refused in (studies, thumbnail):
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == 'Bearer realm="lamina"'
    assert signed.get(f"{served.url}/dicomweb/studies").status_code == 200
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


def _run(script: str, tmp_path: Path, **config: Any) -> dict[str, Any]:
    """What ``script`` (a Node script of this folder) saw, driving Chromium with ``config``."""
    node, chromium = _browser()
    run = subprocess.run(
        [node, str(Path(__file__).with_name(script))],
        input=json.dumps({"chromium": chromium, "profile": str(tmp_path / "profile"), **config}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-4000:]
    seen: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return seen


def _token_only_in_headers(seen: dict[str, Any], tokens: list[str]) -> None:
    """No token in any URL the page requested, and every DICOMweb request signed with one."""
    assert tokens and all(tokens), tokens
    assert not [url for url in seen["urls"] for token in tokens if token in url]
    unsigned = [r for r in seen["api"] if r["authorization"] not in {f"Bearer {token}" for token in tokens}]
    assert seen["api"] and not unsigned, unsigned[:5]


def test_worklist_search_slide_zoom_and_side_by_side(served: Served, tmp_path: Path) -> None:
    svs, tiff = served.case
    shots = Path(tempfile.gettempdir())

    # signed in through the viewer's form (drive.mjs), as a person does
    seen = _run(
        "drive.mjs",
        tmp_path,
        url=served.url,
        accession=served.accession,
        shots=str(shots / "lamina-viewer"),
        person=OPERATOR,
        password=PASSWORD,
    )

    assert seen["sign_in"]["status"] == 200, seen["sign_in"]
    # every request to the archive, tiles and thumbnails included, sent the tab's token, and only there
    token = json.loads(seen["storage"]["session"]["lamina.session"])["token"]
    _token_only_in_headers(seen, [token])
    assert any("/frames/" in r["url"] for r in seen["api"])
    assert any("/thumbnail" in r["url"] for r in seen["api"])
    assert seen["storage"]["local"] == {} and seen["storage"]["cookie"] == ""
    # the worklist lists the two cases of the lab (not the other lab's); the search by accession
    # number keeps the one asked for
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


def test_sign_in_wrong_then_right_refused_and_signed_out(served: Served, tmp_path: Path) -> None:
    seen = _run(
        "signin.mjs",
        tmp_path,
        url=served.url,
        person=OPERATOR,
        password=PASSWORD,
        wrong_password="not the password at all",
        accession=served.accession,
        other_lab_accession=served.other_lab.accession_number,
    )
    wrong, throttled = seen["wrong"][0], seen["wrong"][-1]
    issued = seen["issued"]

    # no token in the tab: the form, and nothing asked of the archive
    assert seen["first"] == {"cases": 0, "storage": _empty(), "api": 0}, seen["first"]
    # a wrong password: the message, no worklist, nothing kept
    assert wrong["status"] == 401 and wrong["message"] == "wrong person or password", wrong
    assert wrong["cases"] == 0 and wrong["storage"] == _empty()
    # tried again at once: the server slows down, and the form says for how long
    assert throttled["status"] == 429 and throttled["retry_after"], seen["wrong"]
    assert throttled["message"] == f"too many failed attempts; try again in {throttled['retry_after']} s"
    assert throttled["cases"] == 0 and throttled["storage"] == _empty()
    # the right password: the worklist of the operator's lab, without the other lab's case
    assert seen["right"]["status"] == 200, seen["right"]
    assert seen["right"]["accessions"] == sorted([served.accession, served.other.accession_number or ""])
    assert served.other_lab.accession_number not in seen["right"]["accessions"]
    assert seen["right"]["account"] == {"hidden": False, "person": OPERATOR}
    assert seen["other_lab"]["accessions"] == [] and "No case matches" in seen["other_lab"]["status"]
    # the token is kept in sessionStorage only, and sent in the Authorization header only
    signed_in = seen["signed_in"]
    assert signed_in["token"] == issued[0] and signed_in["person"] == OPERATOR
    assert list(signed_in["session"]) == ["lamina.session"] and signed_in["local"] == {}
    assert signed_in["cookie"] == ""
    bearer = {"Authorization": f"Bearer {issued[0]}"}
    assert httpx.get(f"{served.url}/dicomweb/studies", headers=bearer).status_code == 200  # a real token
    _token_only_in_headers(seen, [*issued, seen["tampered"], seen["tile_tampered"]])
    # a token the server refuses (401): back to the form, the token forgotten; signed in again,
    # the page asked for is shown
    refused = [r for r in seen["api"] if r["authorization"] == f"Bearer {seen['tampered']}"]
    assert refused and {r["status"] for r in refused} == {401}
    assert "no longer accepts your sign-in" in (seen["refused"]["notice"] or ""), seen["refused"]
    assert seen["refused"]["storage"] == _empty() and seen["refused"]["cases"] == 0
    assert seen["again"]["status"] == 200 and seen["again"]["accessions"] == [served.accession]
    assert issued[1] and issued[1] != issued[0]
    # a tile refused mid-session (OpenSeadragon's request): back to the form, then the same slide
    tiles = [r for r in seen["api"] if r["authorization"] == f"Bearer {seen['tile_tampered']}"]
    assert tiles and all("/frames/" in r["url"] and r["status"] == 401 for r in tiles), tiles
    tile_refused = seen["tile_refused"]
    assert "no longer accepts your sign-in" in (tile_refused["notice"] or ""), tile_refused
    assert tile_refused["storage"] == _empty() and tile_refused["viewer"] == 0
    assert tile_refused["hash"].startswith("#/slide/")
    assert seen["third"]["status"] == 200 and seen["third"]["hash"] == tile_refused["hash"]
    # signed out: the form, the token forgotten
    assert seen["signed_out"] == {
        "notice": "You are signed out.",
        "storage": _empty(),
        "account_hidden": True,
    }
    # nothing went wrong but the refusals asked for
    expected = ("/auth/token", "/dicomweb/")
    # (OpenSeadragon logs its refused tiles)
    refusals = ("401 ", "429 ", "console: Failed to load", "console: Tile %s failed to load")
    assert not [e for e in seen["errors"] if not e.startswith(refusals)], seen["errors"]
    assert all(e.split(" ", 1)[1].startswith(served.url) for e in seen["errors"] if e[:3] in ("401", "429"))
    assert all(any(part in e for part in expected) for e in seen["errors"] if e[:3] in ("401", "429"))


def _empty() -> dict[str, Any]:
    return {"session": {}, "local": {}, "cookie": "", "token": None, "person": None}
