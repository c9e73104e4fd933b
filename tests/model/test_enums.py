"""Coded values as enums: each member is its DICOM code string, wherever it is written."""

from __future__ import annotations

import io
import json

import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset

from lamina.model import enums
from lamina.model.enums import (
    DerivedPixelContrastValues,
    ImageFlavorValues,
    PatientSexValues,
    PhotometricInterpretationValues,
    PixelDataCharacteristicsValues,
    image_type,
)

ALL = [
    member
    for cls in vars(enums).values()
    if isinstance(cls, type) and cls.__module__ == enums.__name__ and cls.__name__.endswith("Values")
    for member in cls
]


@pytest.mark.parametrize("member", ALL, ids=lambda m: f"{type(m).__name__}.{m.name}")
def test_a_member_is_its_code_string_in_json_and_text(member: enums.StrEnum) -> None:
    assert member == member.value
    assert str(member) == f"{member}" == member.value
    assert json.dumps(member) == json.dumps(member.value)
    assert orjson.dumps(member) == orjson.dumps(member.value)


def test_a_member_is_written_to_dicom_as_its_string() -> None:
    # Arrange
    as_enum, as_text = Dataset(), Dataset()
    as_enum.PatientSex = PatientSexValues.F
    as_enum.PhotometricInterpretation = PhotometricInterpretationValues.YBR_FULL_422
    as_text.PatientSex = "F"
    as_text.PhotometricInterpretation = "YBR_FULL_422"
    # Act
    written = []
    for ds in (as_enum, as_text):
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
        written.append(buffer.getvalue())
    # Assert
    assert written[0] == written[1]


def test_image_type_of_a_resampled_level() -> None:
    value = image_type(
        PixelDataCharacteristicsValues.DERIVED, ImageFlavorValues.VOLUME, DerivedPixelContrastValues.RESAMPLED
    )
    assert value == ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    assert all(type(part) is str for part in value)
