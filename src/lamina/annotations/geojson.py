"""GeoJSON in and out: lamina's features (properties ``label``, ``color``, ``kind``) and QuPath's
(``objectType``, ``classification {name, color: [r, g, b]}``, ``name``), in level-0 pixels (x
right, y down), read into :class:`~lamina.annotations.shapes.Shape` with every refusal naming its
field; and the FeatureCollection written back (QuPath's properties added on export).

Read: a FeatureCollection, a list of Features or one Feature; Point, MultiPoint, LineString,
MultiLineString, Polygon and MultiPolygon (a Multi* becomes one shape per part; a polygon's holes
are dropped: a DICOM annotation's POLYGON has none). Bounded: :data:`MAX_FEATURES` shapes,
:data:`MAX_POINTS` points in one shape, :data:`MAX_TOTAL_POINTS` in all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lamina.annotations.shapes import DEFAULT_COLOR, KINDS, Shape, is_color
from lamina.errors import RequestError

__all__ = ["MAX_FEATURES", "MAX_POINTS", "MAX_TOTAL_POINTS", "feature_collection", "read_features"]

MAX_FEATURES = 10_000
MAX_POINTS = 100_000
MAX_TOTAL_POINTS = 1_000_000
MAX_LABEL = 64  # a group's label is a DICOM LO


def read_features(body: Any, size: tuple[int, int], where: str = "features") -> list[Shape]:
    """The shapes of ``body`` (see the module), every point inside the ``size`` (columns, rows)
    of the slide's level 0; RequestError naming the field of the first thing wrong."""
    if isinstance(body, dict) and body.get("type") == "FeatureCollection":
        features = body.get("features")
        if not isinstance(features, list):
            raise RequestError(f"{where}.features", "a FeatureCollection needs a list of Features")
    elif isinstance(body, dict) and body.get("type") == "Feature":
        features = [body]
    elif isinstance(body, list):
        features = body
    else:
        raise RequestError(where, "expected a GeoJSON FeatureCollection, a list of Features or one Feature")
    if not 1 <= len(features) <= MAX_FEATURES:
        raise RequestError(where, f"between 1 and {MAX_FEATURES} features, not {len(features)}")
    shapes: list[Shape] = []
    total = 0
    for index, feature in enumerate(features):
        for shape in _feature(feature, f"{where}[{index}]", size):
            total += len(shape.points)
            if total > MAX_TOTAL_POINTS:
                raise RequestError(f"{where}[{index}]", f"more than {MAX_TOTAL_POINTS} points in all")
            shapes.append(shape)
    if len(shapes) > MAX_FEATURES:
        raise RequestError(where, f"more than {MAX_FEATURES} shapes once the Multi* geometries are split")
    return shapes


def _feature(feature: Any, at: str, size: tuple[int, int]) -> list[Shape]:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise RequestError(f"{at}.type", "each feature must be a GeoJSON Feature")
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise RequestError(f"{at}.properties", "an object, or null")
    label, color, kind = _properties(properties, f"{at}.properties")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict):
        raise RequestError(f"{at}.geometry", "a Feature needs a geometry")
    gtype = geometry.get("type")
    coordinates = geometry.get("coordinates")
    where = f"{at}.geometry.coordinates"
    parts: list[tuple[str, Any]]
    if gtype in ("Point", "LineString", "Polygon"):
        parts = [(str(gtype), coordinates)]
    elif gtype in ("MultiPoint", "MultiLineString", "MultiPolygon"):
        if not isinstance(coordinates, list) or not coordinates:
            raise RequestError(where, f"a {gtype} needs a non-empty list of parts")
        parts = [(str(gtype)[5:], part) for part in coordinates]
    else:
        raise RequestError(
            f"{at}.geometry.type",
            f"{gtype!r} is not one of Point, LineString, Polygon, MultiPoint, MultiLineString, MultiPolygon",
        )
    shapes = []
    for part_type, part in parts:
        points = _points(part_type, part, where, size)
        shape_kind = kind or _kind_of(part_type, points)
        if part_type not in KINDS[shape_kind]:
            raise RequestError(
                f"{at}.properties.kind",
                f"a {shape_kind} is drawn as {' or '.join(KINDS[shape_kind])}, not {part_type}",
            )
        shapes.append(Shape(shape_kind, label, color, points, part_type))
    return shapes


def _properties(properties: dict[str, Any], at: str) -> tuple[str, str, str | None]:
    """(label, colour, kind or None) from lamina's properties, else QuPath's."""
    classification = properties.get("classification")
    if classification is not None and not isinstance(classification, dict):
        raise RequestError(f"{at}.classification", "an object {name, color}")
    classification = classification or {}
    label = properties.get("label", classification.get("name", properties.get("name")))
    label = "" if label is None else label
    if not isinstance(label, str) or len(label) > MAX_LABEL or not label.isprintable() or "\\" in label:
        raise RequestError(f"{at}.label", f"a printable text of at most {MAX_LABEL} characters, without '\\'")
    color = properties.get("color")
    if color is None and "color" in classification:
        rgb = classification["color"]
        if not (
            isinstance(rgb, list) and len(rgb) == 3 and all(type(c) is int and 0 <= c <= 255 for c in rgb)
        ):
            raise RequestError(f"{at}.classification.color", "three integers 0..255 [r, g, b]")
        color = "#{:02x}{:02x}{:02x}".format(*rgb)
    color = DEFAULT_COLOR if color is None else color
    if not is_color(color):
        raise RequestError(f"{at}.color", "an sRGB colour #rrggbb")
    kind = properties.get("kind")
    if kind is not None and kind not in KINDS:
        raise RequestError(f"{at}.kind", f"one of {', '.join(KINDS)}, not {kind!r}")
    return label, str(color).lower(), kind


