"""QIDO-RS over a real server: dicomweb-client and wsidicom as the clients, the catalog as the oracle."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.datadict import tag_for_keyword
from requests import HTTPError
from sqlalchemy import event, text
from wsidicom import WsiDicom, WsiDicomWebClient

from lamina.api.dicomweb import qido
from lamina.api.dicomweb.qido import parse_query
from lamina.archive.catalog import search
from lamina.archive.catalog.search import (
    AnyOf,
    Criterion,
    DateTimeRange,
    Empty,
    Level,
    Range,
    Single,
    Wildcard,
)
from tests.api.conftest import ServedArchive
from tests.signin import dicomweb_client, signed

Result = dict[str, Any]


def tag(keyword: str) -> str:
    found = tag_for_keyword(keyword)
    assert found is not None, keyword
    return f"{found:08X}"


def value(result: Result, keyword: str) -> Any:
    """The first value of an attribute, or None when it is empty or absent."""
    values = result.get(tag(keyword), {}).get("Value") or [None]
    return values[0]


def values(results: list[Result], keyword: str) -> list[Any]:
    return [value(result, keyword) for result in results]


@pytest.fixture(scope="module")
def client(served_archive: ServedArchive) -> DICOMwebClient:
    return dicomweb_client(served_archive.base_url)


@pytest.fixture(scope="module")
def studies(client: DICOMwebClient) -> list[Result]:
    found: list[Result] = client.search_for_studies()
    return found


def get(served: ServedArchive, path: str, **params: Any) -> httpx.Response:
    return signed.get(served.base_url + path, params=params, timeout=30)


def bad_request(served: ServedArchive, path: str, params: dict[str, Any], parameter: str) -> str:
    response = get(served, path, **params)
    assert response.status_code == 400, response.text
    detail: str = response.json()["detail"]
    assert detail.startswith(f"{parameter}: "), detail
    return detail


# -- every level, every route ----------------------------------------------------------------
def test_studies_carry_default_attributes_and_counts(
    served_archive: ServedArchive, studies: list[Result]
) -> None:
    # Arrange
    catalog = served_archive.archive.catalog
    slides = [catalog.slide(slide_id) for slide_id in served_archive.slide_ids]
    # Act
    by_uid = {value(study, "StudyInstanceUID"): study for study in studies}
    # Assert: the SVS and the tiled TIFF are two slides of one case
    assert len(studies) == 3
    assert set(by_uid) == {slide.study_instance_uid for slide in slides if slide}
    case = by_uid[slides[0].study_instance_uid if slides[0] else ""]
    assert value(case, "NumberOfStudyRelatedSeries") == 2
    assert value(case, "NumberOfStudyRelatedInstances") == sum(
        len(catalog.instances(slide_id)) for slide_id in served_archive.slide_ids[:2]
    )
    for study in studies:
        assert values([study], "ModalitiesInStudy") == ["SM"]
        for keyword in ("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "PatientName",
                        "PatientID", "PatientBirthDate", "PatientSex", "StudyID"):  # fmt: skip
            assert tag(keyword) in study, keyword
        assert (
            value(study, "RetrieveURL")
            == f"{served_archive.base_url}/studies/{value(study, 'StudyInstanceUID')}"
        )


def test_studies_come_newest_first(studies: list[Result]) -> None:
    keys = [(value(s, "StudyDate"), value(s, "StudyTime"), value(s, "StudyInstanceUID")) for s in studies]
    assert keys == sorted(keys, reverse=True)


def test_series_and_instances_at_every_route(served_archive: ServedArchive, client: DICOMwebClient) -> None:
    # Arrange
    catalog = served_archive.archive.catalog
    rows = [row for slide_id in served_archive.slide_ids for row in catalog.instances(slide_id)]
    study, series = rows[0].study_instance_uid, rows[0].series_instance_uid
    # Act
    all_series = client.search_for_series()
    study_series = client.search_for_series(study_instance_uid=study)
    all_instances = client.search_for_instances()
    study_instances = client.search_for_instances(study_instance_uid=study)
    series_instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
    # Assert
    assert len(all_series) == len(served_archive.slide_ids)
    assert {value(s, "SeriesInstanceUID") for s in study_series} == {
        r.series_instance_uid for r in rows if r.study_instance_uid == study
    }
    assert sorted(values(all_instances, "SOPInstanceUID")) == sorted(r.sop_instance_uid for r in rows)
    assert sorted(values(study_instances, "SOPInstanceUID")) == sorted(
        r.sop_instance_uid for r in rows if r.study_instance_uid == study
    )
    assert sorted(values(series_instances, "SOPInstanceUID")) == sorted(
        r.sop_instance_uid for r in rows if r.series_instance_uid == series
    )
    # a search across studies carries the study's attributes; across series, the series' too
    assert value(all_series[0], "PatientID") is not None
    assert tag("NumberOfStudyRelatedSeries") not in all_series[0]
    assert value(all_instances[0], "PatientID") is not None and value(all_instances[0], "Modality") == "SM"
    for result in all_instances:
        row = next(r for r in rows if r.sop_instance_uid == value(result, "SOPInstanceUID"))
        assert value(result, "StudyInstanceUID") == row.study_instance_uid
        assert value(result, "SeriesInstanceUID") == row.series_instance_uid
        assert value(result, "NumberOfFrames") == row.number_of_frames
        assert value(result, "TotalPixelMatrixColumns") == row.total_pixel_matrix_columns
        assert value(result, "InstanceAvailability") == "ONLINE"
        assert tag("ImageType") in result and tag("BitsAllocated") in result


def test_series_count_their_instances(served_archive: ServedArchive, client: DICOMwebClient) -> None:
    catalog = served_archive.archive.catalog
    for result in client.search_for_series():
        slide = next(
            s for s in catalog.slides() if s.series_instance_uid == value(result, "SeriesInstanceUID")
        )
        assert value(result, "NumberOfSeriesRelatedInstances") == len(catalog.instances(slide.id))
        assert value(result, "ContainerIdentifier") == slide.container_id


def test_answer_is_dicom_json_and_no_match_is_an_empty_array(served_archive: ServedArchive) -> None:
    found = get(served_archive, "/studies")
    none = get(served_archive, "/studies", PatientID="NOBODY")
    missing_study = get(served_archive, "/studies/1.2.3.4/series")
    assert found.headers["content-type"] == "application/dicom+json"
    assert (none.status_code, none.json()) == (200, [])
    assert (missing_study.status_code, missing_study.json()) == (200, [])
    assert "warning" not in found.headers


def test_only_dicom_json_is_offered(served_archive: ServedArchive) -> None:
    response = signed.get(served_archive.base_url + "/studies", headers={"Accept": "application/dicom+xml"})
    assert response.status_code == 406


# -- paging ----------------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["studies", "series", "instances"])
def test_paging_until_an_empty_page_returns_every_result_once(client: DICOMwebClient, level: str) -> None:
    # Arrange
    find = getattr(client, f"search_for_{level}")
    everything = find()
    # Act: dicomweb-client asks for pages of one until a page is empty
    paged = find(limit=1, get_remaining=True)
    # Assert
    assert paged == everything
    assert len({str(r) for r in paged}) == len(everything)


def test_the_server_caps_a_page_and_says_so(
    served_archive: ServedArchive, client: DICOMwebClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    everything = client.search_for_instances()
    monkeypatch.setattr(qido, "MAX_RESULTS", 3)
    # Act
    first = get(served_archive, "/instances")
    asked_for_less = get(served_archive, "/instances", limit=2)
    paged = client.search_for_instances(get_remaining=True)
    # Assert
    assert len(first.json()) == 3
    assert "offset=3" in first.headers["warning"]
    assert len(asked_for_less.json()) == 2 and "warning" not in asked_for_less.headers
    assert paged == everything


def test_limit_and_offset_cut_the_stable_order(client: DICOMwebClient) -> None:
    everything = client.search_for_instances()
    assert client.search_for_instances(limit=4, offset=3) == everything[3:7]
    assert client.search_for_instances(offset=len(everything)) == []
    assert client.search_for_instances(limit=0) == []


# -- matching --------------------------------------------------------------------------------
def test_keys_by_keyword_or_by_tag(client: DICOMwebClient, studies: list[Result]) -> None:
    patient = value(studies[0], "PatientID")
    by_keyword = client.search_for_studies(search_filters={"PatientID": patient})
    by_tag = client.search_for_studies(search_filters={"00100020": patient})
    assert by_keyword == by_tag
    assert values(by_keyword, "PatientID") == [patient]


def test_wildcards(client: DICOMwebClient, studies: list[Result]) -> None:
    # Arrange
    names = {value(s, "StudyInstanceUID"): value(s, "PatientName")["Alphabetic"] for s in studies}
    surname, given = next(iter(names.values())).split("^")
    # Act
    by_surname = client.search_for_studies(search_filters={"PatientName": f"{surname}^*"})
    any_case = client.search_for_studies(
        search_filters={"PatientName": f"{surname.lower()}^{given[0]}?{given[2:]}"}
    )
    accession = client.search_for_studies(search_filters={"AccessionNumber": "S26-*"})
    literal_percent = client.search_for_studies(search_filters={"PatientID": "SYN%"})
    literal_underscore = client.search_for_studies(search_filters={"PatientID": "SYN_*"})
    # Assert
    assert {value(s, "StudyInstanceUID") for s in by_surname} == {
        uid for uid, name in names.items() if name.startswith(f"{surname}^")
    }
    assert [value(s, "PatientName")["Alphabetic"] for s in any_case] == [f"{surname}^{given}"]
    assert len(accession) == len(studies)
    assert literal_percent == [] and literal_underscore == []


def test_date_ranges(client: DICOMwebClient, studies: list[Result]) -> None:
    dates = sorted({value(s, "StudyDate") for s in studies})
    low, high = dates[0], dates[-1]
    cases = {
        low: [d for d in values(studies, "StudyDate") if d == low],
        f"{low}-{high}": values(studies, "StudyDate"),
        f"-{low}": [d for d in values(studies, "StudyDate") if d <= low],
        f"{high}-": [d for d in values(studies, "StudyDate") if d >= high],
        "19000101-19991231": [],
    }
    for query, expected in cases.items():
        found = client.search_for_studies(search_filters={"StudyDate": query})
        assert values(found, "StudyDate") == expected, query


def test_time_ranges_and_reduced_precision(client: DICOMwebClient, studies: list[Result]) -> None:
    time = value(studies[-1], "StudyTime")
    hour = client.search_for_studies(search_filters={"StudyTime": time[:2]})
    span = client.search_for_studies(search_filters={"StudyTime": f"{time[:4]}-{time[:4]}"})
    assert value(studies[-1], "StudyInstanceUID") in values(hour, "StudyInstanceUID")
    assert all(value(s, "StudyTime").startswith(time[:4]) for s in span) and span


def test_uid_lists(served_archive: ServedArchive, client: DICOMwebClient, studies: list[Result]) -> None:
    uids = values(studies, "StudyInstanceUID")[:2]
    comma = get(served_archive, "/studies", StudyInstanceUID=",".join(uids)).json()
    backslash = get(served_archive, "/studies", StudyInstanceUID="\\".join(uids)).json()
    repeated = client.search_for_studies(search_filters={"StudyInstanceUID": uids})
    assert values(comma, "StudyInstanceUID") == uids
    assert backslash == comma == repeated


def test_slide_keys_container_stain_organ_and_specimen(
    served_archive: ServedArchive, client: DICOMwebClient
) -> None:
    # Arrange
    catalog = served_archive.archive.catalog
    svs, tiff = (catalog.slide(slide_id) for slide_id in served_archive.slide_ids[:2])
    assert svs and tiff and svs.stain != tiff.stain
    # Act
    by_container = client.search_for_series(search_filters={"ContainerIdentifier": tiff.container_id})
    by_stain = client.search_for_series(search_filters={"stain": (tiff.stain or "").lower()})
    by_organ = client.search_for_series(search_filters={"organ": svs.organ, "stain": svs.stain})
    by_organ_path = client.search_for_series(
        search_filters={"SpecimenDescriptionSequence.PrimaryAnatomicStructureSequence.CodeMeaning": svs.organ}
    )
    by_specimen = client.search_for_series(search_filters={"00400560.00400551": tiff.specimen_id})
    studies_with_stain = client.search_for_studies(search_filters={"stain": tiff.stain})
    # Assert
    assert values(by_container, "SeriesInstanceUID") == [tiff.series_instance_uid]
    assert tiff.series_instance_uid in values(by_stain, "SeriesInstanceUID")
    assert values(by_organ, "SeriesInstanceUID") == [svs.series_instance_uid]
    assert svs.series_instance_uid in values(by_organ_path, "SeriesInstanceUID")
    assert values(by_specimen, "SeriesInstanceUID") == [tiff.series_instance_uid]
    assert tag("SpecimenDescriptionSequence") in by_specimen[0]  # a matched key comes back
    assert tiff.study_instance_uid in values(studies_with_stain, "StudyInstanceUID")


def test_instance_search_as_wsidicom_sends_it(served_archive: ServedArchive, client: DICOMwebClient) -> None:
    # Arrange
    slide = served_archive.archive.catalog.slide(served_archive.slide_ids[2])
    assert slide is not None
    rows = served_archive.archive.catalog.instances(slide.id)
    # Act
    found = client.search_for_instances(
        slide.study_instance_uid,
        fields=["AvailableTransferSyntaxUID"],
        search_filters={
            "00080016": "1.2.840.10008.5.1.4.1.1.77.1.6",
            "0020000E": [slide.series_instance_uid, "1.2.3"],
            "00080060": "SM",
        },
    )
    # Assert
    assert sorted(values(found, "SOPInstanceUID")) == sorted(r.sop_instance_uid for r in rows)
    assert {value(r, "AvailableTransferSyntaxUID") for r in found} == {r.transfer_syntax_uid for r in rows}


def test_series_numbers_and_instance_numbers_match_as_integers(
    served_archive: ServedArchive, client: DICOMwebClient
) -> None:
    slide_id = served_archive.slide_ids[0]
    study = served_archive.archive.catalog.instances(slide_id)[0].study_instance_uid
    found = client.search_for_instances(study, search_filters={"InstanceNumber": "2", "SeriesNumber": "1"})
    assert set(values(found, "InstanceNumber")) == {2}
    bad_request(served_archive, "/instances", {"InstanceNumber": "two"}, "InstanceNumber")


# -- what comes back -------------------------------------------------------------------------
def _has_bulk(element: Any) -> bool:
    if isinstance(element, dict):
        return "BulkDataURI" in element or "InlineBinary" in element or any(map(_has_bulk, element.values()))
    if isinstance(element, list):
        return any(map(_has_bulk, element))
    return False


def test_includefield_by_list_repetition_and_all(
    served_archive: ServedArchive, client: DICOMwebClient
) -> None:
    # Act
    listed = get(served_archive, "/studies", includefield="StudyDescription,00081030,PatientAge").json()
    repeated = client.search_for_studies(fields=["StudyDescription", "PatientAge"])
    lower_level = client.search_for_studies(fields=["Modality", "SOPClassUID"])
    series = client.search_for_series(fields=["SpecimenDescriptionSequence", "OpticalPathSequence"])
    everything = client.search_for_instances(fields=["all"], limit=2)
    # Assert
    assert listed == repeated
    assert tag("StudyDescription") in listed[0] and tag("PatientAge") in listed[0]
    assert tag("Modality") not in lower_level[0] and tag("SOPClassUID") not in lower_level[0]
    assert tag("SpecimenDescriptionSequence") in series[0]
    assert tag("OpticalPathSequence") not in series[0]  # an instance's attribute
    assert (
        tag("OpticalPathSequence") in everything[0] and tag("DimensionOrganizationSequence") in everything[0]
    )
    assert tag("PixelData") not in everything[0]
    assert not _has_bulk(everything) and not _has_bulk(series)


def test_includefield_all_at_study_level_stays_at_study_level(client: DICOMwebClient) -> None:
    (study,) = client.search_for_studies(fields=["all"], limit=1)
    assert tag("SOPInstanceUID") not in study and tag("Modality") not in study
    assert tag("PatientName") in study and tag("NumberOfStudyRelatedInstances") in study


def test_fuzzymatching_is_accepted_with_a_warning(served_archive: ServedArchive) -> None:
    response = get(served_archive, "/studies", fuzzymatching="true", PatientName="THOMAS*")
    plain = get(served_archive, "/studies", fuzzymatching="false", PatientName="THOMAS*")
    assert response.status_code == 200
    assert (
        response.headers["warning"] == '299 lamina "fuzzymatching is not supported; exact matching applied"'
    )
    assert response.json() == plain.json() and "warning" not in plain.headers


def test_keys_the_catalog_cannot_match_are_ignored_with_a_warning(served_archive: ServedArchive) -> None:
    response = get(served_archive, "/studies", StudyDescription="Colon*")
    assert response.status_code == 200
    assert len(response.json()) == 3
    assert "StudyDescription" in response.headers["warning"]
    assert tag("StudyDescription") in response.json()[0]


# -- errors name the parameter ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/studies", {"limit": "ten"}, "limit"),
        ("/studies", {"limit": "-1"}, "limit"),
        ("/series", {"offset": "1.5"}, "offset"),
        ("/studies", {"StudyDate": "2026-01-01"}, "StudyDate"),
        ("/studies", {"StudyDate": "20261231-20260101"}, "StudyDate"),
        ("/studies", {"StudyDate": "20260230"}, "StudyDate"),
        ("/studies", {"00080020": "-"}, "00080020"),
        ("/studies", {"StudyTime": "2500"}, "StudyTime"),
        ("/studies", {"StudyTime": "2200-0600"}, "StudyTime"),  # crosses midnight without a date
        ("/studies", {"StudyDate": "20260101", "00080030": "2200-0600"}, "00080030"),  # ends before it starts
        ("/studies", {"multiplevaluematching": "perhaps"}, "multiplevaluematching"),
        ("/studies", {"PatientFavouriteColour": "blue"}, "PatientFavouriteColour"),
        ("/studies", {"0010002": "x"}, "0010002"),
        ("/studies", {"includefield": "PatientFavouriteColour"}, "includefield"),
        ("/studies", {"fuzzymatching": "perhaps"}, "fuzzymatching"),
        ("/studies", {"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID"),
        ("/series", {"00080018": "1.2.3"}, "00080018"),
        ("/studies", {"PatientID": ["A", "B"]}, "PatientID"),
    ],
)
def test_malformed_requests_are_400_naming_the_parameter(
    served_archive: ServedArchive, path: str, params: dict[str, Any], parameter: str
) -> None:
    bad_request(served_archive, path, params, parameter)


def test_dicomweb_client_sees_the_400(client: DICOMwebClient) -> None:
    with pytest.raises(HTTPError) as raised:
        client.search_for_studies(search_filters={"StudyDate": "yesterday"})
    assert raised.value.response is not None and raised.value.response.status_code == 400


# -- reading the query string ---------------------------------------------------------------
def test_query_string_is_read_into_criteria_and_return_keys() -> None:
    # Act
    query = parse_query(
        [
            ("PatientID", ""),  # universal matching: only asks for the attribute
            ("0020000D", "1.2.3,1.2.4"),
            ("StudyInstanceUID", "1.2.5"),
            ("StudyTime", "09-1030"),
            ("ModalitiesInStudy", "SM\\ANN"),
            ("includefield", "StudyDescription,00101010"),
            ("limit", "5000"),
        ],
        Level.STUDY,
    )
    # Assert
    assert query.criteria == [
        Criterion("StudyInstanceUID", AnyOf(("1.2.3", "1.2.4", "1.2.5"))),
        Criterion("StudyTime", Range("09", "1030")),
        Criterion("ModalitiesInStudy", AnyOf(("SM", "ANN"))),
    ]
    assert [tag("PatientID"), tag("StudyDescription"), tag("PatientAge")] == [
        t for t in query.returned if t in (tag("PatientID"), tag("StudyDescription"), tag("PatientAge"))
    ]
    assert (query.limit, query.capped, query.warnings) == (1000, True, [])


def test_dates_and_times_together_are_one_range_of_moments() -> None:
    query = parse_query([("StudyDate", "20260101-20260102"), ("00080030", "2200-0600")], Level.STUDY)
    assert query.criteria == [
        Criterion("StudyDate", DateTimeRange(("20260101", "2200"), ("20260102", "0600")))
    ]


def test_several_values_empty_values_and_lists() -> None:
    # Act
    query = parse_query(
        [
            ("AccessionNumber", "S26-1\\S26-2"),  # multiple value matching
            ("PatientName", '""'),  # empty value matching, asked for below
            ("Modality", "SM,ANN"),
            ("multiplevaluematching", "true"),
            ("emptyvaluematching", "true"),
        ],
        Level.SERIES,
    )
    literal = parse_query([("PatientName", '""')], Level.STUDY)
    # Assert
    assert query.criteria == [
        Criterion("AccessionNumber", AnyOf(("S26-1", "S26-2"))),
        Criterion("PatientName", Empty()),
        Criterion("Modality", AnyOf(("SM", "ANN"))),
    ]
    assert query.warnings == []
    assert literal.criteria == [Criterion("PatientName", Single('""'))]


def test_catalog_queries_run_in_the_thread_pool_not_on_the_event_loop(
    served_archive: ServedArchive, client: DICOMwebClient
) -> None:
    # Arrange: note, for each page query of a search, whether its thread runs an event loop
    engine = served_archive.archive.catalog.engine
    on_loop: list[bool] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "ORDER BY studies.study_date" in statement:
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                on_loop.append(False)

    event.listen(engine, "before_cursor_execute", record)
    try:
        # Act
        client.search_for_studies()
        client.search_for_series(search_filters={"Modality": "SM"})
        client.search_for_instances(limit=2)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # Assert
    assert on_loop == [False, False, False]


def test_queries_reach_instances_and_series_through_indexes(served_archive: ServedArchive) -> None:
    # Arrange: record every statement a page of each level runs
    engine = served_archive.archive.catalog.engine
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, parameters))

    slide = served_archive.archive.catalog.slide(served_archive.slide_ids[0])
    assert slide is not None
    criteria = [
        Criterion("ModalitiesInStudy", Single("SM")),
        Criterion("StudyDate", Range("19000101", None)),
        Criterion("PatientName", Wildcard("*")),
        Criterion("stain", AnyOf(("HE", "PAS"))),
    ]
    event.listen(engine, "before_cursor_execute", record)
    try:
        # Act
        search.find_studies(engine, criteria, 10, 0)
        search.find_series(engine, criteria, 10, 0)
        search.find_instances(
            engine, [Criterion("StudyInstanceUID", Single(slide.study_instance_uid))], 10, 0
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # Assert: instances, series and slides are only ever searched by an index, never scanned,
    # except series as the driving table of a search for series. PostgreSQL is asked with
    # sequential scans disabled (for this transaction only: the server shares the pool), so that a
    # remaining one means no index can serve the query.
    with engine.connect() as conn:
        postgresql = engine.dialect.name == "postgresql"
        if postgresql:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for statement, parameters in statements:
            if postgresql:
                plan = [row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)]
                scans = [
                    line
                    for line in plan
                    if re.search(r"Seq Scan on (instances|slides|series other_series)\b", line)
                ]
            else:
                plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
                scans = [line for line in plan if re.match(r"SCAN (instances|slides|other_series)\b", line)]
            assert scans == [], (statement, plan)
        assert conn.execute(text("SELECT 1")).scalar() == 1


# -- a real client on top: wsidicom reads the slide through QIDO-RS and WADO-RS ----------------
@pytest.mark.parametrize("index", range(4))
def test_wsidicom_reads_the_same_pixels_over_the_web_as_from_the_exported_files(
    served_archive: ServedArchive, tmp_path: Path, index: int
) -> None:
    # Arrange
    slide_id = served_archive.slide_ids[index]
    (exported,) = served_archive.archive.export(tmp_path, [slide_id])
    web_client = WsiDicomWebClient(dicomweb_client(served_archive.base_url))
    # Act
    with (
        WsiDicom.open_web(
            web_client, exported.slide.study_instance_uid, exported.slide.series_instance_uid
        ) as web,
        WsiDicom.open(exported.folder) as local,
    ):
        # Assert
        assert [level.size for level in web.levels] == [level.size for level in local.levels]
        for level in range(len(local.levels)):
            size = local.levels[level].size
            region = (
                (size.width // 5, size.height // 7),
                (min(300, size.width // 2), min(200, size.height // 2)),
            )
            from_web = np.asarray(web.read_region(region[0], level, region[1]))
            from_files = np.asarray(local.read_region(region[0], level, region[1]))
            assert from_web.shape == from_files.shape
            assert np.array_equal(from_web, from_files), f"level {level}"
        assert np.array_equal(
            np.asarray(web.read_thumbnail((64, 64))), np.asarray(local.read_thumbnail((64, 64)))
        )
