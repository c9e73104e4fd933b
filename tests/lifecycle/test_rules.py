"""Retention rules from TOML: every field, the defaults, the round trip, and every error with its
file, line, rule and field."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.errors import RequestError
from lamina.lifecycle.rules import (
    DEFAULT_RULES,
    MAX_BYTES,
    MAX_RULES,
    Rule,
    RuleError,
    RuleSet,
    TraceKeeps,
    load_rules,
    parse_rules,
)
from tests.support import REPO

EXAMPLE = """\
# lamina lifecycle rules: the first matching rule wins
[defaults]
care_days = 30
trace = "thumbnail"
trace_longest_side = 1024

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
keep = true          # never expired by this rule
"""


def _error(text: str) -> RuleError:
    with pytest.raises(RuleError) as caught:
        parse_rules(text)
    return caught.value


def test_the_example_gives_its_rules_in_order_then_the_default() -> None:
    # Act
    rules = parse_rules(EXAMPLE, "lab/rules.toml")
    # Assert
    assert rules.rules == (
        Rule("paediatric tumours", pediatric=True, diagnoses=("ICDO3:*/3",), care_days=3650),
        Rule(
            "breast biopsies",
            tenants=("690781810",),
            specimen_types=("biopsy",),
            organs=("breast",),
            care_days=90,
            cold_after_days=30,
        ),
        Rule("cytology", specimen_types=("cytology",), care_days=None),
        Rule("default"),
    )
    assert rules.source == "lab/rules.toml"
    assert rules.digest == hashlib.sha256(EXAMPLE.encode()).hexdigest()
    assert rules.default == Rule("default", care_days=30)


def test_the_built_in_set_is_the_default_rule_alone() -> None:
    assert DEFAULT_RULES.rules == (Rule("default"),)
    assert DEFAULT_RULES.default.care_days == 30
    assert DEFAULT_RULES.default.trace is TraceKeeps.THUMBNAIL
    assert DEFAULT_RULES.default.trace_longest_side == 1024
    assert DEFAULT_RULES.default.cold_after_days is None
    assert parse_rules("").rules == DEFAULT_RULES.rules


def test_defaults_fill_what_a_rule_leaves_out_and_never_undoes_them() -> None:
    text = """
[defaults]
care_days = 60
cold_after_days = 14
review_after_days = 365
trace = "record"
trace_longest_side = 512

[[rule]]
name = "inherits"

[[rule]]
name = "overrides"
care_days = 0
cold_after_days = "never"
review_after_days = "never"
trace = "thumbnail"
trace_longest_side = 2048

[[rule]]
name = "kept"
care_days = "never"
"""
    # Act
    inherits, overrides, kept, default = parse_rules(text).rules
    # Assert
    assert inherits == Rule(
        "inherits", care_days=60, cold_after_days=14, review_after_days=365, trace=TraceKeeps.RECORD,
        trace_longest_side=512,
    )  # fmt: skip
    assert overrides == Rule("overrides", care_days=0, trace_longest_side=2048)
    assert kept.care_days is None
    assert default == Rule("default", care_days=60, cold_after_days=14, review_after_days=365,
                           trace=TraceKeeps.RECORD, trace_longest_side=512)  # fmt: skip


def test_keep_in_defaults_keeps_every_slide_no_rule_expires() -> None:
    rules = parse_rules("[defaults]\nkeep = true\n[[rule]]\nname = 'biopsies'\nspecimen_types = ['biopsy']\n")
    assert rules.default.care_days is None
    assert rules.rules[0].care_days is None


def test_every_matching_field_is_read_and_normalised() -> None:
    text = """
