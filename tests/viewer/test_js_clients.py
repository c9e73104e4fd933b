"""Interoperability with the JavaScript DICOMweb clients that web viewers of slides are built on.

``dicomweb-client`` (ImagingDataCommons; XMLHttpRequest) and ``dicom-microscopy-viewer`` (the
library Slim is built on) run in headless Chromium, driven by ``tests/viewer/js_clients.mjs``
through Node's playwright-core, against a real server over sample slides. The page is served by the
test's own application from another origin (``localhost`` against ``127.0.0.1``), so every request
is a cross-origin one, as it is for a viewer deployed apart from the archive. The bytes the clients
receive are compared with what the archive holds.

The server has sign-in on: the clients are built with the tests' lab operator's token in their
``headers`` (``new DICOMwebClient({url, headers: {Authorization: 'Bearer ...'}})``, and
dicom-microscopy-viewer reads through such a client), and every request they make carries it;
built without it, they are answered 401.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from PIL import Image
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lamina.api.app import create_app
from lamina.api.dicomweb import wado
from lamina.api.dicomweb.index import InstanceIndex
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow, SlideRow
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax
from lamina.sample import write_samples
from tests.backends import Backend
from tests.signin import signed, token_for
from tests.support import REPO, need, serving, tool

FORMATS = ("aperio_svs", "tiled_tiff", "dicom_wsi", "ome_tiff")
_MODULES = REPO / "node_modules"
_CLIENT = _MODULES / "dicomweb-client" / "build"
_VIEWER = _MODULES / "dicom-microscopy-viewer" / "dist"
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>lamina: JavaScript DICOMweb clients</title>
<link rel="icon" href="data:,"></head>
<body style="margin:0"><div id="viewport" style="width:800px;height:600px"></div></body></html>
"""


class Served(NamedTuple):
    port: int
    archive: Archive
    slides: dict[str, SlideRow]  # by sample format


class FrameCase(NamedTuple):
    name: str
    row: InstanceRow
    numbers: list[int]
    media_types: list[dict[str, str]] | None  # None: dicomweb-client's default
    expected: list[bytes]


async def _page(request: Request) -> Response:
    return HTMLResponse(_PAGE)


def _tools() -> tuple[str, str]:
    node = tool("node")
    chromium = os.environ.get("LAMINA_CHROMIUM") or tool("chromium")
    need((_MODULES / "playwright-core").is_dir(), "playwright-core in node_modules (npm ci)")
    need(_CLIENT.is_dir(), "dicomweb-client in node_modules (npm ci)")
    return node, chromium


@pytest.fixture(scope="module")
def served(module_backend: Backend) -> Iterator[Served]:
    _tools()
    with tempfile.TemporaryDirectory(prefix="lamina-js-") as tmp:
        root = Path(tmp)
        samples = write_samples(root / "samples", list(FORMATS), size=(1024, 768))
        settings = Settings.load(root / "lamina-data", env=module_backend.env("js-clients"))
        archive = Archive.open(settings)
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
        manifest = load_manifest(root / "samples" / "manifest.csv")
        slides = {}
        for sample in samples:
            (candidate,) = discover([sample.path])
            result = ingestor.ingest(candidate, manifest)
            assert result.status == "ingested", result.reason
            slide = archive.catalog.slide(result.slide_id or "")
            assert slide is not None
            slides[sample.format] = slide

        app = create_app(settings, archive)
        # the test page and the libraries, before the viewer's catch-all mount
        test_routes = [
            Route("/_js/page.html", _page),
            Mount("/_js/dicomweb-client", StaticFiles(directory=_CLIENT)),
        ]
        if _VIEWER.is_dir():
            test_routes.append(Mount("/_js/dicom-microscopy-viewer", StaticFiles(directory=_VIEWER)))
        app.starlette.router.routes[:0] = test_routes

        try:
            with serving(app) as port:
                yield Served(port, archive, slides)
        finally:
            archive.close()


def _token(served: Served) -> str:
    token = token_for(served.port)
    assert token, "tests.support.serving signs the operator in for the port it serves"
    return token


def _drive(
    served: Served, tmp_path: Path, mode: str, signed_in: bool = True, **config: Any
) -> dict[str, Any]:
    """What the clients saw in ``mode``; built with the operator's token unless not ``signed_in``."""
    node, chromium = _tools()
    page = f"http://localhost:{served.port}"
    run = subprocess.run(
        [node, str(Path(__file__).with_name("js_clients.mjs"))],
        input=json.dumps(
            {
                "mode": mode,
                "page": f"{page}/_js/page.html",
                "api": f"http://127.0.0.1:{served.port}/dicomweb",
                "token": _token(served) if signed_in else None,
                "chromium": chromium,
                "profile": str(tmp_path / "profile"),
                "scripts": {
                    "client": f"{page}/_js/dicomweb-client/dicomweb-client.js",
                    "viewer": f"{page}/_js/dicom-microscopy-viewer/dicomMicroscopyViewer.bundle.min.js",
                    "viewer_lib": f"{page}/_js/dicom-microscopy-viewer/dynamic-import/",
                },
                **config,
            }
        ),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-4000:]
    seen: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["origin"] == page and seen["secure"], seen  # another origin than the API's
    return seen


