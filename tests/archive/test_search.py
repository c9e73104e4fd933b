"""The search engine alone (archive/catalog/search.py, matching.py, keys.py): values read into
matches, the SQL each database gets, and searches on an archive of varied identities, on both
backends. The protocols on top are tested in tests/api/test_qido.py and tests/dimse/test_find.py."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from lamina.archive.archive import Archive
from lamina.archive.catalog import search
from lamina.archive.catalog.keys import KEYS, ORGAN_MEANING, SPECIMEN_IDENTIFIER, Level
from lamina.archive.catalog.matching import (
    AnyOf,
    DateTimeRange,
    Empty,
    Kind,
    Match,
    Range,
    Single,
    Wildcard,
    condition,
    glob_pattern,
    like_pattern,
    parse,
    time_high,
)
from lamina.archive.catalog.search import Criterion, criterion
from lamina.config import Settings
from lamina.errors import RequestError
from tests.backends import Backend
from tests.searchable import ANNOTATED, Searchable, build


# -- values read into matches ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "values", "expected"),
    [
        (Kind.TEXT, [""], None),  # universal
        (Kind.TEXT, ["*"], None),  # "*" alone is universal too
        (Kind.TEXT, [" SYN1 "], Single("SYN1")),
        (Kind.TEXT, ["SYN_*"], Wildcard("SYN_*")),
        (Kind.TEXT, ["A", "B?", "A"], AnyOf(("A", "B?"))),  # several values: any of them
        (Kind.TEXT, ['""'], Single('""')),  # without empty value matching, two quotes are a value
        (Kind.UID, ["1.2.3", "1.2.4"], AnyOf(("1.2.3", "1.2.4"))),
        (Kind.UID, ["1.2.*"], Single("1.2.*")),  # no wild cards in UIDs
        (Kind.DATE, ["20260101"], Single("20260101")),
        (Kind.DATE, ["20260101-"], Range("20260101", None)),
        (Kind.DATE, ["-20261231"], Range(None, "20261231")),
        (Kind.TIME, ["09-1030"], Range("09", "1030")),
        (Kind.TIME, ["2200-0600"], Range("2200", "0600")),  # maybe a combined range: checked later
        (Kind.TIME, ["101500.25"], Single("101500.25")),
        (Kind.NUMBER, ["02", "3"], AnyOf(("2", "3"))),
    ],
)
def test_values_are_read_into_matches(kind: Kind, values: list[str], expected: Match | None) -> None:
    assert parse(kind, "Key", values) == expected


def test_empty_value_matching_only_when_asked() -> None:
    assert parse(Kind.TEXT, "AccessionNumber", ['""'], empty_value=True) == Empty()
    assert parse(Kind.DATE, "StudyDate", ['""'], empty_value=True) == Empty()


@pytest.mark.parametrize(
    ("kind", "values", "words"),
    [
        (Kind.DATE, ["2026-01-01"], "is not a date"),
        (Kind.DATE, ["20260230"], "is not a date"),
        (Kind.DATE, ["20261231-20260101"], "ends before it starts"),
        (Kind.DATE, ["-"], "give at least one end"),
        (Kind.DATE, ["20260101", "20260102"], "give one date or time"),
        (Kind.DATE, ["2026*"], "is not a date"),
        (Kind.TIME, ["2500"], "is not a time"),
        (Kind.TIME, ["1260"], "is not a time"),
        (Kind.TIME, ["10.5"], "is not a time"),
        (Kind.NUMBER, ["two"], "is not a whole number"),
    ],
)
def test_malformed_values_name_the_parameter(kind: Kind, values: list[str], words: str) -> None:
    with pytest.raises(RequestError) as raised:
        parse(kind, "00080020", values)
    assert raised.value.parameter == "00080020"
    assert words in str(raised.value)


def test_study_date_and_time_make_one_range_of_moments() -> None:
    # Arrange
    date = criterion("StudyDate", ["20260101-20260102"], parameter="00080020")
    night = criterion("StudyTime", ["2200-0600"])
    day = criterion("StudyTime", ["10"])
    assert date and night and day
    # Act
    combined = search.combine_date_time([date, night])
    on_one_day = search.combine_date_time([criterion("StudyDate", ["20260101"]), day])  # type: ignore[list-item]
    separate = search.combine_date_time([date, day], combined=False)
    # Assert
    assert combined == [Criterion("StudyDate", DateTimeRange(("20260101", "2200"), ("20260102", "0600")))]
    assert on_one_day == [Criterion("StudyDate", DateTimeRange(("20260101", "10"), ("20260101", "10")))]
    assert separate == [date, day]
    with pytest.raises(RequestError, match="midnight"):
        search.combine_date_time([date, night], combined=False)
    with pytest.raises(RequestError, match="ends before it starts"):
        search.combine_date_time([criterion("StudyDate", ["20260101"]), night])  # type: ignore[list-item]


def test_patterns_escape_what_is_not_a_dicom_wild_card() -> None:
    assert like_pattern("A*B?C") == "A%B_C"
    assert like_pattern("50%_\\*") == "50\\%\\_\\\\%"
    assert glob_pattern("S26_[1]*") == "S26_[[]1]*"
    assert [time_high(t) for t in ("10", "1030", "103015", "103015.5")] == [
        "105959.999999",
        "103059.999999",
        "103015.999999",
        "103015.599999",
    ]


def test_text_is_matched_by_glob_on_sqlite_and_like_elsewhere() -> None:
    column = KEYS["PatientID"].column
    where = condition(Kind.TEXT, column, Wildcard("SYN_*"))
    name = condition(Kind.ANY_CASE, KEYS["PatientName"].column, Wildcard("dupont*"))
    on_sqlite = where.compile(dialect=sqlite.dialect())
    on_postgresql = where.compile(dialect=postgresql.dialect())
    assert "GLOB" in str(on_sqlite) and on_sqlite.params == {"patient_id_1": "SYN_*"}
    assert "LIKE" in str(on_postgresql) and "ESCAPE" in str(on_postgresql)
    assert list(on_postgresql.params.values()) == ["SYN\\_%"]
    assert "ILIKE" in str(name.compile(dialect=postgresql.dialect()))


# -- searches on an archive ------------------------------------------------------------------
@pytest.fixture(scope="module")
def searchable(module_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searchable]:
    root = tmp_path_factory.mktemp("searchable")
    archive = Archive.open(Settings.load(root / "lamina-data", env=module_backend.env("searchable")))
    try:
        yield build(archive, root / "files")
    finally:
        archive.close()


def _studies(searchable: Searchable, criteria: Sequence[Criterion | None]) -> set[int]:
    """The slides (by index) whose study matches."""
    found = search.find_studies(searchable.archive.catalog.engine, [c for c in criteria if c], 100, 0)
    uids = {hit.study_instance_uid for hit in found.hits}
    return {index for index, slide in enumerate(searchable.slides) if slide.study_instance_uid in uids}


def _series(searchable: Searchable, criteria: Sequence[Criterion | None]) -> set[int | str]:
    found = search.find_series(searchable.archive.catalog.engine, [c for c in criteria if c], 100, 0)
    uids = {hit.series_instance_uid for hit in found.hits}
    matched: set[int | str] = {i for i, s in enumerate(searchable.slides) if s.series_instance_uid in uids}
    return matched | ({"A"} if searchable.annotation.SeriesInstanceUID in uids else set())


@pytest.mark.parametrize(
    ("key", "values", "expected"),
    [
        ("PatientID", ["SYN_*"], {0, 1}),  # the literal _ of SYN_0001, not SYNX0001
        ("PatientID", ["syn_*"], set()),  # case counts, on SQLite too
        ("PatientID", ["SYN%*"], {2}),
        ("PatientID", ["SYN1*", "SYNX*"], {3, 4}),
        ("PatientName", ["dupont^marie"], {0, 1}),  # person names: whatever the case
        ("stain", ["masson*"], {3}),  # the lab's terms too, and they select studies
        ("stain", ["he"], {0, 1, 2, 4}),
        ("ModalitiesInStudy", ["ANN"], {ANNOTATED}),
        ("ModalitiesInStudy", ["A*"], {ANNOTATED}),  # a wild card probes the study's series
        ("ModalitiesInStudy", ["sm"], set()),
        ("ModalitiesInStudy", ["CT", "A?N"], {ANNOTATED}),
        ("AccessionNumber", ["S26-00?00"], {0, 1, 2, 3}),
        ("StudyDate", ["20260302"], {2, 4}),
        ("StudyTime", ["09"], {4}),
        ("PatientBirthDate", ["-19651231"], {0, 1, 2}),
        (SPECIMEN_IDENTIFIER, ["S26_00200*"], {2}),
    ],
)
def test_studies_matching_one_key(
    searchable: Searchable, key: str, values: list[str], expected: set[int]
) -> None:
    # Slides 0 and 1 are one study: a study matching selects both
    assert _studies(searchable, [criterion(key, values)]) == expected


def test_empty_value_matching_finds_the_case_without_accession_number(searchable: Searchable) -> None:
    empty = criterion("AccessionNumber", ['""'], empty_value=True)
    literal = criterion("AccessionNumber", ['""'])
    assert _studies(searchable, [empty]) == {4}
    assert _studies(searchable, [literal]) == set()


def test_a_range_of_moments_is_not_a_range_of_days_crossed_with_hours(searchable: Searchable) -> None:
    # Arrange: from 15 January at 10:00 to 2 March at 10:00
    date, time = criterion("StudyDate", ["20260115-20260302"]), criterion("StudyTime", ["1000-1000"])
    assert date and time
    # Act
    combined = _studies(searchable, search.combine_date_time([date, time]))
    separate = _studies(searchable, search.combine_date_time([date, time], combined=False))
    # Assert: 15 January 08:30 is before the start, 2 March 09:15 within, 2 March 14:05 after
    assert combined == {4}
    assert separate == set()  # no study was made between 10:00 and 10:00:59 of any day


def test_series_by_slide_keys_and_modality(searchable: Searchable) -> None:
    assert _series(searchable, [criterion(ORGAN_MEANING, ["colon"])]) == {0, 1}
    assert _series(searchable, [criterion("Modality", ["ANN"])]) == {"A"}
    assert _series(searchable, [criterion("Modality", ["SM"]), criterion("PatientID", ["SYN%0002"])]) == {2}
    assert _series(searchable, [criterion("SeriesNumber", ["20", "99"])]) == {"A"}
    assert _series(searchable, [criterion("ContainerIdentifier", [searchable.slides[3].container_id])]) == {3}


def test_a_key_below_the_level_cannot_be_matched(searchable: Searchable) -> None:
    with pytest.raises(ValueError, match="SOPClassUID is not an attribute of the study level"):
        _studies(searchable, [criterion("SOPClassUID", ["1.2.3"])])


def test_pages_and_iteration_give_every_match_once_in_order(
    searchable: Searchable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    engine = searchable.archive.catalog.engine
    everything = search.find_instances(engine, [], 1000, 0).hits
    monkeypatch.setattr(search, "CHUNK", 3)  # details read in chunks of 3
    # Act
    pages = [
        hit
        for offset in range(0, len(everything), 4)
        for hit in search.find_instances(engine, [], 4, offset).hits
    ]
    iterated = list(search.iter_matches(engine, Level.INSTANCE, [], 1000))
    bare = list(search.iter_matches(engine, Level.INSTANCE, [], 5, metadata=False))
    studies = list(search.iter_matches(engine, Level.STUDY, [], 1000))
    # Assert
    assert len(everything) == sum(slide.instances for slide in searchable.slides) + 1
    assert pages == iterated == everything
    assert all(hit.metadata for hit in everything)
    assert [hit.sop_instance_uid for hit in bare] == [hit.sop_instance_uid for hit in everything[:5]]
    assert all(hit.metadata is None for hit in bare)
    assert [hit.study_instance_uid for hit in studies] == [
        hit.study_instance_uid for hit in search.find_studies(engine, [], 1000, 0).hits
    ]
    dates = [(hit.study_date, hit.study_time) for hit in studies]
    assert dates == sorted(dates, reverse=True)  # newest first
    annotated = next(
        h for h in studies if h.study_instance_uid == searchable.slides[ANNOTATED].study_instance_uid
    )
    assert (annotated.modalities, annotated.series) == (("ANN", "SM"), 2)
