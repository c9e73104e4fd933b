"""Search of the catalog: the SQL side of QIDO-RS (PS3.18 10.6).

A search is a list of :class:`Criterion` -- a search key and how to match it -- turned into one
SQLAlchemy query per level (:func:`studies_query`, :func:`series_query`, :func:`instances_query`).
The ``find_*`` functions run it for one page and add what each hit of the page needs: counts and
modalities by ``GROUP BY`` over the page's UIDs (through the ``study_instance_uid`` and
``series_instance_uid`` indexes of ``series`` and ``instances``), and the stored DICOM JSON of one
instance, for the attributes the catalog does not keep. Nothing is computed per catalog row.

Search keys are DICOM keywords, plus ``stain`` and ``organ`` (the slide's, as the lab's manifest
gave them) and the sequence path ``SpecimenDescriptionSequence.SpecimenIdentifier``; see
:data:`KEYS`. Text matching follows PS3.4 C.2.2.2: exact, or ``*`` / ``?`` wild cards through SQL
``LIKE``; person names, stains and organs match whatever their case. (SQLite's ``LIKE`` ignores
the case of ASCII letters for every key; PostgreSQL's does not.)

Order is stable, so that a client paging with ``offset`` sees every hit once: newest study first
(study date, then time, then Study Instance UID, all descending; studies without a date last),
then series number, Series Instance UID, instance number and SOP Instance UID.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Connection, Engine, Select, exists, func, or_, select

from lamina.archive.catalog import modalities
from lamina.archive.catalog import tables as t


class Level(enum.IntEnum):
    """The query levels, from the top: a key may be matched at its level and below."""

    STUDY = 0
    SERIES = 1
    INSTANCE = 2


class Kind(enum.Enum):
    """How a key's values compare."""

    TEXT = "text"  # exact, case-sensitive; wild cards
    ANY_CASE = "any case"  # exact or wild cards, whatever the case (PN, free-text lab terms)
    UID = "uid"  # exact or a list of UIDs
    DATE = "date"  # YYYYMMDD, exact or a range
    TIME = "time"  # HHMMSS.FFFFFF, a range (a time of reduced precision spans its minute or hour)
    NUMBER = "number"  # an integer, exact


class Via(enum.Enum):
    """Where a key's column is, seen from a study."""

    DIRECT = "direct"
    SLIDES = "slides"  # a slide (series) column: at study level, any slide of the study matches
    SERIES = "series"  # ModalitiesInStudy: any series of the study matches


@dataclass(frozen=True)
class Key:
    level: Level
    kind: Kind
    column: Any  # the table column matched
    via: Via = Via.DIRECT

    def matches_at(self, level: Level) -> bool:
        """Whether a search at ``level`` can match this key (slide keys also select studies)."""
        return self.level <= level or self.via is Via.SLIDES


KEYS: dict[str, Key] = {
    "PatientName": Key(Level.STUDY, Kind.ANY_CASE, t.patients.c.patient_name),
    "PatientID": Key(Level.STUDY, Kind.TEXT, t.patients.c.patient_id),
    "PatientBirthDate": Key(Level.STUDY, Kind.DATE, t.patients.c.birth_date),
    "PatientSex": Key(Level.STUDY, Kind.TEXT, t.patients.c.sex),
    "AccessionNumber": Key(Level.STUDY, Kind.TEXT, t.studies.c.accession_number),
    "StudyDate": Key(Level.STUDY, Kind.DATE, t.studies.c.study_date),
    "StudyTime": Key(Level.STUDY, Kind.TIME, t.studies.c.study_time),
    "StudyInstanceUID": Key(Level.STUDY, Kind.UID, t.studies.c.study_instance_uid),
    "ModalitiesInStudy": Key(Level.STUDY, Kind.TEXT, t.series.c.modality, Via.SERIES),
    "SeriesInstanceUID": Key(Level.SERIES, Kind.UID, t.series.c.series_instance_uid),
    "Modality": Key(Level.SERIES, Kind.TEXT, t.series.c.modality),
    "SeriesNumber": Key(Level.SERIES, Kind.NUMBER, t.series.c.series_number),
    "ContainerIdentifier": Key(Level.SERIES, Kind.TEXT, t.slides.c.container_id, Via.SLIDES),
    "SpecimenDescriptionSequence.SpecimenIdentifier": Key(
        Level.SERIES, Kind.TEXT, t.slides.c.specimen_id, Via.SLIDES
    ),
    "stain": Key(Level.SERIES, Kind.ANY_CASE, t.slides.c.stain, Via.SLIDES),
    "organ": Key(Level.SERIES, Kind.ANY_CASE, t.slides.c.organ, Via.SLIDES),
    "SOPInstanceUID": Key(Level.INSTANCE, Kind.UID, t.instances.c.sop_instance_uid),
    "SOPClassUID": Key(Level.INSTANCE, Kind.UID, t.instances.c.sop_class_uid),
    "InstanceNumber": Key(Level.INSTANCE, Kind.NUMBER, t.instances.c.instance_number),
}
"""Search keys the catalog can match, by name."""


