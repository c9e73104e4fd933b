"""The storage report: what the archive holds per tier and per lab, what came in and went out each
month, the slides of interest, where the volume is heading, and what it costs in euros and CO2.

Every figure is an aggregate the database computes (``GROUP BY``, ``SUM(CASE ...)``): no slide is
loaded into memory, so the report costs a handful of queries whatever the archive's size, on
SQLite and PostgreSQL alike. The months are bucketed in one query with one ``SUM(CASE ...)`` column
per month (portable: no dialect's date functions).

The projection (:class:`Projection`) is linear over the last 12 months, in two streams:

- **care**: live slides not of interest. Its net rate a year is the bytes ingested over the last
  365 days (slides not flagged of interest) less the bytes freed by expiry over the same days; its
  volume is floored at zero.
- **interest**: live slides of interest, kept at least 10 years (the report): none leave within the
  projection, so the stream grows by the bytes ingested over the last 365 days that are now
  flagged of interest.

Each stream keeps today's split between the hot and cold tiers (with none yet: care hot, interest
cold), and is priced per tier with :class:`~lamina.lifecycle.plan.TierPrices`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.sql import ColumnElement

from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.times import utc as _utc
from lamina.costs.model import GB
from lamina.lifecycle.plan import TierPrices
from lamina.lifecycle.rules import Tier

__all__ = [
    "GLASS_SLIDE_KG_CO2",
    "MONTHS",
    "LabVolume",
    "Month",
    "Projection",
    "StorageReport",
    "Volume",
    "storage_report",
]

#: kg CO2 of one glass slide (the report), to compare with a digital slide's yearly footprint
GLASS_SLIDE_KG_CO2 = 0.6
#: months of intake and expiry reported, the current one included
MONTHS = 24
#: the years projected
HORIZONS = (1, 10)
_TIERS = (Tier.HOT, Tier.COLD)
_YEAR = dt.timedelta(days=365)


@dataclass(frozen=True)
class Volume:
    """Slides and their stored bytes."""

    slides: int = 0
    bytes: int = 0

    def __add__(self, other: Volume) -> Volume:
        return Volume(self.slides + other.slides, self.bytes + other.bytes)

    @property
    def gb(self) -> float:
        return self.bytes / GB

    def as_dict(self) -> dict[str, Any]:
        return {"slides": self.slides, "bytes": self.bytes, "gb": self.gb}


@dataclass(frozen=True)
class LabVolume:
    """One lab: its live slides per tier, and what expiry freed."""

    tenant: str
    name: str | None
    tiers: Mapping[Tier, Volume]
    expired: Volume  # slides expired, and the bytes their expiry freed

    @property
    def live(self) -> Volume:
        return sum(self.tiers.values(), Volume())

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "name": self.name,
            "tiers": {tier.value: self.tiers.get(tier, Volume()).as_dict() for tier in _TIERS},
            "live": self.live.as_dict(),
            "expired": self.expired.as_dict(),
        }


@dataclass(frozen=True)
class Month:
    """A calendar month (UTC): slides ingested (with their bytes) and expired (bytes freed)."""

    month: str  # YYYY-MM
    ingested: Volume
    expired: Volume

    def as_dict(self) -> dict[str, Any]:
        return {"month": self.month, "ingested": self.ingested.as_dict(), "expired": self.expired.as_dict()}


@dataclass(frozen=True)
class Projection:
    """Bytes held ``years`` from now, per stream and per tier, and their yearly cost then."""

    years: float
    care_bytes: int
    interest_bytes: int
    tiers: Mapping[Tier, int]
    eur_per_year: Mapping[Tier, float]
    kg_co2_per_year: Mapping[Tier, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "years": self.years,
            "care_gb": self.care_bytes / GB,
            "interest_gb": self.interest_bytes / GB,
            "gb": {tier.value: self.tiers[tier] / GB for tier in _TIERS},
            "total_gb": sum(self.tiers.values()) / GB,
            "eur_per_year": {tier.value: self.eur_per_year[tier] for tier in _TIERS},
            "kg_co2_per_year": {tier.value: self.kg_co2_per_year[tier] for tier in _TIERS},
        }


@dataclass(frozen=True)
class StorageReport:
    """What :func:`storage_report` found; :meth:`as_dict` is ``lamina report --json``."""

    now: dt.datetime
    tenant: str | None
    prices: TierPrices
    tiers: Mapping[Tier, Volume]
    labs: list[LabVolume]
    expired: Volume
    months: list[Month]
    interest: Mapping[str, Volume]  # live slides of interest by category
    interest_tiers: Mapping[Tier, Volume]
    rates: Mapping[str, int]  # bytes a year: ingested, ingested_interest, freed (the last 365 days)
    projections: list[Projection] = field(default_factory=list)

    @property
    def live(self) -> Volume:
        return sum(self.tiers.values(), Volume())

    @property
    def interest_total(self) -> Volume:
        return sum(self.interest.values(), Volume())

    def eur_per_year(self, tier: Tier) -> float:
        return self.prices.eur_year(tier, self.tiers.get(tier, Volume()).bytes)

    def kg_co2_per_year(self, tier: Tier) -> float:
        return self.prices.co2_year(tier, self.tiers.get(tier, Volume()).bytes)

    def glass(self) -> dict[str, Any]:
        """A digital slide's yearly storage CO2 (the mean live slide, per tier) beside one glass slide."""
        live = self.live
        gb_per_slide = live.gb / live.slides if live.slides else None
        per_tier: dict[str, Any] = {}
        for tier in _TIERS:
            kg = self.prices.kg_co2_per_gb_year[tier] * gb_per_slide if gb_per_slide else None
            per_tier[tier.value] = {
                "kg_co2_per_slide_year": kg,
                "years_to_one_glass_slide": GLASS_SLIDE_KG_CO2 / kg if kg else None,
            }
        return {
            "glass_slide_kg_co2": GLASS_SLIDE_KG_CO2,
            "gb_per_digital_slide": gb_per_slide,
            "tiers": per_tier,
            "live_slides_as_glass_kg_co2": live.slides * GLASS_SLIDE_KG_CO2,
            "storage_kg_co2_per_year": sum(self.kg_co2_per_year(tier) for tier in _TIERS),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "tenant": self.tenant,
            "prices": {
                "eur_per_gb_month": {tier.value: self.prices.eur_per_gb_month[tier] for tier in _TIERS},
                "kg_co2_per_gb_year": {tier.value: self.prices.kg_co2_per_gb_year[tier] for tier in _TIERS},
            },
            "live": self.live.as_dict(),
            "tiers": {
                tier.value: {
                    **self.tiers.get(tier, Volume()).as_dict(),
                    "eur_per_year": self.eur_per_year(tier),
                    "kg_co2_per_year": self.kg_co2_per_year(tier),
                }
                for tier in _TIERS
            },
            "expired": self.expired.as_dict(),
            "labs": [lab.as_dict() for lab in self.labs],
            "months": [month.as_dict() for month in self.months],
            "interest": {
                "total": self.interest_total.as_dict(),
                "categories": {name: volume.as_dict() for name, volume in sorted(self.interest.items())},
                "tiers": {tier.value: self.interest_tiers.get(tier, Volume()).as_dict() for tier in _TIERS},
            },
            "rates": {
                "window_days": 365,
                "gb_ingested_per_year": self.rates["ingested"] / GB,
                "gb_ingested_interest_per_year": self.rates["ingested_interest"] / GB,
                "gb_freed_per_year": self.rates["freed"] / GB,
            },
            "projection_method": PROJECTION_METHOD,
            "projections": [item.as_dict() for item in self.projections],
            "glass": self.glass(),
        }


