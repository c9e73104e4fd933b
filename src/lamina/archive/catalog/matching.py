"""Attribute matching (DICOM PS3.4 C.2.2.2) on catalog columns: the one implementation that QIDO-RS
and C-FIND share.

A key's values, as a client wrote them, are read by :func:`parse` into a :data:`Match`, which
:func:`condition` turns into SQL on the key's column. The rules, for both protocols:

Universal matching (C.2.2.2.3)
    An empty value, or ``*`` alone, matches everything: the key is only returned.
Single value matching (C.2.2.2.1)
    Exact and case-sensitive, on SQLite as on PostgreSQL, except for person names (PN) and the
    lab's own terms (``stain``, ``organ``), which match whatever the case of their letters
    (SQLite folds ASCII letters only, PostgreSQL every letter). A date (DA, ``YYYYMMDD``) names
    its day; a time (TM, ``HH``, ``HHMM``, ``HHMMSS``, ``HHMMSS.F`` to ``.FFFFFF``) names the
    whole span of its precision: ``10`` is 10:00 to 10:59:59.999999.
Wild card matching (C.2.2.2.4)
    In text values (AE, CS, LO, PN, SH...), ``*`` is any run of characters, ``?`` any one
    character; every other character, SQL's ``%`` and ``_`` and the escape character included,
    is itself. Not in UIDs, numbers, dates or times.
List of UID matching (C.2.2.2.2) and multiple value matching
    Several values (``\\``-separated, or a QIDO-RS comma list for UIDs) match when any of them
    does; each value follows the rules above.
Range matching (C.2.2.2.5)
    Dates and times: ``A-B`` (inclusive), ``A-`` and ``-B``; a range may not end before it starts
    (nor cross midnight). The end of a time range spans its precision: ``-1030`` reaches
    10:30:59.999999. An entity without a value does not match a range.
Combined date and time range matching (C.2.2.2.5.1)
    Where the protocol asks for it (QIDO-RS always; C-FIND when the association negotiated it),
    ``StudyDate`` and ``StudyTime`` given together are one range of moments, from the first
    date at the first time to the last date at the last time (:func:`combined`), not a range
    of days crossed with a range of hours. A study of a boundary day whose time is unknown
    matches, as in dcm4chee-arc.
Empty value matching
    Where the protocol asks for it (QIDO-RS ``emptyvaluematching=true``), a value of two
    quotation marks ``""`` matches the entities whose attribute is empty or absent; otherwise
    ``""`` is an ordinary value.
Sequence matching (C.2.2.2.6)
    A key inside a sequence is a path of keywords, ``SpecimenDescriptionSequence.
    SpecimenIdentifier``; the catalog keeps the one specimen of each slide, so an item matches
    when its key does (see :mod:`lamina.archive.catalog.keys` for the paths it can match).

A malformed value raises :class:`~lamina.errors.RequestError` naming the parameter as the client
wrote it; QIDO-RS answers 400, C-FIND the failure 0xA900.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ColumnElement, and_, func, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from lamina.errors import RequestError

#: The two-quotation-mark value of empty value matching.
EMPTY_VALUE = '""'
_WILD = frozenset("*?")


class Kind(enum.Enum):
    """How a key's values compare."""

    TEXT = "text"  # exact, case-sensitive; wild cards
    ANY_CASE = "any case"  # exact or wild cards, whatever the case (PN, free-text lab terms)
    UID = "uid"  # exact, or a list of UIDs
    DATE = "date"  # YYYYMMDD, exact or a range
    TIME = "time"  # HHMMSS.FFFFFF, its span or a range
    NUMBER = "number"  # an integer (IS), exact


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
    """Any of several values (UID list, multiple values); each may hold wild cards."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class Range:
    """Range matching of dates or times; an open end is ``None``."""

    low: str | None
    high: str | None


@dataclass(frozen=True)
class Empty:
    """Empty value matching: the attribute is empty or absent."""


@dataclass(frozen=True)
class DateTimeRange:
    """Combined date and time range matching: ``(date, time)`` ends, a time of ``None`` meaning
    the start (low end) or the end (high end) of that day; an open end is ``None``."""

    low: tuple[str, str | None] | None
    high: tuple[str, str | None] | None


Match = Single | Wildcard | AnyOf | Range | Empty | DateTimeRange


# -- reading values ------------------------------------------------------------------------------
def is_wildcard(value: str) -> bool:
    return not _WILD.isdisjoint(value)


def _date(parameter: str, value: str) -> str:
    try:
        if len(value) != 8 or not value.isdigit():
            raise ValueError(value)
        datetime.strptime(value, "%Y%m%d")
    except ValueError as exc:
        raise RequestError(
            parameter, f"{value!r} is not a date: give YYYYMMDD, or a range such as 20260101-20261231"
        ) from exc
    return value


def _time(parameter: str, value: str) -> str:
    whole, dot, fraction = value.partition(".")
    parts = [whole[i : i + 2] for i in range(0, len(whole), 2)]
    valid = (
        whole.isdigit()
        and len(whole) in (2, 4, 6)
        and (not dot or (len(whole) == 6 and fraction.isdigit() and 1 <= len(fraction) <= 6))
        and all(int(part) < limit for part, limit in zip(parts, (24, 60, 61), strict=False))
    )
    if not valid:
        raise RequestError(
            parameter, f"{value!r} is not a time: give HHMMSS (HH, HHMM or HHMMSS.FFFFFF), or a range"
        )
    return value


def _range(parameter: str, value: str, kind: Kind) -> Match:
    check = _date if kind is Kind.DATE else _time
    if "-" not in value:
        return Single(check(parameter, value))
    low, _, high = value.partition("-")
    if not low and not high:
        raise RequestError(parameter, "give at least one end of the range, e.g. 20260101- or -20261231")
    bounds = (check(parameter, low) if low else None, check(parameter, high) if high else None)
    # a range of times that "crosses midnight" may be the time of a combined range of moments:
    # refused by :func:`lamina.archive.catalog.search.combine_date_time` where it is not
    if kind is Kind.DATE and bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
        raise RequestError(parameter, f"{value!r} ends before it starts")
    return Range(*bounds)


def _number(parameter: str, value: str) -> str:
    try:
        return str(int(value))
    except ValueError:
        raise RequestError(parameter, f"{value!r} is not a whole number") from None


def parse(kind: Kind, parameter: str, values: Sequence[str], *, empty_value: bool = False) -> Match | None:
    """How to match a key of ``kind`` given its values (already split on ``\\``); None is
    universal matching.

    Parameters
    ----------
    kind
        The key's :class:`Kind`.
    parameter
        The key as the client wrote it, for error messages.
    values
        The values, one per item of a list (outer spaces are not significant).
    empty_value
        Whether ``""`` asks for empty value matching (QIDO-RS ``emptyvaluematching=true``).

    Raises
    ------
    RequestError
        A date, time or number that is none, or a range that ends before it starts.
    """
    items = [value.strip() for value in values]
    items = [item for item in items if item]
    if not items or "*" in items:
        return None
    if empty_value and items == [EMPTY_VALUE]:
        return Empty()
    if kind in (Kind.DATE, Kind.TIME):
        if len(items) > 1:
            raise RequestError(parameter, "give one date or time, or one range A-B")
        return _range(parameter, items[0], kind)
    if kind is Kind.NUMBER:
        items = [_number(parameter, item) for item in items]
    elif kind is Kind.UID:
        pass  # a UID holds no wild card: * or ? in one is matched as written (and never found)
    elif len(items) == 1 and is_wildcard(items[0]):
        return Wildcard(items[0])
    return Single(items[0]) if len(items) == 1 else AnyOf(tuple(dict.fromkeys(items)))


def combined(date: Match, time: Match) -> DateTimeRange:
    """One range of moments from a date and a time match (both single values or ranges)."""
    day_low, day_high = _ends(date)
    time_low, time_high = _ends(time)
    return DateTimeRange(
        (day_low, time_low) if day_low is not None else None,
        (day_high, time_high) if day_high is not None else None,
    )


def _ends(match: Match) -> tuple[str | None, str | None]:
    if isinstance(match, Single):
        return match.value, match.value
    if isinstance(match, Range):
        return match.low, match.high
    raise ValueError(f"{match} is not a single value or a range")


# -- SQL ---------------------------------------------------------------------------------------
def like_pattern(pattern: str) -> str:
    """A DICOM wild card pattern as a SQL ``LIKE`` pattern, escaped with ``\\``."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def glob_pattern(pattern: str) -> str:
    """A DICOM wild card pattern as a SQLite ``GLOB`` pattern (``*`` and ``?`` are GLOB's own;
    ``[`` opens a class there, so a literal one is the class ``[[]``)."""
    return pattern.replace("[", "[[]")