# -- what to match ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Single:
    """Single value matching (a time of reduced precision matches the span it names)."""

    value: str


@dataclass(frozen=True)
class Wildcard:
    """Wild card matching: ``*`` any run of characters, ``?`` any one character."""

    pattern: str


@dataclass(frozen=True)
class AnyOf:
    """List matching: any of the values (UIDs, modalities)."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class Range:
    """Range matching of dates or times; an open end is ``None``."""

    low: str | None
    high: str | None


Match = Single | Wildcard | AnyOf | Range


@dataclass(frozen=True)
class Criterion:
    """One matching key of a search: the name of a :data:`KEYS` entry and how to match it."""

    key: str
    match: Match


# -- what comes back -------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyHit:
    """A study, with its patient; counts and modalities only in a search for studies."""

    study_instance_uid: str
    study_date: str | None
    study_time: str | None
    accession_number: str | None
    patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    modalities: tuple[str, ...] = ()
    series: int = 0
    instances: int = 0
    #: one instance's stored DICOM JSON (zlib), for the attributes the catalog does not keep
    metadata: bytes | None = None


@dataclass(frozen=True)
class SeriesHit:
    study: StudyHit
    series_instance_uid: str
    modality: str
    series_number: int | None
    container_id: str | None
    instances: int = 0
    metadata: bytes | None = None


@dataclass(frozen=True)
class InstanceHit:
    series: SeriesHit
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int
    rows: int
    columns: int
    number_of_frames: int
    total_pixel_matrix_columns: int
    total_pixel_matrix_rows: int
    transfer_syntax_uid: str
    metadata: bytes


H = TypeVar("H")


@dataclass(frozen=True)
class Found(Generic[H]):
    """One page of hits; ``more`` when hits follow it."""

    hits: list[H]
    more: bool


# -- conditions ------------------------------------------------------------------------------
def like_pattern(pattern: str) -> str:
    """A DICOM wild card pattern as a SQL ``LIKE`` pattern, escaped with ``\\``."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _time_high(value: str) -> str:
    """The last time a time of reduced precision names: ``1200`` -> ``120059.999999``."""
    whole, _, fraction = value.partition(".")
    return whole + "9" * (6 - len(whole)) + "." + fraction + "9" * (6 - len(fraction))


def _compare(kind: Kind, column: Any, match: Match) -> ColumnElement[bool]:
    if isinstance(match, Wildcard):
        if kind is Kind.ANY_CASE:
            return column.ilike(like_pattern(match.pattern), escape="\\")  # type: ignore[no-any-return]
        return column.like(like_pattern(match.pattern), escape="\\")  # type: ignore[no-any-return]
    if isinstance(match, AnyOf):
        if kind is Kind.ANY_CASE:
            return func.lower(column).in_([func.lower(value) for value in match.values])
        return column.in_(match.values)  # type: ignore[no-any-return]
    if isinstance(match, Range) or (kind is Kind.TIME and isinstance(match, Single)):
        low, high = (match.low, match.high) if isinstance(match, Range) else (match.value, match.value)
        bounds = []
        if low is not None:
            bounds.append(column >= low)
        if high is not None:
            bounds.append(column <= (_time_high(high) if kind is Kind.TIME else high))
        return bounds[0] & bounds[1] if len(bounds) == 2 else bounds[0]  # type: ignore[no-any-return]
    if kind is Kind.NUMBER:
        return column == int(match.value)  # type: ignore[no-any-return]
    if kind is Kind.ANY_CASE:
        return func.lower(column) == func.lower(match.value)
    return column == match.value  # type: ignore[no-any-return]


_OTHER_SERIES = t.series.alias("other_series")


