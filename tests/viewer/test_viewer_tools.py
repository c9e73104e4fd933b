"""The slide's tools in headless Chromium (``tests/viewer/tools.mjs``), used as a person does.

Keys 1 to 4 set 5x to 40x, arrows pan, + and - zoom; the ruler's length and the area tool's area
(drawn rotated a quarter turn) equal what the slide's pixel spacing gives for the image pixels
under the mouse; r, R and the buttons rotate; the screenshot is a PNG download of the view with
its scale bar; f goes full screen and back. Annotations: every kind of shape drawn, saved,
exported and imported as GeoJSON (and a QuPath file), the imported ones deleted; a colleague of
the lab reads the author's annotation read-only; a person of another lab sees neither the slide
nor its annotations.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from PIL import Image

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.config import Settings
from lamina.governance.passwords import Passwords
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.sample import write_samples
from lamina.viewer import STATIC_DIR
from tests.signin import OPERATOR, TEST_LAB, register_operator
from tests.support import serving, tool
from tests.viewer.test_viewer import OTHER_LAB, PASSWORD, _ingest, _run

COLLEAGUE = "patho-tools"
STRANGER = "patho-lyon"


class Served(NamedTuple):
    url: str
    slide: str  # the slide page's hash
    mpp: float  # µm per level-0 pixel


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-viewer-tools-") as tmp:
        root = Path(tmp)
        write_samples(root / "case", ["tiled_tiff"], size=(4096, 3072))
        settings = Settings.load(root / "lamina-data", env={})
        archive = Archive.open(settings)
        (slide,) = _ingest(archive, root / "case")
        register_operator(archive.catalog)  # the tests' lab adopts the slide
        registry, passwords = Registry(archive.catalog), Passwords(archive.catalog)
        registry.add_person(COLLEAGUE, TEST_LAB, [Role.PATHOLOGIST], "Colleague", "tests")
        registry.add_tenant(OTHER_LAB, "Anatomie pathologique (Lyon)", "tests")
        registry.add_person(STRANGER, OTHER_LAB, [Role.PATHOLOGIST], "Pathologist of Lyon", "tests")
        for person in (OPERATOR, COLLEAGUE, STRANGER):
            passwords.set(person, PASSWORD, "tests")
        level0 = next(
            row for row in archive.catalog.instances(slide.id) if row.flavor == "VOLUME" and row.level == 0
        )
        assert level0.pixel_spacing_mm
        try:
            with serving(create_app(settings, archive)) as port:
                yield Served(
                    f"http://127.0.0.1:{port}",
                    f"#/slide/{slide.study_instance_uid}/{slide.series_instance_uid}",
                    level0.pixel_spacing_mm * 1000,
                )
        finally:
            archive.close()


@pytest.fixture(scope="module")
def seen(served: Served, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One browser session: the tools, then the annotations by their author, a colleague, a stranger."""
    tmp_path = tmp_path_factory.mktemp("tools")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    qupath = tmp_path / "qupath.geojson"
    qupath.write_text(json.dumps(_QUPATH), encoding="utf-8")
    return _run(
        "tools.mjs",
        tmp_path,
        url=served.url,
        password=PASSWORD,
        slide=served.slide,
        author=OPERATOR,
        colleague=COLLEAGUE,
        stranger=STRANGER,
        qupath=str(qupath),
        downloads=str(downloads),
    )


def _number(text: str) -> float:
    return float(text.split(":")[-1].strip().split(" ")[0])


