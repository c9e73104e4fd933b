"""What a slide is, independent of how it is stored or sent."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, fields, replace

from lamina.errors import InvalidValueError
from lamina.model.enums import PatientSexValues

_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class SlideIdentity:
    """Who and what the slide belongs to. Every field is optional; nothing is ever invented.

    Names follow the DICOM keywords they map to (PatientID, PatientName, ...).
    """

    patient_id: str | None = None
    patient_name: str | None = None
    birth_date: str | None = None  # DICOM DA, YYYYMMDD
    sex: PatientSexValues | None = None
    accession_number: str | None = None
    specimen_id: str | None = None
    container_id: str | None = None  # the slide's barcode
    stain: str | None = None
    organ: str | None = None
    diagnosis_code: str | None = None
    specimen_type: str | None = None  # biopsy, resection, cytology... (the catalog's, for retention rules)

    @property
    def identified(self) -> bool:
        """A slide is identified once it is tied to a patient."""
        return bool(self.patient_id)

    def merged(self, other: SlideIdentity) -> SlideIdentity:
        """``other``'s non-empty fields win over this one's."""
        changes = {f.name: getattr(other, f.name) for f in fields(other) if getattr(other, f.name)}
        return replace(self, **changes)


def normalise_date(value: str) -> str:
    """Accept YYYYMMDD or YYYY-MM-DD; return DICOM DA (YYYYMMDD). Raise InvalidValueError otherwise."""
    text = value.strip()
    try:
        if _DATE.match(text):
            dt.datetime.strptime(text, "%Y%m%d")
            return text
        return dt.date.fromisoformat(text).strftime("%Y%m%d")
    except ValueError:
        raise InvalidValueError("is not a date (use YYYY-MM-DD)") from None


#: What people write for PatientSex, in English and in French (H for homme).
_SEX = {
    "M": PatientSexValues.M,
    "MALE": PatientSexValues.M,
    "H": PatientSexValues.M,
    "F": PatientSexValues.F,
    "FEMALE": PatientSexValues.F,
    "O": PatientSexValues.O,
    "OTHER": PatientSexValues.O,
}


def normalise_sex(value: str) -> PatientSexValues:
    """PatientSex from what a person wrote; raise InvalidValueError for anything else."""
    found = _SEX.get(value.strip().upper())
    if found is None:
        raise InvalidValueError("must be M, F or O")
    return found