class PerDialect(ColumnElement[bool]):
    """A condition written one way for SQLite and another for every other database.

    SQLite's ``LIKE`` ignores the case of ASCII letters, where DICOM matching does not; its
    ``GLOB`` is case-sensitive and, unlike ``LIKE``, can use an index of the column for a
    pattern with a fixed start. PostgreSQL's ``LIKE`` is case-sensitive.
    """

    type = Boolean()
    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012  # SQLAlchemy's own attribute
        ("sqlite", InternalTraversal.dp_clauseelement),
        ("other", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, sqlite: ColumnElement[bool], other: ColumnElement[bool]) -> None:
        self.sqlite = sqlite
        self.other = other

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.other._from_objects)


@compiles(PerDialect)
def _compile_other(element: PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.other, **kw)


@compiles(PerDialect, "sqlite")
def _compile_sqlite(element: PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.sqlite, **kw)


def wildcard(column: Any, pattern: str, any_case: bool = False) -> ColumnElement[bool]:
    """``column`` matches the DICOM wild card ``pattern``."""
    if any_case:  # LIKE on SQLite (ASCII letters), ILIKE on PostgreSQL
        return column.ilike(like_pattern(pattern), escape="\\")  # type: ignore[no-any-return]
    glob = column.op("GLOB", is_comparison=True)(glob_pattern(pattern))
    return PerDialect(glob, column.like(like_pattern(pattern), escape="\\"))


