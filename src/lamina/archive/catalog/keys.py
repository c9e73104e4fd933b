"""The search keys: the attributes the catalog can match, by DICOM keyword or sequence path.

A key belongs to a level of the Study Root information model (PS3.4 C.6.2) and names the catalog
column it is matched on and how its values compare (:class:`~lamina.archive.catalog.matching.Kind`).
Matching is relational: a search may use the keys of its level and of the levels above it, and the
slide's keys (its container, specimen, stain and organ) also select the studies that hold a
matching slide. Besides DICOM keywords, ``stain`` and ``organ`` (the slide's, as the lab's
manifest gave them) are keys.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from lamina.archive.catalog import tables as t
from lamina.archive.catalog.matching import Kind


class Level(enum.IntEnum):
    """The query levels, from the top (C-FIND's IMAGE is INSTANCE)."""

    STUDY = 0
    SERIES = 1
    INSTANCE = 2


class Via(enum.Enum):
    """Where a key's column is, seen from a study."""

    DIRECT = "direct"
    SLIDES = "slides"  # a slide (series) column: at study level, any slide of the study matches
    SERIES = "series"  # ModalitiesInStudy: any series of the study matches


@dataclass(frozen=True)
class Key:
    """A search key: its level, how it compares, the column matched (and, for a date with a time
    of its own, the time's column, for combined date and time matching)."""

    level: Level
    kind: Kind
    column: Any  # a table column; Any because SQLAlchemy's Column types are invariant
    via: Via = Via.DIRECT
    time: Any = None

    def matches_at(self, level: Level) -> bool:
        """Whether a search at ``level`` can match this key (slide keys also select studies)."""
        return self.level <= level or self.via is Via.SLIDES


SPECIMEN_IDENTIFIER = "SpecimenDescriptionSequence.SpecimenIdentifier"
ORGAN_MEANING = "SpecimenDescriptionSequence.PrimaryAnatomicStructureSequence.CodeMeaning"

KEYS: dict[str, Key] = {
    "PatientName": Key(Level.STUDY, Kind.ANY_CASE, t.patients.c.patient_name),
    "PatientID": Key(Level.STUDY, Kind.TEXT, t.patients.c.patient_id),
    "PatientBirthDate": Key(Level.STUDY, Kind.DATE, t.patients.c.birth_date),
    "PatientSex": Key(Level.STUDY, Kind.TEXT, t.patients.c.sex),
    "AccessionNumber": Key(Level.STUDY, Kind.TEXT, t.studies.c.accession_number),
    "StudyDate": Key(Level.STUDY, Kind.DATE, t.studies.c.study_date, time=t.studies.c.study_time),
    "StudyTime": Key(Level.STUDY, Kind.TIME, t.studies.c.study_time),
    "StudyInstanceUID": Key(Level.STUDY, Kind.UID, t.studies.c.study_instance_uid),
    "ModalitiesInStudy": Key(Level.STUDY, Kind.TEXT, t.series.c.modality, Via.SERIES),
    "SeriesInstanceUID": Key(Level.SERIES, Kind.UID, t.series.c.series_instance_uid),
    "Modality": Key(Level.SERIES, Kind.TEXT, t.series.c.modality),
    "SeriesNumber": Key(Level.SERIES, Kind.NUMBER, t.series.c.series_number),
    "ContainerIdentifier": Key(Level.SERIES, Kind.TEXT, t.slides.c.container_id, Via.SLIDES),
    SPECIMEN_IDENTIFIER: Key(Level.SERIES, Kind.TEXT, t.slides.c.specimen_id, Via.SLIDES),
    # the organ as the lab named it: matched whatever its case, as ``organ`` is
    ORGAN_MEANING: Key(Level.SERIES, Kind.ANY_CASE, t.slides.c.organ, Via.SLIDES),
    "stain": Key(Level.SERIES, Kind.ANY_CASE, t.slides.c.stain, Via.SLIDES),
    "organ": Key(Level.SERIES, Kind.ANY_CASE, t.slides.c.organ, Via.SLIDES),
    "SOPInstanceUID": Key(Level.INSTANCE, Kind.UID, t.instances.c.sop_instance_uid),
    "SOPClassUID": Key(Level.INSTANCE, Kind.UID, t.instances.c.sop_class_uid),
    "InstanceNumber": Key(Level.INSTANCE, Kind.NUMBER, t.instances.c.instance_number),
}
"""Search keys the catalog can match, by keyword (``.``-joined keywords inside sequences)."""

#: The unique key of each level (PS3.4 C.6.2.1).
UNIQUE = {
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.INSTANCE: "SOPInstanceUID",
}
