"""GeoJSON read and written (lamina.annotations.geojson), and the shapes' colours and measures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from lamina.annotations.geojson import MAX_FEATURES, feature_collection, read_features
from lamina.annotations.shapes import Shape, hex_of_lab, lab_of_hex, measure
from lamina.errors import RequestError

SIZE = (1000, 800)
DATA = Path(__file__).parent / "data"


def _feature(geometry: dict[str, Any], **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def test_a_qupath_file_is_read_with_its_classes_colours_and_kinds() -> None:
    shapes = read_features(json.loads((DATA / "qupath.geojson").read_text()), SIZE)
    assert [(s.kind, s.label, s.color) for s in shapes] == [
        ("polygon", "Tumor", "#c80000"),
        ("rectangle", "Stroma", "#96c896"),
        ("line", "Ruler", "#0000ff"),
        ("point", "Mitosis", "#ffc800"),
    ]
    assert shapes[0].points.tolist() == [[100.5, 80.25], [220, 80.25], [240.75, 190], [90, 170.5]]


def test_a_list_one_feature_and_multi_geometries_are_read() -> None:
    square = [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]
    multi = _feature({"type": "MultiPolygon", "coordinates": [square, [[[20, 20], [30, 20], [25, 28]]]]})
    assert [s.kind for s in read_features([multi], SIZE)] == ["rectangle", "polygon"]
    one = _feature({"type": "LineString", "coordinates": [[0, 0], [5, 5], [9, 1]]})
    assert [s.kind for s in read_features(one, SIZE)] == ["freehand"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "Polygon"}, "features: expected a GeoJSON FeatureCollection"),
        (
            [_feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})],
            "features[0].geometry.coordinates: a Polygon needs at least 3 points",
        ),
        (
            [_feature({"type": "LineString", "coordinates": [[0, 0]]})],
            "features[0].geometry.coordinates: a LineString needs at least 2",
        ),
        (
            [_feature({"type": "Point", "coordinates": [0, "a"]})],
            "features[0].geometry.coordinates: a position [x, y] of numbers",
        ),
        (
            [_feature({"type": "Point", "coordinates": [1, 1]}), _feature({"type": "Circle"})],
            "features[1].geometry.type",
        ),
        (
            [_feature({"type": "Point", "coordinates": [1, 1]}, kind="line")],
            "features[0].properties.kind: a line is drawn as LineString",
        ),
        ([_feature({"type": "Point", "coordinates": [1, 1]}, label="a\\b")], "features[0].properties.label"),
        (
            [_feature({"type": "Point", "coordinates": [1, 900]})],
            "outside the slide's level 0 (1000 x 800 pixels)",
        ),
        (
            [_feature({"type": "Point", "coordinates": [1, 1]})] * (MAX_FEATURES + 1),
            "between 1 and 10000 features",
        ),
    ],
)
def test_what_is_wrong_is_named(body: Any, message: str) -> None:
    with pytest.raises(RequestError) as raised:
        read_features(body, SIZE)
    assert message in str(raised.value)


def test_written_coordinates_are_float32_in_their_shortest_form_and_rings_closed() -> None:
    shape = Shape("polygon", "a", "#010203", np.array([[1.1, 2.2], [3.3, 4.4], [5.5, 0.1]]))
    written = orjson.loads(
        orjson.dumps(feature_collection([shape], qupath=True), option=orjson.OPT_SERIALIZE_NUMPY)
    )
    (feature,) = written["features"]
    assert feature["geometry"]["coordinates"] == [[[1.1, 2.2], [3.3, 4.4], [5.5, 0.1], [1.1, 2.2]]]
    assert feature["properties"]["classification"] == {"name": "a", "color": [1, 2, 3]}


def test_colours_go_through_cielab_unchanged() -> None:
    for color in ("#000000", "#ffffff", "#c80000", "#96c896", "#123456", "#fedcba"):
        assert hex_of_lab(lab_of_hex(color).value) == color


def test_measures_follow_the_pixel_spacing() -> None:
    line = Shape("line", "", "#000000", np.array([[0, 0], [3, 4]]))
    square = Shape("rectangle", "", "#000000", np.array([[0, 0], [10, 0], [10, 20], [0, 20]]))
    assert measure(line, (0.5, 0.5)) == {"length_mm": 2.5}
    assert measure(square, (0.25, 0.5)) == {"area_mm2": 25.0}
    assert measure(Shape("point", "", "#000000", np.array([[1, 1]])), (1, 1)) == {}
