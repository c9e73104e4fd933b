"""The manifest: who and what each slide file belongs to, given by the lab (CSV or JSON).

CSV with a header row, or a JSON list of objects. Keys: ``file`` (the file's name) or
``barcode`` (the slide's ContainerIdentifier), then any of ``patient_id``, ``patient_name``,
``birth_date``, ``sex``, ``accession_number``, ``specimen_id``, ``specimen_type`` (biopsy,
resection, cytology...: for retention rules), ``stain``, ``organ``, ``diagnosis_code``
(``SCHEME:CODE``, SCHEME one of ICDO3, SNOMEDCT, ADICAP) and ``mpp`` (micrometres per pixel, for
files that lack it).

Each value is checked against the value representation of the DICOM attribute it fills
(:data:`ATTRIBUTES`): a backslash (DICOM's value separator), a control character, an ``=`` or
too many ``^`` in a name, or a value too long is refused with the file, row and column, before
any slide is read.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.errors import InvalidValueError, ManifestError, quote_name
from lamina.model.geometry import SizeMm
from lamina.model.slide import SlideIdentity, normalise_date, normalise_sex
from lamina.model.vr import check_person_name, check_string

IDENTITY_KEYS = (
    "patient_id",
    "patient_name",
    "birth_date",
    "sex",
    "accession_number",
    "specimen_id",
    "stain",
    "organ",
    "diagnosis_code",
    "specimen_type",
)
KEYS = ("file", "barcode", *IDENTITY_KEYS, "mpp")
MAX_BYTES = 64 << 20
#: The DICOM attribute each text column fills, and its value representation.
ATTRIBUTES = {
    "patient_id": ("PatientID", "LO"),
    "patient_name": ("PatientName", "PN"),
    "accession_number": ("AccessionNumber", "SH"),
    "specimen_id": ("SpecimenIdentifier", "LO"),
    "barcode": ("ContainerIdentifier", "LO"),
    "stain": ("SpecimenShortDescription", "LO"),
    "organ": ("SpecimenShortDescription", "LO"),
    "diagnosis_code": ("the catalog's diagnosis code", "LO"),
    "specimen_type": ("the catalog's specimen type", "LO"),
}


@dataclass(frozen=True)
class ManifestEntry:
    identity: SlideIdentity
    pixel_spacing: SizeMm | None = None


@dataclass
class Manifest:
    by_file: dict[str, ManifestEntry] = field(default_factory=dict)
    by_barcode: dict[str, ManifestEntry] = field(default_factory=dict)

    def lookup(self, path: Path, barcode: str | None) -> ManifestEntry | None:
        """By file name first (also a DICOM series' folder name), then by barcode."""
        for name in (path.name, path.parent.name):
            if name in self.by_file:
                return self.by_file[name]
        if barcode and barcode in self.by_barcode:
            return self.by_barcode[barcode]
        return None


def load_manifest(path: Path) -> Manifest:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ManifestError(f"{quote_name(path)}: cannot read the manifest ({exc.strerror})") from exc
    if size > MAX_BYTES:
        raise ManifestError(
            f"{quote_name(path)}: {size} bytes is over the {MAX_BYTES >> 20} MiB limit for a manifest; "
            "split it"
        )
    try:
        text = path.read_text("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{quote_name(path)}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{quote_name(path)}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ManifestError(f"{quote_name(path)}: a JSON manifest must be a list of objects")
        numbered = [(index + 1, row) for index, row in enumerate(rows)]
    else:
        # newline="": a quoted cell may hold a line break, which the checks below then refuse
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            raise ManifestError(
                f"{quote_name(path)}: the CSV has no header row; the first line must name the columns"
            )
        numbered = [(index + 2, row) for index, row in enumerate(reader)]
    manifest = Manifest()
    for number, row in numbered:
        entry, file, barcode = _entry(path, number, row)
        if file:
            if file in manifest.by_file:
                raise ManifestError(f"{quote_name(path)}, row {number}: file {file!r} appears twice")
            manifest.by_file[file] = entry
        if barcode:
            manifest.by_barcode[barcode] = entry
    return manifest


def _entry(path: Path, number: int, row: dict[str, Any]) -> tuple[ManifestEntry, str, str]:
    where = f"{quote_name(path)}, row {number}"
    unknown = [key for key in row if key is None or str(key).strip() not in KEYS]
    if unknown:
        raise ManifestError(f"{where}: unknown column {unknown[0]!r}; the columns are {', '.join(KEYS)}")
    values = {str(k).strip(): ("" if v is None else _text(where, str(k).strip(), v)) for k, v in row.items()}
    file, barcode = values.get("file", ""), values.get("barcode", "")
    if not file and not barcode:
        raise ManifestError(f"{where}: needs a 'file' or a 'barcode' value to match a slide")
    for key, (attribute, vr) in ATTRIBUTES.items():
        value = values.get(key, "")
        if not value:
            continue
        try:
            check_person_name(value) if vr == "PN" else check_string(value, vr)
        except InvalidValueError as exc:
            raise ManifestError(f"{where}: {key} {value!r} {exc} (it becomes DICOM {attribute})") from exc
    typed: dict[str, Any] = dict(values)
    try:
        if values.get("birth_date"):
            typed["birth_date"] = normalise_date(values["birth_date"])
    except InvalidValueError as exc:
        raise ManifestError(f"{where}: birth_date {values['birth_date']!r} {exc}") from exc
    try:
        if values.get("sex"):
            typed["sex"] = normalise_sex(values["sex"])
    except InvalidValueError as exc:
        raise ManifestError(f"{where}: sex {values['sex']!r} {exc}") from exc
    spacing = None
    if values.get("mpp") and not file:
        raise ManifestError(
            f"{where}: 'mpp' needs a 'file' value: the spacing must be known before the file is opened"
        )
    if values.get("mpp"):
        try:
            mpp = float(values["mpp"])
        except ValueError as exc:
            raise ManifestError(f"{where}: mpp {values['mpp']!r} is not a number of micrometres") from exc
        if not 0.01 <= mpp <= 100:
            raise ManifestError(f"{where}: mpp {mpp} is outside 0.01-100 micrometres per pixel")
        spacing = SizeMm.from_mpp(mpp)
    identity = SlideIdentity(
        **{key: typed.get(key) or None for key in IDENTITY_KEYS},
        container_id=barcode or None,
    )
    return ManifestEntry(identity, spacing), file, barcode


def _text(where: str, key: str, value: object) -> str:
    """A cell as text. JSON may give numbers (a patient ID written 123); lists or objects would
    be stored as their Python spelling, so they are refused."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        kind = (
            "true or false"
            if isinstance(value, bool)
            else "a list"
            if isinstance(value, list)
            else "an object"
        )
        raise ManifestError(f"{where}: {key} must be text or a number, not {kind}")
    return str(value).strip()
