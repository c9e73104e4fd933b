"""An archive to search: five slides of four patients whose identities try the matching rules
(a literal ``_`` and ``%`` in patient IDs, names in several cases, a case without accession
number, scan times across days and hours), and an annotation beside one slide (modality ANN).

The slides are sample SVS files (``lamina.sample``) whose scan date and time are set in their
description, so that each study has its own date and time; the manifest gives the identities.
Used by the engine's tests (tests/archive/test_search.py) and by the QIDO-RS / C-FIND oracle
(tests/dimse/test_find.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
import tifffile

from lamina.archive.archive import Archive
from lamina.archive.catalog import SlideRow
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.archive.objects import store_object
from lamina.sample import write_samples

FIELDS = (
    "patient_id",
    "patient_name",
    "birth_date",
    "sex",
    "accession_number",
    "specimen_id",
    "stain",
    "organ",
)
#: (identity, when the slide was scanned); slides 0 and 1 are two slides of one case (one study)
SLIDES = (
    (("SYN_0001", "DUPONT^MARIE", "1950-03-04", "F", "S26-00100", "S26-00100-A1", "HE", "Colon"),
     dt.datetime(2026, 1, 15, 8, 30, 0)),
    (("SYN_0001", "DUPONT^MARIE", "1950-03-04", "F", "S26-00100", "S26-00100-B1", "PAS", "Colon"),
     dt.datetime(2026, 1, 15, 8, 45, 0)),
    (("SYN%0002", "Martin^Jean", "1962-07-20", "M", "S26-00200", "S26_00200-A1", "HE", "Kidney"),
     dt.datetime(2026, 3, 2, 14, 5, 10)),
    (("SYNX0001", "DUPONT^PIERRE", "1971-11-30", "M", "S26-00300", "S26-00300-A1", "Masson trichrome",
      "Breast"), dt.datetime(2025, 12, 31, 11, 0, 0)),
    (("SYN10002", "MÜLLER^ANNA", "1988-01-09", "F", "", "S26-00400-A1", "HE", "Lung"),
     dt.datetime(2026, 3, 2, 9, 15, 0)),
)  # fmt: skip
ANNOTATED = 2  # the slide with an annotation beside it


@dataclass(frozen=True)
class Searchable:
    archive: Archive
    slides: list[SlideRow]  # in SLIDES order
    annotation: pydicom.Dataset  # stored in the study of slides[ANNOTATED]


def _scanned_at(path: Path, when: dt.datetime) -> None:
    """Set the scan date and time in the SVS description (in place: the same length)."""
    description = str(tifffile.tiffcomment(path))
    head, _, rest = description.partition("|Date = ")
    _, _, rest = rest.partition("|")
    _, _, rest = rest.partition("|")  # the Time field
    changed = f"{head}|Date = {when:%m/%d/%y}|Time = {when:%H:%M:%S}|{rest}"
    assert len(changed) == len(description), "the SVS sample's description changed its layout"
    tifffile.tiffcomment(path, changed)


def _annotation(slide_level: pydicom.Dataset) -> pydicom.Dataset:
    import highdicom as hd
    import numpy as np
    from highdicom.ann import (
        AnnotationCoordinateTypeValues,
        AnnotationGroup,
        AnnotationGroupGenerationTypeValues,
        GraphicTypeValues,
        MicroscopyBulkSimpleAnnotations,
    )
    from pydicom.sr.codedict import codes

    group = AnnotationGroup(
        number=1,
        uid=hd.UID(),
        label="nuclei",
        annotated_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        annotated_property_type=codes.SCT.Nucleus,
        graphic_type=GraphicTypeValues.POINT,
        graphic_data=[np.array([[10.0, 20.0]])],
        algorithm_type=AnnotationGroupGenerationTypeValues.MANUAL,
    )
    return MicroscopyBulkSimpleAnnotations(
        source_images=[slide_level],
        annotation_coordinate_type=AnnotationCoordinateTypeValues.SCOORD,
        annotation_groups=[group],
        series_instance_uid=hd.UID(),
        series_number=20,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lamina tests",
        manufacturer_model_name="tests",
        software_versions="1",
        device_serial_number="1",
    )


def build(archive: Archive, folder: Path) -> Searchable:
    """Ingest the slides of :data:`SLIDES` into ``archive`` (empty) and store the annotation."""
    folder.mkdir(parents=True)
    files = []
    for index, (_, when) in enumerate(SLIDES):
        (sample,) = write_samples(folder / f"sample-{index}", ["aperio_svs"], size=(256, 192), seed=index)
        path = folder / f"slide-{index}.svs"
        shutil.move(sample.path, path)
        _scanned_at(path, when)
        files.append(path)
    with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("file", *FIELDS))
        for path, (identity, _) in zip(files, SLIDES, strict=True):
            writer.writerow((path.name, *identity))
    manifest = load_manifest(folder / "manifest.csv")
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
    slides = []
    for path in files:
        (candidate,) = discover([path])
        result = ingestor.ingest(candidate, manifest)
        assert result.status == "ingested", result.reason
        slide = archive.catalog.slide(result.slide_id or "")
        assert slide is not None
        slides.append(slide)
    (exported,) = archive.export(folder / "export", [slides[ANNOTATED].id])
    annotation = _annotation(pydicom.dcmread(exported.files[0]))
    annotation.save_as(folder / "annotation.dcm", enforce_file_format=True)
    store_object(archive.catalog, archive.store, folder / "annotation.dcm", "tests")
    return Searchable(archive, slides, annotation)
