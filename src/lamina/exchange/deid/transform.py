"""One instance's header de-identified by the tables of :mod:`.rules`: a new dataset is built
from the kept attributes (nothing passes through by default), plus the reasons to quarantine.

Reasons and the list of removed attributes name attributes by keyword and tag, never by value:
they are logged and shown, and a value may be the very thing being removed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom._uid_dict import UID_dictionary  # the standard's UIDs (pydicom has no public name)
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag

from lamina.exchange.deid.rules import (
    ACTIONS,
    KNOWN_SOP_CLASSES,
    METHOD_CODES,
    METHOD_TEXT,
    SAFE_PRIVATE_TAGS,
    SAFE_WORDS,
    TEXT_ITEM_CLEANED,
    TEXT_ITEM_SPECIMEN,
    TEXT_VRS,
    UID_KEPT,
    Action,
)
from lamina.exchange.keys import ExchangeKeys
from lamina.formats.dicom_header import trail_words

#: SpecimenPreparationStepContentItemSequence (0040,0612).
_CONTENT_ITEMS = 0x00400612
_WORD = re.compile(r"[\w&]+")
#: The most items walked in one sequence and the deepest nesting: bounded work on any header.
MAX_ITEMS = 100_000
MAX_DEPTH = 16


@dataclass
class Result:
    """The new dataset (no file meta, no Pixel Data), what was removed and why to quarantine."""

    dataset: Dataset
    removed: list[str] = field(default_factory=list)
    quarantine: list[str] = field(default_factory=list)


@dataclass
class _Walk:
    keys: ExchangeKeys
    offset: dt.timedelta
    result: Result

    def where(self, trail: list[BaseTag], tag: BaseTag) -> str:
        return trail_words([*trail, tag])

    def quarantine(self, reason: str) -> None:
        if reason not in self.result.quarantine:
            self.result.quarantine.append(reason)

    def remove(self, what: str) -> None:
        if what not in self.result.removed:
            self.result.removed.append(what)

    # -- the walk ---------------------------------------------------------------------------

    def dataset(self, source: Dataset, trail: list[BaseTag]) -> Dataset:
        out = Dataset()
        if len(trail) > MAX_DEPTH:
            self.quarantine(f"{trail_words(trail)}: sequences nested deeper than {MAX_DEPTH}")
            return out
        for tag in list(source.keys()):
            if tag.group == 0x0002 or tag == 0x7FE00010 or tag.element == 0:  # meta, pixels, lengths
                continue
            element = source[tag]
            if tag.is_private:
                self.private(element, trail)
                continue
            self.element(element, out, trail)
        return out

    def private(self, element: DataElement, trail: list[BaseTag]) -> None:
        tag = element.tag
        if int(tag) in SAFE_PRIVATE_TAGS:
            return
        where = self.where(trail, tag)
        if 0x0010 <= tag.element <= 0x00FF:  # a private creator: gone with its block
            self.remove(f"private creator {where}")
            return
        self.remove(f"private {where}")
        if holds_text(element):
            self.quarantine(f"private attribute {where} holds text that no table covers")

    def element(self, element: DataElement, out: Dataset, trail: list[BaseTag]) -> None:
        keyword, vr, tag = element.keyword, element.VR, element.tag
        where = self.where(trail, tag)
        action = ACTIONS.get(keyword)
        if action is None and vr == "UI":
            action = Action.KEEP if keyword in UID_KEPT else Action.UID
        if action is None:
            self.remove(where)
            if vr in TEXT_VRS or not keyword:
                self.quarantine(f"{where} is not in the de-identification tables (VR {vr})")
            elif vr == "SQ" and _sequence_has_text(element.value):
                self.quarantine(f"{where} holds text and is not in the de-identification tables")
            return
        if action is Action.KEEP:
            if vr == "SQ":
                out[tag] = DataElement(tag, "SQ", self.items(element, trail))
            else:
                out[tag] = element
        elif action is Action.UID:
            out[tag] = DataElement(tag, "UI", self.uids(element.value))
        elif action is Action.DATE:
            out[tag] = DataElement(tag, vr, self.dates(element, where))
        elif action is Action.EMPTY:
            out[tag] = DataElement(tag, vr, DicomSequence([]) if vr == "SQ" else "")
            if element.value:
                self.remove(f"{where} (emptied)")
        elif action is Action.REMOVE:
            self.remove(where)
        elif action is Action.SPECIMEN:
            out[tag] = DataElement(tag, vr, self.specimen(str(element.value or "")))
        elif action is Action.CLEAN:
            if clean(str(element.value or "")):
                out[tag] = element
            else:
                self.remove(where)
        elif action is Action.SET and keyword == "TextValue" and not _in_content_item(trail):
            self.remove(where)  # a content item's text is handled with its item (items())
        # PatientName, PatientID, AccessionNumber: written by identity()

    def items(self, element: DataElement, trail: list[BaseTag]) -> DicomSequence:
        inner = [*trail, element.tag]
        items = list(element.value or ())
        if len(items) > MAX_ITEMS:
            self.quarantine(f"{trail_words(inner)}: more than {MAX_ITEMS} items")
            return DicomSequence([])
        out = []
        for item in items:
            if element.keyword == "SpecimenPreparationStepContentItemSequence" and "TextValue" in item:
                text = self.text_item(item, inner)
                if text is None:
                    continue
                new = self.dataset(item, inner)
                new.TextValue = text
                out.append(new)
            else:
                out.append(self.dataset(item, inner))
        return DicomSequence(out)

    def text_item(self, item: Dataset, trail: list[BaseTag]) -> str | None:
        """A TEXT content item's new value, or None to drop the item."""
        names = item.get("ConceptNameCodeSequence") or [Dataset()]
        concept = (str(names[0].get("CodingSchemeDesignator", "")), str(names[0].get("CodeValue", "")))
        value = str(item.TextValue or "")
        where = self.where(trail, item["TextValue"].tag)
        if concept in TEXT_ITEM_SPECIMEN:
            return self.specimen(value)
        if concept in TEXT_ITEM_CLEANED and clean(value):
            return value
        self.remove(f"{where} (content item {concept[0]} {concept[1]})")
        return None

    # -- values ------------------------------------------------------------------------------

    def uids(self, value: object) -> str | list[str]:
        values = [value] if isinstance(value, str) or value is None else list(value)  # type: ignore[call-overload]
        new = [
            str(v or "") if str(v or "") in UID_dictionary or not v else self.keys.uid(str(v)) for v in values
        ]
        return new[0] if len(new) == 1 else new

    def specimen(self, value: str) -> str:
        """A container or specimen identifier's keyed pseudonym (16 characters, SH/LO fit); the
        same for both so that a specimen named by its container keeps that link."""
        return self.keys.accession_pseudonym("Specimen\x00" + value) if value else ""

    def dates(self, element: DataElement, where: str) -> str | list[str]:
        raw = element.value
        values = [raw] if isinstance(raw, (str, bytes, dt.date)) or raw is None else list(raw)
        moved = []
        for value in values:
            text = str(value or "").strip()
            if not text:
                moved.append("")
                continue
            shifted = _shift(text, element.VR, self.offset)
            if shifted is None:
                self.quarantine(f"{where}: a {element.VR} value that cannot be moved (not a full date)")
                shifted = ""
            moved.append(shifted)
        return moved[0] if len(moved) == 1 else moved


