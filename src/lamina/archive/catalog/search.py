"""Search of the catalog: the one engine under QIDO-RS (PS3.18 10.6) and C-FIND (PS3.4 C.4.1).

A search is a list of :class:`Criterion` -- a search key (:data:`~lamina.archive.catalog.keys.KEYS`)
and how to match it (:mod:`~lamina.archive.catalog.matching`, where the matching rules are written
down) -- read by :func:`criterion` from a key's values as the client wrote them, and turned into one
SQLAlchemy query per level (:func:`studies_query`, :func:`series_query`, :func:`instances_query`).
The protocols only read their request into criteria: QIDO-RS from the query string, C-FIND from
the identifier; both run the functions below and get the same hits.

:func:`find_studies`, :func:`find_series` and :func:`find_instances` run a search for one page
(QIDO-RS's ``limit`` / ``offset``); :func:`iter_matches` runs it for every match up to a limit
(C-FIND), reading the details in chunks. Each hit gets what it needs by ``GROUP BY`` over the
chunk's UIDs (through the ``study_instance_uid`` and ``series_instance_uid`` indexes of ``series``
and ``instances``): counts and modalities, and the stored DICOM JSON of one instance, for the
attributes the catalog does not keep (:mod:`lamina.mapping.attributes` turns a hit into DICOM
attributes). Nothing is computed per catalog row.

Order is stable, so that a client paging with ``offset`` sees every hit once: newest study first
(study date, then time, then Study Instance UID, all descending; studies without a date last),
then series number, Series Instance UID, instance number and SOP Instance UID.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Connection, Engine, Select, exists, false, func, or_, select, union_all

from lamina.archive.catalog import availability, matching, modalities
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.keys import KEYS, Key, Level, Via
from lamina.archive.catalog.matching import (
    AnyOf,
    DateTimeRange,
    Empty,
    Kind,
    Match,
    Range,
    Single,
    Wildcard,
    like_pattern,
)
from lamina.errors import RequestError

__all__ = [
    "KEYS",
    "AnyOf",
    "Criterion",
    "DateTimeRange",
    "Empty",
    "Found",
    "InstanceHit",
    "Key",
    "Kind",
    "Level",
    "Match",
    "Range",
    "SeriesHit",
    "Single",
    "StudyHit",
    "Via",
    "Wildcard",
    "combine_date_time",
    "criterion",
    "find_instances",
    "find_series",
    "find_studies",
    "instances_query",
    "iter_matches",
    "like_pattern",
    "series_query",
    "studies_query",
]


@dataclass(frozen=True)
class Criterion:
    """One matching key of a search: the name of a :data:`KEYS` entry and how to match it
    (``parameter``: the key as the client wrote it, for errors)."""

    key: str
    match: Match
    parameter: str = field(default="", compare=False, repr=False)


def criterion(
    key: str, values: Sequence[str], *, parameter: str | None = None, empty_value: bool = False
) -> Criterion | None:
    """The criterion of ``key`` given its values (split on ``\\``); None for universal matching.

    ``parameter`` names the key in errors as the client wrote it (a tag, a path); ``empty_value``
    turns ``""`` into empty value matching. Raises :class:`~lamina.errors.RequestError`.
    """
    match = matching.parse(KEYS[key].kind, parameter or key, values, empty_value=empty_value)
    return None if match is None else Criterion(key, match, parameter or key)


def combine_date_time(criteria: Sequence[Criterion], *, combined: bool = True) -> list[Criterion]:
    """The criteria, with ``StudyDate`` and ``StudyTime`` made one range of moments when
    ``combined`` and both are single values or ranges (PS3.4 C.2.2.2.5.1).

    Raises :class:`~lamina.errors.RequestError` for a range of moments that ends before it starts,
    and for a range of times that crosses midnight where it stays one (PS3.4 C.2.2.2.5).
    """
    by_key = {item.key: item for item in criteria}
    date, time = by_key.get("StudyDate"), by_key.get("StudyTime")
    result = list(criteria)
    if combined and date and time and all(isinstance(c.match, Single | Range) for c in (date, time)):
        moments = matching.combined(date.match, time.match)
        if moments.low and moments.high and _start(moments.low) > _end(moments.high):
            raise RequestError(time.parameter, "the range of StudyDate and StudyTime ends before it starts")
        result = [
            Criterion(date.key, moments, date.parameter) if c is date else c for c in result if c is not time
        ]
    for item in result:
        if isinstance(item.match, Range) and KEYS[item.key].kind is Kind.TIME:
            low, high = item.match.low, item.match.high
            if low is not None and high is not None and low > matching.time_high(high):
                raise RequestError(
                    item.parameter or item.key,
                    f"{low}-{high} ends before it starts (a range of times may not cross midnight; "
                    "give StudyDate with it for a range of moments)",
                )
    return result


def _start(end: tuple[str, str | None]) -> tuple[str, str]:
    return end[0], end[1] or ""


def _end(end: tuple[str, str | None]) -> tuple[str, str]:
    return end[0], matching.time_high(end[1] or "23")


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
    #: InstanceAvailability of its slides (catalog/availability.py)
    availability: str = "ONLINE"
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
    #: its slide's tier and expiry (None: a series without a slide)
    slide_tier: str | None = None
    slide_expired_at: dt.datetime | None = None
    instances: int = 0
    metadata: bytes | None = None

    @property
    def availability(self) -> str:
        """InstanceAvailability of the series: its slide's."""
        return availability.of_slide(self.slide_tier, self.slide_expired_at)


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
    metadata: bytes | None = None


