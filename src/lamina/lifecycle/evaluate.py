"""What is due for a slide under a rule set, and why: the one pure function of the lifecycle.

:func:`evaluate` reads nothing and writes nothing: the slide's facts, the rules and the moment
``now`` come in, an :class:`Outcome` goes out, with the rule that decided (recorded with the
action), a one-line reason for the plan, and when the next action falls due. The precedence,
first to last:

1. an expired slide: nothing more (``NONE``);
2. a slide under legal hold is never expired nor moved cold: one in the cold tier goes back hot
   (``MOVE_HOT``: a hold must be readable at once), one in the hot tier is kept;
3. a slide of interest is never expired; it still moves cold after the rule's days without access;
4. a case without a final report is never expired by age: it is flagged for review (``REVIEW``)
   once the rule's ``review_after_days`` have passed since the scan;
5. a slide whose care retention has ended (the rule's ``care_days`` after the latest final,
   amended or corrected report: an amendment restarts the clock) expires (``EXPIRE``), whatever
   its tier;
6. a hot slide not read for the rule's ``cold_after_days`` (since its last access, or its scan)
   moves cold (``MOVE_COLD``);
7. otherwise it is kept (``KEEP``), ``due_at`` saying when something next falls due.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass
from enum import StrEnum

from lamina.errors import InvalidValueError
from lamina.lifecycle.rules import DEFAULT_RULES, Rule, RuleSet, Tier, TraceKeeps

__all__ = ["ADULT_AGE", "Action", "Outcome", "SlideFacts", "evaluate", "first_match", "is_pediatric"]

#: A patient is pediatric under this age at the study date.
ADULT_AGE = 18


@dataclass(frozen=True)
class SlideFacts:
    """What the lifecycle knows of one slide, read from the catalog by the caller.

    Parameters
    ----------
    slide_id
        The slide's id.
    tenant
        The FINESS number of its lab.
    scanned_at
        When it was stored (``created_at``).
    specimen_type, organ, stain
        As the case records them, or None.
    diagnosis_code
        ``SCHEME:CODE`` (``ICDO3:8500/3``, ``SNOMEDCT:254837009``, ``ADICAP:...``), or None.
    birth_date
        The patient's, or None when unknown (then no rule on ``pediatric`` matches).
    study_date
        The case's; pediatric is judged at it (at the scan when None).
    final_report_at
        The latest final, amended or corrected report of the case: the clock of the care
        retention. None: no final report yet.
    last_access_at
        The last read of its pyramid, or None (never read since the scan).
    tier
        Where its pyramid is.
    interest
        The category when it is a slide of interest (``teaching``, ``research``...), else None.
    held
        Whether it is under a legal hold.
    expired
        Whether it has expired already (only its trace is left).

    Every datetime is timezone-aware (UTC); a naive one is an :class:`InvalidValueError`.
    """

    slide_id: str
    tenant: str
    scanned_at: dt.datetime
    specimen_type: str | None
    organ: str | None
    diagnosis_code: str | None
    stain: str | None
    birth_date: dt.date | None
    study_date: dt.date | None
    final_report_at: dt.datetime | None
    last_access_at: dt.datetime | None
    tier: Tier
    interest: str | None
    held: bool
    expired: bool

    def __post_init__(self) -> None:
        # the datetime fields by name: a plan builds a million of these
        for name in _MOMENTS:
            value = getattr(self, name)
            if value is not None:
                _aware(f"SlideFacts.{name}", value)


#: the datetime fields of SlideFacts, checked aware
_MOMENTS = ("scanned_at", "final_report_at", "last_access_at")


def _aware(name: str, value: dt.datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValueError(f"{name}: {value.isoformat()} has no time zone; give it in UTC")


class Action(StrEnum):
    """What is due for a slide now."""

    KEEP = "keep"
    EXPIRE = "expire"
    MOVE_COLD = "move-cold"
    MOVE_HOT = "move-hot"
    REVIEW = "review"
    NONE = "none"


@dataclass(frozen=True)
class Outcome:
    """What :func:`evaluate` decided for a slide.

    Parameters
    ----------
    slide_id
        The slide's id.
    rule
        The name of the first matching rule, recorded with the action ("" when no rule was
        consulted: the slide had expired already).
    action
        What is due now.
    reason
        One line for the plan.
    retain_until
        When the care retention ends: None while the slide is kept (held, of interest, a rule
        that keeps) or its case has no final report.
    due_at
        When the next action falls due (in the past for one due now); None when nothing will.
    trace, trace_longest_side
        What the trace of the slide keeps when it expires (the built-in defaults when no rule
        was consulted).
    """

    slide_id: str
    rule: str
    action: Action
    reason: str
    retain_until: dt.datetime | None
    due_at: dt.datetime | None
    trace: TraceKeeps
    trace_longest_side: int


def is_pediatric(facts: SlideFacts) -> bool | None:
    """Whether the patient was under 18 at the study date (at the scan when there is none); None
    when the birth date is unknown."""
    if facts.birth_date is None:
        return None
    born = facts.birth_date
    on = facts.study_date or facts.scanned_at.astimezone(dt.UTC).date()
    age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return age < ADULT_AGE


def _folded(text: str | None) -> str | None:
    return None if text is None else text.strip().casefold()


def _one_of(values: tuple[str, ...], fact: str | None) -> bool:
    if not values:
        return True
    folded = _folded(fact)
    return folded is not None and any(value.casefold() == folded for value in values)


def _diagnosis(patterns: tuple[str, ...], code: str | None) -> bool:
    """Whether the case's ``SCHEME:CODE`` matches a pattern: the scheme equal, the code by glob,
    both case-insensitively."""
    if not patterns:
        return True
    folded = _folded(code)
    if folded is None or ":" not in folded:
        return False
    scheme, _, value = folded.partition(":")
    scheme, value = scheme.strip(), value.strip()
    for pattern in patterns:
        wanted, _, glob = pattern.casefold().partition(":")
        if wanted == scheme and fnmatch.fnmatchcase(value, glob):
            return True
    return False


def _matches(rule: Rule, facts: SlideFacts, pediatric: bool | None) -> bool:
    return (
        (not rule.tenants or facts.tenant.strip().upper() in rule.tenants)
        and _one_of(rule.specimen_types, facts.specimen_type)
        and _one_of(rule.organs, facts.organ)
        and _one_of(rule.stains, facts.stain)
        and (rule.pediatric is None or rule.pediatric == pediatric)
        and _diagnosis(rule.diagnoses, facts.diagnosis_code)
    )


def first_match(rules: RuleSet, facts: SlideFacts) -> Rule:
    """The first rule of ``rules`` whose conditions all hold for the slide (the catch-all default
    rule when no other does)."""
    pediatric = is_pediatric(facts)
    return next((rule for rule in rules.rules if _matches(rule, facts, pediatric)), rules.default)


def _after(moment: dt.datetime | None, days: int | None) -> dt.datetime | None:
    return None if moment is None or days is None else moment + dt.timedelta(days=days)


def _day(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).date().isoformat()


def evaluate(rules: RuleSet, facts: SlideFacts, now: dt.datetime) -> Outcome:
    """What is due for the slide at ``now`` under ``rules``, in the order of precedence of the
    module's docstring. Pure: no I/O, no clock (``now`` is given, timezone-aware)."""
    _aware("now", now)
    if facts.expired:
        built_in = DEFAULT_RULES.default  # no rule is consulted: the trace is made already
        return Outcome(
            facts.slide_id,
            "",
            Action.NONE,
            "already expired",
            None,
            None,
            built_in.trace,
            built_in.trace_longest_side,
        )
    rule = first_match(rules, facts)
    named = f"(rule {rule.name!r})"

    def outcome(
        action: Action,
        reason: str,
        retain_until: dt.datetime | None = None,
        due_at: dt.datetime | None = None,
    ) -> Outcome:
        return Outcome(
            facts.slide_id,
            rule.name,
            action,
            reason,
            retain_until,
            due_at,
            rule.trace,
            rule.trace_longest_side,
        )

    if facts.held:
        if facts.tier is Tier.COLD:
            return outcome(Action.MOVE_HOT, "held: back to hot, a hold must be readable at once", due_at=now)
        return outcome(Action.KEEP, "held: never expired nor moved cold")

    idle_since = facts.last_access_at or facts.scanned_at
    cold_at = _after(idle_since, rule.cold_after_days) if facts.tier is Tier.HOT else None
    cold_due = cold_at is not None and cold_at <= now
    idle = f"{rule.cold_after_days} days without access since {_day(idle_since)}: to cold {named}"

    if facts.interest is not None:
        kept = f"slide of interest ({facts.interest})"
        if cold_due:
            return outcome(Action.MOVE_COLD, f"{kept}; {idle}", due_at=cold_at)
        return outcome(Action.KEEP, kept, due_at=cold_at)

    if facts.final_report_at is None:
        review_at = _after(facts.scanned_at, rule.review_after_days)
        if review_at is not None and review_at <= now:
            scan = _day(facts.scanned_at)
            reason = (
                f"no final report {rule.review_after_days} days after the scan of {scan}: to review {named}"
            )
            return outcome(Action.REVIEW, reason, due_at=review_at)
        if cold_due:
            return outcome(Action.MOVE_COLD, f"no final report; {idle}", due_at=cold_at)
        upcoming = [moment for moment in (review_at, cold_at) if moment is not None]
        reason = "no final report: never expired by age"
        return outcome(Action.KEEP, reason, due_at=min(upcoming, default=None))

    retain_until = _after(facts.final_report_at, rule.care_days)
    report = f"{rule.care_days} days after the final report of {_day(facts.final_report_at)} {named}"
    if retain_until is not None and retain_until <= now:
        return outcome(Action.EXPIRE, report, retain_until, due_at=retain_until)
    if cold_due:
        return outcome(Action.MOVE_COLD, idle, retain_until, due_at=cold_at)
    upcoming = [moment for moment in (retain_until, cold_at) if moment is not None]
    if retain_until is None:
        reason = f"kept: no care expiry {named}"
    else:
        reason = f"kept until {_day(retain_until)}, {report}"
    return outcome(Action.KEEP, reason, retain_until, due_at=min(upcoming, default=None))
