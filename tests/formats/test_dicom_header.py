"""A DICOM source's header is decoded and encoded once at open: a damaged value is refused with
its attribute, and the sequences that lead to it, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from lamina.errors import CorruptSourceError
from lamina.formats.dicom_header import check_attributes, describe_tag, tag_trail, trail_words

HERE = Path("slide.dcm")
TRAIL = "SpecimenDescriptionSequence (0040,0560) > SpecimenPreparationSequence (0040,0610) > Rows (0028,0010)"


def _specimen(item: Dataset) -> Dataset:
    ds = Dataset()
    ds.PatientID = "P1"
    description = Dataset()
    description.SpecimenIdentifier = "S1"
    description.SpecimenPreparationSequence = Sequence([item])
    ds.SpecimenDescriptionSequence = Sequence([description])
    return ds


def test_a_value_that_cannot_be_decoded_is_named_with_its_trail() -> None:
    # Arrange: US needs an even number of bytes; three were read
    step = Dataset()
    step[0x00280010] = RawDataElement(Tag(0x00280010), "US", 3, b"abc", 0, False, True)
    ds = _specimen(step)
    # Act
    with pytest.raises(CorruptSourceError) as raised:
        check_attributes(HERE, ds)
    # Assert
    reason = raised.value.reason
    assert reason.startswith(f"{TRAIL}: the value cannot be read")
    assert "Exception" not in reason and "Error" not in reason


def test_a_value_that_cannot_be_encoded_is_named_with_its_trail() -> None:
    # Arrange: text where a number belongs (as a damaged VR makes it)
    step = Dataset()
    step.add(DataElement(0x00280010, "US", "abc", validation_mode=config.IGNORE))
    ds = _specimen(step)
    # Act
    with pytest.raises(CorruptSourceError) as raised:
        check_attributes(HERE, ds)
    # Assert
    assert raised.value.reason.startswith(f"{TRAIL}: the value cannot be written as DICOM")


def test_private_attributes_are_neither_decoded_nor_checked() -> None:
    # a private attribute with an unknown VR is not kept, so it cannot stop the slide
    ds = Dataset()
    ds.PatientID = "P1"
    ds[0x53430002] = RawDataElement(Tag(0x53430002), "NO", 2, b"ab", 0, False, True)
    check_attributes(HERE, ds)


def test_tags_in_words() -> None:
    error = TypeError("With tag (0040,0560) got exception: With tag (0040,A043) got exception: bad")
    assert [f"{t:08X}" for t in tag_trail(error)] == ["00400560", "0040A043"]
    assert trail_words(tag_trail(error)) == (
        "SpecimenDescriptionSequence (0040,0560) > ConceptNameCodeSequence (0040,A043)"
    )
    assert describe_tag(0x00291010) == "(0029,1010)"
