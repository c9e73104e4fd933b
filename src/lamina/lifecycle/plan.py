"""What the lifecycle would do now, slide by slide, with totals: bytes freed and moved, and what
that saves a year in euros and kg CO2.

:func:`plan` evaluates each slide not yet expired against its lab's rules in force
(:func:`~lamina.lifecycle.evaluate.evaluate`, pure) at ``now`` (simulated time for tests and for
an operator's "what if"), a batch at a time, and yields the slides with something due (or every
slide with ``everything``). :class:`Totals` adds them up. ``lamina lifecycle plan`` prints both;
``lamina lifecycle run`` acts on the same items (:mod:`lamina.lifecycle.run`).
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import orjson

from lamina.archive.catalog import Catalog
from lamina.lifecycle.evaluate import Action, evaluate
from lamina.lifecycle.facts import slide_facts
from lamina.lifecycle.policy import Policies
from lamina.lifecycle.rules import Tier, TraceKeeps

__all__ = ["PlanItem", "TierPrices", "Totals", "plan"]

_GB = 1e9


@dataclass(frozen=True)
class TierPrices:
    """What a GB costs a month, and emits a year, on each tier. Defaults: the report's storage
    price (2.5 ct/GB for one month) for hot storage, a fifth of it for cold; the report's 0.2-0.4
    kg CO2 per GB a year, hot at the high end, cold at the low end."""

    eur_per_gb_month: Mapping[Tier, float] = field(
        default_factory=lambda: {Tier.HOT: 0.025, Tier.COLD: 0.005}
    )
    kg_co2_per_gb_year: Mapping[Tier, float] = field(default_factory=lambda: {Tier.HOT: 0.4, Tier.COLD: 0.2})

    def eur_year(self, tier: Tier, size: int) -> float:
        return self.eur_per_gb_month[tier] * 12 * size / _GB

    def co2_year(self, tier: Tier, size: int) -> float:
        return self.kg_co2_per_gb_year[tier] * size / _GB


@dataclass(frozen=True)
class PlanItem:
    """One slide and what is due for it."""

    slide_id: str
    tenant: str
    accession_number: str | None
    action: Action
    rule: str
    rule_digest: str
    reason: str
    bytes: int
    tier: Tier
    report_at: dt.datetime | None
    retain_until: dt.datetime | None
    due_at: dt.datetime | None
    trace: TraceKeeps
    trace_longest_side: int

    def json_line(self) -> builtins.bytes:
        """:meth:`as_dict` as one JSON line (orjson writes the datetimes itself: a plan writes a
        million of these)."""
        return (
            orjson.dumps(
                {
                    "slide": self.slide_id,
                    "tenant": self.tenant,
                    "accession_number": self.accession_number,
                    "action": self.action.value,
                    "rule": self.rule,
                    "reason": self.reason,
                    "bytes": self.bytes,
                    "tier": self.tier.value,
                    "report_at": self.report_at,
                    "retain_until": self.retain_until,
                    "due_at": self.due_at,
                }
            )
            + b"\n"
        )

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of ``lamina lifecycle plan --json``."""
        return {
            "slide": self.slide_id,
            "tenant": self.tenant,
            "accession_number": self.accession_number,
            "action": self.action.value,
            "rule": self.rule,
            "reason": self.reason,
            "bytes": self.bytes,
            "tier": self.tier.value,
            "report_at": self.report_at.isoformat() if self.report_at else None,
            "retain_until": self.retain_until.isoformat() if self.retain_until else None,
            "due_at": self.due_at.isoformat() if self.due_at else None,
        }


@dataclass
class Totals:
    """What a plan adds up to."""

    slides: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    bytes_freed: int = 0
    bytes_to_cold: int = 0
    bytes_to_hot: int = 0
    eur_per_year_saved: float = 0.0
    kg_co2_per_year_saved: float = 0.0

    def add(self, item: PlanItem, prices: TierPrices) -> None:
        self.slides += 1
        self.actions[item.action.value] = self.actions.get(item.action.value, 0) + 1
        if item.action is Action.EXPIRE:
            self.bytes_freed += item.bytes
            self.eur_per_year_saved += prices.eur_year(item.tier, item.bytes)
            self.kg_co2_per_year_saved += prices.co2_year(item.tier, item.bytes)
        elif item.action is Action.MOVE_COLD:
            self.bytes_to_cold += item.bytes
            self.eur_per_year_saved += prices.eur_year(Tier.HOT, item.bytes) - prices.eur_year(
                Tier.COLD, item.bytes
            )
            self.kg_co2_per_year_saved += prices.co2_year(Tier.HOT, item.bytes) - prices.co2_year(
                Tier.COLD, item.bytes
            )
        elif item.action is Action.MOVE_HOT:
            self.bytes_to_hot += item.bytes
            self.eur_per_year_saved -= prices.eur_year(Tier.HOT, item.bytes) - prices.eur_year(
                Tier.COLD, item.bytes
            )
            self.kg_co2_per_year_saved -= prices.co2_year(Tier.HOT, item.bytes) - prices.co2_year(
                Tier.COLD, item.bytes
            )

    def as_dict(self) -> dict[str, object]:
        return {
            "slides": self.slides,
            "actions": dict(sorted(self.actions.items())),
            "gb_freed": round(self.bytes_freed / _GB, 3),
            "gb_to_cold": round(self.bytes_to_cold / _GB, 3),
            "gb_to_hot": round(self.bytes_to_hot / _GB, 3),
            "eur_per_year_saved": round(self.eur_per_year_saved, 2),
            "kg_co2_per_year_saved": round(self.kg_co2_per_year_saved, 3),
        }


def plan(
    catalog: Catalog,
    now: dt.datetime,
    *,
    tenant: str | None = None,
    everything: bool = False,
    batch: int = 1000,
    policies: Policies | None = None,
) -> Iterator[PlanItem]:
    """The slides with something due at ``now`` (with ``everything``, every slide not expired),
    streamed from one query, one batch in memory at a time."""
    rules_of = policies or Policies(catalog)
    for rows in slide_facts(catalog, batch=batch, tenant=tenant):
        for row in rows:
            rules = rules_of.for_tenant(row.facts.tenant)
            outcome = evaluate(rules, row.facts, now)
            if not everything and outcome.action in (Action.KEEP, Action.NONE):
                continue
            yield PlanItem(
                row.facts.slide_id,
                row.facts.tenant,
                row.accession_number,
                outcome.action,
                outcome.rule,
                rules.digest,
                outcome.reason,
                row.bytes,
                row.facts.tier,
                row.facts.final_report_at,
                outcome.retain_until,
                outcome.due_at,
                outcome.trace,
                outcome.trace_longest_side,
            )
