"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

The query string is read here (keys by keyword or tag, wild cards, ranges, UID lists,
``includefield``, ``limit`` / ``offset``, ``fuzzymatching``); the catalog matches it
(:mod:`lamina.archive.catalog.search`); each hit is answered with PS3.18's default return
attributes for its level (and, across studies or series, the parents' ones), what viewers of slides
need (ImageType, TotalPixelMatrixColumns/Rows, ContainerIdentifier), the matched keys and the
``includefield`` ones, taken from the catalog or, for what the catalog does not keep, from the
DICOM JSON stored at ingest (of one instance of a study or series). Bulk data is never part of a
search answer: WADO-RS metadata has it.

Behaviour worth knowing (the conformance statement):

- No match is ``200`` with ``[]`` (PS3.18 allows 204; an empty array is what every client reads).
- A page holds at most :data:`MAX_RESULTS` hits; past that, a ``Warning`` header says that more can be
  asked for with ``offset``. The order is stable (newest study first), so paging sees each hit once.
- ``fuzzymatching=true`` is accepted; matching stays literal (person names ignore case) and a
  ``Warning`` header says so.
- A DICOM attribute the catalog cannot match (``StudyDescription``, ...) is ignored for matching,
  returned like an ``includefield`` one, and named in a ``Warning`` header, as C-FIND does with
  optional keys. A name that is no DICOM keyword or tag, or a malformed value, is a 400 naming it.
- ``includefield`` attributes of a level below the search's are left out (a study has no
  SOPClassUID); ``includefield=all`` gives every stored attribute of the search's level and above.
- Besides DICOM keywords, ``stain`` and ``organ`` (the slide's, as the lab's manifest gave them)
  are search keys, as is ``SpecimenDescriptionSequence.PrimaryAnatomicStructureSequence.CodeMeaning``
  (the organ) and ``SpecimenDescriptionSequence.SpecimenIdentifier``. Slide keys also work in a
  search for studies: a study matches when one of its slides does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lamina.api.dicomweb.accept import parse_accept
from lamina.api.dicomweb.wado import dicomweb_base
from lamina.archive.archive import Archive
from lamina.archive.catalog import search
from lamina.archive.catalog.search import (
    AnyOf,
    Criterion,
    Found,
    InstanceHit,
    Kind,
    Level,
    Match,
    Range,
    SeriesHit,
    Single,
    StudyHit,
    Wildcard,
)
from lamina.errors import NotAcceptableError, RequestError
from lamina.mapping import dicom_json

DICOM_JSON = "application/dicom+json"
#: The most hits one answer holds, whatever ``limit`` asks.
MAX_RESULTS = 1000
WARN_AGENT = "lamina"

Element = dict[str, Any]


# -- attributes and their levels -------------------------------------------------------------
def _tags(*keywords: str) -> tuple[str, ...]:
    tags = []
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword} is not a DICOM keyword")
        tags.append(f"{tag:08X}")
    return tuple(tags)