Hit = StudyHit | SeriesHit | InstanceHit
H = TypeVar("H")


@dataclass(frozen=True)
class Found(Generic[H]):
    """One page of hits; ``more`` when hits follow it."""

    hits: list[H]
    more: bool


# -- conditions ------------------------------------------------------------------------------
_OTHER_SERIES = t.series.alias("other_series")


def _has_modality(value: str) -> ColumnElement[bool]:
    """A modality of the study, on the modalities kept on its row (and in the study-order index);
    case-sensitive on SQLite too (GLOB), where ``modalities.has``'s LIKE is not."""
    glob = t.studies.c.modalities.op("GLOB", is_comparison=True)(f"*\\{matching.glob_pattern(value)}\\*")
    return matching.PerDialect(glob, modalities.has(value))


def _in_study_series(key: Key, match: Match) -> ColumnElement[bool]:
    """ModalitiesInStudy: values on the study's row; wild cards probe its series."""
    if isinstance(match, Empty):
        return t.studies.c.modalities == ""
    values = (match.value,) if isinstance(match, Single) else match.values if isinstance(match, AnyOf) else ()
    fixed = [value for value in values if not matching.is_wildcard(value)]
    patterns = [value for value in values if matching.is_wildcard(value)]
    patterns += [match.pattern] if isinstance(match, Wildcard) else []
    alternatives = [_has_modality(value) for value in fixed]
    if patterns:
        # any series of the study, seen through an alias so that a series search's own row is not it
        column = _OTHER_SERIES.c[key.column.name]
        alternatives.append(
            exists().where(
                _OTHER_SERIES.c.study_instance_uid == t.studies.c.study_instance_uid,
                or_(*(matching.wildcard(column, pattern) for pattern in patterns)),
            )
        )
    return alternatives[0] if len(alternatives) == 1 else or_(*alternatives)


