"""InstanceAvailability (0008,0056) of a study, kept on its row so that a search reads it for free.

A slide is ``ONLINE`` (hot and live), ``NEARLINE`` (on the cold tier: restored before it is read)
or ``UNAVAILABLE`` (expired after its care retention: only its trace is kept). A study is as
available as its most available slide (it is retrieved as its live slides); a study without
slides is ``ONLINE``. ``studies.availability`` holds it, refreshed in the transactions that change
a slide's state: a slide added (:meth:`Catalog.add_slide`), expired, moved between tiers or
deleted. A series' own availability is its slide's, read with the series (its slide is joined).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from lamina.archive.catalog import tables as t

__all__ = ["NEARLINE", "ONLINE", "UNAVAILABLE", "now_online", "of_slide", "of_slides", "refresh"]

ONLINE, NEARLINE, UNAVAILABLE = "ONLINE", "NEARLINE", "UNAVAILABLE"


def of_slide(tier: str | None, expired_at: dt.datetime | None) -> str:
    """One slide's availability (a series without a slide: ``ONLINE``)."""
    if expired_at is not None:
        return UNAVAILABLE
    return NEARLINE if tier == "cold" else ONLINE


def of_slides(states: Iterable[tuple[str | None, dt.datetime | None]]) -> str:
    """The availability of a study of slides with these (tier, expired_at): its most available."""
    found = {of_slide(tier, expired_at) for tier, expired_at in states}
    for level in (ONLINE, NEARLINE, UNAVAILABLE):
        if level in found:
            return level
    return ONLINE


def refresh(conn: Connection, study: str) -> str:
    """Compute the study's availability from its slides and keep it on its row (inside the
    caller's transaction)."""
    rows = conn.execute(
        select(t.slides.c.tier, t.slides.c.expired_at).where(t.slides.c.study_instance_uid == study)
    ).all()
    value = of_slides((row[0], row[1]) for row in rows)
    conn.execute(
        update(t.studies)
        .where(t.studies.c.study_instance_uid == study, t.studies.c.availability != value)
        .values(availability=value)
    )
    return value


def now_online(conn: Connection, study: str) -> None:
    """The study holds a slide that is hot and live (one was just added)."""
    conn.execute(
        update(t.studies)
        .where(t.studies.c.study_instance_uid == study, t.studies.c.availability != ONLINE)
        .values(availability=ONLINE)
    )
