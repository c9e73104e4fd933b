"""Retention rules: what a lab keeps, for how long, on which tier; parsed from TOML.

A :class:`RuleSet` is an ordered list of :class:`Rule` s: the first rule whose conditions all hold
for a slide gives its care retention, its tier move and what its trace keeps. The last rule is
always the catch-all ``default`` (what the file's ``[defaults]`` table says, or 30 days and a
1024 px thumbnail), so every slide matches one rule. The format, field by field, is in
``docs/lifecycle.md``; :func:`~lamina.lifecycle.evaluate.evaluate` applies a set to a slide.

Parsing is all or nothing: :func:`parse_rules` returns a whole set or raises :class:`RuleError`,
whose message names the file, the line, the rule and the field, so that the rules in force stay
in force while the file is fixed.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from lamina.errors import RequestError, RuleError
from lamina.governance.model import check_finess

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_RULES",
    "MAX_BYTES",
    "MAX_DAYS",
    "MAX_RULES",
    "SCHEMES",
    "Rule",
    "RuleError",
    "RuleSet",
    "Tier",
    "TraceKeeps",
    "load_rules",
    "parse_rules",
]

#: The most rules a set holds, besides the default one.
MAX_RULES = 1000
#: The largest rule text, in bytes (UTF-8).
MAX_BYTES = 1 << 20
#: The longest a day count may be: 100 years.
MAX_DAYS = 36500
#: The coding schemes a diagnosis pattern may name (``SCHEME:CODE``).
SCHEMES = ("ICDO3", "SNOMEDCT", "ADICAP")
#: The name of the catch-all rule that ends every set; ``[defaults]`` sets it.
DEFAULT_NAME = "default"
#: The thumbnail's longest side, in pixels: the smallest and largest allowed.
SIDE_RANGE = (64, 8192)
_LONGEST_TEXT = 256


class Tier(StrEnum):
    """Where a slide's pyramid is kept: hot storage (read in a few tenths of a second), or the
    cheaper cold tier (a minute or more)."""

    HOT = "hot"
    COLD = "cold"


class TraceKeeps(StrEnum):
    """What an expired slide keeps: a JPEG thumbnail and its catalog record, or the record only."""

    THUMBNAIL = "thumbnail"
    RECORD = "record"


class _FieldError(Exception):
    """A field's value is wrong; the parser adds where."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def _show(value: object) -> str:
    """A value as the message quotes it: TOML's spelling for booleans, at most 60 characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_show(item) for item in value) + "]"
    elif isinstance(value, dict):
        text = "a table"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(field: str, value: object, item: int | None = None) -> str:
    at = f"item {item}: " if item is not None else ""
    if not isinstance(value, str):
        raise _FieldError(field, f"{at}expected a text, got {_show(value)}")
    text = value.strip()
    if not text:
        raise _FieldError(field, f"{at}expected a text, got an empty one")
    if not text.isprintable() or len(text) > _LONGEST_TEXT:
        raise _FieldError(field, f"{at}{_show(value)}: at most {_LONGEST_TEXT} printable characters")
    return text


def _name(field: str, value: object) -> str:
    return _text(field, value)


def _texts(field: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        hint = f": write [{_show(value)}]" if isinstance(value, str) else ""
        raise _FieldError(field, f"expected a list of texts, got {_show(value)}{hint}")
    return tuple(_text(field, item, index + 1) for index, item in enumerate(value))


def _tenants(field: str, value: object) -> tuple[str, ...]:
    result = []
    for text in _texts(field, value):
        try:
            result.append(check_finess(text, field))
        except RequestError as exc:
            raise _FieldError(field, str(exc).removeprefix(f"{exc.parameter}: ")) from None
    return tuple(result)


def _diagnoses(field: str, value: object) -> tuple[str, ...]:
    result = []
    for text in _texts(field, value):
        scheme, colon, code = text.partition(":")
        scheme, code = scheme.strip().upper(), code.strip()
        if not colon or scheme not in SCHEMES or not code:
            raise _FieldError(
                field,
                f"{text!r} is not a diagnosis pattern: SCHEME:CODE with SCHEME one of {', '.join(SCHEMES)} "
                'and a code where * and ? are wildcards, e.g. "ICDO3:8*/3"',
            )
        result.append(f"{scheme}:{code}")
    return tuple(result)


def _optional_bool(field: str, value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _FieldError(field, f"expected true or false, got {_show(value)}")


def _days(field: str, value: object) -> int | None:
    if value is None or value == "never":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        raise _FieldError(
            field, f'expected a whole number of days from 0 to {MAX_DAYS}, or "never", got {_show(value)}'
        )
    return value


def _trace(field: str, value: object) -> TraceKeeps:
    try:
        return TraceKeeps(value if isinstance(value, str) else "")
    except ValueError:
        known = " or ".join(f'"{item.value}"' for item in TraceKeeps)
        raise _FieldError(field, f"expected {known}, got {_show(value)}") from None


def _side(field: str, value: object) -> int:
    low, high = SIDE_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _FieldError(
            field, f"expected a whole number of pixels from {low} to {high}, got {_show(value)}"
        )
    return value


_CHECKS: dict[str, Callable[[str, object], object]] = {
    "name": _name,
    "tenants": _tenants,
    "specimen_types": _texts,
    "organs": _texts,
    "diagnoses": _diagnoses,
    "stains": _texts,
    "pediatric": _optional_bool,
    "care_days": _days,
    "cold_after_days": _days,
    "review_after_days": _days,
    "trace": _trace,
    "trace_longest_side": _side,
}
#: The fields that select slides; the others say what a matching slide gets.
MATCHING = ("tenants", "specimen_types", "organs", "diagnoses", "stains", "pediatric")
GIVES = ("care_days", "cold_after_days", "review_after_days", "trace", "trace_longest_side")
#: The keys of a ``[[rule]]`` table and of ``[defaults]`` (``keep`` is sugar for care_days).
RULE_KEYS = ("name", *MATCHING, "keep", *GIVES)
DEFAULT_KEYS = ("keep", *GIVES)


def _label(name: object, index: int | None = None) -> str:
    if isinstance(name, str) and name.strip():
        return f"rule {name.strip()!r}"
    return f"rule #{index + 1}" if index is not None else "rule"


@dataclass(frozen=True)
class Rule:
    """One retention rule: conditions on a slide, and what a slide that meets them all gets.

    Empty conditions (``()`` or ``None``) match any slide; every condition given must hold, and
    within a list any item may. Texts are compared trimmed and case-insensitively. Values are
    checked and normalised at construction (trimmed, FINESS and schemes in capitals);
    :class:`RuleError` says which field is wrong.

    Parameters
    ----------
    name
        Unique within a :class:`RuleSet` (case-insensitively); recorded with every action.
    tenants
        FINESS numbers of the labs.
    specimen_types
        ``biopsy``, ``resection``, ``cytology``...
    organs
        Free text or codes.
    diagnoses
        Patterns ``SCHEME:CODE`` (scheme one of :data:`SCHEMES`; ``*``, ``?`` and ``[...]`` are
        wildcards in the code), matched against the case's code.
    stains
        ``HE``, ``HES``, ``PAS``...
    pediatric
        ``True``: patients under 18 at the study date; ``False``: 18 or over; ``None``: any,
        the only value that matches a patient whose birth date is unknown.
    care_days
        Days after the case's final report before the slide expires; ``None`` keeps it.
    cold_after_days
        Days without access before the slide moves from hot to cold; ``None`` keeps it hot.
    review_after_days
        Days after the scan when a case still without a final report is flagged for review;
        ``None`` never flags it.
    trace
        What an expired slide keeps.
    trace_longest_side
        The longest side of the thumbnail trace, in pixels (64 to 8192).
    """

    name: str
    tenants: tuple[str, ...] = ()
    specimen_types: tuple[str, ...] = ()
    organs: tuple[str, ...] = ()
    diagnoses: tuple[str, ...] = ()
    stains: tuple[str, ...] = ()
    pediatric: bool | None = None
    care_days: int | None = 30
    cold_after_days: int | None = None
    review_after_days: int | None = None
    trace: TraceKeeps = TraceKeeps.THUMBNAIL
    trace_longest_side: int = 1024

    def __post_init__(self) -> None:
        try:
            for item in fields(self):
                object.__setattr__(self, item.name, _CHECKS[item.name](item.name, getattr(self, item.name)))
        except _FieldError as exc:
            raise RuleError("Rule", exc.reason, where=_label(self.name), field=exc.field) from None

    @property
    def catch_all(self) -> bool:
        """Whether the rule matches every slide (it has no condition)."""
        return all(getattr(self, key) in ((), None) for key in MATCHING)


@dataclass(frozen=True)
class RuleSet:
    """Rules in order, the first matching one winning; the last is the catch-all ``default``.

    Parameters
    ----------
    rules
        At most :data:`MAX_RULES` rules, then the default one; names unique.
    source
        Where the rules come from: a file's path, or ``catalog:FINESS``.
    digest
        The SHA-256 (hex) of the source text, recorded with every action.
    """

    rules: tuple[Rule, ...]
    source: str
    digest: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if not self.rules or self.rules[-1].name != DEFAULT_NAME or not self.rules[-1].catch_all:
            raise RuleError(
                self.source, f"the last rule must be the catch-all {DEFAULT_NAME!r}, with no condition"
            )
        if len(self.rules) > MAX_RULES + 1:
            raise RuleError(self.source, f"{len(self.rules) - 1:,} rules: at most {MAX_RULES:,}")
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            key = rule.name.casefold()
            if key in seen or (key == DEFAULT_NAME and index < len(self.rules) - 1):
                raise RuleError(self.source, "names must be unique", where=_label(rule.name), field="name")
            seen.add(key)

    @property
    def default(self) -> Rule:
        """The catch-all rule that ends the set."""
        return self.rules[-1]

    def to_toml(self) -> str:
        """The set as a rule file that :func:`parse_rules` reads back to the same rules: the
        default rule as ``[defaults]``, then each rule with the fields it sets."""
        default = self.default
        lines = ["# lamina lifecycle rules: the first matching rule wins", "", "[defaults]"]
        lines += _gives_lines(default, Rule(DEFAULT_NAME), always=True)
        for rule in self.rules[:-1]:
            lines += ["", "[[rule]]", f"name = {_toml_string(rule.name)}"]
            for key in MATCHING:
                value = getattr(rule, key)
                if isinstance(value, bool):
                    lines.append(f"{key} = {'true' if value else 'false'}")
                elif value:
                    lines.append(f"{key} = [{', '.join(_toml_string(item) for item in value)}]")
            lines += _gives_lines(rule, default, always=False)
        return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return "".join(out) + '"'


def _gives_lines(rule: Rule, base: Rule, always: bool) -> list[str]:
    """The ``key = value`` lines of what ``rule`` gives that differ from ``base`` (all of them when
    ``always``; a day count of None is ``keep = true`` or ``"never"``)."""
    lines = []
    for key in GIVES:
        value = getattr(rule, key)
        if not always and value == getattr(base, key):
            continue
        if key == "care_days" and value is None:
            lines.append("keep = true")
        elif value is None:
            if getattr(base, key) is not None:
                lines.append(f'{key} = "never"')
        elif isinstance(value, TraceKeeps):
            lines.append(f'{key} = "{value.value}"')
        else:
            lines.append(f"{key} = {value}")
    return lines


class _Locator:
    """The line of a table or key in the text, for the messages: tomllib gives none for values.

    It scans the lines for the n-th ``[[rule]]`` header, then the first ``key =`` line before the
    next header; a key it cannot find is reported at its table's header."""

    _HEADER = re.compile(r"\s*\[")

    def __init__(self, text: str) -> None:
        # tomllib counts lines by "\n" only (str.splitlines would also split at \x0c, \u2028...)
        self.lines = text.split("\n")
        rule = re.compile(r"\s*\[\[\s*(rule|\"rule\"|'rule')\s*\]\]")
        self.rule_headers = [number for number, line in enumerate(self.lines) if rule.match(line)]
        defaults = re.compile(r"\s*\[\s*(defaults|\"defaults\"|'defaults')\s*\]")
        self.defaults_header = next((n for n, line in enumerate(self.lines) if defaults.match(line)), None)

    @staticmethod
    def _key(key: str) -> re.Pattern[str]:
        name = re.escape(key)
        return re.compile(rf"\s*({name}|\"{name}\"|'{name}')\s*[=.]")

    def _find(self, key: str, start: int) -> int | None:
        """The line of ``key`` from line ``start`` (0-based) up to the next table header."""
        pattern = self._key(key)
        for number in range(start, len(self.lines)):
            line = self.lines[number]
            if self._HEADER.match(line):
                break
            if pattern.match(line):
                return number + 1
        return None

    def top(self, key: str) -> int | None:
        """The line of a top-level key, or of a table header that names it."""
        found = self._find(key, 0)
        if found is None:
            name = re.escape(key)
            header = re.compile(rf"\s*\[\[?\s*({name}|\"{name}\"|'{name}')\s*[\].]")
            found = next((n + 1 for n, line in enumerate(self.lines) if header.match(line)), None)
        return found

    def rule(self, index: int, key: str | None = None) -> int | None:
        """The line of the ``index``-th rule's ``key``, or of its header."""
        if index >= len(self.rule_headers):
            return self.top("rule")
        start = self.rule_headers[index]
        found = self._find(key, start + 1) if key else None
        return found or start + 1

    def defaults(self, key: str | None = None) -> int | None:
        """The line of ``[defaults]``'s ``key``, or of its header."""
        if self.defaults_header is None:
            return self.top("defaults")
        found = self._find(key, self.defaults_header + 1) if key else None
        return found or self.defaults_header + 1