def _condition(item: Criterion, level: Level) -> ColumnElement[bool]:
    key = KEYS[item.key]
    if not key.matches_at(level):
        raise ValueError(f"{item.key} is not an attribute of the {level.name.lower()} level or above")
    if key.via is Via.SERIES:
        return _in_study_series(key, item.match)
    condition = matching.condition(key.kind, key.column, item.match, key.time)
    if key.via is Via.SLIDES and level is Level.STUDY:
        return exists().where(t.slides.c.study_instance_uid == t.studies.c.study_instance_uid, condition)
    return condition


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
    t.studies.c.availability,
)
_SERIES_COLUMNS = (
    t.series.c.series_instance_uid,
    t.series.c.modality,
    t.series.c.series_number,
    t.slides.c.container_id,
    t.slides.c.tier.label("slide_tier"),
    t.slides.c.expired_at.label("slide_expired_at"),
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


#: What a principal may see, as a condition on ``studies`` (study level) or on ``series`` (series
#: and instance levels): :func:`lamina.governance.decide.visible_studies` and ``visible_series``;
#: at the study level, also a tuple of *disjoint* conditions whose union is what may be seen
#: (:func:`lamina.governance.decide.visible_study_branches`: one per lab, one for the cases
#: granted), each of which an index reads in order, so that a page costs what the page holds;
#: None for everything (a caller that decided so).
Visible = ColumnElement[bool] | tuple[ColumnElement[bool], ...] | None


def _visible(visible: Visible) -> list[ColumnElement[bool]]:
    if visible is None:
        return []
    if isinstance(visible, tuple):
        return [or_(*visible) if visible else false()]
    return [visible]


def studies_query(criteria: Sequence[Criterion], visible: Visible = None) -> Select[Any]:
    """The UIDs of the studies matching every criterion, in the stable order.

    Only the studies' UIDs: a page is walked in ``ix_studies_date`` alone (an index-only scan;
    the index carries the study's modalities for ``ModalitiesInStudy``), and the patient is
    joined only when a criterion needs it. The skipped rows of a deep page then cost
    an index entry each, not a row of studies and one of patients (the page's own rows are read
    afterwards)."""
    conditions = [_condition(item, Level.STUDY) for item in criteria] + _visible(visible)
    on_patient = any(KEYS[item.key].column.table is t.patients for item in criteria)
    source = _STUDIES if on_patient else t.studies
    query = select(t.studies.c.study_instance_uid).select_from(source).where(*conditions)
    return query.order_by(*_STUDY_ORDER)


def series_query(criteria: Sequence[Criterion], visible: Visible = None) -> Select[Any]:
    """Series (with their study, patient and slide) matching every criterion, in the stable order."""
    source = _SERIES.outerjoin(t.slides, t.slides.c.series_instance_uid == t.series.c.series_instance_uid)
    conditions = [_condition(item, Level.SERIES) for item in criteria] + _visible(visible)
    query = select(*_STUDY_COLUMNS, *_SERIES_COLUMNS).select_from(source).where(*conditions)
    return query.order_by(*_SERIES_ORDER)


def instances_query(
    criteria: Sequence[Criterion], visible: Visible = None, *, metadata: bool = False
) -> Select[Any]:
    """Instances (with their series, study, patient and slide) matching every criterion, in order
    (with their stored JSON when ``metadata``: one read for a page)."""
    source = t.instances.join(
        t.series, t.instances.c.series_instance_uid == t.series.c.series_instance_uid
    ).join(t.studies, t.series.c.study_instance_uid == t.studies.c.study_instance_uid)
    source = source.outerjoin(t.patients, t.studies.c.patient_pk == t.patients.c.pk).outerjoin(
        t.slides, t.instances.c.slide_id == t.slides.c.id
    )
    conditions = [_condition(item, Level.INSTANCE) for item in criteria] + _visible(visible)
    stored = (t.instances.c.metadata,) if metadata else ()
    query = select(*_STUDY_COLUMNS, *_SERIES_COLUMNS, *_INSTANCE_COLUMNS, *stored).select_from(source)
    return query.where(*conditions).order_by(*_INSTANCE_ORDER)


_QUERIES = {Level.STUDY: studies_query, Level.SERIES: series_query, Level.INSTANCE: instances_query}


def _studies_union(
    criteria: Sequence[Criterion], branches: tuple[ColumnElement[bool], ...], limit: int, offset: int
) -> Select[Any]:
    """The page of study UIDs over disjoint ``branches``: each branch's first ``offset + limit``
    in the stable order (an ordered read of ``ix_studies_tenant_date(_pg)`` for a lab, a few
    look-ups for the cases granted), merged, ordered and paged. An OR of the branches would make
    the database read (or sort) every study of the lab, or walk the whole catalog's date index,
    for each page."""
    parts = []
    for branch in branches:
        ordered = (
            studies_query(criteria, branch)
            .add_columns(t.studies.c.study_date, t.studies.c.study_time)
            .limit(offset + limit)
            .subquery()
        )
        parts.append(select(ordered))
    merged = union_all(*parts).subquery()
    order = (
        merged.c.study_date.desc().nulls_last(),
        merged.c.study_time.desc().nulls_last(),
        merged.c.study_instance_uid.desc(),
    )
    return select(merged.c.study_instance_uid).order_by(*order).limit(limit).offset(offset)


def _page(
    level: Level,
    criteria: Sequence[Criterion],
    visible: Visible,
    limit: int,
    offset: int,
    metadata: bool,
) -> Select[Any]:
    """The query of ``limit`` matches from ``offset``, in the stable order."""
    if level is Level.STUDY and isinstance(visible, tuple) and len(visible) > 1:
        return _studies_union(criteria, visible, limit, offset)
    if level is Level.INSTANCE:
        return instances_query(criteria, visible, metadata=metadata).limit(limit).offset(offset)
    return _QUERIES[level](criteria, visible).limit(limit).offset(offset)


# -- the hits of some rows, with what they need ------------------------------------------------
def _study(row: Any, **extra: Any) -> StudyHit:
    return StudyHit(**{column.key: row[column.key] for column in _STUDY_COLUMNS}, **extra)


def _series(row: Any, study: StudyHit, **extra: Any) -> SeriesHit:
    return SeriesHit(study, **{column.key: row[column.key] for column in _SERIES_COLUMNS}, **extra)


def _instances_and_first(
    conn: Connection, column: Any, uids: list[str], metadata: bool
) -> dict[str, tuple[int, bytes | None]]:
    """For each study or series UID: its number of instances and one instance's stored JSON.

    The counts come from the index on ``column`` alone (an index-only scan: no heap page per
    instance), and the JSON, when asked, from one instance of each (the first its index finds: a
    page of 50 studies reads 50 rows, not the 1,500 of their instances)."""
    counted = conn.execute(select(column, func.count()).where(column.in_(uids)).group_by(column)).all()
    stored: dict[str, bytes] = {}
    if metadata and counted:
        firsts = [
            select(column, t.instances.c.metadata).where(column == uid).limit(1).subquery()
            for uid, _ in counted
        ]
        for start in range(0, len(firsts), 200):
            parts = [select(first) for first in firsts[start : start + 200]]
            query = parts[0] if len(parts) == 1 else union_all(*parts)
            stored.update({str(uid): bytes(blob) for uid, blob in conn.execute(query)})
    return {str(uid): (int(count), stored.get(str(uid))) for uid, count in counted}


def _stored(conn: Connection, sops: list[str]) -> dict[str, bytes]:
    """The stored DICOM JSON of these instances, by SOP Instance UID (a primary key lookup each)."""
    found = conn.execute(
        select(t.instances.c.sop_instance_uid, t.instances.c.metadata).where(
            t.instances.c.sop_instance_uid.in_(sops)
        )
    )
    return {str(sop): bytes(blob) for sop, blob in found}


def _study_hits(conn: Connection, keys: Sequence[Any], metadata: bool) -> list[StudyHit]:
    uids = [key["study_instance_uid"] for key in keys]
    by_uid = {
        row["study_instance_uid"]: row
        for row in conn.execute(
            select(*_STUDY_COLUMNS).select_from(_STUDIES).where(t.studies.c.study_instance_uid.in_(uids))
        ).mappings()
    }
    # a study deleted between the two reads is left out
    uids = [uid for uid in uids if uid in by_uid]
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
    instances = _instances_and_first(conn, t.instances.c.study_instance_uid, uids, metadata)
    hits = []
    for uid in uids:
        count, stored = instances.get(uid, (0, None))
        hits.append(
            _study(
                by_uid[uid],
                modalities=tuple(in_study.get(uid, ())),
                series=series.get(uid, 0),
                instances=count,
                metadata=stored,
            )
        )
    return hits


def _series_hits(conn: Connection, rows: Sequence[Any], metadata: bool) -> list[SeriesHit]:
    uids = [row["series_instance_uid"] for row in rows]
    instances = _instances_and_first(conn, t.instances.c.series_instance_uid, uids, metadata)
    hits = []
    for row, uid in zip(rows, uids, strict=True):
        count, stored = instances.get(uid, (0, None))
        hits.append(_series(row, _study(row), instances=count, metadata=stored))
    return hits


def _instance_hits(conn: Connection, rows: Sequence[Any], metadata: bool) -> list[InstanceHit]:
    if metadata and rows and "metadata" in rows[0]:  # read with the page
        stored = {row["sop_instance_uid"]: bytes(row["metadata"]) for row in rows}
    else:
        stored = _stored(conn, [row["sop_instance_uid"] for row in rows]) if metadata else {}
    return [
        InstanceHit(
            _series(row, _study(row)),
            **{column.key: row[column.key] for column in _INSTANCE_COLUMNS},
            metadata=stored.get(row["sop_instance_uid"]),
        )
        for row in rows
    ]


_HITS: dict[Level, Any] = {
    Level.STUDY: _study_hits,
    Level.SERIES: _series_hits,
    Level.INSTANCE: _instance_hits,
}


# -- running a search ------------------------------------------------------------------------
def _find(
    level: Level,
    engine: Engine,
    criteria: Sequence[Criterion],
    limit: int,
    offset: int,
    metadata: bool,
    visible: Visible,
) -> Found[Any]:
    query = _page(level, criteria, visible, limit + 1, offset, metadata)
    with engine.connect() as conn:
        rows = list(conn.execute(query).mappings())
        hits = _HITS[level](conn, rows[:limit], metadata)
    return Found(hits, len(rows) > limit)


def find_studies(
    engine: Engine,
    criteria: Sequence[Criterion],
    limit: int,
    offset: int,
    *,
    metadata: bool = True,
    visible: Visible = None,
) -> Found[StudyHit]:
    """One page of matching studies, each with its modalities, counts and (``metadata``) one
    instance's stored JSON."""
    return _find(Level.STUDY, engine, criteria, limit, offset, metadata, visible)


def find_series(
    engine: Engine,
    criteria: Sequence[Criterion],
    limit: int,
    offset: int,
    *,
    metadata: bool = True,
    visible: Visible = None,
) -> Found[SeriesHit]:
    """One page of matching series, each with its study, instance count and one instance's JSON."""
    return _find(Level.SERIES, engine, criteria, limit, offset, metadata, visible)


def find_instances(
    engine: Engine,
    criteria: Sequence[Criterion],
    limit: int,
    offset: int,
    *,
    metadata: bool = True,
    visible: Visible = None,
) -> Found[InstanceHit]:
    """One page of matching instances, each with its series, study and stored JSON."""
    return _find(Level.INSTANCE, engine, criteria, limit, offset, metadata, visible)


#: Hits read at once by :func:`iter_matches`.
CHUNK = 500


def iter_matches(
    engine: Engine,
    level: Level,
    criteria: Sequence[Criterion],
    limit: int,
    *,
    metadata: bool = True,
    visible: Visible = None,
) -> Iterator[Hit]:
    """Every match (at most ``limit``) in the stable order, for a protocol without pages.

    The matches are found by one query; their details are read ``CHUNK`` at a time, each chunk on
    a connection of its own, so that no connection is held while the caller sends what it got."""
    with engine.connect() as conn:
        rows = list(conn.execute(_page(level, criteria, visible, limit, 0, False)).mappings())
    for start in range(0, len(rows), CHUNK):
        with engine.connect() as conn:
            hits: list[Hit] = _HITS[level](conn, rows[start : start + CHUNK], metadata)
        yield from hits