def _condition(criterion: Criterion, level: Level) -> ColumnElement[bool]:
    key = KEYS[criterion.key]
    if not key.matches_at(level):
        raise ValueError(f"{criterion.key} is not an attribute of the {level.name.lower()} level or above")
    if key.via is Via.SERIES and isinstance(criterion.match, Single | AnyOf):
        # the modalities kept on the study's row (and in the study-order index)
        values = (criterion.match.value,) if isinstance(criterion.match, Single) else criterion.match.values
        return or_(*(modalities.has(value) for value in values))
    if key.via is Via.SERIES:
        # any series of the study, seen through an alias so that a series search's own row is not it
        column = _OTHER_SERIES.c[key.column.name]
        return exists().where(
            _OTHER_SERIES.c.study_instance_uid == t.studies.c.study_instance_uid,
            _compare(key.kind, column, criterion.match),
        )
    if key.via is Via.SLIDES and level is Level.STUDY:
        return exists().where(
            t.slides.c.study_instance_uid == t.studies.c.study_instance_uid,
            _compare(key.kind, key.column, criterion.match),
        )
    return _compare(key.kind, key.column, criterion.match)


# -- one query per level ---------------------------------------------------------------------
_STUDY_COLUMNS = (
    t.studies.c.study_instance_uid,
    t.studies.c.study_date,
    t.studies.c.study_time,
    t.studies.c.accession_number,
    t.patients.c.patient_id,
    t.patients.c.patient_name,
    t.patients.c.birth_date.label("patient_birth_date"),
    t.patients.c.sex.label("patient_sex"),
)
_SERIES_COLUMNS = (
    t.series.c.series_instance_uid,
    t.series.c.modality,
    t.series.c.series_number,
    t.slides.c.container_id,
)
_INSTANCE_COLUMNS = (
    t.instances.c.sop_instance_uid,
    t.instances.c.sop_class_uid,
    t.instances.c.instance_number,
    t.instances.c.rows,
    t.instances.c.columns,
    t.instances.c.number_of_frames,
    t.instances.c.total_pixel_matrix_columns,
    t.instances.c.total_pixel_matrix_rows,
    t.instances.c.transfer_syntax_uid,
    t.instances.c.metadata,
)
_STUDY_ORDER = (
    t.studies.c.study_date.desc().nulls_last(),
    t.studies.c.study_time.desc().nulls_last(),
    # descending too, so that one ascending index on (date, time, UID) serves the whole order
    t.studies.c.study_instance_uid.desc(),
)
_SERIES_ORDER = (*_STUDY_ORDER, t.series.c.series_number.nulls_last(), t.series.c.series_instance_uid)
_INSTANCE_ORDER = (*_SERIES_ORDER, t.instances.c.instance_number, t.instances.c.sop_instance_uid)

_STUDIES = t.studies.outerjoin(t.patients, t.studies.c.patient_pk == t.patients.c.pk)
_SERIES = t.series.join(t.studies, t.series.c.study_instance_uid == t.studies.c.study_instance_uid).outerjoin(
    t.patients, t.studies.c.patient_pk == t.patients.c.pk
)


def studies_query(criteria: Sequence[Criterion]) -> Select[Any]:
    """The UIDs of the studies matching every criterion, in the stable order.

    Only the studies' UIDs: a page is walked in ``ix_studies_date`` alone (an index-only scan;
    the index carries the study's modalities for ``ModalitiesInStudy``), and the patient is
    joined only when a criterion needs it. The skipped rows of a deep page then cost
    an index entry each, not a row of studies and one of patients (:func:`find_studies` reads
    the page's own rows afterwards)."""
    conditions = [_condition(criterion, Level.STUDY) for criterion in criteria]
    on_patient = any(KEYS[criterion.key].column.table is t.patients for criterion in criteria)
    source = _STUDIES if on_patient else t.studies
    query = select(t.studies.c.study_instance_uid).select_from(source).where(*conditions)
    return query.order_by(*_STUDY_ORDER)


def series_query(criteria: Sequence[Criterion]) -> Select[Any]:
    """Series (with their study, patient and slide) matching every criterion, in the stable order."""
    source = _SERIES.outerjoin(t.slides, t.slides.c.series_instance_uid == t.series.c.series_instance_uid)
    conditions = [_condition(criterion, Level.SERIES) for criterion in criteria]
    query = select(*_STUDY_COLUMNS, *_SERIES_COLUMNS).select_from(source).where(*conditions)
    return query.order_by(*_SERIES_ORDER)


def instances_query(criteria: Sequence[Criterion]) -> Select[Any]:
    """Instances (with their series, study, patient and slide) matching every criterion, in order."""
    source = t.instances.join(
        t.series, t.instances.c.series_instance_uid == t.series.c.series_instance_uid
    ).join(t.studies, t.series.c.study_instance_uid == t.studies.c.study_instance_uid)
    source = source.outerjoin(t.patients, t.studies.c.patient_pk == t.patients.c.pk).outerjoin(
        t.slides, t.instances.c.slide_id == t.slides.c.id
    )
    conditions = [_condition(criterion, Level.INSTANCE) for criterion in criteria]
    query = select(*_STUDY_COLUMNS, *_SERIES_COLUMNS, *_INSTANCE_COLUMNS).select_from(source)
    return query.where(*conditions).order_by(*_INSTANCE_ORDER)


