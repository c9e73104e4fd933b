"""C-FIND on the catalog: Study Root Query/Retrieve Information Model - FIND, levels STUDY,
SERIES and IMAGE (PS3.4 C.4.1, C.6.2).

A thin adapter: the identifier is read into the search engine's criteria, the engine
(:mod:`lamina.archive.catalog.search`) finds the matches with the same functions and the same
matching rules as QIDO-RS (written down in :mod:`lamina.archive.catalog.matching`), and each match
becomes a response identifier holding exactly the requested keys (:mod:`lamina.mapping.attributes`).

- Matching is relational: a key of the query level or above narrows the answer, so an IMAGE
  query by SeriesInstanceUID alone works; a hierarchical query (each higher level's unique key
  given) gets the same answer. Keys below the query level are not matched and come back empty.
- A key inside a sequence (``SpecimenDescriptionSequence`` with one item holding
  ``SpecimenIdentifier``) is matched as QIDO-RS matches its path (sequence matching); the
  response's sequence items hold the requested item keys.
- StudyDate and StudyTime are matched each on its own (PS3.4 C.2.2.2.5), unless the association
  negotiated combined date and time matching (SOP Class Extended Negotiation, PS3.4 C.5.1.1.2:
  :func:`extended_negotiation` accepts it, with relational queries, where the SCU asks); then
  they are one range of moments (C.2.2.2.5.1), as in QIDO-RS.
- A key the catalog cannot match is returned, not matched (an optional key, PS3.4 C.2.2.1.3): from
  the catalog where it holds the attribute, else from the stored DICOM JSON of the match (of one
  instance of a matched series or study), else empty.
- Answers are encoded in UTF-8 (``ISO_IR 192``): names in the catalog may hold any character.
- Asked for a principal (the calling AE's, :func:`lamina.dimse.access.principal`), only what it
  may search is matched, in the query itself (:func:`~lamina.governance.decide.visible_study_branches`
  at STUDY level, :func:`~lamina.governance.decide.visible_series` at SERIES and IMAGE level):
  another lab's studies do not exist for it, and the match limit counts only its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import from a table
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy import Engine

from lamina.archive.catalog import search
from lamina.archive.catalog.keys import KEYS, UNIQUE, Level
from lamina.archive.catalog.search import Criterion, Hit
from lamina.dimse import status
from lamina.errors import RequestError
from lamina.governance.decide import Principal, visible_series, visible_study_branches
from lamina.mapping.attributes import Element, attributes, catalog_tags, level_of, to_dataset

#: The query levels of the Study Root model, as C-FIND names them.
LEVELS = {"STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE}
#: Answers are encoded in UTF-8: names in the catalog may hold any character.
CHARACTER_SET = "ISO_IR 192"
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}


#: Bytes of the C-FIND Service Class Application Information (PS3.4 C.5.1.1.2) that lamina
#: accepts when asked: relational queries (always matched relationally) and combined date and time
#: matching; not fuzzy semantic matching of person names, nor timezone query adjustment.
_ACCEPTED = (0, 1)


def extended_negotiation(event: Event) -> dict[str, bytes]:
    """``evt.EVT_SOP_EXTENDED``: the Study Root C-FIND application information accepted, byte for
    byte as asked where lamina does it, 0 elsewhere (other SOP classes get no answer)."""
    requested: dict[str, bytes] = getattr(event, "app_info", {})  # an attribute of this event only
    asked = requested.get(StudyRootQueryRetrieveInformationModelFind)
    if not asked:
        return {}
    accepted = bytes(1 if index in _ACCEPTED and value == 1 else 0 for index, value in enumerate(asked))
    return {StudyRootQueryRetrieveInformationModelFind: accepted}


def combined_date_time(event: Event) -> bool:
    """Whether the C-FIND's association accepted combined date and time matching."""
    accepted = event.assoc.acceptor.sop_class_extended.get(event.context.abstract_syntax, b"")
    return len(accepted) > 1 and accepted[1] == 1


class FindError(Exception):
    """A query that cannot be answered; ``code`` is the C-FIND failure status to send."""

    def __init__(self, code: int, comment: str) -> None:
        self.code = code
        self.comment = comment
        super().__init__(comment)


def _tag(element: DataElement) -> str:
    return f"{int(element.tag):08X}"


def _keys(identifier: Dataset) -> Iterator[DataElement]:
    """The identifier's keys: its elements, without the level, character set, group lengths and
    private elements."""
    for element in identifier:
        if element.tag.is_private or element.tag.element == 0 or element.keyword in _NOT_KEYS:
            continue
        yield element


def _values(element: DataElement) -> list[str]:
    value = element.value
    items = value if isinstance(value, MultiValue | list | tuple) else [value]
    return [str(item) for item in items if item is not None]


