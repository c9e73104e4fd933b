"""C-FIND matching on the catalog: Study Root Query/Retrieve Information Model, levels STUDY,
SERIES and IMAGE (PS3.4 C.4.1).

Matching is relational: a key of any level at or above the query level narrows the answer, so
an IMAGE query by SeriesInstanceUID alone works; a hierarchical query (each higher level's
unique key given) gets the same answer. Keys below the query level are ignored.

Keys matched here, by the rules of PS3.4 C.2.2.2: single value (PatientID, AccessionNumber,
Modality, PatientSex, SeriesNumber, InstanceNumber), with ``*`` and ``?`` wildcards for the
strings; PatientName, with wildcards and without regard to case (PN allows it); UID lists
(StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, SOPClassUID); ranges of dates
(StudyDate, PatientBirthDate: ``A``, ``A-B``, ``A-``, ``-B``); ModalitiesInStudy. An empty
value matches everything. A value given for any other key is treated as a return key.

Every key of the identifier is returned: from the catalog where it holds the attribute, else
from the stored DICOM JSON of the matched instance (the first instance of a matched series or
study), else empty. Only reads; one connection per query.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import ColumnElement, Connection, Engine, Select, and_, exists, func, or_, select

from lamina.archive.catalog import tables as t
from lamina.dimse import status
from lamina.mapping import dicom_json

LEVELS = ("STUDY", "SERIES", "IMAGE")
#: Answers are encoded in UTF-8: names in the catalog may hold any character.
CHARACTER_SET = "ISO_IR 192"
_WILDCARDS = re.compile(r"[*?]")
_DATE = re.compile(r"^\d{8}$")


class FindError(Exception):
    """A query that cannot be answered; ``code`` is the C-FIND failure status to send."""

    def __init__(self, code: int, comment: str) -> None:
        self.code = code
        self.comment = comment
        super().__init__(comment)


@dataclass(frozen=True)
class _Key:
    level: str
    column: Any  # a table column; Any because SQLAlchemy's Column types are invariant
    kind: str  # uid, text, name, date, number, modalities, or "" (returned, not matched)


_KEYS: dict[str, _Key] = {
    "PatientID": _Key("STUDY", t.patients.c.patient_id, "text"),
    "PatientName": _Key("STUDY", t.patients.c.patient_name, "name"),
    "PatientBirthDate": _Key("STUDY", t.patients.c.birth_date, "date"),
    "PatientSex": _Key("STUDY", t.patients.c.sex, "text"),
    "StudyInstanceUID": _Key("STUDY", t.studies.c.study_instance_uid, "uid"),
    "AccessionNumber": _Key("STUDY", t.studies.c.accession_number, "text"),
    "StudyDate": _Key("STUDY", t.studies.c.study_date, "date"),
    "StudyTime": _Key("STUDY", t.studies.c.study_time, ""),
    "ModalitiesInStudy": _Key("STUDY", t.series.c.modality, "modalities"),
    "SeriesInstanceUID": _Key("SERIES", t.series.c.series_instance_uid, "uid"),
    "Modality": _Key("SERIES", t.series.c.modality, "text"),
    "SeriesNumber": _Key("SERIES", t.series.c.series_number, "number"),
    "SOPInstanceUID": _Key("IMAGE", t.instances.c.sop_instance_uid, "uid"),
    "SOPClassUID": _Key("IMAGE", t.instances.c.sop_class_uid, "uid"),
    "InstanceNumber": _Key("IMAGE", t.instances.c.instance_number, "number"),
}
#: Counts computed per match, only when asked for.
_COUNTS = {
    "NumberOfStudyRelatedSeries": ("STUDY", t.series.c.study_instance_uid, t.series),
    "NumberOfStudyRelatedInstances": ("STUDY", t.instances.c.study_instance_uid, t.instances),
    "NumberOfSeriesRelatedInstances": ("SERIES", t.instances.c.series_instance_uid, t.instances),
}
_UNIQUE = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
_NOT_RETURNED = {"QueryRetrieveLevel", "SpecificCharacterSet"}


@dataclass(frozen=True)
class Query:
    """A C-FIND identifier, checked: its level, the keys it matches on and those it asks for."""

    level: str
    conditions: tuple[ColumnElement[bool], ...]
    checks: tuple[tuple[str, re.Pattern[str]], ...]  # (column, pattern): wild cards, checked exactly
    requested: Dataset

    @classmethod
    def from_identifier(cls, identifier: Dataset) -> Query:
        """Raise :class:`FindError` for an identifier that does not fit the information model."""
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        if level not in LEVELS:
            raise FindError(
                status.DOES_NOT_MATCH_SOP_CLASS,
                f"QueryRetrieveLevel {level[:12]!r} not STUDY/SERIES/IMAGE",
            )
        depth = LEVELS.index(level)
        conditions: list[ColumnElement[bool]] = []
        checks: list[tuple[str, re.Pattern[str]]] = []
        for element in identifier:
            keyword = element.keyword
            key = _KEYS.get(keyword)
            if key is None or not key.kind or LEVELS.index(key.level) > depth or _empty(element.value):
                continue
            condition, check = _condition(keyword, key, element.value)
            if condition is not None:
                conditions.append(condition)
            if check is not None:
                checks.append((key.column.key, check))
        return cls(level, tuple(conditions), tuple(checks), identifier)


def find(engine: Engine, identifier: Dataset, limit: int) -> Iterator[Dataset]:
    """The matches of ``identifier`` as response identifiers, at most ``limit`` of them.

    Raises
    ------
    FindError
        The identifier does not fit (before any match), or there are more than ``limit``
        matches (after the first ``limit``).
    """
    query = Query.from_identifier(identifier)
    with engine.connect() as conn:
        rows = conn.execute(_statement(query).limit(limit + 1)).mappings().all()
        sent = 0
        for row in rows:
            if not all(pattern.fullmatch(str(row[column] or "")) for column, pattern in query.checks):
                continue
            if sent == limit:
                raise FindError(status.OUT_OF_RESOURCES, f"over {limit} matches; narrow the query")
            yield _answer(conn, query, row)
            sent += 1


def _empty(value: Any) -> bool:
    if isinstance(value, (MultiValue, list, tuple)):
        return all(_empty(item) for item in value)
    return value is None or str(value).strip() in ("", "*")


def _values(value: Any) -> list[str]:
    items = value if isinstance(value, (MultiValue, list, tuple)) else str(value).split("\\")
    return [str(item).strip() for item in items if str(item).strip()]


def _condition(
    keyword: str, key: _Key, value: Any
) -> tuple[ColumnElement[bool] | None, re.Pattern[str] | None]:
    column = key.column
    if key.kind == "uid":
        return column.in_(_values(value)), None
    if key.kind == "modalities":
        match = select(t.series.c.series_instance_uid).where(
            t.series.c.study_instance_uid == t.studies.c.study_instance_uid,
            t.series.c.modality.in_(_values(value)),
        )
        return exists(match), None
    if key.kind == "date":
        return _date_range(keyword, str(value).strip()), None
    if key.kind == "number":
        try:
            return column == int(str(value).strip()), None
        except ValueError:
            raise FindError(status.DOES_NOT_MATCH_SOP_CLASS, f"{keyword} is not a number") from None
    texts = _values(value)  # one value, as a rule; several are taken as alternatives
    if key.kind == "name":
        # ILIKE (on SQLite: lower() of both sides, by the same function) whether or not wild cards
        return or_(*(column.ilike(_like(text), escape="!") for text in texts)), None
    if not any(_WILDCARDS.search(text) for text in texts):
        return column.in_(texts), None
    # SQLite's LIKE ignores case where DICOM does not for these strings: matches are checked again
    alternatives = [column.like(_like(text), escape="!") for text in texts]
    return or_(*alternatives), re.compile("|".join(f"(?:{_regex(text)})" for text in texts), re.DOTALL)


def _like(text: str) -> str:
    escaped = text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return escaped.replace("*", "%").replace("?", "_")


def _regex(text: str) -> str:
    pieces = re.split(r"([*?])", text)
    return "".join(".*" if part == "*" else "." if part == "?" else re.escape(part) for part in pieces)


def _date_range(keyword: str, text: str) -> ColumnElement[bool]:
    column = _KEYS[keyword].column
    start, dash, end = text.partition("-")
    for part in (start, end):
        if part and not _DATE.match(part):
            raise FindError(status.DOES_NOT_MATCH_SOP_CLASS, f"{keyword}: use YYYYMMDD or a range A-B")
    if not dash:
        return column == start  # type: ignore[no-any-return]
    bounds = [column >= start] if start else []
    bounds += [column <= end] if end else []
    return and_(column.is_not(None), *bounds)


def _statement(query: Query) -> Select[Any]:
    studies = t.studies.outerjoin(t.patients, t.studies.c.patient_pk == t.patients.c.pk)
    columns: list[Any] = [
        t.studies,
        t.patients.c.patient_id,
        t.patients.c.patient_name,
        t.patients.c.birth_date,
        t.patients.c.sex,
    ]
    order: list[Any] = [t.studies.c.study_date, t.studies.c.study_instance_uid]
    source: Any = studies
    if query.level in ("SERIES", "IMAGE"):
        source = t.series.join(studies, t.series.c.study_instance_uid == t.studies.c.study_instance_uid)
        columns += [t.series.c.series_instance_uid, t.series.c.modality, t.series.c.series_number]
        order += [t.series.c.series_number, t.series.c.series_instance_uid]
    if query.level == "IMAGE":
        source = t.instances.join(source, t.instances.c.series_instance_uid == t.series.c.series_instance_uid)
        columns += [
            t.instances.c.sop_instance_uid,
            t.instances.c.sop_class_uid,
            t.instances.c.instance_number,
        ]
        order += [t.instances.c.instance_number, t.instances.c.sop_instance_uid]
    depth = LEVELS.index(query.level)
    for keyword, (level, foreign, table) in _COUNTS.items():
        if keyword in query.requested and LEVELS.index(level) <= depth:
            own = t.studies.c.study_instance_uid if level == "STUDY" else t.series.c.series_instance_uid
            count = select(func.count()).select_from(table).where(foreign == own).scalar_subquery()
            columns.append(count.label(keyword))
    statement = select(*columns).select_from(source).order_by(*order)
    if query.conditions:
        statement = statement.where(and_(*query.conditions))
    return statement


def _catalog_values(conn: Connection, query: Query, row: Any) -> dict[str, Any]:
    """What the catalog knows of the match, by keyword."""
    values: dict[str, Any] = {
        "PatientID": row["patient_id"],
        "PatientName": row["patient_name"],
        "PatientBirthDate": row["birth_date"],
        "PatientSex": row["sex"],
        "StudyInstanceUID": row["study_instance_uid"],
        "AccessionNumber": row["accession_number"],
        "StudyDate": row["study_date"],
        "StudyTime": row["study_time"],
    }
    if query.level != "STUDY":
        values.update(
            SeriesInstanceUID=row["series_instance_uid"],
            Modality=row["modality"],
            SeriesNumber=row["series_number"],
        )
    if query.level == "IMAGE":
        values.update(
            SOPInstanceUID=row["sop_instance_uid"],
            SOPClassUID=row["sop_class_uid"],
            InstanceNumber=row["instance_number"],
        )
    for keyword in _COUNTS:
        if keyword in row:
            values[keyword] = row[keyword]
    if "ModalitiesInStudy" in query.requested:
        found = conn.execute(
            select(t.series.c.modality)
            .where(t.series.c.study_instance_uid == row["study_instance_uid"])
            .distinct()
            .order_by(t.series.c.modality)
        )
        values["ModalitiesInStudy"] = [str(modality) for (modality,) in found]
    return values


def _instance_json(conn: Connection, query: Query, row: Any, tags: Sequence[str]) -> dict[str, Any]:
    """The stored DICOM JSON of the match's (first) instance, only the elements of ``tags``."""
    column, key = {
        "STUDY": (t.instances.c.study_instance_uid, row["study_instance_uid"]),
        "SERIES": (t.instances.c.series_instance_uid, row.get("series_instance_uid")),
        "IMAGE": (t.instances.c.sop_instance_uid, row.get("sop_instance_uid")),
    }[query.level]
    packed = conn.execute(
        select(t.instances.c.metadata)
        .where(column == key)
        .order_by(t.instances.c.series_instance_uid, t.instances.c.instance_number)
        .limit(1)
    ).scalar()
    if packed is None:
        return {}
    stored = orjson.loads(dicom_json.unpack(packed))
    return {tag: _without_bulk(stored[tag]) for tag in tags if tag in stored}


