"""Annotations on slides, kept as DICOM Microscopy Bulk Simple Annotations (highdicom), exchanged
as GeoJSON (lamina's and QuPath's), with the regions of other tools' structured reports and
segmentations shown beside them (docs/annotations.md).

- :mod:`.shapes`: one shape, its colour (sRGB ↔ CIELab) and its measurement (mm, mm²);
- :mod:`.geojson`: GeoJSON read (bounded, every refusal naming its field) and written;
- :mod:`.ann`: the annotation instance made and read;
- :mod:`.foreign`: SR regions and SEG outlines;
- :mod:`.service`: a slide's annotations in the archive: listed, made ready to store, deleted.
"""

from lamina.annotations.ann import Author
from lamina.annotations.geojson import feature_collection, read_features
from lamina.annotations.service import Annotation, Annotations
from lamina.annotations.shapes import Shape

__all__ = ["Annotation", "Annotations", "Author", "Shape", "feature_collection", "read_features"]