def time_high(value: str) -> str:
    """The last moment a time of reduced precision names: ``1200`` -> ``120059.999999``."""
    whole, _, fraction = value.partition(".")
    return whole + "5959"[: 6 - len(whole)] + "." + fraction + "9" * (6 - len(fraction))


def _text(kind: Kind, column: Any, value: str) -> ColumnElement[bool]:
    if is_wildcard(value) and kind in (Kind.TEXT, Kind.ANY_CASE):
        return wildcard(column, value, any_case=kind is Kind.ANY_CASE)
    if kind is Kind.ANY_CASE:
        return func.lower(column) == func.lower(value)
    if kind is Kind.NUMBER:
        return column == int(value)  # type: ignore[no-any-return]
    return column == value  # type: ignore[no-any-return]


def _between(kind: Kind, column: Any, low: str | None, high: str | None) -> ColumnElement[bool]:
    bounds = []
    if low is not None:
        bounds.append(column >= low)
    if high is not None:
        bounds.append(column <= (time_high(high) if kind is Kind.TIME else high))
    return and_(*bounds)


def _moments(date: Any, time: Any, match: DateTimeRange) -> ColumnElement[bool]:
    # a study of a boundary day without a time matches (its moment may be in the range); the
    # plain bounds of the days come first, for an index of the date to narrow the scan
    bounds: list[ColumnElement[bool]] = [date.is_not(None)]
    if match.low is not None:
        day, at = match.low
        bounds.append(date >= day)
        if at is not None:
            bounds.append(or_(date > day, time >= at, time.is_(None)))
    if match.high is not None:
        day, at = match.high
        bounds.append(date <= day)
        if at is not None:
            bounds.append(or_(date < day, time <= time_high(at), time.is_(None)))
    return and_(*bounds)


def condition(kind: Kind, column: Any, match: Match, time: Any = None) -> ColumnElement[bool]:
    """The SQL condition "``column`` matches ``match``" (``time``: the time column paired with a
    date column, for a :class:`DateTimeRange`)."""
    if isinstance(match, Empty):
        if kind is Kind.NUMBER:
            return column.is_(None)  # type: ignore[no-any-return]
        return or_(column.is_(None), column == "")
    if isinstance(match, DateTimeRange):
        if time is None:
            raise ValueError("a combined date and time range needs the time column")
        return _moments(column, time, match)
    if isinstance(match, Range):
        return _between(kind, column, match.low, match.high)
    if kind is Kind.TIME and isinstance(match, Single):
        return _between(kind, column, match.value, match.value)
    if isinstance(match, Wildcard):
        return wildcard(column, match.pattern, any_case=kind is Kind.ANY_CASE)
    values = (match.value,) if isinstance(match, Single) else match.values
    fixed = [value for value in values if not (is_wildcard(value) and kind in (Kind.TEXT, Kind.ANY_CASE))]
    alternatives = [_text(kind, column, value) for value in values if value not in fixed]
    if len(fixed) == 1:
        alternatives.append(_text(kind, column, fixed[0]))
    elif fixed and kind is Kind.ANY_CASE:
        alternatives.append(func.lower(column).in_([func.lower(value) for value in fixed]))
    elif fixed:
        alternatives.append(column.in_([int(v) for v in fixed] if kind is Kind.NUMBER else fixed))
    return alternatives[0] if len(alternatives) == 1 else or_(*alternatives)