# -- one page, with what its hits need -------------------------------------------------------
def _page(conn: Connection, query: Select[Any], limit: int, offset: int) -> tuple[list[Any], bool]:
    rows = list(conn.execute(query.limit(limit + 1).offset(offset)).mappings())
    return rows[:limit], len(rows) > limit


def _study(row: Any, **extra: Any) -> StudyHit:
    return StudyHit(**{column.key: row[column.key] for column in _STUDY_COLUMNS}, **extra)


def _series(row: Any, study: StudyHit, **extra: Any) -> SeriesHit:
    return SeriesHit(study, **{column.key: row[column.key] for column in _SERIES_COLUMNS}, **extra)


def _instances_and_first(conn: Connection, column: Any, uids: list[str]) -> dict[str, tuple[int, bytes]]:
    """For each study or series UID: its number of instances and one instance's stored JSON."""
    counted = conn.execute(
        select(column, func.count(), func.min(t.instances.c.sop_instance_uid))
        .where(column.in_(uids))
        .group_by(column)
    ).all()
    first = {sop: uid for uid, _, sop in counted}
    stored = dict(
        conn.execute(
            select(t.instances.c.sop_instance_uid, t.instances.c.metadata).where(
                t.instances.c.sop_instance_uid.in_(list(first))
            )
        ).all()
    )
    metadata = {first[sop]: blob for sop, blob in stored.items()}
    return {uid: (int(count), metadata[uid]) for uid, count, _ in counted}


def find_studies(engine: Engine, criteria: Sequence[Criterion], limit: int, offset: int) -> Found[StudyHit]:
    """One page of matching studies, each with its modalities, counts and one instance's JSON."""
    with engine.connect() as conn:
        keys, more = _page(conn, studies_query(criteria), limit, offset)
        uids = [key["study_instance_uid"] for key in keys]
        by_uid = {
            row["study_instance_uid"]: row
            for row in conn.execute(
                select(*_STUDY_COLUMNS).select_from(_STUDIES).where(t.studies.c.study_instance_uid.in_(uids))
            ).mappings()
        }
        # a study deleted between the two reads is left out of the page
        uids = [uid for uid in uids if uid in by_uid]
        rows = [by_uid[uid] for uid in uids]
        in_study: dict[str, list[str]] = {}
        series: dict[str, int] = {}
        by_modality = (
            select(t.series.c.study_instance_uid, t.series.c.modality, func.count())
            .where(t.series.c.study_instance_uid.in_(uids))
            .group_by(t.series.c.study_instance_uid, t.series.c.modality)
            .order_by(t.series.c.study_instance_uid, t.series.c.modality)
        )
        for uid, modality, count in conn.execute(by_modality):
            in_study.setdefault(uid, []).append(modality)
            series[uid] = series.get(uid, 0) + int(count)
        instances = _instances_and_first(conn, t.instances.c.study_instance_uid, uids)
    hits = []
    for row, uid in zip(rows, uids, strict=True):
        count, metadata = instances.get(uid, (0, None))
        hits.append(
            _study(
                row,
                modalities=tuple(in_study.get(uid, ())),
                series=series.get(uid, 0),
                instances=count,
                metadata=metadata,
            )
        )
    return Found(hits, more)


def find_series(engine: Engine, criteria: Sequence[Criterion], limit: int, offset: int) -> Found[SeriesHit]:
    """One page of matching series, each with its study, instance count and one instance's JSON."""
    with engine.connect() as conn:
        rows, more = _page(conn, series_query(criteria), limit, offset)
        uids = [row["series_instance_uid"] for row in rows]
        instances = _instances_and_first(conn, t.instances.c.series_instance_uid, uids)
    hits = []
    for row, uid in zip(rows, uids, strict=True):
        count, metadata = instances.get(uid, (0, None))
        hits.append(_series(row, _study(row), instances=count, metadata=metadata))
    return Found(hits, more)


def find_instances(
    engine: Engine, criteria: Sequence[Criterion], limit: int, offset: int
) -> Found[InstanceHit]:
    """One page of matching instances, each with its series, study and stored JSON."""
    with engine.connect() as conn:
        rows, more = _page(conn, instances_query(criteria), limit, offset)
    hits = [
        InstanceHit(
            _series(row, _study(row)), **{column.key: row[column.key] for column in _INSTANCE_COLUMNS}
        )
        for row in rows
    ]
    return Found(hits, more)