def _unknown(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; the known keys are {', '.join(known)}"


def _gives(table: dict[str, Any], base: Rule) -> dict[str, Any]:
    """What a ``[[rule]]`` or ``[defaults]`` table gives, ``base``'s values where it says nothing."""
    values: dict[str, Any] = {key: getattr(base, key) for key in GIVES}
    if "keep" in table:
        if table["keep"] is not True:
            raise _FieldError(
                "keep",
                f'expected true (the same as care_days = "never"), got {_show(table["keep"])}; '
                "to let slides expire, give care_days instead",
            )
        if "care_days" in table:
            raise _FieldError("keep", "give keep = true or care_days, not both")
        values["care_days"] = None
    for key in GIVES:
        if key in table:
            values[key] = _CHECKS[key](key, table[key])
    return values


def _position(error: tomllib.TOMLDecodeError, lines: int) -> tuple[int | None, str]:
    """The line of a TOML syntax error and its message without the position: tomllib gives it as
    ``lineno`` from Python 3.14, in the message before; "at end of document" is the last line
    that holds something (``lines``)."""
    message = str(error)
    found = re.search(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$", message)
    line = getattr(error, "lineno", None)
    if found:
        message = message[: found.start()]
        if found.group(1):
            line = line or int(found.group(1))
            message += f" at column {found.group(2)}"
        else:
            line = line or lines
            message += " at the end of the file"
    return line, message[:1].lower() + message[1:]


def parse_rules(text: str, source: str = "rules.toml") -> RuleSet:
    """The rule set a TOML text describes, or :class:`RuleError` naming ``source``, the line, the
    rule and the field; never part of a set. The format is in ``docs/lifecycle.md``."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_BYTES:
        raise RuleError(source, f"{len(data):,} bytes: at most 1 MiB ({MAX_BYTES:,} bytes); merge rules")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, message = _position(exc, text.rstrip().count("\n") + 1)
        raise RuleError(source, f"not valid TOML: {message}", line=line) from None
    locate = _Locator(text)
    for key in document:
        if key not in ("defaults", "rule"):
            raise RuleError(source, _unknown(key, ("defaults", "rule")), line=locate.top(key), field=key)

    table = document.get("defaults", {})
    if not isinstance(table, dict):
        raise RuleError(source, "expected a table: [defaults]", line=locate.top("defaults"), field="defaults")
    try:
        for key in table:
            if key not in DEFAULT_KEYS:
                raise _FieldError(key, _unknown(key, DEFAULT_KEYS))
        default = Rule(DEFAULT_NAME, **_gives(table, Rule(DEFAULT_NAME)))
    except _FieldError as exc:
        raise RuleError(
            source, exc.reason, line=locate.defaults(exc.field), where="[defaults]", field=exc.field
        ) from None

    tables = document.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(item, dict) for item in tables):
        raise RuleError(source, "expected [[rule]] tables", line=locate.top("rule"), field="rule")
    if len(tables) > MAX_RULES:
        raise RuleError(
            source, f"{len(tables):,} rules: at most {MAX_RULES:,}; merge rules", line=locate.rule(MAX_RULES)
        )
    rules: list[Rule] = []
    names: dict[str, int] = {DEFAULT_NAME: -1}
    for index, table in enumerate(tables):
        try:
            rule = _rule(table, default)
        except _FieldError as exc:
            raise RuleError(
                source,
                exc.reason,
                line=locate.rule(index, exc.field),
                where=_label(table.get("name"), index),
                field=exc.field,
            ) from None
        other = names.setdefault(rule.name.casefold(), index)
        if other != index:
            already = f"rule #{other + 1} (line {locate.rule(other)})" if other >= 0 else "the catch-all rule"
            raise RuleError(
                source,
                f"the name is already that of {already}: names must be unique",
                line=locate.rule(index, "name"),
                where=_label(rule.name, index),
                field="name",
            )
        rules.append(rule)
    return RuleSet((*rules, default), source, hashlib.sha256(data).hexdigest())


def _rule(table: dict[str, Any], default: Rule) -> Rule:
    for key in table:
        if key not in RULE_KEYS:
            raise _FieldError(key, _unknown(key, RULE_KEYS))
    if "name" not in table:
        raise _FieldError("name", 'every rule needs one: add name = "..."')
    values: dict[str, Any] = {"name": _name("name", table["name"])}
    for key in MATCHING:
        if key in table:
            values[key] = _CHECKS[key](key, table[key])
    return Rule(**values, **_gives(table, default))


def load_rules(path: Path) -> RuleSet:
    """The rule set in the file at ``path`` (UTF-8), or :class:`RuleError` naming it."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise RuleError(str(path), f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise RuleError(str(path), f"over 1 MiB ({MAX_BYTES:,} bytes): merge rules")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RuleError(
            str(path), "not UTF-8 text: save the file as UTF-8", line=data[: exc.start].count(b"\n") + 1
        ) from None
    return parse_rules(text, str(path))


#: Just the default rule: 30 days after the final report, a 1024 px thumbnail, hot.
DEFAULT_RULES = parse_rules("", source="built-in")
