"""What the protocols answer for a slide of the care lifecycle: whether it can be read now.

An expired slide (:mod:`lamina.lifecycle.expire`) keeps its slide, series and study rows and its
trace (``slide_traces``), but no instance: a retrieval of it finds nothing to read. Before a
retrieval answers "not found" (no instance of the series or study, an instance gone from the
catalog) or reports an object damaged (missing from the store), it asks :func:`availability`,
which raises :class:`~lamina.errors.GoneError` (410) for an expired slide, with one line saying
when and by which rule. So an expired slide is never reported missing or damaged, also while
a server still has its instances cached for a moment after the expiry.

The slide's state is one indexed query (``slides.series_instance_uid`` is unique, the trace is
found by its primary key), made only on those paths and on the openings of a slide (series
metadata, retrieval of a series): never per tile on the frames fast path.

QIDO-RS and the viewer show the same state as DICOM's ``InstanceAvailability (0008,0056)``,
read with the search's own rows (:mod:`lamina.archive.catalog.availability`): ``ONLINE`` for a
slide that can be read at once, ``NEARLINE`` for one on the cold tier (restored before it is
read), ``UNAVAILABLE`` for an expired one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.sql import Select

from lamina.archive.catalog import Catalog
from lamina.archive.catalog import availability as values
from lamina.archive.catalog import tables as t
from lamina.errors import GoneError
from lamina.lifecycle.restore import cold_check

__all__ = [
    "NEARLINE",
    "ONLINE",
    "UNAVAILABLE",
    "SlideState",
    "availability",
    "slide_state",
    "study_availability",
    "study_traces",
]

#: InstanceAvailability (0008,0056) values (PS3.3; the DCM code set of that name).
ONLINE, NEARLINE, UNAVAILABLE = values.ONLINE, values.NEARLINE, values.UNAVAILABLE


@dataclass(frozen=True)
class SlideState:
    """Where a slide stands in its lifecycle, and its trace when it expired."""

    slide_id: str
    series_instance_uid: str
    tier: str  # hot | cold
    expired_at: dt.datetime | None = None
    rule: str | None = None
    thumbnail_sha256: str | None = None
    thumbnail_width: int | None = None
    thumbnail_height: int | None = None

    @property
    def expired(self) -> bool:
        return self.expired_at is not None

    def gone(self) -> GoneError:
        """The one-line 410 of this expired slide."""
        when = self.expired_at.date().isoformat() if self.expired_at else "an unknown date"
        rule = self.rule or "unknown"
        return GoneError(
            f"slide {self.slide_id} expired on {when} after its care retention (rule {rule}); "
            "only its thumbnail and record are kept"
        )


def _states() -> Select[Any]:
    return select(
        t.slides.c.id,
        t.slides.c.series_instance_uid,
        t.slides.c.tier,
        t.slides.c.expired_at,
        t.slide_traces.c.rule,
        t.slide_traces.c.thumbnail_sha256,
        t.slide_traces.c.thumbnail_width,
        t.slide_traces.c.thumbnail_height,
    ).select_from(t.slides.outerjoin(t.slide_traces, t.slide_traces.c.slide_id == t.slides.c.id))


def _state(row: Iterable[object]) -> SlideState:
    slide_id, series, tier, expired_at, rule, sha256, width, height = tuple(row)
    if isinstance(expired_at, dt.datetime) and expired_at.tzinfo is None:  # SQLite drops the zone
        expired_at = expired_at.replace(tzinfo=dt.UTC)
    return SlideState(
        str(slide_id),
        str(series),
        str(tier or "hot"),
        expired_at if isinstance(expired_at, dt.datetime) else None,
        None if rule is None else str(rule),
        None if sha256 is None else str(sha256),
        None if width is None else int(str(width)),
        None if height is None else int(str(height)),
    )


def slide_state(catalog: Catalog, series: str) -> SlideState | None:
    """The state of the slide of ``series``; None when the series is no slide's (annotations,
    reports) or not in the catalog. Blocking: one indexed query."""
    with catalog.engine.connect() as conn:
        row = conn.execute(_states().where(t.slides.c.series_instance_uid == series)).first()
    return None if row is None else _state(row)


def availability(catalog: Catalog, study: str, series: str) -> None:
    """Raise unless the slide of ``series`` (in ``study``) can be read now: :class:`GoneError`
    (410) when it expired, :class:`~lamina.errors.RestoringError` (202) when it is on the cold
    tier (:func:`lamina.lifecycle.restore.cold_check`: its restore is queued once). Nothing for
    a series that is no slide's. Blocking: one indexed query (and one insert for a cold slide)."""
    state = slide_state(catalog, series)
    if state is None:
        return
    if state.expired:
        raise state.gone()
    # on the cold tier: its restore asked for once, RestoringError (202 with Retry-After)
    cold_check(catalog, state.slide_id, state.tier)


def study_traces(catalog: Catalog, study: str, series: Collection[str] | None = None) -> list[SlideState]:
    """The states of the slides of ``study`` (those of ``series`` alone when given), in series
    order. Blocking: one query on the slides' study index."""
    query = _states().where(t.slides.c.study_instance_uid == study)
    if series is not None:
        query = query.where(t.slides.c.series_instance_uid.in_(list(series)))
    with catalog.engine.connect() as conn:
        return [_state(row) for row in conn.execute(query.order_by(t.slides.c.series_instance_uid))]


def study_availability(catalog: Catalog, study: str, series: Collection[str] | None = None) -> None:
    """For a study-level retrieval that found no instance to send: :class:`GoneError` when the
    study's slides (those of ``series`` when only they may be read) all expired. A study with a
    live slide is retrieved as its live slides, and never asks."""
    states = study_traces(catalog, study, series)
    if states and all(state.expired for state in states):
        if len(states) == 1:
            raise states[0].gone()
        raise GoneError(
            f"the {len(states)} slides of study {study} expired after their care retention; "
            "only their thumbnails and records are kept"
        )