def _shift(text: str, vr: str, offset: dt.timedelta) -> str | None:
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])) - offset
    except ValueError:
        return None
    if vr == "DA" and len(text) != 8:
        return None
    return day.strftime("%Y%m%d") + text[8:]


def _in_content_item(trail: list[BaseTag]) -> bool:
    return bool(trail) and int(trail[-1]) == _CONTENT_ITEMS


def clean(text: str) -> bool:
    """Clean Descriptors: kept when every word is a safe one."""
    words = _WORD.findall(text.lower())
    return bool(words) and all(word in SAFE_WORDS for word in words)


def holds_text(element: DataElement) -> bool:
    if element.VR in TEXT_VRS - {"UN"}:
        return bool(element.value)
    if element.VR in ("UN", "OB", "OW", "UT") and isinstance(element.value, (bytes, bytearray)):
        # a value pydicom cannot type is text when it reads as UTF-8 (ASCII, Latin letters...)
        try:
            text = bytes(element.value).decode("utf-8").strip("\x00 ")
        except UnicodeDecodeError:
            text = bytes(element.value).decode("latin-1").strip("\x00 ")
            letters = sum(c.isalnum() or c in " .-_^/" for c in text)
            return len(text) >= 2 and letters >= 0.9 * len(text)
        return len(text) >= 2 and sum(c.isprintable() or c.isspace() for c in text) >= 0.8 * len(text)
    return False


