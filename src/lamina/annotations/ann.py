"""Microscopy Bulk Simple Annotations (PS3.3 A.87), made and read with highdicom.

One group per (label, kind, colour), its graphic type POINT (points), POLYLINE (lines, open free
hand) or POLYGON (rectangles, polygons, closed free hand); its label the label (a shape without
one: the kind, flagged in the group's description), its colour the group's Recommended Display
CIELab Value, its kind in the description (``lamina kind=rectangle``); 2D coordinates in the
level-0 total pixel matrix (float32); lines' lengths (mm) and closed shapes' areas (mm²) as the
group's measurements. The author is the Content Creator's Name and Identification (a code of
scheme ``99LAMINA`` whose value is the principal's id, with its lab).

Read back (any tool's): every group of a 2D annotation, ELLIPSE as a 64-gon and RECTANGLE as a
rectangle; a group without lamina's description gets its kind from its graphic type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.coding import Code

from lamina import __version__
from lamina.annotations.shapes import DEFAULT_COLOR, Shape, hex_of_lab, lab_of_hex
from lamina.errors import RequestError

__all__ = ["ANN_CLASS", "Author", "build", "read"]

ANN_CLASS = "1.2.840.10008.5.1.4.1.1.91.1"
AUTHOR_SCHEME = "99LAMINA"
_GRAPHIC = {"point": "POINT", "line": "POLYLINE", "rectangle": "POLYGON", "polygon": "POLYGON"}
_CATEGORY = Code("91723000", "SCT", "Anatomical Structure")
_TYPE = Code("85756007", "SCT", "Tissue")
LENGTH = Code("410668003", "SCT", "Length")
AREA = Code("42798000", "SCT", "Area")
_MM = Code("mm", "UCUM", "millimeter")
_MM2 = Code("mm2", "UCUM", "square millimeter")
_PREFIX = "lamina kind="
_UNLABELLED = " unlabelled"


class Author:
    """Who made an annotation: the principal's id, display name and lab."""

    def __init__(self, id: str, name: str, lab: str) -> None:
        self.id, self.name, self.lab = id, name, lab


def build(
    source: Dataset, shapes: Sequence[Shape], author: Author, series_uid: str, instance_number: int
) -> hd.ann.MicroscopyBulkSimpleAnnotations:
    """The annotation instance of ``shapes`` on the level-0 image ``source`` (its header)."""
    grouped: dict[tuple[str, str, str, str], list[Shape]] = {}
    for shape in shapes:
        graphic = _GRAPHIC.get(shape.kind) or ("POLYGON" if shape.geometry == "Polygon" else "POLYLINE")
        grouped.setdefault((shape.label, shape.kind, shape.color, graphic), []).append(shape)
    groups = []
    for number, ((label, kind, color, graphic), members) in enumerate(grouped.items(), start=1):
        measurements = []
        if members[0].measurement:
            name, unit, key = (
                (LENGTH, _MM, "length_mm") if graphic == "POLYLINE" else (AREA, _MM2, "area_mm2")
            )
            values = np.array([m.measurement[key] for m in members], dtype=np.float32)
            measurements = [hd.ann.Measurements(name=name, values=values, unit=unit)]
        groups.append(
            hd.ann.AnnotationGroup(
                number=number,
                uid=hd.UID(),
                label=label or kind,
                annotated_property_category=_CATEGORY,
                annotated_property_type=_TYPE,
                graphic_type=graphic,
                graphic_data=[m.points.astype(np.float32) for m in members],
                algorithm_type="MANUAL",
                description=_PREFIX + kind + ("" if label else _UNLABELLED),
                measurements=measurements or None,
                display_color=lab_of_hex(color),
            )
        )
    person = Code(author.id, AUTHOR_SCHEME, author.name or author.id)
    try:
        return hd.ann.MicroscopyBulkSimpleAnnotations(
            source_images=[source],
            annotation_coordinate_type="2D",
            annotation_groups=groups,
            series_instance_uid=series_uid,
            series_number=900,
            sop_instance_uid=hd.UID(),
            instance_number=instance_number,
            manufacturer="lamina",
            manufacturer_model_name="lamina",
            software_versions=__version__,
            device_serial_number="lamina",
            content_description="Annotations",
            content_label="ANNOTATIONS",
            content_creator_name=_person_name(author.name or author.id),
            content_creator_identification=hd.content.ContentCreatorIdentificationCodeSequence(
                person_identification_codes=[person], institution_name=author.lab or "lamina"
            ),
        )
    except (ValueError, TypeError) as exc:  # highdicom's checks of what it is given
        raise RequestError("features", f"cannot be made into a DICOM annotation: {exc}") from exc


