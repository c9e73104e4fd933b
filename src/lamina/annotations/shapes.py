"""One annotation's shape as lamina keeps it between GeoJSON and DICOM: its kind, label, colour
and points (level-0 pixels, x right, y down, float), and its measurement from the pixel spacing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from highdicom.color import CIELabColor

__all__ = ["KINDS", "Shape", "hex_of_lab", "lab_of_hex", "measure"]

#: the kinds a feature may be, with the GeoJSON geometry each is drawn as
KINDS: dict[str, tuple[str, ...]] = {
    "point": ("Point",),
    "line": ("LineString",),
    "rectangle": ("Polygon",),
    "polygon": ("Polygon",),
    "freehand": ("Polygon", "LineString"),
}
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
DEFAULT_COLOR = "#ffff00"


@dataclass
class Shape:
    """One annotation: ``points`` is an (n, 2) float array; a polygon's ring is kept open (its
    first point not repeated at its end)."""

    kind: str
    label: str
    color: str
    points: np.ndarray
    geometry: str = ""  # Point, LineString or Polygon
    measurement: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.geometry:
            self.geometry = KINDS[self.kind][0]


def is_color(text: Any) -> bool:
    return isinstance(text, str) and _HEX.fullmatch(text) is not None


def lab_of_hex(color: str) -> CIELabColor:
    """The CIELab colour of an sRGB ``#rrggbb`` (a group's Recommended Display CIELab Value)."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return CIELabColor.from_rgb(r, g, b)


def hex_of_lab(value: Any) -> str:
    """``#rrggbb`` of a DICOM CIELab value (three integers 0..65535)."""
    l_star, a_star, b_star = (int(v) for v in value)
    r, g, b = CIELabColor.from_dicom_value((l_star, a_star, b_star)).to_rgb()
    return f"#{int(r):02x}{int(g):02x}{int(b):02x}"


def polygon_area(points: np.ndarray) -> float:
    """The area of a simple polygon (shoelace), in squared pixels."""
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def polyline_length(points: np.ndarray) -> float:
    """The length of an open line, in pixels."""
    steps = np.diff(points.astype(np.float64), axis=0)
    return float(np.hypot(steps[:, 0], steps[:, 1]).sum())


def measure(shape: Shape, spacing_mm: tuple[float, float] | None) -> dict[str, float]:
    """A line's length in mm, a closed shape's area in mm² (``spacing_mm``: the level-0 pixel's
    (column, row) spacing), {} for a point or without spacing."""
    if spacing_mm is None or shape.geometry == "Point":
        return {}
    sx, sy = spacing_mm
    scaled = shape.points.astype(np.float64) * np.array([sx, sy])
    if shape.geometry == "LineString":
        return {"length_mm": round(polyline_length(scaled), 6)}
    return {"area_mm2": round(polygon_area(scaled), 9)}