PROJECTION_METHOD = (
    "linear over the last 365 days, in two streams: care (live slides not of interest) grows by the "
    "bytes ingested less the bytes freed by expiry, floored at zero; interest (live slides of interest, "
    "kept at least 10 years) grows by the bytes ingested that are now of interest, none leaving; each "
    "stream keeps today's split between hot and cold (with none yet: care hot, interest cold)"
)


# -- the queries ------------------------------------------------------------------------------------------


def _month_starts(now: dt.datetime, count: int) -> list[dt.datetime]:
    """The first instants of the ``count`` months up to ``now``'s, and of the month after it."""
    year, month = now.year, now.month
    starts = []
    for back in range(count - 1, -2, -1):
        index = year * 12 + month - 1 - back
        starts.append(dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.UTC))
    return starts


def _in(column: Any, low: dt.datetime, high: dt.datetime) -> ColumnElement[bool]:
    return and_(column >= low, column < high)


def _lab_filter(tenant: str | None) -> ColumnElement[bool]:
    return t.slides.c.tenant == tenant if tenant is not None else literal(True)


def _is_interest() -> ColumnElement[int]:
    return case((t.slide_interest.c.slide_id.is_not(None), 1), else_=0)


def storage_report(
    catalog: Catalog, now: dt.datetime, *, tenant: str | None = None, prices: TierPrices | None = None
) -> StorageReport:
    """The storage report of ``tenant``'s slides (every lab's with ``None``) at ``now``.

    Parameters
    ----------
    catalog
        The archive's catalog (read only).
    now
        The report's instant: the months end with its month, the rates' window with it.
    tenant
        A lab's FINESS number, or ``None`` for the whole node.
    prices
        € per GB and month and kg CO2 per GB and year per tier (default: the lifecycle's).
    """
    now = _utc(now)
    prices = prices or TierPrices()
    s, si, tr = t.slides.c, t.slide_interest.c, t.slide_traces.c
    mine = _lab_filter(tenant)
    interest_join = t.slides.outerjoin(t.slide_interest, t.slide_interest.c.slide_id == s.id)
    interest = _is_interest()
    with catalog.engine.connect() as conn:
        # live slides by lab, tier and interest
        live_rows = conn.execute(
            select(s.tenant, s.tier, interest, func.count(), func.coalesce(func.sum(s.bytes), 0))
            .select_from(interest_join)
            .where(mine, s.expired_at.is_(None))
            .group_by(s.tenant, s.tier, interest)
        ).all()
        # expired slides by lab, with the bytes their expiry freed
        expired_rows = conn.execute(
            select(s.tenant, func.count(), func.coalesce(func.sum(tr.bytes_freed), 0))
            .select_from(t.slides.join(t.slide_traces, t.slide_traces.c.slide_id == s.id))
            .where(mine)
            .group_by(s.tenant)
        ).all()
        names = {
            str(row[0]): str(row[1]) for row in conn.execute(select(t.tenants.c.finess, t.tenants.c.name))
        }
        # live slides of interest by category
        category_rows = conn.execute(
            select(si.category, func.count(), func.coalesce(func.sum(s.bytes), 0))
            .select_from(t.slides.join(t.slide_interest, t.slide_interest.c.slide_id == s.id))
            .where(mine, s.expired_at.is_(None))
            .group_by(si.category)
        ).all()
        # the months: one SUM(CASE) column per month and figure, one row
        starts = _month_starts(now, MONTHS)
        spans = list(itertools.pairwise(starts))
        ingested = conn.execute(
            select(
                *(func.coalesce(func.sum(case((_in(s.created_at, a, b), 1), else_=0)), 0) for a, b in spans),
                *(
                    func.coalesce(func.sum(case((_in(s.created_at, a, b), s.bytes), else_=0)), 0)
                    for a, b in spans
                ),
            ).where(mine, s.created_at >= starts[0], s.created_at < starts[-1])
        ).one()
        expired = conn.execute(
            select(
                *(func.coalesce(func.sum(case((_in(tr.expired_at, a, b), 1), else_=0)), 0) for a, b in spans),
                *(
                    func.coalesce(func.sum(case((_in(tr.expired_at, a, b), tr.bytes_freed), else_=0)), 0)
                    for a, b in spans
                ),
            )
            .select_from(t.slide_traces.join(t.slides, t.slide_traces.c.slide_id == s.id))
            .where(mine, tr.expired_at >= starts[0], tr.expired_at < starts[-1])
        ).one()
        # the rates: the last 365 days
        since = now - _YEAR
        ingested_year, interest_year = conn.execute(
            select(
                func.coalesce(func.sum(s.bytes), 0),
                func.coalesce(
                    func.sum(
                        case((and_(si.slide_id.is_not(None), s.expired_at.is_(None)), s.bytes), else_=0)
                    ),
                    0,
                ),
            )
            .select_from(interest_join)
            .where(mine, s.created_at >= since, s.created_at <= now)
        ).one()
        (freed_year,) = conn.execute(
            select(func.coalesce(func.sum(tr.bytes_freed), 0))
            .select_from(t.slide_traces.join(t.slides, t.slide_traces.c.slide_id == s.id))
            .where(mine, tr.expired_at >= since, tr.expired_at <= now)
        ).one()

    tiers: dict[Tier, Volume] = {}
    interest_tiers: dict[Tier, Volume] = {}
    per_lab: dict[str, dict[Tier, Volume]] = {}
    for lab, tier_name, flagged, count, size in live_rows:
        tier, volume = Tier(tier_name), Volume(int(count), int(size))
        tiers[tier] = tiers.get(tier, Volume()) + volume
        lab_tiers = per_lab.setdefault(str(lab), {})
        lab_tiers[tier] = lab_tiers.get(tier, Volume()) + volume
        if flagged:
            interest_tiers[tier] = interest_tiers.get(tier, Volume()) + volume
    lab_expired = {str(lab): Volume(int(count), int(size)) for lab, count, size in expired_rows}
    labs = [
        LabVolume(lab, names.get(lab), per_lab.get(lab, {}), lab_expired.get(lab, Volume()))
        for lab in sorted(set(per_lab) | set(lab_expired))
    ]
    n = len(spans)
    months = [
        Month(
            f"{a:%Y-%m}",
            Volume(int(ingested[i]), int(ingested[n + i])),
            Volume(int(expired[i]), int(expired[n + i])),
        )
        for i, (a, _) in enumerate(spans)
    ]
    rates = {
        "ingested": int(ingested_year),
        "ingested_interest": int(interest_year),
        "freed": int(freed_year),
    }
    report = StorageReport(
        now,
        tenant,
        prices,
        tiers,
        labs,
        sum(lab_expired.values(), Volume()),
        months,
        {str(name): Volume(int(count), int(size)) for name, count, size in category_rows},
        interest_tiers,
        rates,
    )
    return dataclasses.replace(report, projections=[project(report, years) for years in HORIZONS])


