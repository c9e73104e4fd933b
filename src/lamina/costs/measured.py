"""A live archive's own volumes for the cost model: slides a year and GB a slide, from its catalog.

One read-only query on ``slides`` (``created_at``, ``bytes``, ``tenant``), over the last 365 days:
the slides stored then are the year's slides (no extrapolation: an archive younger than a year
counts what it has, and :attr:`MeasuredVolumes.first` says since when), and their stored DICOM
bytes over their number is the average slide size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.times import utc as _utc
from lamina.costs.model import GB, CostInputs
from lamina.errors import NotFoundError

__all__ = ["MeasuredVolumes", "measure"]


@dataclass(frozen=True)
class MeasuredVolumes:
    """What the catalog holds over ``days`` up to ``until``.

    Parameters
    ----------
    slides
        Slides stored in the window.
    bytes
        Their stored size (DICOM WSI), bytes.
    until, days
        The window's end and length.
    first
        When the first slide of the window was stored.
    tenant
        The lab counted (FINESS), or ``None`` for the whole node.
    """

    slides: int
    bytes: int
    until: dt.datetime
    days: int
    first: dt.datetime
    tenant: str | None

    @property
    def slides_per_year(self) -> float:
        return self.slides * 365.0 / self.days

    @property
    def gb_per_slide(self) -> float:
        return self.bytes / self.slides / GB

    def applied(self, inputs: CostInputs, volume: bool = True) -> CostInputs:
        """``inputs`` with this GB a slide and, when ``volume``, these slides a year."""
        changes: dict[str, Any] = {"gb_per_slide": self.gb_per_slide}
        if volume:
            changes |= {"slides_per_year": self.slides_per_year, "cases_per_year": None}
        return dataclasses.replace(inputs, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "slides": self.slides,
            "bytes": self.bytes,
            "since": (self.until - dt.timedelta(days=self.days)).isoformat(),
            "until": self.until.isoformat(),
            "first": self.first.isoformat(),
            "tenant": self.tenant,
            "slides_per_year": self.slides_per_year,
            "gb_per_slide": self.gb_per_slide,
        }


def measure(
    catalog: Catalog, tenant: str | None = None, now: dt.datetime | None = None, days: int = 365
) -> MeasuredVolumes:
    """The slides stored in the ``days`` before ``now`` (default: now), of ``tenant`` or all.

    Raises
    ------
    NotFoundError
        No slide was stored in the window: there is nothing to measure.
    """
    until = _utc(now or dt.datetime.now(dt.UTC))
    since = until - dt.timedelta(days=days)
    slides = t.slides.c
    query = select(func.count(), func.coalesce(func.sum(slides.bytes), 0), func.min(slides.created_at)).where(
        slides.created_at >= since, slides.created_at <= until
    )
    if tenant is not None:
        query = query.where(slides.tenant == tenant)
    with catalog.engine.connect() as conn:
        count, size, first = conn.execute(query).one()
    if not count:
        whose = f" of tenant {tenant}" if tenant is not None else ""
        raise NotFoundError(
            f"--measured: no slide{whose} was stored in the last {days} days; "
            "give --slides or --cases instead"
        )
    return MeasuredVolumes(int(count), int(size), until, days, _utc(first), tenant)
