"""The one pure function: which rule matches a slide, and what is due for it, in the order of
precedence (expired, hold, interest, no report, expiry, tier move, keep)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.errors import InvalidValueError
from lamina.lifecycle.evaluate import Action, Outcome, SlideFacts, evaluate, first_match, is_pediatric
from lamina.lifecycle.rules import DEFAULT_RULES, Rule, RuleSet, Tier, TraceKeeps, parse_rules

UTC = dt.UTC
SCAN = dt.datetime(2026, 1, 2, 9, 30, tzinfo=UTC)
REPORT = dt.datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
LAB = "690781810"


def facts(**changes: Any) -> SlideFacts:
    """A hot care slide of an adult's breast biopsy, reported on REPORT, never read since."""
    base = SlideFacts(
        slide_id="s1",
        tenant=LAB,
        scanned_at=SCAN,
        specimen_type="biopsy",
        organ="breast",
        diagnosis_code="ICDO3:8500/3",
        stain="HE",
        birth_date=dt.date(1970, 6, 1),
        study_date=dt.date(2026, 1, 2),
        final_report_at=REPORT,
        last_access_at=None,
        tier=Tier.HOT,
        interest=None,
        held=False,
        expired=False,
    )
    return dataclasses.replace(base, **changes)


def rules(*items: Rule, default: Rule | None = None) -> RuleSet:
    return RuleSet((*items, default or Rule("default")), "test", "")


def days(n: float) -> dt.timedelta:
    return dt.timedelta(days=n)


# --- matching --------------------------------------------------------------------------------------

MATCHES = [
    # (rule conditions, fact changes, matches)
    ({"tenants": (LAB,)}, {}, True),
    ({"tenants": (LAB,)}, {"tenant": " 690781810 "}, True),
    ({"tenants": ("750712184",)}, {}, False),
    ({"tenants": ("2A0000154",)}, {"tenant": "2a0000154"}, True),
    ({"specimen_types": ("Biopsy",)}, {"specimen_type": " BIOPSY "}, True),
    ({"specimen_types": ("resection", "biopsy")}, {}, True),
    ({"specimen_types": ("resection",)}, {}, False),
    ({"specimen_types": ("biopsy",)}, {"specimen_type": None}, False),
    ({"organs": ("BREAST",)}, {}, True),
    ({"organs": ("lung",)}, {}, False),
    ({"organs": ("breast",)}, {"organ": None}, False),
    ({"stains": ("he",)}, {}, True),
    ({"stains": ("PAS",)}, {}, False),
    ({"stains": ("HE",)}, {"stain": None}, False),
    ({"diagnoses": ("ICDO3:8*/3",)}, {}, True),
    ({"diagnoses": ("icdo3:85??/3",)}, {"diagnosis_code": " icdo3:8500/3 "}, True),
    ({"diagnoses": ("ICDO3:*/3",)}, {"diagnosis_code": "ICDO3:8500/2"}, False),
    ({"diagnoses": ("SNOMEDCT:8500/3",)}, {}, False),  # another scheme, the same code
    ({"diagnoses": ("SNOMEDCT:254837009",)}, {"diagnosis_code": "SNOMEDCT:254837009"}, True),
    ({"diagnoses": ("ADICAP:*",)}, {"diagnosis_code": "adicap:BHGA7000"}, True),
    ({"diagnoses": ("ADICAP:BH*",)}, {"diagnosis_code": "ADICAP:bhga7000"}, True),
    ({"diagnoses": ("ADICAP:*",)}, {"diagnosis_code": "BHGA7000"}, False),  # no scheme: nothing matches
    ({"diagnoses": ("ICDO3:*",)}, {"diagnosis_code": None}, False),
    ({"pediatric": False}, {}, True),
    ({"pediatric": True}, {}, False),
    ({"pediatric": True}, {"birth_date": dt.date(2010, 1, 1)}, True),
    ({"pediatric": True}, {"birth_date": None}, False),  # unknown: only None matches
    ({"pediatric": False}, {"birth_date": None}, False),
    ({"pediatric": None}, {"birth_date": None}, True),
    ({"organs": ("breast",), "stains": ("HE",), "specimen_types": ("biopsy",)}, {}, True),  # AND
    ({"organs": ("breast",), "stains": ("PAS",)}, {}, False),
    ({}, {"specimen_type": None, "organ": None, "stain": None, "diagnosis_code": None}, True),
]


@pytest.mark.parametrize(("conditions", "changes", "expected"), MATCHES)
def test_each_condition_matches_case_insensitively_and_all_must_hold(
    conditions: dict[str, Any], changes: dict[str, Any], expected: bool
) -> None:
    rule = Rule("r", **conditions)
    # Act
    found = first_match(rules(rule), facts(**changes))
    # Assert
    assert (found.name == "r") is expected


