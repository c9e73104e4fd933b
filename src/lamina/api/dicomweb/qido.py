"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

A thin adapter: the query string is read here into the search engine's criteria (keys by keyword,
tag or sequence path, ``includefield``, ``limit`` / ``offset``, ``fuzzymatching``,
``emptyvaluematching``); the catalog matches them (:mod:`lamina.archive.catalog.search`, by the
rules written down in :mod:`lamina.archive.catalog.matching`, the same as C-FIND's); each hit
becomes DICOM JSON in :mod:`lamina.mapping.attributes`: PS3.18's default return attributes for its
level (and, across studies or series, the parents' ones), what viewers of slides need (ImageType,
TotalPixelMatrixColumns/Rows, ContainerIdentifier), the matched keys and the ``includefield``
ones. Bulk data is never part of a search answer: WADO-RS metadata has it.

The search and the making of the answer run in Starlette's thread pool (``run_in_threadpool``,
anyio's default limiter of 40 threads), never on the event loop: the catalog is synchronous
(SQLAlchemy Core) and a page of 1,000 hits decompresses 1,000 stored JSON documents.

Behaviour worth knowing (the conformance statement):

- No match is ``200`` with ``[]`` (PS3.18 allows 204; an empty array is what every client reads).
- A page holds at most :data:`MAX_RESULTS` hits; past that, a ``Warning`` header says that more can be
  asked for with ``offset``. The order is stable (newest study first), so paging sees each hit once.
- ``StudyDate`` and ``StudyTime`` given together are one range of moments (combined date and time
  matching, PS3.4 C.2.2.2.5.1): ``StudyDate=20260101-20260102&StudyTime=2200-0600`` is the night
  from 1 January 22:00 to 2 January 06:00.
- A value of several items matches any of them: UIDs by comma or ``\\``, ``Modality`` and
  ``ModalitiesInStudy`` by comma or ``\\``, other keys by ``\\`` (multiple value matching);
  ``multiplevaluematching`` is accepted either way. A key given twice is a 400, except for those.
- ``emptyvaluematching=true`` makes ``""`` match the entities where the attribute is empty.
- ``fuzzymatching=true`` is accepted; matching stays literal (person names ignore case) and a
  ``Warning`` header says so.
- A DICOM attribute the catalog cannot match (``StudyDescription``, ...) is ignored for matching,
  returned like an ``includefield`` one, and named in a ``Warning`` header, as C-FIND does with
  optional keys. A name that is no DICOM keyword or tag, or a malformed value, is a 400 naming it.
- ``includefield`` attributes of a level below the search's are left out (a study has no
  SOPClassUID); ``includefield=all`` gives every stored attribute of the search's level and above.
- ``InstanceAvailability (0008,0056)`` is in every result, at every level, from the slides'
  care lifecycle: ``ONLINE``; ``UNAVAILABLE`` for the series of a slide expired after its care
  retention (listed still, with 0 instances, its thumbnail kept; its retrievals answer 410) and a
  study whose slides all expired; ``NEARLINE`` for a slide on the cold tier.
- Besides DICOM keywords, ``stain`` and ``organ`` (the slide's, as the lab's manifest gave them)
  are search keys, as is ``SpecimenDescriptionSequence.PrimaryAnatomicStructureSequence.CodeMeaning``
  (the organ) and ``SpecimenDescriptionSequence.SpecimenIdentifier``. Slide keys also work in a
  search for studies: a study matches when one of its slides does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lamina.api.auth import principal
from lamina.api.dicomweb.accept import parse_accept
from lamina.api.dicomweb.wado import dicomweb_base
from lamina.archive.archive import Archive
from lamina.archive.catalog import search
from lamina.archive.catalog.keys import KEYS, Level
from lamina.archive.catalog.matching import Kind
from lamina.archive.catalog.search import (
    Criterion,
    Found,
    Hit,
    InstanceHit,
    SeriesHit,
    Single,
    StudyHit,
    Visible,
)
from lamina.errors import NotAcceptableError, RequestError
from lamina.governance.decide import visible_series, visible_study_branches
from lamina.mapping.attributes import Element, attributes, level_of, stored_attributes, tags

DICOM_JSON = "application/dicom+json"
#: The most hits one answer holds, whatever ``limit`` asks.
MAX_RESULTS = 1000
WARN_AGENT = "lamina"