def _matching(element: DataElement, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
    """(key path, values) of an element; inside the one item of a sequence, its keys' paths."""
    path = prefix + element.keyword
    if element.VR != "SQ":
        yield path, _values(element)
    elif len(element.value) == 1:  # none: universal; several items: not matched
        for inner in element.value[0]:
            if not inner.tag.is_private and inner.tag.element != 0:
                yield from _matching(inner, path + ".")


@dataclass(frozen=True)
class Query:
    """A C-FIND identifier, read: its level, the criteria of the keys it matches, what it asks."""

    name: str  # the QueryRetrieveLevel as sent
    level: Level
    criteria: tuple[Criterion, ...]
    requested: tuple[DataElement, ...]

    @classmethod
    def from_identifier(cls, identifier: Dataset, *, combined_date_time: bool = False) -> Query:
        """Raise :class:`FindError` for an identifier that does not fit the information model."""
        name = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        if name not in LEVELS:
            raise FindError(
                status.DOES_NOT_MATCH_SOP_CLASS, f"QueryRetrieveLevel {name[:12]!r} not STUDY/SERIES/IMAGE"
            )
        level = LEVELS[name]
        criteria: list[Criterion] = []
        requested = tuple(_keys(identifier))
        try:
            for element in requested:
                for path, values in _matching(element):
                    key = KEYS.get(path)
                    if key is None or not key.matches_at(level):
                        continue
                    found = search.criterion(path, values)
                    if found is not None:
                        criteria.append(found)
            criteria = search.combine_date_time(criteria, combined=combined_date_time)
        except RequestError as exc:
            raise FindError(status.DOES_NOT_MATCH_SOP_CLASS, str(exc)) from None
        except (ValueError, TypeError) as exc:  # a value pydicom could not read as its VR
            raise FindError(status.DOES_NOT_MATCH_SOP_CLASS, f"a key cannot be read ({exc})") from None
        return cls(name, level, tuple(criteria), requested)

    def wanted(self) -> list[str]:
        """The tags to read for each match: the requested ones of its level and above, and the
        unique keys of the levels down to it (always returned)."""
        own = [_tag(element) for element in self.requested if level_of(_tag(element)) <= self.level]
        unique = [f"{tag_for_keyword(UNIQUE[level]):08X}" for level in Level if level <= self.level]
        return list(dict.fromkeys([*own, *unique]))


def _visible(principal: Principal, level: Level) -> search.Visible:
    return visible_study_branches(principal) if level is Level.STUDY else visible_series(principal)


def _matches(
    engine: Engine, query: Query, limit: int, metadata: bool, principal: Principal | None
) -> Iterator[search.Hit]:
    """The engine's matches, narrowed in the query to what ``principal`` may search when one is
    given."""
    visible = None if principal is None else _visible(principal, query.level)
    return search.iter_matches(engine, query.level, query.criteria, limit, metadata=metadata, visible=visible)


def find(
    engine: Engine,
    identifier: Dataset,
    limit: int,
    *,
    combined_date_time: bool = False,
    principal: Principal | None = None,
) -> Iterator[Dataset]:
    """The matches of ``identifier`` as response identifiers, at most ``limit`` of them; only
    those ``principal`` may search when one is given.

    Raises
    ------
    FindError
        The identifier does not fit (before any match), or there are more than ``limit``
        matches (after the first ``limit``).
    """
    query = Query.from_identifier(identifier, combined_date_time=combined_date_time)
    wanted = query.wanted()
    stored = not set(wanted) <= catalog_tags(query.level)
    for sent, hit in enumerate(_matches(engine, query, limit + 1, stored, principal)):
        if sent == limit:
            raise FindError(status.OUT_OF_RESOURCES, f"over {limit} matches; narrow the query")
        yield answer(query, hit, wanted)


def _items(found: Element, asked: DataElement) -> Element:
    """Sequence matching's answer: the items, with the keys the request's item holds (all of them
    when it holds none)."""
    if not asked.value or not len(asked.value[0]) or "Value" not in found:
        return found
    keep = {_tag(inner): inner for inner in asked.value[0]}
    items = []
    for item in found["Value"]:
        items.append(
            {
                tag: _items(value, keep[tag]) if keep[tag].VR == "SQ" else value
                for tag, value in item.items()
                if tag in keep
            }
        )
    return {**found, "Value": items}


def answer(query: Query, hit: Hit, wanted: list[str]) -> Dataset:
    """The response identifier of one match: every requested key (empty where the match has no
    value, or the key is of a level below the query's) and the unique keys down to its level."""
    found = attributes(hit, wanted)
    by_tag: dict[str, Any] = {}
    for element in query.requested:
        tag = _tag(element)
        if tag in found and level_of(tag) <= query.level:
            by_tag[tag] = _items(found[tag], element) if element.VR == "SQ" else found[tag]
    values = to_dataset(by_tag)
    result = Dataset()
    result.SpecificCharacterSet = CHARACTER_SET
    result.QueryRetrieveLevel = query.name
    for element in query.requested:
        if element.tag in values:
            result.add(values[element.tag])
        else:
            result.add_new(element.tag, element.VR, None)
    for level in Level:
        unique = tag_for_keyword(UNIQUE[level])
        if level <= query.level and unique is not None and unique not in result:
            result.add(to_dataset({f"{unique:08X}": found[f"{unique:08X}"]})[unique])
    return result
