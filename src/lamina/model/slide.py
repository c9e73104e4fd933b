"""What a slide is, independent of how it is stored or sent."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, fields, replace

_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class SlideIdentity:
    """Who and what the slide belongs to. Every field is optional; nothing is ever invented.

    Names follow the DICOM keywords they map to (PatientID, PatientName, ...).
    """

    patient_id: str | None = None
    patient_name: str | None = None
    birth_date: str | None = None  # DICOM DA, YYYYMMDD
    sex: str | None = None  # M, F, O
    accession_number: str | None = None
    specimen_id: str | None = None
    container_id: str | None = None  # the slide's barcode
    stain: str | None = None
    organ: str | None = None
    diagnosis_code: str | None = None

    @property
    def identified(self) -> bool:
        """A slide is identified once it is tied to a patient."""
        return bool(self.patient_id)

    def merged(self, other: SlideIdentity) -> SlideIdentity:
        """``other``'s non-empty fields win over this one's."""
        changes = {f.name: getattr(other, f.name) for f in fields(other) if getattr(other, f.name)}
        return replace(self, **changes)


def normalise_date(value: str) -> str:
    """Accept YYYYMMDD or YYYY-MM-DD; return DICOM DA (YYYYMMDD). Raise ValueError otherwise."""
    text = value.strip()
    if _DATE.match(text):
        dt.datetime.strptime(text, "%Y%m%d")
        return text
    return dt.date.fromisoformat(text).strftime("%Y%m%d")


def normalise_sex(value: str) -> str:
    text = value.strip().upper()
    mapping = {"M": "M", "MALE": "M", "H": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}
    if text not in mapping:
        raise ValueError("must be M, F or O")
    return mapping[text]