STUDY_DEFAULTS = tags(
    "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "RetrieveURL",
)  # fmt: skip
SERIES_DEFAULTS = tags(
    "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID", "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "RetrieveURL",
    "StudyInstanceUID", "ContainerIdentifier",
)  # fmt: skip
# what viewers of slides need to list an instance, beyond PS3.18's defaults
INSTANCE_DEFAULTS = tags(
    "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL", "InstanceNumber", "Rows",
    "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID", "ImageType",
    "TotalPixelMatrixColumns", "TotalPixelMatrixRows", "ContainerIdentifier",
)  # fmt: skip
#: returned by default only when the stored JSON has them
IF_PRESENT = tags("TimezoneOffsetFromUTC", "RequestAttributesSequence")
#: InstanceAvailability (0008,0056): at every level, from the slides' care lifecycle
_AVAILABILITY = tags("InstanceAvailability")[0]
#: aggregates are computed for the search's own level only
_AGGREGATES = frozenset(tags(
    "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances", "RetrieveURL",
))  # fmt: skip


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
    empty_value: bool = False  # emptyvaluematching=true
    warnings: list[str] = field(default_factory=list)


_CONTROL = {"limit", "offset", "fuzzymatching", "includefield", "emptyvaluematching",
            "multiplevaluematching", "accept", "charset"}  # fmt: skip
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_ROUTE = {Level.STUDY: "/studies", Level.SERIES: "/series", Level.INSTANCE: "/instances"}
_LISTS = {"ModalitiesInStudy", "Modality"}  # keys other than UIDs whose lists may use commas
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
    """The engine's key for an attribute path (``.``-joined keywords), or None."""
    name = ".".join(keyword_for_tag(int(tag, 16)) or tag for tag in path)
    return name if name in KEYS else None


