"""The slide's identity: dates and sex as DICOM writes them, refused in lamina's errors."""

from __future__ import annotations

import pytest

from lamina.errors import InvalidValueError, LaminaError
from lamina.model.enums import PatientSexValues
from lamina.model.slide import SlideIdentity, normalise_date, normalise_sex


@pytest.mark.parametrize(("value", "expected"), [("1950-02-03", "19500203"), (" 19700101 ", "19700101")])
def test_dates_become_dicom_da(value: str, expected: str) -> None:
    assert normalise_date(value) == expected


@pytest.mark.parametrize("value", ["31/02/1950", "19500231", "yesterday", ""])
def test_a_date_that_is_not_one_is_a_lamina_error(value: str) -> None:
    with pytest.raises(InvalidValueError, match="is not a date") as raised:
        normalise_date(value)
    assert isinstance(raised.value, LaminaError) and isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("female", PatientSexValues.F), ("M", PatientSexValues.M), ("h", PatientSexValues.M), ("Other", "O")],
)
def test_sex_as_people_write_it(value: str, expected: PatientSexValues) -> None:
    assert normalise_sex(value) is PatientSexValues(expected)


def test_a_sex_outside_the_defined_terms_is_refused() -> None:
    with pytest.raises(InvalidValueError, match="must be M, F or O"):
        normalise_sex("X")


def test_merged_identity_keeps_the_enum() -> None:
    merged = SlideIdentity(patient_id="P1").merged(SlideIdentity(sex=PatientSexValues.F))
    assert merged.sex is PatientSexValues.F and merged.patient_id == "P1"