@pytest.mark.parametrize(
    ("birth", "study", "pediatric"),
    [
        (dt.date(2008, 1, 3), dt.date(2026, 1, 2), True),  # 18 tomorrow
        (dt.date(2008, 1, 2), dt.date(2026, 1, 2), False),  # 18 today
        (dt.date(2008, 2, 29), dt.date(2026, 2, 28), True),  # born on 29 February: 18 on 1 March
        (dt.date(2008, 2, 29), dt.date(2026, 3, 1), False),
        (dt.date(2008, 1, 3), None, True),  # no study date: at the scan, 2026-01-02
        (dt.date(2008, 1, 2), None, False),
        (None, dt.date(2026, 1, 2), None),
    ],
)
def test_pediatric_is_under_18_at_the_study_date_or_the_scan(
    birth: dt.date | None, study: dt.date | None, pediatric: bool | None
) -> None:
    assert is_pediatric(facts(birth_date=birth, study_date=study)) is pediatric


def test_the_first_matching_rule_wins_and_the_default_catches_the_rest() -> None:
    breast = Rule("breast", organs=("breast",), care_days=90)
    biopsies = Rule("biopsies", specimen_types=("biopsy",), care_days=60)
    lung = Rule("lung", organs=("lung",))
    ruleset = rules(lung, breast, biopsies, default=Rule("default", care_days=45))
    # Act / Assert
    assert first_match(ruleset, facts()).name == "breast"
    assert first_match(ruleset, facts(organ="colon")).name == "biopsies"
    assert first_match(ruleset, facts(organ="colon", specimen_type="resection")).name == "default"
    outcome = evaluate(ruleset, facts(organ="colon", specimen_type="resection"), REPORT + days(45))
    assert (outcome.rule, outcome.action) == ("default", Action.EXPIRE)
    assert first_match(DEFAULT_RULES, facts()) == Rule("default")


# --- what is due -------------------------------------------------------------------------------------


def test_a_slide_expires_care_days_after_the_final_report() -> None:
    ruleset = rules()
    # Act
    before = evaluate(ruleset, facts(), REPORT + days(30) - dt.timedelta(seconds=1))
    at = evaluate(ruleset, facts(), REPORT + days(30))
    # Assert
    assert before == Outcome(
        "s1",
        "default",
        Action.KEEP,
        "kept until 2026-02-04, 30 days after the final report of 2026-01-05 (rule 'default')",
        REPORT + days(30),
        REPORT + days(30),
        TraceKeeps.THUMBNAIL,
        1024,
    )
    assert at == dataclasses.replace(
        before, action=Action.EXPIRE, reason="30 days after the final report of 2026-01-05 (rule 'default')"
    )


def test_the_trace_is_the_matching_rules() -> None:
    ruleset = rules(Rule("record only", organs=("breast",), trace=TraceKeeps.RECORD, trace_longest_side=256))
    outcome = evaluate(ruleset, facts(), REPORT + days(31))
    assert (outcome.rule, outcome.action, outcome.trace, outcome.trace_longest_side) == (
        "record only",
        Action.EXPIRE,
        TraceKeeps.RECORD,
        256,
    )


def test_care_days_zero_expires_at_the_report_and_none_never() -> None:
    assert evaluate(rules(Rule("now", care_days=0)), facts(), REPORT).action is Action.EXPIRE
    kept = evaluate(rules(Rule("keep", care_days=None)), facts(), REPORT + days(36500))
    assert (kept.action, kept.retain_until, kept.due_at, kept.reason) == (
        Action.KEEP,
        None,
        None,
        "kept: no care expiry (rule 'keep')",
    )


def test_an_amended_report_restarts_the_clock() -> None:
    amended = REPORT + days(20)
    now = REPORT + days(31)
    # Act
    first = evaluate(rules(), facts(), now)
    after_amendment = evaluate(rules(), facts(final_report_at=amended), now)
    # Assert
    assert first.action is Action.EXPIRE
    assert after_amendment.action is Action.KEEP
    assert after_amendment.retain_until == amended + days(30)


def test_no_final_report_means_no_expiry_by_age() -> None:
    outcome = evaluate(rules(Rule("short", care_days=0)), facts(final_report_at=None), SCAN + days(36500))
    assert outcome == Outcome(
        "s1",
        "short",
        Action.KEEP,
        "no final report: never expired by age",
        None,
        None,
        TraceKeeps.THUMBNAIL,
        1024,
    )