[[rule]]
name = "  all of them  "
tenants = [" 2a0000154 ", "690781810"]
specimen_types = [" Biopsy ", "resection"]
organs = ["Breast", "C50.9"]
diagnoses = ["icdo3:8*/3", " SNOMEDCT : 254837009 ", "adicap:*"]
stains = ["HE", " pas "]
pediatric = false
"""
    # Act
    rule = parse_rules(text).rules[0]
    # Assert
    assert rule.name == "all of them"
    assert rule.tenants == ("2A0000154", "690781810")
    assert rule.specimen_types == ("Biopsy", "resection")
    assert rule.organs == ("Breast", "C50.9")
    assert rule.diagnoses == ("ICDO3:8*/3", "SNOMEDCT:254837009", "ADICAP:*")
    assert rule.stains == ("HE", "pas")
    assert rule.pediatric is False
    assert not rule.catch_all


def test_a_rule_built_in_python_is_checked_and_normalised_too() -> None:
    rule = Rule("x", tenants=[" 690781810"], diagnoses=("adicap:B*",), trace="record")  # type: ignore[arg-type]
    assert rule.tenants == ("690781810",)
    assert rule.diagnoses == ("ADICAP:B*",)
    assert rule.trace is TraceKeeps.RECORD
    with pytest.raises(RuleError) as caught:
        Rule("x", care_days=-1)
    assert str(caught.value) == (
        "Rule, rule 'x', field care_days: "
        'expected a whole number of days from 0 to 36500, or "never", got -1'
    )


def test_a_rule_set_ends_with_the_catch_all_and_has_unique_names() -> None:
    with pytest.raises(RuleError, match="the last rule must be the catch-all 'default'"):
        RuleSet((Rule("x"),), "test", "")
    with pytest.raises(RuleError, match="the last rule must be the catch-all"):
        RuleSet((Rule("default", organs=("breast",)),), "test", "")
    with pytest.raises(RuleError, match="names must be unique"):
        RuleSet((Rule("x"), Rule("X"), Rule("default")), "test", "")
    with pytest.raises(RuleError, match="names must be unique"):
        RuleSet((Rule("Default"), Rule("default")), "test", "")


def test_the_example_round_trips_through_to_toml() -> None:
    rules = parse_rules(EXAMPLE)
    assert parse_rules(rules.to_toml()).rules == rules.rules


def test_to_toml_writes_never_and_keep_against_the_defaults() -> None:
    rules = RuleSet(
        (
            Rule("hot forever", cold_after_days=None, care_days=None, organs=('say "hi"\\',)),
            Rule("default", cold_after_days=10, review_after_days=200, trace=TraceKeeps.RECORD),
        ),
        "test",
        "",
    )
    text = rules.to_toml()
    assert 'cold_after_days = "never"' in text
    assert "keep = true" in text
    assert parse_rules(text).rules == rules.rules


# --- the errors: file, line, rule, field --------------------------------------------------------

RULE = '[[rule]]\nname = "r"\n'
ERRORS = [
    # (text, line, where, field, reason)
    (RULE + "care_days = 'thirty'\n", 3, "rule 'r'", "care_days",
     "expected a whole number of days from 0 to 36500, or \"never\", got 'thirty'"),
    (RULE + "care_days = 36501\n", 3, "rule 'r'", "care_days", "got 36501"),
    (RULE + "care_days = -1\n", 3, "rule 'r'", "care_days", "got -1"),
    (RULE + "care_days = 3.5\n", 3, "rule 'r'", "care_days", "got 3.5"),
    (RULE + "care_days = true\n", 3, "rule 'r'", "care_days", "got true"),
    (RULE + "cold_after_days = '30'\n", 3, "rule 'r'", "cold_after_days", "got '30'"),
    (RULE + "review_after_days = 'soon'\n", 3, "rule 'r'", "review_after_days", "got 'soon'"),
    (RULE + "keep = false\n", 3, "rule 'r'", "keep", "expected true"),
    (RULE + "keep = true\ncare_days = 3\n", 3, "rule 'r'", "keep", "give keep = true or care_days, not both"),
    (RULE + "trace = 'jpeg'\n", 3, "rule 'r'", "trace", "expected \"thumbnail\" or \"record\", got 'jpeg'"),
    (RULE + "trace_longest_side = 63\n", 3, "rule 'r'", "trace_longest_side",
     "expected a whole number of pixels from 64 to 8192, got 63"),
    (RULE + "trace_longest_side = 8193\n", 3, "rule 'r'", "trace_longest_side", "got 8193"),
    (RULE + "pediatric = 'yes'\n", 3, "rule 'r'", "pediatric", "expected true or false, got 'yes'"),
    (RULE + "tenants = ['69078181']\n", 3, "rule 'r'", "tenants", "'69078181' is not a FINESS number"),
    (RULE + "tenants = '690781810'\n", 3, "rule 'r'", "tenants",
     "expected a list of texts, got '690781810': write ['690781810']"),
    (RULE + "organs = ['breast', '']\n", 3, "rule 'r'", "organs", "item 2: expected a text, got an empty"),
    (RULE + "stains = ['HE', 5]\n", 3, "rule 'r'", "stains", "item 2: expected a text, got 5"),
    (RULE + 'specimen_types = ["a\\u0007"]\n', 3, "rule 'r'", "specimen_types", "printable"),
    (RULE + "diagnoses = ['ICD10:C50']\n", 3, "rule 'r'", "diagnoses",
     "'ICD10:C50' is not a diagnosis pattern"),
    (RULE + "diagnoses = ['8500/3']\n", 3, "rule 'r'", "diagnoses", "is not a diagnosis pattern"),
    (RULE + "diagnoses = ['ICDO3:']\n", 3, "rule 'r'", "diagnoses", "is not a diagnosis pattern"),
    (RULE + "care_dys = 3\n", 3, "rule 'r'", "care_dys",
     "unknown key 'care_dys' (did you mean 'care_days'?); the known keys are name, tenants"),
    ('[[rule]]\ncare_days = 3\n', 1, "rule #1", "name", 'every rule needs one: add name = "..."'),
    ('[[rule]]\nname = "  "\n', 2, "rule #1", "name", "expected a text, got an empty one"),
    ('[[rule]]\nname = 5\n', 2, "rule #1", "name", "expected a text, got 5"),
    (RULE + '\n[[rule]]\nname = "R"\n', 5, "rule 'R'", "name",
     "the name is already that of rule #1 (line 1): names must be unique"),
    ('[[rule]]\nname = "default"\n', 2, "rule 'default'", "name",
     "the name is already that of the catch-all rule"),
    ("[defaults]\ncare_days = 'x'\n", 2, "[defaults]", "care_days", "got 'x'"),
    ("[defaults]\norgans = ['breast']\n", 2, "[defaults]", "organs",
     "unknown key 'organs'; the known keys are keep, care_days, cold_after_days"),
    ("# rules\n[rules]\nname = 'x'\n", 2, None, "rules", "unknown key 'rules' (did you mean 'rule'?)"),
    ("care_days = 3\n", 1, None, "care_days", "unknown key 'care_days'"),
    ("defaults = 3\n", 1, None, "defaults", "expected a table: [defaults]"),
    ("rule = 3\n", 1, None, "rule", "expected [[rule]] tables"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "where", "field", "reason"), ERRORS)
def test_each_error_names_the_file_line_rule_and_field(
    text: str, line: int, where: str | None, field: str, reason: str
) -> None:
    # Act
    error = _error(text)
    # Assert
    assert (error.source, error.line, error.where, error.field) == ("rules.toml", line, where, field)
    prefix = ", ".join(part for part in ("rules.toml", f"line {line}", where, f"field {field}") if part)
    assert str(error).startswith(prefix + ": ")
    assert reason in error.reason
    assert isinstance(error, RequestError)  # the CLI's exit 2, the API's 400
    assert "\n" not in str(error)


def test_the_message_reads_as_the_issue_asks() -> None:
    text = EXAMPLE.replace("care_days = 3650", 'care_days = "thirty"')
    assert str(_error(text)) == (
        "rules.toml, line 11, rule 'paediatric tumours', field care_days: "
        "expected a whole number of days from 0 to 36500, or \"never\", got 'thirty'"
    )


def test_a_field_is_found_in_its_own_rule_not_in_an_earlier_one() -> None:
    text = EXAMPLE + '\n[[rule]]\nname = "late"\norgans = ["x"]\ncare_days = 1.5\n'
    error = _error(text)
    assert (error.line, error.where, error.field) == (29, "rule 'late'", "care_days")


def test_lines_are_counted_with_windows_line_ends_and_quoted_keys() -> None:
    text = '[[rule]]\r\nname = "r"\r\n\r\n"care_days" = "x"\r\n'
    assert _error(text).line == 4


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[[rule]]\nname = 'r'\ncare_days = 3 0\n", 3, "not valid TOML: "),
        ("[[rule]]\nname = 'r'\nname = 's'\n", 3, "not valid TOML: "),
        ("[defaults]\ncare_days = 3\n\n[defaults]\n", 4, "not valid TOML: "),
        ("[[rule]]\nname = 'r\n", 2, "not valid TOML: "),
    ],
)
def test_a_toml_syntax_error_gives_its_line(text: str, line: int, reason: str) -> None:
    error = _error(text)
    assert (error.line, error.where, error.field) == (line, None, None)
    assert str(error).startswith(f"rules.toml, line {line}: {reason}")
    assert "(at line" not in str(error)


def test_more_than_a_thousand_rules_is_an_error_at_the_first_one_too_many() -> None:
    one = '[[rule]]\nname = "r{}"\n'
    assert len(parse_rules("".join(one.format(n) for n in range(MAX_RULES))).rules) == MAX_RULES + 1
    # Act
    error = _error("".join(one.format(n) for n in range(MAX_RULES + 1)))
    # Assert
    assert error.line == 2 * MAX_RULES + 1
    assert "1,001 rules: at most 1,000" in str(error)


def test_more_than_one_mebibyte_of_text_is_an_error() -> None:
    fits = "#" * (MAX_BYTES - 1) + "\n"
    assert parse_rules(fits).rules == DEFAULT_RULES.rules
    error = _error(fits + "#")
    assert str(error) == "rules.toml: 1,048,577 bytes: at most 1 MiB (1,048,576 bytes); merge rules"


def test_nothing_of_a_bad_file_is_kept() -> None:
    """All or nothing: a bad rule after good ones gives an error, never the good ones alone."""
    with pytest.raises(RuleError):
        parse_rules(EXAMPLE + "\n[[rule]]\nname = 'bad'\ncare_days = -3\n")


# --- the page: docs/lifecycle.md -------------------------------------------------------------------


def _section(page: str, title: str) -> str:
    start = page.index(f"## {title}\n")
    end = page.find("\n## ", start + 1)
    return page[start : end if end >= 0 else None]


def test_the_pages_example_and_errors_are_what_the_code_gives() -> None:
    section = _section((REPO / "docs" / "lifecycle.md").read_text("utf-8"), "Retention rules")
    [example] = re.findall(r"```toml\n(.*?)```", section, re.S)
    [shown] = re.findall(r"```text\n(.*?)```", section, re.S)
    # Act
    rules = parse_rules(example)
    errors = [
        str(_error(example.replace(old, new)))
        for old, new in [
            ("care_days = 3650", 'care_days = "thirty"'),
            ("care_days = 90", "care_dys = 90"),
            ('name = "paediatric tumours"', 'name "paediatric tumours"'),
        ]
    ]
    # Assert
    assert [rule.name for rule in rules.rules] == [
        "paediatric tumours",
        "breast biopsies",
        "cytology",
        "cases left without a report",
        "default",
    ]
    assert rules.rules[2].care_days is None
    assert rules.rules[3] == Rule(
        "cases left without a report",
        specimen_types=("resection",),
        review_after_days=180,
        trace=TraceKeeps.RECORD,
    )
    assert errors == shown.splitlines()


# --- files ---------------------------------------------------------------------------------------


def test_load_rules_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(EXAMPLE.encode())
    rules = load_rules(path)
    assert rules.source == str(path)
    assert rules.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [rule.name for rule in rules.rules] == [
        "paediatric tumours",
        "breast biopsies",
        "cytology",
        "default",
    ]
    path.write_text(EXAMPLE.replace("care_days = 90", "care_days = 'ninety'"), "utf-8")
    with pytest.raises(RuleError) as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"{path}, line 18, rule 'breast biopsies', field care_days: ")


def test_load_rules_errors_for_a_missing_a_binary_or_a_huge_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    with pytest.raises(RuleError, match="cannot be read: No such file"):
        load_rules(path)
    path.write_bytes(b"# ok\n[defaults]\n# caf\xe9\n")
    with pytest.raises(RuleError) as caught:
        load_rules(path)
    assert (caught.value.line, caught.value.reason) == (3, "not UTF-8 text: save the file as UTF-8")
    path.write_bytes(b"#" * (MAX_BYTES + 1))
    with pytest.raises(RuleError, match=r"over 1 MiB"):
        load_rules(path)


def test_load_rules_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.encode())
    assert load_rules(path).rules == parse_rules(EXAMPLE).rules


# --- property: the round trip --------------------------------------------------------------------

_texts = (
    st.text(st.characters(whitelist_categories=("L", "N", "P", "S"), whitelist_characters=" "), max_size=12)
    .map(str.strip)
    .filter(bool)
)
_days = st.none() | st.integers(0, 36500)
_finess = st.from_regex(r"(?:\d{2}|2[AB])\d{7}", fullmatch=True)
_diagnosis = st.tuples(st.sampled_from(["ICDO3", "SNOMEDCT", "ADICAP"]), _texts).map(
    lambda sc: f"{sc[0]}:{sc[1]}"
)
_gives = {
    "care_days": _days,
    "cold_after_days": _days,
    "review_after_days": _days,
    "trace": st.sampled_from(TraceKeeps),
    "trace_longest_side": st.integers(64, 8192),
}
_rule = st.builds(
    Rule,
    name=_texts,
    tenants=st.lists(_finess, max_size=2).map(tuple),
    specimen_types=st.lists(_texts, max_size=2).map(tuple),
    organs=st.lists(_texts, max_size=2).map(tuple),
    diagnoses=st.lists(_diagnosis, max_size=2).map(tuple),
    stains=st.lists(_texts, max_size=2).map(tuple),
    pediatric=st.none() | st.booleans(),
    **_gives,
)


@st.composite
def _rule_sets(draw: st.DrawFn) -> RuleSet:
    rules = draw(st.lists(_rule, max_size=5, unique_by=lambda rule: rule.name.casefold()))
    rules = [rule for rule in rules if rule.name.casefold() != "default"]
    return RuleSet((*rules, draw(st.builds(Rule, name=st.just("default"), **_gives))), "test", "")


@settings(max_examples=100, deadline=None)
@given(_rule_sets())
def test_parse_of_to_toml_gives_the_same_rules(rules: RuleSet) -> None:
    assert parse_rules(rules.to_toml()).rules == rules.rules
