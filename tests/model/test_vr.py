"""Values people type, checked against the DICOM value representation they will fill."""

from __future__ import annotations

import pytest

from lamina.errors import InvalidValueError, LaminaError
from lamina.model.vr import check_person_name, check_string


@pytest.mark.parametrize("value", ["P-123", "Dupont Marie", "éàü 123", "a" * 64])
def test_a_long_string_that_fits(value: str) -> None:
    assert check_string(value, "LO") == value


@pytest.mark.parametrize(
    ("value", "vr", "words"),
    [
        ("A\\B", "LO", "contains a backslash"),
        ("A\x1bB", "LO", "control character '\\x1b' (ESC)"),
        ("A\nB", "LO", "control character '\\n' (line feed)"),
        ("A\tB", "SH", "control character '\\t'"),
        ("A\u2028B", "LO", "LINE SEPARATOR"),
        ("a" * 65, "LO", "is 65 characters long; DICOM allows 64 (LO)"),
        ("S26-000000000001", "SH", None),
        ("S26-0000000000001", "SH", "is 17 characters long; DICOM allows 16 (SH)"),
    ],
)
def test_a_string_that_breaks_its_vr(value: str, vr: str, words: str | None) -> None:
    if words is None:
        assert check_string(value, vr) == value
        return
    with pytest.raises(InvalidValueError) as raised:
        check_string(value, vr)
    assert words in str(raised.value)
    assert isinstance(raised.value, LaminaError)


@pytest.mark.parametrize("value", ["DUPONT^MARIE", "DUPONT", "DUPONT^MARIE^CLAIRE^DR^JR", "^MARIE"])
def test_names_that_fit_pn(value: str) -> None:
    assert check_person_name(value) == value


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("DUPONT=MARIE", "contains '='"),
        ("A^B^C^D^E^F", "has 6 parts separated by '^'; DICOM allows 5"),
        ("^^", "holds only '^' separators"),
        ("DUPONT\\MARIE", "contains a backslash"),
        ("DUPONT\x1b$BMARIE", "control character"),
        ("A" * 65, "is 65 characters long"),
    ],
)
def test_names_that_break_pn(value: str, words: str) -> None:
    with pytest.raises(InvalidValueError, match=None) as raised:
        check_person_name(value)
    assert words in str(raised.value)