def _person_name(name: str) -> str:
    """A display name as a DICOM PN (its components separators and backslashes taken out)."""
    # one component, made explicit with a trailing caret (the family name field holds it whole)
    return name.replace("\\", " ").replace("^", " ").replace("=", " ")[:63] + "^"


def author_of(ds: Dataset) -> tuple[str | None, str | None]:
    """(display name, lamina principal id) of an annotation's content creator, as far as known."""
    name = ds.get("ContentCreatorName")
    principal = None
    for item in ds.get("ContentCreatorIdentificationCodeSequence", []):
        for code in item.get("PersonIdentificationCodeSequence", []):
            if code.get("CodingSchemeDesignator") == AUTHOR_SCHEME:
                principal = str(code.get("CodeValue") or code.get("LongCodeValue") or "") or None
                if code.get("CodeMeaning"):
                    name = name or code.CodeMeaning
    shown = str(name).replace("^", " ").strip() if name else ""
    return shown or None, principal


def read(ds: Dataset, scale: float = 1.0) -> list[Shape]:
    """The shapes of an annotation instance (2D; ``scale``: level-0 pixels per pixel of the image
    it annotates)."""
    ann = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(ds, copy=False)
    coordinate_type = ann.annotation_coordinate_type
    if coordinate_type.value != "2D":
        return []
    shapes: list[Shape] = []
    for group in ann.get_annotation_groups():
        graphic = group.graphic_type.value
        lab = group.get("RecommendedDisplayCIELabValue")
        color = hex_of_lab(lab) if lab is not None else DEFAULT_COLOR
        description = str(group.get("AnnotationGroupDescription", "") or "")
        kind, label = None, str(group.label)
        if description.startswith(_PREFIX):
            words = description[len(_PREFIX) :].split(" ")
            kind = words[0] if words[0] in ("point", "line", "rectangle", "polygon", "freehand") else None
            if kind is not None and "unlabelled" in words[1:] and label == kind:
                label = ""
        names, values, _ = group.get_measurements()
        column = _measurement_column(names)
        for index, points in enumerate(group.get_graphic_data(coordinate_type)):
            shape = _shape(graphic, kind, label, color, np.asarray(points, dtype=np.float64)[:, :2] * scale)
            if shape is None:
                continue
            if column is not None and values.shape[0] > index and not math.isnan(values[index, column[0]]):
                # float32 as stored, in its shortest decimal form
                shape.measurement = {column[1]: float(str(np.float32(values[index, column[0]])))}
            shapes.append(shape)
    return shapes


def _measurement_column(names: Sequence[hd.sr.CodedConcept]) -> tuple[int, str] | None:
    for index, name in enumerate(names):
        if name.value == LENGTH.value and name.scheme_designator == "SCT":
            return index, "length_mm"
        if name.value == AREA.value and name.scheme_designator == "SCT":
            return index, "area_mm2"
    return None


def _shape(graphic: str, kind: str | None, label: str, color: str, points: np.ndarray) -> Shape | None:
    if graphic == "POINT":
        return Shape("point", label, color, points[:1])
    if graphic == "POLYLINE":
        if len(points) < 2:
            return None
        found = kind if kind in ("line", "freehand") else ("line" if len(points) == 2 else "freehand")
        return Shape(found, label, color, points, "LineString")
    if graphic == "ELLIPSE" and len(points) == 4:
        return Shape("polygon", label, color, ellipse(points), "Polygon")
    if graphic in ("POLYGON", "RECTANGLE") and len(points) >= 3:
        if graphic == "RECTANGLE":
            kind = "rectangle"
        return Shape(
            kind if kind in ("rectangle", "polygon", "freehand") else "polygon", label, color, points
        )
    return None


def ellipse(axes: np.ndarray, sides: int = 64) -> np.ndarray:
    """A polygon of ``sides`` points on the ellipse of two axes' end points (ELLIPSE: major axis
    first, then minor)."""
    center = axes.mean(axis=0)
    major, minor = (axes[1] - axes[0]) / 2, (axes[3] - axes[2]) / 2
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    ring: np.ndarray = center + np.outer(np.cos(angles), major) + np.outer(np.sin(angles), minor)
    return ring