def _split(total: float, shares: Mapping[Tier, Volume], default: Tier) -> dict[Tier, float]:
    """``total`` bytes split as ``shares`` are (all on ``default`` when they hold nothing)."""
    held = sum(volume.bytes for volume in shares.values())
    if not held:
        return {tier: total if tier is default else 0.0 for tier in _TIERS}
    return {tier: total * shares.get(tier, Volume()).bytes / held for tier in _TIERS}


def project(report: StorageReport, years: float) -> Projection:
    """The volume and yearly cost ``years`` from the report's ``now`` (the module's method)."""
    care_now = {tier: report.tiers.get(tier, Volume()) for tier in _TIERS}
    care_now = {
        tier: Volume(
            volume.slides - report.interest_tiers.get(tier, Volume()).slides,
            volume.bytes - report.interest_tiers.get(tier, Volume()).bytes,
        )
        for tier, volume in care_now.items()
    }
    care_total = sum(volume.bytes for volume in care_now.values())
    interest_total = sum(volume.bytes for volume in report.interest_tiers.values())
    care_rate = report.rates["ingested"] - report.rates["ingested_interest"] - report.rates["freed"]
    care = max(0.0, care_total + care_rate * years)
    kept = interest_total + report.rates["ingested_interest"] * years
    care_split = _split(care, care_now, Tier.HOT)
    interest_split = _split(kept, report.interest_tiers, Tier.COLD)
    held = {tier: round(care_split[tier] + interest_split[tier]) for tier in _TIERS}
    return Projection(
        years,
        round(care),
        round(kept),
        held,
        {tier: report.prices.eur_year(tier, held[tier]) for tier in _TIERS},
        {tier: report.prices.co2_year(tier, held[tier]) for tier in _TIERS},
    )