def _without_bulk(element: dict[str, Any]) -> dict[str, Any]:
    """Bulk data is referenced by URI in the stored JSON; C-FIND answers carry none of it."""
    if "BulkDataURI" in element:
        return {"vr": element["vr"]}
    if element.get("vr") == "SQ":
        items = element.get("Value", [])
        return {"vr": "SQ", "Value": [{tag: _without_bulk(value) for tag, value in i.items()} for i in items]}
    return element


def _answer(conn: Connection, query: Query, row: Any) -> Dataset:
    values = _catalog_values(conn, query, row)
    answer = Dataset()
    answer.SpecificCharacterSet = CHARACTER_SET
    answer.QueryRetrieveLevel = query.level
    wanted = [element for element in query.requested if element.keyword not in _NOT_RETURNED]
    missing = [f"{int(element.tag):08X}" for element in wanted if element.keyword not in values]
    stored = Dataset.from_json(_instance_json(conn, query, row, missing)) if missing else Dataset()
    for element in wanted:
        if element.tag.is_private or element.tag.element == 0:
            continue
        if element.keyword in values:
            value = values[element.keyword]
            answer.add_new(element.tag, element.VR, "" if value is None else value)
        elif element.tag in stored:
            answer.add(stored[element.tag])
        else:
            answer.add_new(element.tag, element.VR, None)
    for level in LEVELS[: LEVELS.index(query.level) + 1]:
        keyword = _UNIQUE[level]
        if keyword not in answer:
            tag = tag_for_keyword(keyword)
            assert tag is not None
            answer.add_new(tag, dictionary_VR(tag), values[keyword])
    return answer
