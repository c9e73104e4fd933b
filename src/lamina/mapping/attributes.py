"""Catalog hits as DICOM attributes: the one place where what a search found becomes DICOM JSON
(PS3.18 Annex F), and from there a pydicom ``Dataset``.

What the catalog keeps (UIDs, the patient, the study's date and accession number, a series'
modality and number, an instance's matrix...) and what it computes per hit (ModalitiesInStudy,
the Number of Study/Series Related Series/Instances) come from the hit; any other attribute comes
from the DICOM JSON stored at ingest with each instance (:mod:`lamina.mapping.dicom_json`), of the
hit itself or, for a study or a series, of one of its instances. Bulk data is never part of it
(WADO-RS metadata has it). QIDO-RS answers the JSON; C-FIND makes its response identifiers from
it (:func:`to_dataset`).

Each attribute belongs to one level of the information model (:func:`level_of`): the Patient,
Patient Study, General Study and Clinical Trial modules to the study, General Series, Frame of
Reference, Equipment and Specimen to the series (one slide), anything else to the instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from lamina.archive.catalog.keys import Level
from lamina.archive.catalog.search import Hit, InstanceHit, SeriesHit, StudyHit
from lamina.mapping import dicom_json

Element = dict[str, Any]


def tags(*keywords: str) -> tuple[str, ...]:
    """The tags of DICOM keywords, as DICOM JSON writes them (``00100020``)."""
    found = []
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword} is not a DICOM keyword")
        found.append(f"{tag:08X}")
    return tuple(found)


# Patient, Patient Study, General Study and Clinical Trial modules: one value per study
STUDY_TAGS = frozenset(tags(
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence",
    "OtherPatientNames", "EthnicGroup", "PatientComments", "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence", "PatientBreedDescription", "PatientBreedCodeSequence",
    "ResponsiblePerson", "ResponsibleOrganization", "PatientIdentityRemoved", "DeidentificationMethod",
    "DeidentificationMethodCodeSequence", "QualityControlSubject", "StudyInstanceUID", "StudyDate",
    "StudyTime", "ReferringPhysicianName", "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName", "StudyID", "AccessionNumber", "IssuerOfAccessionNumberSequence",
    "StudyDescription", "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "RequestingService",
    "ProcedureCodeSequence", "ReasonForPerformedProcedureCodeSequence", "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence", "PatientAge", "PatientSize", "PatientWeight", "Occupation",
    "AdditionalPatientHistory", "PatientSexNeutered", "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID",
    "ClinicalTrialSiteName", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
    "ClinicalTrialTimePointID", "ClinicalTrialTimePointDescription", "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "RetrieveURL", "TimezoneOffsetFromUTC",
))  # fmt: skip
# General Series, Frame of Reference, Equipment, and the Specimen module: one value per slide
SERIES_TAGS = frozenset(tags(
    "Modality", "SeriesInstanceUID", "SeriesNumber", "Laterality", "SeriesDate", "SeriesTime",
    "PerformingPhysicianName", "ProtocolName", "SeriesDescription", "SeriesDescriptionCodeSequence",
    "OperatorsName", "ReferencedPerformedProcedureStepSequence", "BodyPartExamined", "PatientPosition",
    "PerformedProcedureStepID", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepDescription", "PerformedProtocolCodeSequence", "RequestAttributesSequence",
    "AnatomicalOrientationType", "NumberOfSeriesRelatedInstances", "FrameOfReferenceUID",
    "PositionReferenceIndicator", "Manufacturer", "InstitutionName", "InstitutionAddress", "StationName",
    "InstitutionalDepartmentName", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions",
    "ContainerIdentifier", "IssuerOfTheContainerIdentifierSequence", "AlternateContainerIdentifierSequence",
    "ContainerTypeCodeSequence", "ContainerDescription", "ContainerComponentSequence",
    "SpecimenDescriptionSequence",
))  # fmt: skip
#: Computed for the hit's own level (never read from one instance's JSON).
AGGREGATES = frozenset(tags(
    "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances", "RetrieveURL",
))  # fmt: skip


def level_of(tag: str) -> Level:
    """The level an attribute belongs to (anything not known as study or series is an instance's)."""
    if tag in STUDY_TAGS:
        return Level.STUDY
    if tag in SERIES_TAGS:
        return Level.SERIES
    return Level.INSTANCE


def vr(tag: str) -> str:
    """The dictionary's VR; the first of an ambiguous one (``US or SS``). KeyError when unknown."""
    found: str = dictionary_VR(int(tag, 16))
    return found.split(" or ")[0]


def element(tag: str, *values: Any) -> Element:
    """A DICOM JSON element of the dictionary's VR; empty (no ``Value``) without a value."""
    kept = [value for value in values if value is not None and value != ""]
    return {"vr": vr(tag), "Value": kept} if kept else {"vr": vr(tag)}


def _person(tag: str, name: str | None) -> Element:
    return element(tag, {"Alphabetic": name} if name else None)


_T = {keyword: tags(keyword)[0] for keyword in (
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "PatientID", "PatientName",
    "PatientBirthDate", "PatientSex", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "RetrieveURL", "SeriesInstanceUID", "Modality", "SeriesNumber",
    "ContainerIdentifier", "NumberOfSeriesRelatedInstances", "SOPClassUID", "SOPInstanceUID",
    "InstanceNumber", "Rows", "Columns", "NumberOfFrames", "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows", "InstanceAvailability", "AvailableTransferSyntaxUID",
)}  # fmt: skip


def _study(hit: StudyHit) -> dict[str, Element]:
    t = _T
    return {
        t["StudyInstanceUID"]: element(t["StudyInstanceUID"], hit.study_instance_uid),
        t["StudyDate"]: element(t["StudyDate"], hit.study_date),
        t["StudyTime"]: element(t["StudyTime"], hit.study_time),
        t["AccessionNumber"]: element(t["AccessionNumber"], hit.accession_number),
        t["PatientID"]: element(t["PatientID"], hit.patient_id),
        t["PatientName"]: _person(t["PatientName"], hit.patient_name),
        t["PatientBirthDate"]: element(t["PatientBirthDate"], hit.patient_birth_date),
        t["PatientSex"]: element(t["PatientSex"], hit.patient_sex),
    }


def _series(hit: SeriesHit) -> dict[str, Element]:
    t = _T
    return {
        **_study(hit.study),
        t["SeriesInstanceUID"]: element(t["SeriesInstanceUID"], hit.series_instance_uid),
        t["Modality"]: element(t["Modality"], hit.modality),
        t["SeriesNumber"]: element(t["SeriesNumber"], hit.series_number),
        t["ContainerIdentifier"]: element(t["ContainerIdentifier"], hit.container_id),
    }


def _instance(hit: InstanceHit) -> dict[str, Element]:
    t = _T
    return {
        **_series(hit.series),
        t["SOPClassUID"]: element(t["SOPClassUID"], hit.sop_class_uid),
        t["SOPInstanceUID"]: element(t["SOPInstanceUID"], hit.sop_instance_uid),
        t["InstanceNumber"]: element(t["InstanceNumber"], hit.instance_number),
        t["Rows"]: element(t["Rows"], hit.rows),
        t["Columns"]: element(t["Columns"], hit.columns),
        t["NumberOfFrames"]: element(t["NumberOfFrames"], hit.number_of_frames),
        t["TotalPixelMatrixColumns"]: element(t["TotalPixelMatrixColumns"], hit.total_pixel_matrix_columns),
        t["TotalPixelMatrixRows"]: element(t["TotalPixelMatrixRows"], hit.total_pixel_matrix_rows),
        t["InstanceAvailability"]: element(t["InstanceAvailability"], "ONLINE"),
        # the stored encoding, which WADO-RS sends as is: wsidicom asks for it before reading frames
        t["AvailableTransferSyntaxUID"]: element(t["AvailableTransferSyntaxUID"], hit.transfer_syntax_uid),
    }


def catalog_attributes(hit: Hit, retrieve_url: str | None = None) -> dict[str, Element]:
    """What the catalog knows of the hit, with the aggregates of its own level (and its
    ``RetrieveURL`` when given), by tag."""
    t = _T
    if isinstance(hit, StudyHit):
        known = _study(hit)
        known[t["ModalitiesInStudy"]] = element(t["ModalitiesInStudy"], *hit.modalities)
        known[t["NumberOfStudyRelatedSeries"]] = element(t["NumberOfStudyRelatedSeries"], hit.series)
        known[t["NumberOfStudyRelatedInstances"]] = element(t["NumberOfStudyRelatedInstances"], hit.instances)
    elif isinstance(hit, SeriesHit):
        known = _series(hit)
        known[t["NumberOfSeriesRelatedInstances"]] = element(
            t["NumberOfSeriesRelatedInstances"], hit.instances
        )
    else:
        known = _instance(hit)
    if retrieve_url is not None:
        known[t["RetrieveURL"]] = element(t["RetrieveURL"], retrieve_url)
    return known


_CATALOG_KEYWORDS = {
    Level.STUDY: (
        "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "PatientID", "PatientName",
        "PatientBirthDate", "PatientSex",
    ),
    Level.SERIES: ("SeriesInstanceUID", "Modality", "SeriesNumber", "ContainerIdentifier"),
    Level.INSTANCE: (
        "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
        "TotalPixelMatrixColumns", "TotalPixelMatrixRows", "InstanceAvailability",
        "AvailableTransferSyntaxUID",
    ),
}  # fmt: skip
_OWN_AGGREGATES = {
    Level.STUDY: ("ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    Level.SERIES: ("NumberOfSeriesRelatedInstances",),
    Level.INSTANCE: (),
}


def catalog_tags(level: Level) -> frozenset[str]:
    """The tags :func:`catalog_attributes` gives for a hit of ``level`` (without ``RetrieveURL``):
    asking for any other needs the stored JSON."""
    keywords = [keyword for above in Level if above <= level for keyword in _CATALOG_KEYWORDS[above]]
    return frozenset(tags(*keywords, *_OWN_AGGREGATES[level]))


def stored_attributes(metadata: bytes | None) -> dict[str, Element]:
    """The stored DICOM JSON of an instance (empty without one)."""
    if metadata is None:
        return {}
    stored: dict[str, Element] = orjson.loads(dicom_json.unpack(metadata))
    return stored


def without_bulk(item: Element) -> Element | None:
    """The element without bulk data (None when it is bulk data); sequences item by item."""
    if "BulkDataURI" in item or "InlineBinary" in item:
        return None
    if item.get("vr") == "SQ" and item.get("Value"):
        return {**item, "Value": [_item_without_bulk(value) for value in item["Value"]]}
    return item


def _item_without_bulk(item: dict[str, Element]) -> dict[str, Element]:
    return {tag: kept for tag, value in item.items() if (kept := without_bulk(value)) is not None}


def attributes(
    hit: Hit,
    wanted: Iterable[str],
    *,
    stored: Mapping[str, Element] | None = None,
    retrieve_url: str | None = None,
) -> dict[str, Element]:
    """The ``wanted`` attributes of a hit, by tag, in tag order: from the catalog, else from the
    stored JSON (``stored``, read from the hit when not given), else empty. Bulk data is left
    out, as are aggregates the hit's level does not compute and tags no dictionary knows."""
    known = catalog_attributes(hit, retrieve_url)
    stored = stored_attributes(hit.metadata) if stored is None else stored
    result: dict[str, Element] = {}
    for tag in wanted:
        if tag in result:
            continue
        if tag in known:
            result[tag] = known[tag]
        elif tag in stored:
            kept = without_bulk(stored[tag])
            if kept is not None:
                result[tag] = kept
        elif tag not in AGGREGATES:
            try:
                result[tag] = {"vr": vr(tag)}
            except KeyError:  # a private or unknown tag the stored JSON lacks
                continue
    return dict(sorted(result.items()))


def to_dataset(elements: Mapping[str, Element]) -> Dataset:
    """DICOM JSON attributes as a pydicom ``Dataset``."""
    return Dataset.from_json(dict(elements))
