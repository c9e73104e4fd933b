"""Catalog hits as DICOM attributes (mapping/attributes.py): the catalog's values, the stored
JSON for the rest, bulk data left out, levels, and the Dataset C-FIND answers with."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from lamina.archive.catalog.keys import Level
from lamina.archive.catalog.search import InstanceHit, SeriesHit, StudyHit
from lamina.mapping import dicom_json
from lamina.mapping.attributes import (
    AGGREGATES,
    attributes,
    catalog_attributes,
    catalog_tags,
    element,
    level_of,
    stored_attributes,
    tags,
    to_dataset,
    without_bulk,
)

PATIENT_NAME, MODALITY, MANUFACTURER, ICC, SOFTWARE = tags(
    "PatientName", "Modality", "Manufacturer", "ICCProfile", "SoftwareVersions"
)
OPTICAL_PATHS, IMAGE_TYPE, STUDY_DESCRIPTION = tags("OpticalPathSequence", "ImageType", "StudyDescription")

STORED: dict[str, Any] = {
    MANUFACTURER: {"vr": "LO", "Value": ["Aperio"]},
    IMAGE_TYPE: {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]},
    MODALITY: {"vr": "CS", "Value": ["XX"]},  # the catalog's value wins over the stored one
    OPTICAL_PATHS: {
        "vr": "SQ",
        "Value": [{"00281050": {"vr": "DS", "Value": [1]}, ICC: {"vr": "OB", "BulkDataURI": "bulkdata/x"}}],
    },
    "7FE00010": {"vr": "OB", "BulkDataURI": "bulkdata/7FE00010"},
}


def _study(**extra: Any) -> StudyHit:
    return StudyHit("1.2.3", "20260115", "083000", "S26-1", "SYN_1", "MÜLLER^ANNA", "19880109", "F", **extra)


def _series() -> SeriesHit:
    return SeriesHit(_study(), "1.2.3.4", "SM", 1, "BC-1", instances=3, metadata=dicom_json.pack(STORED))


def _instance() -> InstanceHit:
    return InstanceHit(_series(), "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.77.1.6", 1, 256, 256, 12, 1024, 768,
                       "1.2.840.10008.1.2.4.50", metadata=dicom_json.pack(STORED))  # fmt: skip


def test_each_attribute_has_a_level() -> None:
    assert [level_of(tag) for tag in tags("PatientID", "ModalitiesInStudy", "StudyDescription")] == [
        Level.STUDY
    ] * 3
    assert [level_of(tag) for tag in tags("Modality", "SpecimenDescriptionSequence", "Manufacturer")] == [
        Level.SERIES
    ] * 3
    assert [level_of(tag) for tag in tags("SOPInstanceUID", "ImageType", "OpticalPathSequence")] == [
        Level.INSTANCE
    ] * 3
    with pytest.raises(ValueError, match="NotAKeyword is not a DICOM keyword"):
        tags("NotAKeyword")


@pytest.mark.parametrize(
    ("hit", "level"),
    [(_study(modalities=("SM",)), Level.STUDY), (_series(), Level.SERIES), (_instance(), Level.INSTANCE)],
)
def test_catalog_tags_name_what_the_catalog_gives(hit: Any, level: Level) -> None:
    given = catalog_attributes(hit, retrieve_url="http://x/studies/1.2.3")
    assert set(given) - set(tags("RetrieveURL")) == catalog_tags(level)


def test_a_series_from_the_catalog_and_its_stored_json() -> None:
    # Act
    wanted = [MODALITY, MANUFACTURER, PATIENT_NAME, OPTICAL_PATHS, STUDY_DESCRIPTION, "7FE00010", "00091010"]
    counts = tags("NumberOfSeriesRelatedInstances", "NumberOfStudyRelatedSeries")
    found = attributes(_series(), [*wanted, *counts])
    # Assert
    assert found[MODALITY] == {"vr": "CS", "Value": ["SM"]}  # the catalog's
    assert found[MANUFACTURER] == {"vr": "LO", "Value": ["Aperio"]}  # the stored JSON's
    assert found[PATIENT_NAME] == {"vr": "PN", "Value": [{"Alphabetic": "MÜLLER^ANNA"}]}
    assert found[OPTICAL_PATHS]["Value"] == [{"00281050": {"vr": "DS", "Value": [1]}}]  # no bulk data inside
    assert found[STUDY_DESCRIPTION] == {"vr": "LO"}  # neither has it: empty
    assert "7FE00010" not in found  # bulk data: left out
    assert "00091010" not in found  # unknown to the dictionary and not stored
    assert found[tags("NumberOfSeriesRelatedInstances")[0]]["Value"] == [3]
    assert tags("NumberOfStudyRelatedSeries")[0] not in found  # another level's aggregate
    assert list(found) == sorted(found)


def test_bulk_data_is_never_returned() -> None:
    assert without_bulk(STORED["7FE00010"]) is None
    assert without_bulk({"vr": "OB", "InlineBinary": "AAAA"}) is None
    assert stored_attributes(None) == {}
    assert set(stored_attributes(dicom_json.pack(STORED))) == set(STORED)
    assert "7FE00010" not in attributes(_instance(), ["7FE00010", IMAGE_TYPE])


def test_elements_without_a_value_are_empty() -> None:
    assert element(MODALITY) == {"vr": "CS"}
    assert element(MODALITY, None, "") == {"vr": "CS"}
    assert element(SOFTWARE, "1", "2") == {"vr": "LO", "Value": ["1", "2"]}
    assert set(tags(
        "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances", "RetrieveURL",
    )) == AGGREGATES  # fmt: skip


def test_attributes_become_a_dataset() -> None:
    # Act
    ds = to_dataset(
        attributes(_instance(), [PATIENT_NAME, IMAGE_TYPE, OPTICAL_PATHS, *tags("InstanceNumber")])
    )
    # Assert
    assert isinstance(ds, Dataset)
    assert ds.PatientName == PersonName("MÜLLER^ANNA")
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    assert ds.InstanceNumber == 1
    assert "ICCProfile" not in ds.OpticalPathSequence[0]