def _points(gtype: str, coordinates: Any, where: str, size: tuple[int, int]) -> np.ndarray:
    if gtype == "Point":
        pairs = [coordinates]
    elif gtype == "LineString":
        pairs = coordinates
    else:  # Polygon: the exterior ring alone
        if not isinstance(coordinates, list) or not coordinates:
            raise RequestError(where, "a Polygon needs a list of rings, its exterior first")
        pairs = coordinates[0]
    if not isinstance(pairs, list):
        raise RequestError(where, f"a {gtype} needs a list of [x, y] positions")
    if len(pairs) > MAX_POINTS + 1:
        raise RequestError(where, f"at most {MAX_POINTS} points in one shape, not {len(pairs)}")
    points = _array(pairs, gtype, where)
    if gtype == "Polygon":
        if len(points) > 1 and np.array_equal(points[0], points[-1]):
            points = points[:-1]  # GeoJSON closes its rings; DICOM's POLYGON is implicitly closed
        if not _three_distinct(points):
            raise RequestError(where, "a Polygon needs at least 3 points")
    elif gtype == "LineString" and len(points) < 2:
        raise RequestError(where, "a LineString needs at least 2 points")
    columns, rows = size
    outside = (points[:, 0] < 0) | (points[:, 0] > columns) | (points[:, 1] < 0) | (points[:, 1] > rows)
    if outside.any():
        x, y = points[int(np.argmax(outside))]
        raise RequestError(
            where, f"the point ({x:g}, {y:g}) is outside the slide's level 0 ({columns} x {rows} pixels)"
        )
    return points


def _array(pairs: list[Any], gtype: str, where: str) -> np.ndarray:
    """The (n, 2) positions of ``pairs``: converted by numpy at once (a million points in well
    under a second), then, when that fails or gives anything but finite numbers, looked at one by
    one to name the first wrong position."""
    if not pairs:
        return np.empty((0, 2), dtype=np.float64)
    try:
        found = np.array(pairs)
    except ValueError:  # ragged
        found = None
    if (
        found is not None
        and found.ndim == 2
        and found.shape[1] in (2, 3)  # a third (z) value is ignored
        and found.dtype.kind in "iuf"
        and np.isfinite(found).all()
    ):
        return np.asarray(found[:, :2], dtype=np.float64)
    for index, pair in enumerate(pairs):  # noqa: B007 (the index after the loop names the position)
        if (
            not isinstance(pair, list)
            or len(pair) not in (2, 3)
            or not all(type(v) in (int, float) and math.isfinite(v) for v in pair)
        ):
            break
    else:
        index = 0
    raise RequestError(f"{where}[{index}]" if gtype != "Point" else where, "a position [x, y] of numbers")


def _three_distinct(points: np.ndarray) -> bool:
    """Whether ``points`` holds at least three different points (without sorting them)."""
    if len(points) < 3:
        return False
    other = (points != points[0]).any(axis=1)
    if not other.any():
        return False
    second = points[int(np.argmax(other))]
    return bool((other & (points != second).any(axis=1)).any())


def _kind_of(gtype: str, points: np.ndarray) -> str:
    """The kind of a shape that does not say it (QuPath's, another tool's)."""
    if gtype == "Point":
        return "point"
    if gtype == "LineString":
        return "line" if len(points) == 2 else "freehand"
    if len(points) == 4 and _axis_aligned(points):
        return "rectangle"
    return "polygon"


def _axis_aligned(points: np.ndarray) -> bool:
    xs, ys = np.unique(points[:, 0]), np.unique(points[:, 1])
    if len(xs) != 2 or len(ys) != 2:
        return False
    return all(
        (points[i, 0] == points[(i + 1) % 4, 0]) != (points[i, 1] == points[(i + 1) % 4, 1]) for i in range(4)
    )


def feature_collection(shapes: list[Shape], qupath: bool = False) -> dict[str, Any]:
    """The FeatureCollection of ``shapes`` (coordinates as float32 numpy arrays: serialize with
    orjson's OPT_SERIALIZE_NUMPY, which writes each in its shortest form); ``qupath`` adds
    QuPath's properties (objectType, classification, name)."""
    features = []
    for shape in shapes:
        points = shape.points.astype(np.float32)
        coordinates: Any
        if shape.geometry == "Point":
            coordinates = points[0]
        elif shape.geometry == "LineString":
            coordinates = points
        else:
            coordinates = [np.vstack([points, points[:1]])]
        properties: dict[str, Any] = {"label": shape.label, "color": shape.color, "kind": shape.kind}
        if shape.measurement:
            properties["measurement"] = shape.measurement
        if qupath:
            rgb = [int(shape.color[i : i + 2], 16) for i in (1, 3, 5)]
            properties = {
                "objectType": "annotation",
                **(
                    {"name": shape.label, "classification": {"name": shape.label, "color": rgb}}
                    if shape.label
                    else {}
                ),
                **properties,
            }
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": shape.geometry, "coordinates": coordinates},
                "properties": properties,
            }
        )
    return {"type": "FeatureCollection", "features": features}
