"""Lifecycle selection: the slides whose care retention ends within a window.

Retention rules set each slide's ``retain_until``; the lifecycle job then acts on the slides that
fall due (thumbnail and trace, deletion, a move to the cold tier), batch by batch. This module is
the catalog's side of that: one range query on ``slides.retain_until``, which the index
``ix_slides_retain_until`` serves, in ``retain_until`` order, so that a job never reads the whole
slides table however large the archive grows.

A week of a busy archive holds tens of thousands of due slides: :func:`expiring` returns one batch
(``limit``) and the next batch starts after the last slide of the previous one (``after``), a
keyset page that costs the same wherever it is in the window, unlike an offset::

    batch = expiring(catalog, start, end, limit=1000)
    while batch:
        act_on(batch)
        batch = expiring(catalog, start, end, limit=1000, after=batch[-1])

Slides without ``retain_until`` (not set yet, or kept) are never selected.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, or_, select

from lamina.archive.catalog import tables as t
from lamina.archive.catalog.catalog import Catalog
from lamina.archive.catalog.times import utc as _utc


@dataclass(frozen=True)
class ExpiringSlide:
    """A slide whose retention ends in the window asked for.

    Parameters
    ----------
    id
        The slide's id (``slides.id``).
    tenant
        The lab that owns it (``""`` until tenants are configured).
    retain_until
        When its care retention ends, aware and in UTC.
    """

    id: str
    tenant: str
    retain_until: dt.datetime


def expiring_query(
    start: dt.datetime, end: dt.datetime, limit: int | None, after: ExpiringSlide | None = None
) -> Select[Any]:
    """The selection :func:`expiring` runs: ``start <= retain_until < end``, after ``after``.

    Ordered by ``retain_until`` then ``id``, so that pages never overlap nor skip a slide even
    when many slides share one date.
    """
    low, high = _utc(start), _utc(end)
    column = t.slides.c.retain_until
    conditions = [column < high]
    if after is None:
        conditions.append(column >= low)
    else:
        last = _utc(after.retain_until)
        # the lower bound stays a plain range on the indexed column, the tie on the date is broken by id
        conditions.append(column >= max(low, last))
        conditions.append(or_(column > last, and_(column == last, t.slides.c.id > after.id)))
    query = (
        select(t.slides.c.id, t.slides.c.tenant, column).where(*conditions).order_by(column, t.slides.c.id)
    )
    return query if limit is None else query.limit(limit)


def expiring(
    source: Catalog | Engine | Connection,
    start: dt.datetime,
    end: dt.datetime,
    limit: int | None = 1000,
    after: ExpiringSlide | None = None,
) -> list[ExpiringSlide]:
    """The slides whose ``retain_until`` is in ``[start, end)``, earliest first.

    Parameters
    ----------
    source
        The catalog, or an engine or open connection to it (a connection keeps the selection
        inside the caller's transaction).
    start, end
        The window: ``start`` included, ``end`` excluded. Naive datetimes are taken as UTC.
    limit
        The most slides returned (one batch); ``None`` for all of them.
    after
        The last slide of the previous batch: this batch starts right after it.

    Returns
    -------
    list of ExpiringSlide
        In ``retain_until`` order, then by id; empty when no slide is due in the window (or after
        ``after``).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be a whole number of slides or None, got {limit}")
    query = expiring_query(start, end, limit, after)
    if isinstance(source, Connection):
        rows = source.execute(query).all()
    else:
        engine = source.engine if isinstance(source, Catalog) else source
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    return [ExpiringSlide(str(row[0]), str(row[1]), _utc(row[2])) for row in rows]
