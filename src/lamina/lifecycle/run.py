"""Doing what the plan says: expire the slides whose care retention is over, move slides between
tiers, and list the cases to review. Idempotent: a slide expired is not seen again, a slide
moved is on its tier, and a run stopped halfway is finished by the next one.

A failure on one slide is reported with it and the run goes on with the others.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from lamina.archive.blobstore import BlobStore
from lamina.archive.catalog import Catalog
from lamina.errors import LaminaError
from lamina.lifecycle.evaluate import Action
from lamina.lifecycle.expire import expire_slide, leftovers
from lamina.lifecycle.plan import PlanItem, TierPrices, Totals, plan
from lamina.lifecycle.rules import Tier, TraceKeeps

__all__ = ["Mover", "RunReport", "run"]


class Mover(Protocol):
    """Moves a slide's objects to a tier (:mod:`lamina.lifecycle.tiers`)."""

    def move(self, slide_id: str, tier: Tier, actor: str) -> None: ...

    def finish(self) -> int:
        """Finish the moves a crash stopped halfway (a slide the plan does not visit again)."""
        ...


@dataclass
class RunReport:
    """What a run did: the totals of what was done, and each slide that could not be."""

    done: Totals = field(default_factory=Totals)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (slide, why): a hold or flag came since
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (slide, why): e.g. no cold tier
    review: list[str] = field(default_factory=list)  # slides whose case has no report after long
    failed: list[tuple[str, str]] = field(default_factory=list)  # (slide, error)
    objects_left: int = 0
    #: slides expired by an earlier run whose leftover objects this run removed
    finished: int = 0
    #: moves to cold stopped after their switch whose deletion from the hot store this run did
    moves_finished: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "done": self.done.as_dict(),
            "kept": [{"slide": s, "why": w} for s, w in self.kept],
            "skipped": [{"slide": s, "why": w} for s, w in self.skipped],
            "review": self.review,
            "failed": [{"slide": s, "error": e} for s, e in self.failed],
            "objects_left": self.objects_left,
            "finished": self.finished,
            "moves_finished": self.moves_finished,
        }


def run(
    catalog: Catalog,
    store: BlobStore,
    now: dt.datetime,
    actor: str,
    *,
    tenant: str | None = None,
    mover: Mover | None = None,
    prices: TierPrices | None = None,
    progress: Callable[[PlanItem], None] | None = None,
    cold_store: BlobStore | None = None,
) -> RunReport:
    """Act on every slide with something due at ``now`` (``cold_store``: the cold tier, which an
    expired slide's objects leave too)."""
    report = RunReport()
    rates = prices or TierPrices()
    if mover is not None:  # first what a crashed run left halfway
        try:
            report.moves_finished = mover.finish()
        except LaminaError as exc:
            report.failed.append(("", f"finishing the moves a crash stopped: {exc}"))
    # and the objects of slides expired before a crash or a storage error (their traces say so)
    for slide_id in leftovers(catalog):
        try:
            finished = expire_slide(
                catalog, store, slide_id, rule="", rule_digest="", report_at=None, thumbnail_side=None,
                actor=actor, cold_store=cold_store,
            )  # fmt: skip
        except LaminaError as exc:
            report.failed.append((slide_id, f"removing what an earlier expiry left: {exc}"))
            continue
        report.objects_left += finished.objects_left
        report.finished += 1
    for item in plan(catalog, now, tenant=tenant):
        try:
            _act(catalog, store, item, actor, mover, report, rates, cold_store)
        except LaminaError as exc:
            report.failed.append((item.slide_id, str(exc)))
        if progress is not None:
            progress(item)
    return report


def _act(
    catalog: Catalog,
    store: BlobStore,
    item: PlanItem,
    actor: str,
    mover: Mover | None,
    report: RunReport,
    rates: TierPrices,
    cold_store: BlobStore | None,
) -> None:
    if item.action is Action.EXPIRE:
        side = item.trace_longest_side if item.trace is TraceKeeps.THUMBNAIL else None
        result = expire_slide(
            catalog,
            store,
            item.slide_id,
            rule=item.rule,
            rule_digest=item.rule_digest,
            report_at=item.report_at,
            thumbnail_side=side,
            actor=actor,
            cold_store=cold_store,
        )
        report.objects_left += result.objects_left
        if result.status == "kept":
            report.kept.append((item.slide_id, result.reason))
        elif result.error:
            report.failed.append((item.slide_id, result.error))
        else:
            report.done.add(item, rates)
    elif item.action in (Action.MOVE_COLD, Action.MOVE_HOT):
        if mover is None:
            report.skipped.append((item.slide_id, "no cold tier is configured ([tiers] in lamina.toml)"))
            return
        mover.move(item.slide_id, Tier.COLD if item.action is Action.MOVE_COLD else Tier.HOT, actor)
        report.done.add(item, rates)
    elif item.action is Action.REVIEW:
        report.review.append(item.slide_id)
