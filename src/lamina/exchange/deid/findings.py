"""The checks of a de-identified dataset, for an archive receiving slides from sites, and the
identifying values of a source that must not be found in what is sent."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from lamina.exchange.deid.images import BLANKED
from lamina.exchange.deid.rules import (
    ACTIONS,
    KNOWN_SOP_CLASSES,
    SAFE_PRIVATE_TAGS,
    TEXT_VRS,
    Action,
)
from lamina.exchange.deid.transform import MAX_DEPTH, MAX_ITEMS, clean, holds_text
from lamina.formats.dicom_header import trail_words

_PSEUDONYM = re.compile(r"[0-9a-f]{64}")
_SPECIMEN = re.compile(r"[A-Z2-7]{16}")

#: Attributes whose values identify a patient, a case or a slide: searched for in the output.
IDENTIFYING = frozenset(
    {
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "PatientBirthDate",
        "OtherPatientNames",
        "OtherPatientIDs",
        "ContainerIdentifier",
        "SpecimenIdentifier",
        "BarcodeValue",
        "LabelText",
        "InstitutionName",
        "InstitutionAddress",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "OperatorsName",
        "PhysiciansOfRecord",
        "RequestingPhysician",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientMotherBirthName",
        "PatientBirthName",
        "IssuerOfPatientID",
        "StudyID",
    }
)
#: Values shorter than this are not searched for (a sex, an initial: found everywhere).
MIN_SEARCHED = 4


def identifying_values(ds: Dataset, trail: tuple[BaseTag, ...] = ()) -> Iterator[tuple[str, str]]:
    """(where, value) for each identifying value in ``ds``, person names also word by word."""
    if len(trail) > MAX_DEPTH:
        return
    for element in ds:
        if element.VR == "SQ":
            for item in list(element.value or ())[:MAX_ITEMS]:
                yield from identifying_values(item, (*trail, element.tag))
            continue
        if element.keyword not in IDENTIFYING or element.value in (None, ""):
            continue
        where = trail_words([*trail, element.tag])
        values = [element.value] if isinstance(element.value, (str, bytes)) else list(element.value)
        for value in values:
            text = str(value).strip()
            parts = {text, *re.split(r"[\^=\s,]+", text)} if element.VR == "PN" else {text}
            for part in parts:
                if len(part.strip()) >= MIN_SEARCHED:
                    yield where, part.strip()


def identity_findings(ds: Dataset) -> list[str]:
    """What in a received dataset shows it is not de-identified as lamina sends slides; empty
    when nothing. Each finding is one line naming the attribute by keyword and tag, no value."""
    found: list[str] = []
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        found.append("PatientIdentityRemoved (0012,0062) is not YES")
    if str(ds.get("LongitudinalTemporalInformationModified", "")).upper() not in ("MODIFIED", "REMOVED"):
        found.append("LongitudinalTemporalInformationModified (0028,0303) is neither MODIFIED nor REMOVED")
    if str(ds.get("SOPClassUID", "")) not in KNOWN_SOP_CLASSES:
        found.append("SOPClassUID (0008,0016) is not a SOP class lamina de-identifies")
    image_type = [str(value).upper() for value in ds.get("ImageType", [])]
    if "LABEL" in image_type[2:3]:
        found.append("ImageType (0008,0008) is LABEL: labels are never sent")
    if str(ds.get("BurnedInAnnotation", "")).upper() != "NO":
        found.append("BurnedInAnnotation (0028,0301) is not NO")
    methods = [str(value) for value in _values(ds, "DeidentificationMethod")]
    if "OVERVIEW" in image_type[2:3] and BLANKED not in methods:
        found.append(
            "ImageType (0008,0008) is OVERVIEW and DeidentificationMethod (0012,0063) does not "
            "say that its label area was blanked"
        )
    if not _PSEUDONYM.fullmatch(str(ds.get("PatientID", ""))):
        found.append("PatientID (0010,0020) is not a pseudonym (64 hexadecimal digits)")
    name = str(ds.get("PatientName", "") or "")
    if name and not str(ds.get("PatientID", "")).startswith(name):
        found.append("PatientName (0010,0010) holds a value that is not the pseudonym's beginning")
    _walk(ds, (), found)
    return found


def _values(ds: Dataset, keyword: str) -> list[object]:
    value = ds.get(keyword)
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _walk(ds: Dataset, trail: tuple[BaseTag, ...], found: list[str]) -> None:
    if len(trail) > MAX_DEPTH:
        found.append(f"{trail_words(list(trail))}: sequences nested deeper than {MAX_DEPTH}")
        return
    for tag in list(ds.keys()):
        if tag.group == 0x0002 or tag == 0x7FE00010 or tag.element == 0:
            continue
        element = ds[tag]
        where = trail_words([*trail, tag])
        if tag.is_private:
            if int(tag) not in SAFE_PRIVATE_TAGS and not 0x10 <= tag.element <= 0xFF and holds_text(element):
                found.append(f"private attribute {where} holds text")
            continue
        action = ACTIONS.get(element.keyword)
        if element.keyword == "OtherPatientIDsSequence" and not trail:
            # the warehouses' pseudonyms: each item a pseudonym and the warehouse's name
            for item in list(element.value or ())[:MAX_ITEMS]:
                if not _PSEUDONYM.fullmatch(str(item.get("PatientID", ""))) or len(item) > 3:
                    found.append(f"{where}: an item is not a warehouse's pseudonym")
            continue
        if element.VR == "SQ":
            if action in (Action.REMOVE, Action.EMPTY) and element.value:
                found.append(f"{where} is present with items")
            for item in list(element.value or ())[:MAX_ITEMS]:
                _walk(item, (*trail, tag), found)
            continue
        empty = element.value in (None, "", b"")
        if action in (Action.REMOVE, Action.EMPTY) and not empty:
            found.append(f"{where} is present with a value")
        elif action is Action.CLEAN and not empty and not clean(str(element.value)):
            found.append(f"{where} holds words outside the descriptors kept")
        elif action is Action.SPECIMEN and not empty and not _SPECIMEN.fullmatch(str(element.value)):
            found.append(f"{where} is not a pseudonym (16 base-32 characters)")
        elif action is None and element.VR in TEXT_VRS and not empty:
            found.append(f"{where} holds text that no table covers")