def test_no_final_report_is_flagged_for_review_after_the_rules_days() -> None:
    ruleset = rules(default=Rule("default", review_after_days=180))
    # Act
    before = evaluate(ruleset, facts(final_report_at=None), SCAN + days(179))
    after = evaluate(ruleset, facts(final_report_at=None), SCAN + days(181))
    reported = evaluate(ruleset, facts(), SCAN + days(181))
    # Assert
    assert (before.action, before.due_at) == (Action.KEEP, SCAN + days(180))
    assert after.action is Action.REVIEW
    assert after.due_at == SCAN + days(180)
    assert after.reason == "no final report 180 days after the scan of 2026-01-02: to review (rule 'default')"
    assert reported.action is Action.EXPIRE  # a reported case is never flagged


def test_expiry_beats_a_tier_move() -> None:
    ruleset = rules(default=Rule("default", care_days=30, cold_after_days=10))
    assert evaluate(ruleset, facts(), REPORT + days(30)).action is Action.EXPIRE


def test_a_hot_slide_moves_cold_after_days_without_access() -> None:
    ruleset = rules(default=Rule("default", care_days=None, cold_after_days=30))
    read = SCAN + days(10)
    # Act
    never_read = evaluate(ruleset, facts(), SCAN + days(30))
    read_since = evaluate(ruleset, facts(last_access_at=read), SCAN + days(30))
    later = evaluate(ruleset, facts(last_access_at=read), read + days(30))
    cold = evaluate(ruleset, facts(tier=Tier.COLD), SCAN + days(300))
    # Assert
    assert (never_read.action, never_read.due_at) == (Action.MOVE_COLD, SCAN + days(30))
    assert never_read.reason == "30 days without access since 2026-01-02: to cold (rule 'default')"
    assert (read_since.action, read_since.due_at) == (Action.KEEP, read + days(30))
    assert later.action is Action.MOVE_COLD
    assert (cold.action, cold.due_at) == (Action.KEEP, None)  # nothing more to move


def test_keep_is_due_at_the_first_of_the_next_events() -> None:
    ruleset = rules(default=Rule("default", care_days=30, cold_after_days=10))
    outcome = evaluate(ruleset, facts(), SCAN + days(1))
    assert (outcome.action, outcome.retain_until, outcome.due_at) == (
        Action.KEEP,
        REPORT + days(30),
        SCAN + days(10),
    )
    review = rules(default=Rule("default", cold_after_days=100, review_after_days=50))
    assert evaluate(review, facts(final_report_at=None), SCAN).due_at == SCAN + days(50)


def test_a_cold_slide_still_expires() -> None:
    assert evaluate(rules(), facts(tier=Tier.COLD), REPORT + days(30)).action is Action.EXPIRE


def test_a_slide_expired_already_needs_nothing_and_consults_no_rule() -> None:
    outcome = evaluate(rules(), facts(expired=True, held=True, tier=Tier.COLD), REPORT + days(3000))
    assert outcome == Outcome(
        "s1", "", Action.NONE, "already expired", None, None, TraceKeeps.THUMBNAIL, 1024
    )


# --- precedence ---------------------------------------------------------------------------------------

FAR = REPORT + days(36500)
BOTH = rules(default=Rule("default", care_days=30, cold_after_days=30, review_after_days=30))


def test_interest_beats_expiry_but_not_the_tier_move() -> None:
    # Act
    hot = evaluate(BOTH, facts(interest="teaching", last_access_at=FAR - days(1)), FAR)
    idle = evaluate(BOTH, facts(interest="teaching"), FAR)
    cold = evaluate(BOTH, facts(interest="teaching", tier=Tier.COLD), FAR)
    # Assert
    assert (hot.action, hot.reason, hot.retain_until, hot.due_at) == (
        Action.KEEP,
        "slide of interest (teaching)",
        None,
        FAR + days(29),
    )
    assert idle.action is Action.MOVE_COLD
    assert idle.reason == (
        "slide of interest (teaching); 30 days without access since 2026-01-02: to cold (rule 'default')"
    )
    assert (cold.action, cold.due_at) == (Action.KEEP, None)


def test_interest_beats_the_review_flag() -> None:
    outcome = evaluate(BOTH, facts(interest="research", final_report_at=None, last_access_at=FAR), FAR)
    assert outcome.action is Action.KEEP


def test_a_hold_beats_everything() -> None:
    for changes in ({}, {"interest": "teaching"}, {"final_report_at": None}):
        # Act
        hot = evaluate(BOTH, facts(held=True, **changes), FAR)
        cold = evaluate(BOTH, facts(held=True, tier=Tier.COLD, **changes), FAR)
        # Assert
        assert (hot.action, hot.reason, hot.retain_until, hot.due_at) == (
            Action.KEEP,
            "held: never expired nor moved cold",
            None,
            None,
        )
        assert (cold.action, cold.reason, cold.due_at) == (
            Action.MOVE_HOT,
            "held: back to hot, a hold must be readable at once",
            FAR,
        )
        assert cold.rule == "default"