def _instances(served: Served, name: str) -> list[InstanceRow]:
    return served.archive.catalog.instances(served.slides[name].id)


def _flavor(rows: list[InstanceRow], flavor: str, level: int | None = None) -> InstanceRow:
    return next(row for row in rows if row.flavor == flavor and row.level == level)


def _digest(data: bytes) -> dict[str, Any]:
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _stored(served: Served, row: InstanceRow, numbers: list[int]) -> list[bytes]:
    found = InstanceIndex(served.archive).get(
        row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid
    )
    return wado.read_frames(found, numbers, served.archive)


def _decoded(row: InstanceRow, data: bytes) -> bytes:
    """The frame's pixels, as Explicit VR Little Endian carries them (what a client gets by default)."""
    encoding = FrameEncoding(TransferSyntax(row.transfer_syntax_uid), row.photometric_interpretation)
    return np.ascontiguousarray(codec.decode(data, encoding)).tobytes()


def _rendered_url(served: Served, row: InstanceRow) -> str:
    return (
        f"http://127.0.0.1:{served.port}/dicomweb/studies/{row.study_instance_uid}"
        f"/series/{row.series_instance_uid}/instances/{row.sop_instance_uid}/rendered"
    )


def _uids(row: InstanceRow) -> dict[str, str]:
    return {"study": row.study_instance_uid, "series": row.series_instance_uid, "sop": row.sop_instance_uid}


def test_dicomweb_client_searches_and_retrieves(served: Served, tmp_path: Path) -> None:
    svs = _instances(served, "aperio_svs")
    level0 = _flavor(svs, "VOLUME", 0)  # JPEG baseline, 20 frames
    thumbnail = _flavor(svs, "THUMBNAIL")  # JPEG 2000, one frame
    level1 = _flavor(svs, "VOLUME", 1)
    assert level0.transfer_syntax_uid == wado.JPEG_BASELINE
    assert thumbnail.transfer_syntax_uid == TransferSyntax.JPEG_2000_LOSSLESS
    any_syntax = [{"mediaType": "application/octet-stream", "transferSyntaxUID": "*"}]
    jpeg = [{"mediaType": "image/jpeg", "transferSyntaxUID": wado.JPEG_BASELINE}]
    stored = _stored(served, level0, [2, 7, 20])
    (j2k,) = _stored(served, thumbnail, [1])
    frames = [
        # the stored bytes, several frames in one multipart answer
        FrameCase("stored", level0, [2, 7, 20], any_syntax, stored),
        # as viewers ask for JPEG frames
        FrameCase("jpeg", level0, [7], jpeg, stored[1:2]),
        # no media type: application/octet-stream without a transfer syntax, i.e. the decoded pixels
        FrameCase("default", level0, [3], None, [_decoded(level0, _stored(served, level0, [3])[0])]),
        FrameCase("stored_j2k", thumbnail, [1], any_syntax, [j2k]),
        FrameCase("default_j2k", thumbnail, [1], None, [_decoded(thumbnail, j2k)]),
    ]
    rendered = [("default", level1, None), ("png", level1, [{"mediaType": "image/png"}])]
    slide = served.slides["aperio_svs"]

    seen = _drive(
        served,
        tmp_path,
        "client",
        search={
            "patient_id": slide.patient_id,
            "study": slide.study_instance_uid,
            "series": slide.series_instance_uid,
        },
        frames=[
            {
                "name": case.name,
                **_uids(case.row),
                "frame_numbers": case.numbers,
                "media_types": case.media_types,
            }
            for case in frames
        ],
        rendered=[{"name": name, **_uids(row), "media_types": media} for name, row, media in rendered],
    )

    all_studies = {s.study_instance_uid for s in served.slides.values()}
    assert sorted(seen["studies"]["ok"]) == sorted(all_studies), seen["studies"]
    assert seen["studies_of_patient"] == {"ok": [slide.study_instance_uid]}
    assert seen["series"] == {"ok": [{"uid": slide.series_instance_uid, "modality": "SM"}]}
    metadata = seen["metadata"]["ok"]
    assert sorted(m["sop"] for m in metadata) == sorted(row.sop_instance_uid for row in svs)
    assert {m["sop"]: (m["flavor"], m["frames"]) for m in metadata} == {
        row.sop_instance_uid: (row.flavor, row.number_of_frames) for row in svs
    }
    for case in frames:
        assert seen["frames"][case.name] == {"ok": [_digest(data) for data in case.expected]}, case.name
    for name, row, media in rendered:
        got = seen["rendered"][name]["ok"]
        assert (got["width"], got["height"]) == (row.total_pixel_matrix_columns, row.total_pixel_matrix_rows)
        # the same bytes as the server gives another client for the same Accept header
        accept = media[0]["mediaType"] if media else "*/*"
        answer = signed.get(_rendered_url(served, row), headers={"Accept": accept})
        assert answer.status_code == 200, answer.text
        assert {"length": got["length"], "sha256": got["sha256"]} == _digest(answer.content), name
    assert seen["errors"] == [], seen["errors"]
    # cross-origin requests, with Accept headers that are not CORS-safelisted (a preflight each)
    assert {(r["origin"], r["allow_origin"]) for r in seen["requests"]} == {(seen["origin"], "*")}
    assert any('type="application/octet-stream"' in (r["accept"] or "") for r in seen["requests"])
    # every one with the token, in the Authorization header and nowhere in the URL
    assert {r["authorization"] for r in seen["requests"]} == {f"Bearer {_token(served)}"}
    assert not [r["url"] for r in seen["requests"] if _token(served) in r["url"]]


