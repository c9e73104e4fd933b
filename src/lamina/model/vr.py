"""The rules of DICOM value representations (PS3.5 6.2) for values lamina takes from people.

A value a lab types (a patient ID, a name, an accession number) ends up in a DICOM attribute;
one that breaks the attribute's VR is stored wrong (``A\\B`` in PatientID is two values) or
makes the instance unwritable. Each check raises :class:`~lamina.errors.InvalidValueError`
with what is wrong and how to write it instead; the caller adds where the value came from.
lamina writes UTF-8 (``ISO_IR 192``), so the ESC of ISO 2022 code extensions has no use either.
"""

from __future__ import annotations

import unicodedata

from lamina.errors import InvalidValueError

#: Maximum length in characters, by VR (PS3.5 Table 6.2-1); PN's is per component group.
MAX_LENGTH = {"AE": 16, "CS": 16, "LO": 64, "PN": 64, "SH": 16, "UI": 64}


def _control(value: str) -> str | None:
    """The first control or other unprintable character of ``value``, if any."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return char
    return None


_CONTROL_NAMES = {"\x1b": "ESC", "\n": "line feed", "\r": "carriage return", "\t": "tab", "\x00": "NUL"}


def _name(char: str) -> str:
    return _CONTROL_NAMES.get(char) or str(unicodedata.name(char, f"U+{ord(char):04X}"))


def _check_characters(value: str) -> None:
    if "\\" in value:
        raise InvalidValueError(
            "contains a backslash (\\), which DICOM uses to separate the values of an attribute; "
            "remove it or write another character (e.g. '/')"
        )
    control = _control(value)
    if control is not None:
        raise InvalidValueError(
            f"contains the control character {control!r} ({_name(control)}); "
            "DICOM text of this kind is one line of printable characters: remove it"
        )


def check_string(value: str, vr: str) -> str:
    """A single LO, SH or CS value: no backslash, no control character, within the length."""
    _check_characters(value)
    limit = MAX_LENGTH[vr]
    if len(value) > limit:
        raise InvalidValueError(f"is {len(value)} characters long; DICOM allows {limit} ({vr})")
    return value


def check_person_name(value: str) -> str:
    """A PN value as a manifest gives it: ``FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX``, one group.

    ``=`` separates the alphabetic, ideographic and phonetic forms of a name; a manifest gives
    the alphabetic form only, so an ``=`` is refused rather than stored as a second form.
    """
    _check_characters(value)
    if "=" in value:
        raise InvalidValueError(
            "contains '=', which DICOM uses to separate the alphabetic, ideographic and phonetic "
            "forms of a name; give the alphabetic form only, as FAMILY^GIVEN"
        )
    components = value.split("^")
    if len(components) > 5:
        raise InvalidValueError(
            f"has {len(components)} parts separated by '^'; DICOM allows 5 "
            "(FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX)"
        )
    if not any(part.strip() for part in components):
        raise InvalidValueError("holds only '^' separators and no name")
    if len(value) > MAX_LENGTH["PN"]:
        raise InvalidValueError(f"is {len(value)} characters long; DICOM allows 64 for a name (PN)")
    return value