def _whole_number(parameter: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise RequestError(
            parameter, f"{value!r} is not a whole number; give a count such as {parameter}=100"
        )
    if number >= 1 << 63:  # past what the databases count in (found by schemathesis: a 500)
        raise RequestError(parameter, f"{value!r} is too large; give a count such as {parameter}=100")
    return number


def _flag(parameter: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise RequestError(parameter, f"{value!r}: give true or false")
    return value.lower() == "true"


def split_values(key: str, parameter: str, values: Sequence[str]) -> list[str]:
    """The items of a key's parameter(s): ``\\`` separates values of any key; UIDs and modalities
    also take commas, and may be repeated."""
    listed = KEYS[key].kind is Kind.UID or key in _LISTS
    if len(values) > 1 and not listed:
        raise RequestError(parameter, "given more than once; only UIDs and modalities take a list")
    separators = r"[,\\]" if listed else r"\\"
    return [item for value in values for item in re.split(separators, value)]


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
        if not KEYS[key].matches_at(level):
            below = KEYS[key].level
            raise RequestError(
                name,
                f"an attribute of {_ROUTE[below][1:]} cannot be matched in a search for {_ROUTE[level][1:]}; "
                f"search {_ROUTE[below]} (or /studies/{{study}}{_ROUTE[below]}) instead",
            )
        keys.setdefault(key, (name, []))[1].append(value)
        if name not in _NON_DICOM:
            _return(query, path[0])
    for key, (name, values) in keys.items():
        found = search.criterion(
            key, split_values(key, name, values), parameter=name, empty_value=query.empty_value
        )
        if found is not None:
            query.criteria.append(found)
    query.criteria = search.combine_date_time(query.criteria)
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
    elif name == "emptyvaluematching":
        query.empty_value = _flag(name, value)
    elif name == "multiplevaluematching":
        _flag(name, value)  # several values always match any of them
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
def _defaults(query: Query, scope: set[str]) -> list[str]:
    """PS3.18's default attributes of the level, with those of the levels above the path's scope."""
    parents: list[str] = []
    if query.level > Level.STUDY and "study" not in scope:
        parents.extend(STUDY_DEFAULTS)
    if query.level > Level.SERIES and "series" not in scope:
        parents.extend(SERIES_DEFAULTS)
    own = {Level.STUDY: STUDY_DEFAULTS, Level.SERIES: SERIES_DEFAULTS, Level.INSTANCE: INSTANCE_DEFAULTS}
    return [*own[query.level], *(tag for tag in parents if tag not in _AGGREGATES)]


def retrieve_url(base: str, hit: Hit) -> str:
    """The WADO-RS URL of a hit: its study, series or instance."""
    if isinstance(hit, StudyHit):
        return f"{base}/studies/{hit.study_instance_uid}"
    if isinstance(hit, SeriesHit):
        return f"{retrieve_url(base, hit.study)}/series/{hit.series_instance_uid}"
    return f"{retrieve_url(base, hit.series)}/instances/{hit.sop_instance_uid}"


def render(query: Query, scope: set[str], hit: Hit, base: str) -> Element:
    """One result: default, matched and included attributes, from the catalog or the stored JSON."""
    stored = stored_attributes(hit.metadata)
    wanted = _defaults(query, scope)
    wanted += [tag for tag in IF_PRESENT if tag in stored and level_of(tag) <= query.level]
    wanted += [tag for tag in query.returned if level_of(tag) <= query.level]
    if query.include_all:
        wanted += [tag for tag in stored if level_of(tag) <= query.level]
    return attributes(hit, wanted, stored=stored, retrieve_url=retrieve_url(base, hit))


# -- the routes ------------------------------------------------------------------------------
_FINDERS: dict[Level, Callable[..., Found[Any]]] = {
    Level.STUDY: search.find_studies,
    Level.SERIES: search.find_series,
    Level.INSTANCE: search.find_instances,
}


def availabilities(level: Level, hits: Sequence[Hit]) -> list[str]:
    """InstanceAvailability (0008,0056) of each hit, read with it (no query): a study's from its
    row (the most available of its slides), a series' and an instance's from its slide:
    ``UNAVAILABLE`` expired, ``NEARLINE`` cold, else ``ONLINE``
    (:mod:`lamina.archive.catalog.availability`)."""
    if level is Level.STUDY:
        return [hit.availability for hit in hits if isinstance(hit, StudyHit)]
    parents = [hit.series if isinstance(hit, InstanceHit) else hit for hit in hits]
    return [item.availability for item in parents if isinstance(item, SeriesHit)]


def answer(
    engine: Engine, query: Query, scope: set[str], base: str, visible: Visible = None
) -> tuple[list[Element], bool]:
    """Run the search, keeping what ``visible`` allows (in the query), and render its page;
    ``True`` when more hits follow (blocking: a thread's)."""
    found = _FINDERS[query.level](engine, query.criteria, query.limit, query.offset, visible=visible)
    results = []
    for hit, available in zip(found.hits, availabilities(query.level, found.hits), strict=True):
        result = render(query, scope, hit, base)
        result[_AVAILABILITY] = {"vr": "CS", "Value": [available]}
        results.append(dict(sorted(result.items())))
    return results, found.more


async def _search(request: Request, level: Level) -> Response:
    _check_accept(request.headers.get("accept"))
    query = parse_query(request.query_params.multi_items(), level)
    scope = set(request.path_params)
    if "study" in scope:
        query.criteria.append(Criterion("StudyInstanceUID", Single(request.path_params["study"])))
    if "series" in scope:
        query.criteria.append(Criterion("SeriesInstanceUID", Single(request.path_params["series"])))
    archive: Archive = request.app.state.archive
    base = dicomweb_base(request)
    # only what the principal may see, in the query itself (pages stay right): its labs' studies
    # and those its grants reach; at series and instance levels, a slide granted alone shows alone
    who = principal(request)
    visible: Visible = visible_study_branches(who) if level is Level.STUDY else visible_series(who)
    results, more = await run_in_threadpool(answer, archive.catalog.engine, query, scope, base, visible)
    warnings = list(query.warnings)
    if more and query.capped:
        warnings.append(
            f"there are additional results that can be requested: at most {MAX_RESULTS} are sent at once; "
            f"ask again with offset={query.offset + len(results)}"
        )
    headers = {"Warning": ", ".join(f'299 {WARN_AGENT} "{text}"' for text in warnings)} if warnings else None
    return Response(orjson.dumps(results), media_type=DICOM_JSON, headers=headers)


async def search_studies(request: Request) -> Response:
    """``GET /studies``."""
    return await _search(request, Level.STUDY)


async def search_series(request: Request) -> Response:
    """``GET /series`` and ``GET /studies/{study}/series``."""
    return await _search(request, Level.SERIES)


async def search_instances(request: Request) -> Response:
    """``GET /instances``, ``/studies/{study}/instances``, ``/studies/{study}/series/{series}/instances``."""
    return await _search(request, Level.INSTANCE)


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