def test_review_beats_the_tier_move_and_no_report_still_moves_cold() -> None:
    assert evaluate(BOTH, facts(final_report_at=None), FAR).action is Action.REVIEW
    no_review = rules(default=Rule("default", cold_after_days=30))
    outcome = evaluate(no_review, facts(final_report_at=None), SCAN + days(30))
    assert (outcome.action, outcome.reason) == (
        Action.MOVE_COLD,
        "no final report; 30 days without access since 2026-01-02: to cold (rule 'default')",
    )


def test_the_rules_of_the_example_file_decide_as_documented() -> None:
    ruleset = parse_rules(
        """
[[rule]]
name = "paediatric tumours"
pediatric = true
diagnoses = ["ICDO3:*/3"]
care_days = 3650

[[rule]]
name = "breast biopsies"
tenants = ["690781810"]
specimen_types = ["biopsy"]
organs = ["breast"]
care_days = 90
cold_after_days = 30

[[rule]]
name = "cytology"
specimen_types = ["cytology"]
keep = true
"""
    )
    child = facts(birth_date=dt.date(2015, 5, 5))
    assert evaluate(ruleset, child, REPORT + days(91)).rule == "paediatric tumours"
    assert evaluate(ruleset, child, REPORT + days(91)).action is Action.KEEP
    assert evaluate(ruleset, facts(), REPORT + days(31)).action is Action.MOVE_COLD
    assert evaluate(ruleset, facts(), REPORT + days(90)).action is Action.EXPIRE
    assert evaluate(ruleset, facts(specimen_type="Cytology"), FAR).action is Action.KEEP
    assert evaluate(ruleset, facts(specimen_type="resection"), REPORT + days(30)).rule == "default"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(InvalidValueError, match=r"SlideFacts.scanned_at: .* has no time zone"):
        facts(scanned_at=dt.datetime(2026, 1, 2))
    with pytest.raises(InvalidValueError, match="now: "):
        evaluate(rules(), facts(), dt.datetime(2026, 1, 2))


# --- properties ------------------------------------------------------------------------------------

_moment = st.datetimes(dt.datetime(2020, 1, 1), dt.datetime(2040, 1, 1), timezones=st.just(UTC))
_days = st.none() | st.integers(0, 3000)
_facts = st.builds(
    facts,
    scanned_at=_moment,
    final_report_at=st.none() | _moment,
    last_access_at=st.none() | _moment,
    birth_date=st.none() | st.dates(dt.date(1920, 1, 1), dt.date(2039, 1, 1)),
    study_date=st.none() | st.dates(dt.date(2020, 1, 1), dt.date(2039, 1, 1)),
    tier=st.sampled_from(Tier),
    interest=st.none() | st.sampled_from(["teaching", "research"]),
    held=st.booleans(),
    expired=st.booleans(),
    organ=st.none() | st.sampled_from(["breast", "lung"]),
)
_rules = st.builds(
    lambda organ, a, b: rules(a if organ else dataclasses.replace(a, organs=("breast",)), default=b),
    st.booleans(),
    *(
        st.builds(Rule, st.just(name), care_days=_days, cold_after_days=_days, review_after_days=_days)
        for name in ("r", "default")
    ),
)


@settings(max_examples=400, deadline=None)
@given(_rules, _facts, _moment)
def test_evaluate_never_breaks_the_precedence(ruleset: RuleSet, slide: SlideFacts, now: dt.datetime) -> None:
    # Act
    outcome = evaluate(ruleset, slide, now)
    # Assert
    assert outcome == evaluate(ruleset, slide, now)  # pure
    if slide.expired:
        assert outcome.action is Action.NONE
        return
    assert outcome.rule == first_match(ruleset, slide).name
    if slide.held:
        assert outcome.action in (Action.KEEP, Action.MOVE_HOT)
        assert (outcome.action is Action.MOVE_HOT) == (slide.tier is Tier.COLD)
    if slide.interest is not None or slide.final_report_at is None:
        assert outcome.action is not Action.EXPIRE
        assert outcome.retain_until is None
    if outcome.action is Action.EXPIRE:
        assert outcome.retain_until is not None and outcome.retain_until <= now
    if outcome.action is Action.MOVE_COLD:
        assert slide.tier is Tier.HOT
    if outcome.action is Action.KEEP:
        assert outcome.due_at is None or outcome.due_at > now
    else:
        assert outcome.due_at is not None and outcome.due_at <= now