def _longest_dark_run(image: Image.Image) -> int:
    """The longest horizontal run of black pixels in the bottom-left quarter of ``image``."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    height, width = pixels.shape[:2]
    corner = pixels[height * 3 // 4 :, : width // 2]
    dark = corner.max(axis=2) < 40
    best = 0
    for row in dark:
        run = 0
        for value in row:
            run = run + 1 if value else 0
            best = max(best, run)
    return best


def test_keys_ruler_area_rotation_screenshot_and_full_screen(served: Served, seen: dict[str, Any]) -> None:
    assert seen["sign_in"]["status"] == 200, seen["sign_in"]
    assert seen["magnifications"] == ["5.0×", "10×", "20×", "40×"]  # slideview.js: one decimal under 10x
    # arrows: the centre moves right, then down, by the same screen distance, at the same zoom
    before, right, down = (seen["arrows"][key] for key in ("before", "right", "down"))
    assert right["centre"]["x"] > before["centre"]["x"] + 50
    assert right["centre"]["y"] == pytest.approx(before["centre"]["y"], abs=0.5)
    assert down["centre"]["y"] > right["centre"]["y"] + 50
    assert down["centre"]["x"] == pytest.approx(right["centre"]["x"], abs=0.5)
    zoom = seen["zoom_keys"]
    assert zoom["plus"]["image_zoom"] > down["image_zoom"] * 1.3
    assert zoom["minus"]["image_zoom"] == pytest.approx(down["image_zoom"], rel=1e-6)

    # the ruler: the drag's image pixels times the slide's pixel spacing
    ruler = seen["ruler"]
    (x1, y1), (x2, y2) = ruler["image"]
    expected = math.hypot(x2 - x1, y2 - y1) * served.mpp
    assert ruler["readout"] == "10×"
    assert ruler["text"].startswith("Length: ") and ruler["text"].endswith(" µm"), ruler
    assert _number(ruler["text"]) == pytest.approx(expected, abs=0.051), (ruler, expected)
    assert ruler["microns"] == pytest.approx(expected, rel=1e-6)
    # at 10x a screen pixel is 1 µm: the 300 x 120 pixel drag is about 323 µm
    assert expected == pytest.approx(math.hypot(300, 120), rel=0.01)

    # the area tool, rotated a quarter turn: the outline's image pixels (shoelace) in mm²
    assert seen["rotated"]["rotation"] == 90 and seen["rotated"]["rotation_text"] == "90°"
    area = seen["area"]
    corners = area["image"]
    twice = sum(
        x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(corners, corners[1:] + corners[:1], strict=True)
    )
    expected_mm2 = abs(twice) / 2 * served.mpp**2 / 1e6
    assert area["text"].startswith("Area: ") and area["text"].endswith(" mm²"), area
    assert _number(area["text"]) == pytest.approx(expected_mm2, rel=5e-4), (area, expected_mm2)
    assert area["square_microns"] == pytest.approx(expected_mm2 * 1e6, rel=1e-6)
    assert area["shapes"] == 2  # the ruler's line and the outline stay on the slide
    assert seen["rotated_back"]["rotation"] == 0
    assert seen["rotated_button"]["rotation"] == 270 and seen["rotated_button"]["rotation_text"] == "270°"

    # the screenshot: the canvas's size, the slide's colours, and the scale bar's length in it
    shot = seen["screenshot"]
    assert shot["suggested"].endswith(".png"), shot
    image = Image.open(io.BytesIO(Path(shot["path"]).read_bytes()))
    assert image.format == "PNG" and list(image.size) == shot["canvas"], shot
    bar = round(shot["bar_css_pixels"] * shot["ratio"])
    assert bar > 20 and abs(_longest_dark_run(image) - bar) <= 2, (shot, _longest_dark_run(image))
    colours = np.asarray(image.convert("RGB")).astype(int)
    stained = (colours.max(axis=2) - colours.min(axis=2) > 40).mean()
    assert stained > 0.05, f"the view is not in the screenshot ({stained:.3f} stained)"

    # full screen: the stage (toolbar and slide), then back
    assert seen["fullscreen"] == "stage" and seen["fullscreen_after"] is None, seen


def test_annotations_saved_shown_to_the_lab_exported_and_imported(seen: dict[str, Any]) -> None:
    assert seen["save_status"] == 201, seen
    assert seen["drafts"] == "5 unsaved shapes"
    (mine,) = seen["author_list"]
    assert mine["mine"] and mine["deletable"] and mine["labels"] == "tumour, margin", mine
    # exported: QuPath GeoJSON with the drawn rectangle's corners (level-0 pixels) and the line
    exported = json.loads(Path(seen["exported"]).read_text(encoding="utf-8"))
    features = exported["features"] if exported.get("type") == "FeatureCollection" else exported
    kinds = sorted(feature["geometry"]["type"] for feature in features)
    assert kinds == ["LineString", "Point", "Polygon", "Polygon", "Polygon"], kinds
    (x1, y1), (x2, y2) = seen["rectangle_image"]
    rectangles = [
        f
        for f in features
        if f["geometry"]["type"] == "Polygon" and len(f["geometry"]["coordinates"][0]) == 5
    ]
    corners = {
        tuple(round(v) for v in point) for f in rectangles for point in f["geometry"]["coordinates"][0]
    }
    assert {(round(x1), round(y1)), (round(x2), round(y2))} <= corners, (corners, seen["rectangle_image"])
    # imported back (the export, and a QuPath file): listed as the author's, then deleted
    imported = seen["imported_list"]
    assert len(imported) == 3 and all(item["mine"] for item in imported), imported
    assert any("Tumor" in item["labels"] for item in imported), imported
    assert [item["id"] for item in seen["after_delete"]] == [mine["id"]]
    # a colleague of the lab: listed, drawn, read-only
    (theirs,) = seen["colleague_list"]
    assert theirs["id"] == mine["id"] and not theirs["mine"] and not theirs["deletable"], theirs
    assert "Test operator" in theirs["text"]  # the author's display name
    assert seen["colleague_shapes"] == 5
    # a person of another lab: no slide, no annotation
    assert seen["stranger_list"] == []
    assert "cannot be shown" in seen["stranger_page"], seen["stranger_page"]
    # the one refusal: the slide's metadata to the other lab's person (nothing of the annotation
    # series among the case's slides: no thumbnail asked of it)
    refused = [error for error in seen["errors"] if not error.startswith("console: ")]
    assert len(refused) == 1 and refused[0].startswith("404 ") and refused[0].endswith("/metadata"), seen[
        "errors"
    ]


#: A GeoJSON file as QuPath exports it (Export objects as GeoJSON, "features" array).
_QUPATH: dict[str, Any] = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "6c3f0b1e-7d2a-4c8e-9d1a-2f4b5e6a7c80",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[1000, 800], [1400, 800], [1400, 1100], [1000, 800]]],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
                "isLocked": False,
            },
        }
    ],
}


def test_measures_use_the_spacing_across_and_down() -> None:
    """measure.js alone (Node): a slide whose pixels are 0.5 µm across and 0.25 µm down."""
    node = tool("node")
    script = (
        f"import * as m from {json.dumps((STATIC_DIR / 'measure.js').as_uri())};"
        "const mpp = [0.5, 0.25];"
        "const square = [[0, 0], [400, 0], [400, 800], [0, 800]];"
        "console.log(JSON.stringify({"
        "  across: m.lengthMicrons([[0, 0], [100, 0]], mpp), down: m.lengthMicrons([[0, 0], [0, 100]], mpp),"
        "  diagonal: m.lengthMicrons([[0, 0], [300, 400]], mpp), area: m.areaMicrons2(square, mpp),"
        "  mm: m.formatLength(1500, mpp), um: m.formatLength(12.345, mpp), pixels: m.formatLength(12, null),"
        "  mm2: m.formatArea(40000, mpp), line: m.measurementOf('line', [[0, 0], [0, 4000]], mpp),"
        "  outline: m.measurementOf('freehand', square, mpp), point: m.measurementOf('point', [[1, 1]], mpp),"
        "}));"
    )
    run = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)

    assert (got["across"], got["down"]) == (50, 25)
    assert got["diagonal"] == pytest.approx(math.hypot(150, 100))
    assert got["area"] == 400 * 0.5 * 800 * 0.25  # a 200 µm square
    assert (got["mm"], got["um"], got["pixels"]) == ("1.500 mm", "12.3 µm", "12 px")
    assert got["mm2"] == "0.04000 mm²"
    assert got["line"] == {"length_mm": 1.0}
    assert got["outline"] == {"area_mm2": pytest.approx(0.04)}
    assert got["point"] is None