# Patient, Patient Study, General Study and Clinical Trial modules: one value per study
STUDY_TAGS = frozenset(_tags(
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
SERIES_TAGS = frozenset(_tags(
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
# computed per level: never read from one instance's JSON
AGGREGATES = frozenset(_tags(
    "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances", "RetrieveURL",
))  # fmt: skip

STUDY_DEFAULTS = _tags(
    "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "RetrieveURL",
)  # fmt: skip
SERIES_DEFAULTS = _tags(
    "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID", "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "RetrieveURL",
    "StudyInstanceUID", "ContainerIdentifier",
)  # fmt: skip
# what viewers of slides need to list an instance, beyond PS3.18's defaults
INSTANCE_DEFAULTS = _tags(
    "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL", "InstanceNumber", "Rows",
    "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID", "ImageType",
    "TotalPixelMatrixColumns", "TotalPixelMatrixRows", "ContainerIdentifier",
)  # fmt: skip
#: returned by default only when the stored JSON has them
IF_PRESENT = _tags("TimezoneOffsetFromUTC", "RequestAttributesSequence")


def level_of(tag: str) -> Level:
    """The level an attribute belongs to (anything not known as study or series is an instance's)."""
    if tag in STUDY_TAGS:
        return Level.STUDY
    if tag in SERIES_TAGS:
        return Level.SERIES
    return Level.INSTANCE


# -- the request -----------------------------------------------------------------------------
@dataclass
class Query:
    """A QIDO-RS request, read: what to match, what to return, which page."""

    level: Level
    criteria: list[Criterion] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)  # tags asked for (matched keys, includefield)
    include_all: bool = False
    limit: int = 0
    offset: int = 0
    capped: bool = True  # the server's maximum, not the client's limit, sets the page size
    warnings: list[str] = field(default_factory=list)


_CONTROL = {"limit", "offset", "fuzzymatching", "includefield", "emptyvaluematching",
            "multiplevaluematching", "accept", "charset"}  # fmt: skip
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")
# sequence paths the catalog can match, as tag paths
_PATHS = {
    _tags(
        "SpecimenDescriptionSequence", "SpecimenIdentifier"
    ): "SpecimenDescriptionSequence.SpecimenIdentifier",
    _tags("SpecimenDescriptionSequence", "PrimaryAnatomicStructureSequence", "CodeMeaning"): "organ",
}
_ROUTE = {Level.STUDY: "/studies", Level.SERIES: "/series", Level.INSTANCE: "/instances"}
_LISTS = {"ModalitiesInStudy", "Modality"}  # text keys that take several values
_NON_DICOM = {"stain", "organ"}


def attribute_path(name: str) -> tuple[str, ...] | None:
    """``PatientID`` / ``00100020`` / ``A.B`` as tags, or None when a part is no keyword or tag."""
    path = []
    for part in name.split("."):
        if _HEX_TAG.match(part):
            path.append(part.upper())
            continue
        tag = tag_for_keyword(part)
        if tag is None:
            return None
        path.append(f"{tag:08X}")
    return tuple(path)


def _search_key(path: tuple[str, ...]) -> str | None:
    if len(path) > 1:
        return _PATHS.get(path)
    keyword = keyword_for_tag(int(path[0], 16))
    return keyword if keyword in search.KEYS else None


def _whole_number(parameter: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise RequestError(
            parameter, f"{value!r} is not a whole number; give a count such as {parameter}=100"
        )
    return number


def _flag(parameter: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise RequestError(parameter, f"{value!r}: give true or false")
    return value.lower() == "true"


def _date(parameter: str, value: str) -> str:
    try:
        if not _DATE.match(value):
            raise ValueError(value)
        datetime.strptime(value, "%Y%m%d")
    except ValueError as exc:
        raise RequestError(
            parameter, f"{value!r} is not a date: give YYYYMMDD, or a range such as 20260101-20261231"
        ) from exc
    return value


def _time(parameter: str, value: str) -> str:
    found = _TIME.match(value)
    parts = [int(part) for part in found.groups()[:3] if part] if found else []
    if not found or any(part >= limit for part, limit in zip(parts, (24, 60, 61), strict=False)):
        raise RequestError(
            parameter, f"{value!r} is not a time: give HHMMSS (HH, HHMM or HHMMSS.FFFFFF), or a range"
        )
    return value


def _range(parameter: str, value: str, check: Callable[[str, str], str]) -> Match:
    if "-" not in value:
        return Single(check(parameter, value))
    low, _, high = value.partition("-")
    if not low and not high:
        raise RequestError(parameter, "give at least one end of the range, e.g. 20260101- or -20261231")
    bounds = (check(parameter, low) if low else None, check(parameter, high) if high else None)
    if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
        raise RequestError(parameter, f"{value!r} ends before it starts")
    return Range(*bounds)


def _values(values: Sequence[str]) -> list[str]:
    return [item.strip() for value in values for item in re.split(r"[,\\]", value) if item.strip()]


def parse_match(parameter: str, key: str, values: Sequence[str]) -> Match | None:
    """How to match ``key`` given the values of its parameter(s); None is universal matching."""
    kind = search.KEYS[key].kind
    if kind is Kind.UID or key in _LISTS:
        items = _values(values)
        if not items or "*" in items:
            return None
        if key in _LISTS and len(items) == 1 and ("*" in items[0] or "?" in items[0]):
            return Wildcard(items[0])
        return Single(items[0]) if len(items) == 1 else AnyOf(tuple(items))
    if len(values) > 1:
        raise RequestError(parameter, "given more than once; only UIDs and modalities take a list")
    value = values[0].strip()
    if value in ("", "*"):
        return None
    if kind is Kind.DATE:
        return _range(parameter, value, _date)
    if kind is Kind.TIME:
        return _range(parameter, value, _time)
    if kind is Kind.NUMBER:
        return Single(str(_whole_number(parameter, value)))
    return Wildcard(value) if "*" in value or "?" in value else Single(value)


def parse_query(items: Iterable[tuple[str, str]], level: Level) -> Query:
    """Read a QIDO-RS query string (as ``(name, value)`` pairs) for a search at ``level``."""
    query = Query(level, limit=MAX_RESULTS)
    keys: dict[str, tuple[str, list[str]]] = {}  # search key -> (first parameter name, values)
    ignored: list[str] = []
    for name, value in items:
        if name in _CONTROL:
            _control(query, name, value)
            continue
        path = (name,) if name in _NON_DICOM else attribute_path(name)
        if path is None:
            raise RequestError(
                name, "not a DICOM keyword or tag (nor stain or organ); write keys as PatientID or 00100020"
            )
        key = name if name in _NON_DICOM else _search_key(path)
        if key is None:
            if value.strip() not in ("", "*") and name not in ignored:  # an empty value only asks for it
                ignored.append(name)
            _return(query, path[0])
            continue
        if not search.KEYS[key].matches_at(level):
            below = search.KEYS[key].level
            raise RequestError(
                name,
                f"an attribute of {_ROUTE[below][1:]} cannot be matched in a search for {_ROUTE[level][1:]}; "
                f"search {_ROUTE[below]} (or /studies/{{study}}{_ROUTE[below]}) instead",
            )
        keys.setdefault(key, (name, []))[1].append(value)
        if name not in _NON_DICOM:
            _return(query, path[0])
    for key, (name, values) in keys.items():
        match = parse_match(name, key, values)
        if match is not None:
            query.criteria.append(Criterion(key, match))
    if ignored:
        query.warnings.append(
            f"matching on {', '.join(ignored)} is not supported; ignored for matching, returned as asked"
        )
    return query


def _return(query: Query, tag: str) -> None:
    if tag not in query.returned:
        query.returned.append(tag)


def _control(query: Query, name: str, value: str) -> None:
    if name == "limit":
        asked = _whole_number(name, value)
        query.limit, query.capped = min(asked, MAX_RESULTS), asked > MAX_RESULTS
    elif name == "offset":
        query.offset = _whole_number(name, value)
    elif name == "fuzzymatching":
        if _flag(name, value):
            query.warnings.append("fuzzymatching is not supported; exact matching applied")
    elif name in ("emptyvaluematching", "multiplevaluematching"):
        if _flag(name, value):
            query.warnings.append(f"{name} is not supported; ignored")
    elif name == "includefield":
        for item in (part.strip() for part in value.split(",")):
            if item.lower() == "all":
                query.include_all = True
            elif item:
                path = attribute_path(item)
                if path is None:
                    raise RequestError(
                        name,
                        f"{item!r} is not a DICOM keyword or tag; give e.g. includefield=StudyDescription",
                    )
                _return(query, path[0])
    elif name == "accept":
        _check_accept(value, name)


def _check_accept(header: str | None, name: str = "Accept") -> None:
    for wanted in parse_accept(header):
        if wanted.media_type in ("*/*", "application/*", DICOM_JSON, "application/json"):
            return
    raise NotAcceptableError(f"{name}: search results are sent as {DICOM_JSON} only")


# -- the answer ------------------------------------------------------------------------------
def _vr(tag: str) -> str:
    """The dictionary's VR; the first of an ambiguous one (``US or SS``). KeyError when unknown."""
    vr: str = dictionary_VR(int(tag, 16))
    return vr.split(" or ")[0]


def _element(tag: str, *values: Any) -> Element:
    vr = _vr(tag)
    kept = [value for value in values if value is not None and value != ""]
    return {"vr": vr, "Value": kept} if kept else {"vr": vr}


def _person(tag: str, name: str | None) -> Element:
    return _element(tag, {"Alphabetic": name} if name else None)


_T = {keyword: _tags(keyword)[0] for keyword in (
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "PatientID", "PatientName",
    "PatientBirthDate", "PatientSex", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "RetrieveURL", "SeriesInstanceUID", "Modality", "SeriesNumber",
    "ContainerIdentifier", "NumberOfSeriesRelatedInstances", "SOPClassUID", "SOPInstanceUID",
    "InstanceNumber", "Rows", "Columns", "NumberOfFrames", "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows", "InstanceAvailability", "AvailableTransferSyntaxUID",
)}  # fmt: skip


def _study_known(hit: StudyHit) -> dict[str, Element]:
    t = _T
    return {
        t["StudyInstanceUID"]: _element(t["StudyInstanceUID"], hit.study_instance_uid),
        t["StudyDate"]: _element(t["StudyDate"], hit.study_date),
        t["StudyTime"]: _element(t["StudyTime"], hit.study_time),
        t["AccessionNumber"]: _element(t["AccessionNumber"], hit.accession_number),
        t["PatientID"]: _element(t["PatientID"], hit.patient_id),
        t["PatientName"]: _person(t["PatientName"], hit.patient_name),
        t["PatientBirthDate"]: _element(t["PatientBirthDate"], hit.patient_birth_date),
        t["PatientSex"]: _element(t["PatientSex"], hit.patient_sex),
    }


def _series_known(hit: SeriesHit) -> dict[str, Element]:
    t = _T
    return {
        **_study_known(hit.study),
        t["SeriesInstanceUID"]: _element(t["SeriesInstanceUID"], hit.series_instance_uid),
        t["Modality"]: _element(t["Modality"], hit.modality),
        t["SeriesNumber"]: _element(t["SeriesNumber"], hit.series_number),
        t["ContainerIdentifier"]: _element(t["ContainerIdentifier"], hit.container_id),
    }


def _instance_known(hit: InstanceHit, url: str) -> dict[str, Element]:
    t = _T
    return {
        **_series_known(hit.series),
        t["SOPClassUID"]: _element(t["SOPClassUID"], hit.sop_class_uid),
        t["SOPInstanceUID"]: _element(t["SOPInstanceUID"], hit.sop_instance_uid),
        t["InstanceNumber"]: _element(t["InstanceNumber"], hit.instance_number),
        t["Rows"]: _element(t["Rows"], hit.rows),
        t["Columns"]: _element(t["Columns"], hit.columns),
        t["NumberOfFrames"]: _element(t["NumberOfFrames"], hit.number_of_frames),
        t["TotalPixelMatrixColumns"]: _element(t["TotalPixelMatrixColumns"], hit.total_pixel_matrix_columns),
        t["TotalPixelMatrixRows"]: _element(t["TotalPixelMatrixRows"], hit.total_pixel_matrix_rows),
        t["InstanceAvailability"]: _element(t["InstanceAvailability"], "ONLINE"),
        # the stored encoding, which WADO-RS sends as is: wsidicom asks for it before reading frames
        t["AvailableTransferSyntaxUID"]: _element(t["AvailableTransferSyntaxUID"], hit.transfer_syntax_uid),
        t["RetrieveURL"]: _element(t["RetrieveURL"], url),
    }


def _without_bulk(element: Element) -> Element | None:
    if "BulkDataURI" in element or "InlineBinary" in element:
        return None
    if element.get("vr") == "SQ" and element.get("Value"):
        return {**element, "Value": [_item_without_bulk(item) for item in element["Value"]]}
    return element


def _item_without_bulk(item: dict[str, Element]) -> dict[str, Element]:
    return {tag: kept for tag, element in item.items() if (kept := _without_bulk(element)) is not None}


def _stored(metadata: bytes | None) -> dict[str, Element]:
    if metadata is None:
        return {}
    stored: dict[str, Element] = orjson.loads(dicom_json.unpack(metadata))
    return stored


def _defaults(query: Query, scope: set[str]) -> list[str]:
    """PS3.18's default attributes of the level, with those of the levels above the path's scope."""
    parents: list[str] = []
    if query.level > Level.STUDY and "study" not in scope:
        parents.extend(STUDY_DEFAULTS)
    if query.level > Level.SERIES and "series" not in scope:
        parents.extend(SERIES_DEFAULTS)
    own = {Level.STUDY: STUDY_DEFAULTS, Level.SERIES: SERIES_DEFAULTS, Level.INSTANCE: INSTANCE_DEFAULTS}
    return [*own[query.level], *(tag for tag in parents if tag not in AGGREGATES)]


def render(query: Query, scope: set[str], known: dict[str, Element], metadata: bytes | None) -> Element:
    """One result: default, matched and included attributes, from the catalog or the stored JSON."""
    stored = _stored(metadata)
    wanted = _defaults(query, scope)
    wanted += [tag for tag in IF_PRESENT if tag in stored and level_of(tag) <= query.level]
    wanted += [tag for tag in query.returned if level_of(tag) <= query.level]
    if query.include_all:
        wanted += [tag for tag in stored if level_of(tag) <= query.level]
    result: dict[str, Element] = {}
    for tag in wanted:
        if tag in result:
            continue
        if tag in known:
            result[tag] = known[tag]
        elif tag in stored:
            kept = _without_bulk(stored[tag])
            if kept is not None:
                result[tag] = kept
        elif tag not in AGGREGATES:
            try:
                result[tag] = {"vr": _vr(tag)}
            except KeyError:  # a private or unknown tag the stored JSON lacks
                continue
    return dict(sorted(result.items()))


def _study_result(query: Query, scope: set[str], hit: StudyHit, base: str) -> Element:
    t = _T
    known = _study_known(hit)
    known[t["ModalitiesInStudy"]] = _element(t["ModalitiesInStudy"], *hit.modalities)
    known[t["NumberOfStudyRelatedSeries"]] = _element(t["NumberOfStudyRelatedSeries"], hit.series)
    known[t["NumberOfStudyRelatedInstances"]] = _element(t["NumberOfStudyRelatedInstances"], hit.instances)
    known[t["RetrieveURL"]] = _element(t["RetrieveURL"], f"{base}/studies/{hit.study_instance_uid}")
    return render(query, scope, known, hit.metadata)


def _series_url(base: str, hit: SeriesHit) -> str:
    return f"{base}/studies/{hit.study.study_instance_uid}/series/{hit.series_instance_uid}"


def _series_result(query: Query, scope: set[str], hit: SeriesHit, base: str) -> Element:
    t = _T
    known = _series_known(hit)
    known[t["NumberOfSeriesRelatedInstances"]] = _element(t["NumberOfSeriesRelatedInstances"], hit.instances)
    known[t["RetrieveURL"]] = _element(t["RetrieveURL"], _series_url(base, hit))
    return render(query, scope, known, hit.metadata)


def _instance_result(query: Query, scope: set[str], hit: InstanceHit, base: str) -> Element:
    url = f"{_series_url(base, hit.series)}/instances/{hit.sop_instance_uid}"
    return render(query, scope, _instance_known(hit, url), hit.metadata)


# -- the routes ------------------------------------------------------------------------------
_FINDERS: dict[Level, Callable[..., Found[Any]]] = {
    Level.STUDY: search.find_studies,
    Level.SERIES: search.find_series,
    Level.INSTANCE: search.find_instances,
}
_RESULTS: dict[Level, Callable[[Query, set[str], Any, str], Element]] = {
    Level.STUDY: _study_result,
    Level.SERIES: _series_result,
    Level.INSTANCE: _instance_result,
}


def _search(request: Request, level: Level) -> Response:
    _check_accept(request.headers.get("accept"))
    query = parse_query(request.query_params.multi_items(), level)
    scope = set(request.path_params)
    if "study" in scope:
        query.criteria.append(Criterion("StudyInstanceUID", Single(request.path_params["study"])))
    if "series" in scope:
        query.criteria.append(Criterion("SeriesInstanceUID", Single(request.path_params["series"])))
    archive: Archive = request.app.state.archive
    found = _FINDERS[level](archive.catalog.engine, query.criteria, query.limit, query.offset)
    base = dicomweb_base(request)
    results = [_RESULTS[level](query, scope, hit, base) for hit in found.hits]
    warnings = list(query.warnings)
    if found.more and query.capped:
        warnings.append(
            f"there are additional results that can be requested: at most {MAX_RESULTS} are sent at once; "
            f"ask again with offset={query.offset + len(results)}"
        )
    headers = {"Warning": ", ".join(f'299 {WARN_AGENT} "{text}"' for text in warnings)} if warnings else None
    return Response(orjson.dumps(results), media_type=DICOM_JSON, headers=headers)


# The catalog is synchronous: plain functions, which Starlette runs in its thread pool.
def search_studies(request: Request) -> Response:
    """``GET /studies``."""
    return _search(request, Level.STUDY)


def search_series(request: Request) -> Response:
    """``GET /series`` and ``GET /studies/{study}/series``."""
    return _search(request, Level.SERIES)


def search_instances(request: Request) -> Response:
    """``GET /instances``, ``/studies/{study}/instances``, ``/studies/{study}/series/{series}/instances``."""
    return _search(request, Level.INSTANCE)


def routes() -> list[BaseRoute]:
    """The QIDO-RS routes, to mount under ``/dicomweb`` beside the WADO-RS ones."""
    return [
        Route("/studies", search_studies, methods=["GET"]),
        Route("/series", search_series, methods=["GET"]),
        Route("/instances", search_instances, methods=["GET"]),
        Route("/studies/{study}/series", search_series, methods=["GET"]),
        Route("/studies/{study}/instances", search_instances, methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances", search_instances, methods=["GET"]),
    ]
