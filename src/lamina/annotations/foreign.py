"""What other tools store about a slide, shown read-only: structured reports' image regions and
segmentations' outlines, as :class:`~lamina.annotations.shapes.Shape` in level-0 pixels.

- SR (Comprehensive, Comprehensive 3D, Enhanced; TID 1500 or any tree): every SCOORD whose
  IMAGE reference names one of the slide's instances (scaled from that level to level 0), and
  every SCOORD3D in the slide's frame of reference (mapped from the slide coordinate system in mm
  to level-0 pixels by the slide's position, orientation and spacing). The label is the
  measurement group's finding (a sibling CODE item), else its tracking identifier, else the
  region's concept name.
- SEG: each segment's mask over the whole total pixel matrix, reduced to at most :data:`MAX_GRID`
  cells a side (a cell is in the segment when any of its pixels is), outlined as the polygons of
  the cells' edges (holes included as polygons of their own), scaled to level 0. The work is bound
  by :data:`MAX_SEG_PIXELS`: a larger segmentation is not read.
"""

from __future__ import annotations

import math
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset

from lamina.annotations.shapes import DEFAULT_COLOR, Shape, hex_of_lab

__all__ = ["MAX_GRID", "MAX_SEG_PIXELS", "read_seg", "read_sr"]

MAX_GRID = 512
MAX_SEG_PIXELS = 1 << 28
MAX_SHAPES = 10_000
_FINDING = "121071"
_TRACKING = "112039"
_GRAPHIC = {"POINT": ("point", "Point"), "MULTIPOINT": ("point", "Point"), "POLYLINE": ("line", "LineString")}


def read_sr(ds: Dataset, scales: dict[str, float], level0: Dataset) -> list[Shape]:
    """The regions of a structured report on the slide (``scales``: level-0 pixels per pixel of
    each of the slide's instances, by SOP Instance UID; ``level0``: its level-0 header)."""
    shapes: list[Shape] = []
    frame = str(level0.get("FrameOfReferenceUID", ""))
    transformer = None
    for item, siblings in _walk(ds.get("ContentSequence", [])):
        kind = item.get("ValueType")
        if kind == "SCOORD":
            scale = _image_scale(item, scales)
            if scale is None:
                continue
            points = np.asarray(item.GraphicData, dtype=np.float64).reshape(-1, 2) * scale
        elif kind == "SCOORD3D" and frame and str(item.get("ReferencedFrameOfReferenceUID", "")) == frame:
            if transformer is None:
                transformer = hd.spatial.ReferenceToPixelTransformer.for_image(
                    level0, for_total_pixel_matrix=True, round_output=False, drop_slice_index=True
                )
            triples = np.asarray(item.GraphicData, dtype=np.float64).reshape(-1, 3)
            # (column, row) from 1 at the centre of the first pixel: 0 at its top-left corner here
            points = transformer(triples)[:, :2] - 0.5
        else:
            continue
        shape = _shape(str(item.get("GraphicType", "")), points, _label(item, siblings))
        if shape is not None:
            shapes.append(shape)
        if len(shapes) >= MAX_SHAPES:
            break
    return shapes


def _walk(items: Any, depth: int = 0) -> Any:
    """(item, its siblings) of a content tree, depth first (bounded depth)."""
    if depth > 32:
        return
    for item in items:
        yield item, items
        yield from _walk(item.get("ContentSequence", []), depth + 1)


def _image_scale(item: Dataset, scales: dict[str, float]) -> float | None:
    for child in item.get("ContentSequence", []):
        for ref in child.get("ReferencedSOPSequence", []):
            found = scales.get(str(ref.get("ReferencedSOPInstanceUID", "")))
            if found is not None:
                return found
    return None


def _meaning(item: Dataset, keyword: str) -> str:
    codes = item.get(keyword, [])
    return str(codes[0].get("CodeMeaning", "")) if codes else ""


def _label(item: Dataset, siblings: Any) -> str:
    finding = tracking = ""
    for sibling in siblings:
        concept = sibling.get("ConceptNameCodeSequence", [])
        value = str(concept[0].get("CodeValue", "")) if concept else ""
        if sibling.get("ValueType") == "CODE" and value == _FINDING:
            finding = _meaning(sibling, "ConceptCodeSequence")
        elif sibling.get("ValueType") == "TEXT" and value == _TRACKING:
            tracking = str(sibling.get("TextValue", ""))
    return (finding or tracking or _meaning(item, "ConceptNameCodeSequence"))[:64]