def test_dicomweb_client_without_the_token_is_answered_401(served: Served, tmp_path: Path) -> None:
    svs = _instances(served, "aperio_svs")
    level0 = _flavor(svs, "VOLUME", 0)
    slide = served.slides["aperio_svs"]
    any_syntax = [{"mediaType": "application/octet-stream", "transferSyntaxUID": "*"}]

    seen = _drive(
        served,
        tmp_path,
        "client",
        signed_in=False,
        search={
            "patient_id": slide.patient_id,
            "study": slide.study_instance_uid,
            "series": slide.series_instance_uid,
        },
        frames=[{"name": "stored", **_uids(level0), "frame_numbers": [1], "media_types": any_syntax}],
        rendered=[{"name": "default", **_uids(level0), "media_types": None}],
    )

    refused = {"error": "request failed (HTTP 401)"}
    attempts = [seen[key] for key in ("studies", "studies_of_patient", "series", "metadata")]
    assert attempts == [refused] * 4, attempts
    assert seen["frames"] == {"stored": refused} and seen["rendered"] == {"default": refused}
    # each refusal readable across origins (CORS), and no Authorization sent
    assert len(seen["requests"]) == 6, seen["requests"]
    assert {(r["status"], r["authorization"], r["allow_origin"]) for r in seen["requests"]} == {
        (401, None, "*")
    }


def test_dicom_microscopy_viewer_draws_a_slide(served: Served, tmp_path: Path) -> None:
    need(_VIEWER.is_dir(), "dicom-microscopy-viewer in node_modules (npm ci)")
    slide = served.slides["tiled_tiff"]
    shot = tmp_path / "viewer.png"

    seen = _drive(
        served,
        tmp_path,
        "viewer",
        slide={"study": slide.study_instance_uid, "series": slide.series_instance_uid},
        shot=str(shot),
    )

    assert seen["library"] == "function", seen
    assert seen["errors"] == [], seen["errors"]
    assert seen["frames"] > 0, seen
    # the viewer read through the client it was given: every request with the token
    assert {r["authorization"] for r in seen["requests"]} == {f"Bearer {_token(served)}"}
    volume = {row.sop_instance_uid for row in _instances(served, "tiled_tiff") if row.flavor == "VOLUME"}
    requested = {
        r["url"].split("/instances/")[1].split("/")[0] for r in seen["requests"] if "/frames/" in r["url"]
    }
    assert requested and requested <= volume, requested
    # stained tissue (pink, purple) drawn in the viewport, away from the overview map in its corner
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)[150:, 200:]
    stained = ((pixels.max(axis=2) - pixels.min(axis=2)) > 40).mean()
    assert stained > 0.1, (stained, seen)


def test_dicom_microscopy_viewer_without_the_token_reads_nothing(served: Served, tmp_path: Path) -> None:
    need(_VIEWER.is_dir(), "dicom-microscopy-viewer in node_modules (npm ci)")
    slide = served.slides["tiled_tiff"]

    seen = _drive(
        served,
        tmp_path,
        "viewer",
        signed_in=False,
        slide={"study": slide.study_instance_uid, "series": slide.series_instance_uid},
        shot=str(tmp_path / "viewer.png"),
    )

    assert seen["library"] == "function", seen
    assert seen["viewer"] == {"refused": 401}, seen["viewer"]
    assert seen["frames"] == 0
    assert [(r["status"], r["authorization"]) for r in seen["requests"]] == [(401, None)], seen["requests"]