def _sequence_has_text(items: Iterable[Dataset] | None, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return True
    for item in items or ():
        for element in item:
            if element.VR == "SQ":
                if _sequence_has_text(element.value, depth + 1):
                    return True
            elif element.VR in TEXT_VRS and element.value:
                return True
    return False


def deidentify_dataset(source: Dataset, keys: ExchangeKeys, warehouses: tuple[str, ...] = ()) -> Result:
    """The header of one instance de-identified (the module's and :mod:`.rules`' docstrings).

    The source is not changed. PatientID must be present: its pseudonym and date offset are
    the patient's identity at the receiving archive.
    """
    result = Result(Dataset())
    sop_class = str(source.get("SOPClassUID", ""))
    if sop_class not in KNOWN_SOP_CLASSES:
        result.quarantine.append(
            f"SOPClassUID (0008,0016): {sop_class or 'none'} is not a SOP class the tables cover"
        )
    patient_id = str(source.get("PatientID", "") or "").strip()
    if not patient_id:
        result.quarantine.append("PatientID (0010,0020) is empty: the slide cannot be given a pseudonym")
    walk = _Walk(keys, dt.timedelta(days=keys.date_offset_days(patient_id)), result)
    out = walk.dataset(source, [])
    _identity(out, source, keys, patient_id, warehouses, result)
    result.dataset = out
    return result


def _identity(
    out: Dataset,
    source: Dataset,
    keys: ExchangeKeys,
    patient_id: str,
    warehouses: tuple[str, ...],
    result: Result,
) -> None:
    """The patient's pseudonyms and the record of the method (PS3.15 E.1.1, C.7.1.1)."""
    # PatientName is left empty (type 2): the pseudonym is in PatientID already, and 16 of its
    # characters would be a second, weaker identifier that receivers may show as a name.
    out.PatientName = ""
    out.PatientID = keys.patient_pseudonym(patient_id) if patient_id else ""
    accession = str(source.get("AccessionNumber", "") or "").strip()
    out.AccessionNumber = keys.accession_pseudonym(accession) if accession else ""
    if warehouses:
        items = []
        for name in warehouses:
            item = Dataset()
            item.PatientID = keys.patient_pseudonym(patient_id, name) if patient_id else ""
            item.IssuerOfPatientID = name
            item.TypeOfPatientID = "TEXT"
            items.append(item)
        out.OtherPatientIDsSequence = DicomSequence(items)
    out.PatientIdentityRemoved = "YES"
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    out.DeidentificationMethod = list(METHOD_TEXT)
    codes = []
    for value, meaning in METHOD_CODES:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
        codes.append(code)
    out.DeidentificationMethodCodeSequence = DicomSequence(codes)
    if source.get("PatientName"):
        result.removed.append("PatientName (0010,0010) (emptied)")