def _shape(graphic: str, points: np.ndarray, label: str) -> Shape | None:
    if len(points) == 0 or not np.isfinite(points).all():
        return None
    closed = len(points) >= 4 and np.array_equal(points[0], points[-1])
    if graphic == "POLYLINE" and closed:  # SCOORD's polygon: a polyline back to its start
        graphic = "POLYGON"
    if graphic in _GRAPHIC:
        kind, geometry = _GRAPHIC[graphic]
        if geometry == "LineString" and len(points) < 2:
            return None
        if geometry == "LineString" and len(points) > 2:
            kind = "freehand"
        return Shape(kind, label, DEFAULT_COLOR, points[:1] if geometry == "Point" else points, geometry)
    if graphic == "POLYGON" and len(points) >= 3:
        if np.array_equal(points[0], points[-1]):
            points = points[:-1]  # SR closes its polygons
        return Shape("polygon", label, DEFAULT_COLOR, points) if len(points) >= 3 else None
    if graphic == "ELLIPSE" and len(points) == 4:
        from lamina.annotations.ann import ellipse

        return Shape("polygon", label, DEFAULT_COLOR, ellipse(points))
    if graphic == "CIRCLE" and len(points) == 2:
        radius = float(np.hypot(*(points[1] - points[0])))
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        ring = points[0] + radius * np.column_stack([np.cos(angles), np.sin(angles)])
        return Shape("polygon", label, DEFAULT_COLOR, ring)
    return None


def read_seg(ds: Dataset, level0_columns: int) -> list[Shape]:
    """The outlines of each segment of a segmentation of the slide (see the module)."""
    seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    rows, columns = (
        int(ds.get("TotalPixelMatrixRows", ds.Rows)),
        int(ds.get("TotalPixelMatrixColumns", ds.Columns)),
    )
    if rows * columns > MAX_SEG_PIXELS:
        return []
    step = max(1, math.ceil(max(rows, columns) / MAX_GRID))
    scale = level0_columns / columns * step
    tiled = "TotalPixelMatrixRows" in ds
    shapes: list[Shape] = []
    for item in ds.SegmentSequence:
        number = int(item.SegmentNumber)
        if tiled:
            mask = seg.get_total_pixel_matrix(segment_numbers=[number], combine_segments=True)
        else:
            mask = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID),
                source_frame_numbers=[1],
                segment_numbers=[number],
                combine_segments=True,
            )[0]
        grid = _reduce(np.asarray(mask) > 0, step)
        lab = item.get("RecommendedDisplayCIELabValue")
        color = hex_of_lab(lab) if lab is not None else DEFAULT_COLOR
        label = str(item.get("SegmentLabel", "") or f"segment {number}")[:64]
        for ring in outlines(grid):
            shapes.append(Shape("freehand", label, color, ring.astype(np.float64) * scale, "Polygon"))
            if len(shapes) >= MAX_SHAPES:
                return shapes
    return shapes


def _reduce(mask: np.ndarray, step: int) -> np.ndarray:
    """``mask`` in cells of ``step`` x ``step`` pixels: a cell is set when any of its pixels is."""
    if step == 1:
        return mask
    rows, columns = mask.shape
    padded = np.zeros((math.ceil(rows / step) * step, math.ceil(columns / step) * step), dtype=bool)
    padded[:rows, :columns] = mask
    blocks = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step)
    cells: np.ndarray = np.asarray(blocks.any(axis=(1, 3)))
    return cells


def outlines(grid: np.ndarray) -> list[np.ndarray]:
    """The closed outlines (x, y corner points, each ring open) of the set cells of ``grid``:
    each boundary edge directed with the set cell on its right, chained into rings, collinear
    points dropped."""
    padded = np.pad(grid.astype(bool), 1)
    following: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def edge(start: tuple[int, int], end: tuple[int, int]) -> None:
        following.setdefault(start, []).append(end)

    inside = padded[1:-1, 1:-1]
    # each side of a set cell whose neighbour is clear: (dy, dx, start corner, end corner)
    for dy, dx, (sx, sy), (ex, ey) in (
        (-1, 0, (0, 0), (1, 0)),  # top: left to right
        (1, 0, (1, 1), (0, 1)),  # bottom: right to left
        (0, -1, (0, 1), (0, 0)),  # left: up
        (0, 1, (1, 0), (1, 1)),  # right: down
    ):
        neighbour = padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
        for y, x in zip(*np.nonzero(inside & ~neighbour), strict=True):
            edge((int(x) + sx, int(y) + sy), (int(x) + ex, int(y) + ey))
    rings = []
    while following:
        start = next(iter(following))
        ring = [start]
        point = start
        while True:
            ends = following[point]
            end = ends.pop()
            if not ends:
                del following[point]
            if end == start:
                break
            ring.append(end)
            point = end
        points = np.array(ring, dtype=np.int64)
        before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
        turn = (points[:, 0] - before[:, 0]) * (after[:, 1] - points[:, 1]) - (
            points[:, 1] - before[:, 1]
        ) * (after[:, 0] - points[:, 0])
        kept = points[turn != 0]
        if len(kept) >= 3:
            rings.append(kept)
    return rings
