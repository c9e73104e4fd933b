"""C-FIND (dimse/find.py): the identifier read into the engine's criteria, response identifiers
with exactly the requested keys, and the oracle: the same queries through QIDO-RS (httpx against
the served app) and through dcmtk's findscu (a real process against the DIMSE server) give the
same matches with the same values, on both backends."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import VLWholeSlideMicroscopyImageStorage
from pynetdicom import AE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.archive.catalog.keys import Level
from lamina.archive.catalog.search import AnyOf, Criterion, DateTimeRange, Range, Wildcard
from lamina.config import Settings
from lamina.dimse import DimseServer, status
from lamina.dimse.find import FindError, Query
from tests.backends import Backend
from tests.dimse.peers import calling
from tests.searchable import ANNOTATED, Searchable, build
from tests.signin import signed
from tests.support import serving, tool

ANNOTATIONS = "1.2.840.10008.5.1.4.1.1.91.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


# -- reading the identifier ------------------------------------------------------------------
def _identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_the_identifier_is_read_into_the_engines_criteria() -> None:
    # Arrange
    specimen = Dataset()
    specimen.SpecimenIdentifier = "S26_00200*"
    identifier = _identifier(
        "SERIES",
        PatientID="SYN_*",
        PatientName="",  # universal matching: a return key
        StudyInstanceUID=["1.2.3", "1.2.4"],
        StudyTime="0800-1200",  # matched as a range (it was a return key only before)
        SpecimenDescriptionSequence=[specimen],
        SOPClassUID="1.2.840.10008.5.1.4.1.1.91.1",  # below the level: returned empty, not matched
        Manufacturer="Aperio",  # not a search key: returned, not matched
    )
    # Act
    query = Query.from_identifier(identifier)
    # Assert
    assert query.level is Level.SERIES
    assert set(query.criteria) == {
        Criterion("PatientID", Wildcard("SYN_*")),
        Criterion("StudyInstanceUID", AnyOf(("1.2.3", "1.2.4"))),
        Criterion("StudyTime", Range("0800", "1200")),
        Criterion("SpecimenDescriptionSequence.SpecimenIdentifier", Wildcard("S26_00200*")),
    }
    assert {"SOPClassUID", "Manufacturer", "PatientName"} <= {element.keyword for element in query.requested}
    assert "QueryRetrieveLevel" not in {element.keyword for element in query.requested}


def test_combined_date_and_time_only_when_negotiated() -> None:
    # Arrange: one night, and a day's working hours
    night = _identifier("STUDY", StudyDate="20260101-20260102", StudyTime="2200-0600")
    days = _identifier("STUDY", StudyDate="20260101-20260102", StudyTime="0800-1700")
    # Act
    with pytest.raises(FindError) as raised:  # a range of times may not cross midnight on its own
        Query.from_identifier(night)
    combined_night = Query.from_identifier(night, combined_date_time=True)
    separate = Query.from_identifier(days)
    # Assert
    assert raised.value.code == status.DOES_NOT_MATCH_SOP_CLASS and "midnight" in raised.value.comment
    assert combined_night.criteria == (
        Criterion("StudyDate", DateTimeRange(("20260101", "2200"), ("20260102", "0600"))),
    )
    assert set(separate.criteria) == {
        Criterion("StudyDate", Range("20260101", "20260102")),
        Criterion("StudyTime", Range("0800", "1700")),
    }


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ({"StudyDate": "yesterday"}, "StudyDate: 'yesterday' is not a date"),
        ({"StudyTime": "2500"}, "StudyTime: '2500' is not a time"),
        ({"StudyDate": "20261231-20260101"}, "ends before it starts"),
        ({"QueryRetrieveLevel": "PATIENT"}, "not STUDY/SERIES/IMAGE"),
    ],
)
def test_a_key_that_does_not_fit_is_a_failure_naming_it(keys: dict[str, str], words: str) -> None:
    identifier = _identifier("STUDY")
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    with pytest.raises(FindError) as raised:
        Query.from_identifier(identifier)
    assert raised.value.code == status.DOES_NOT_MATCH_SOP_CLASS
    assert words in raised.value.comment


# -- the archive, served both ways -----------------------------------------------------------
@pytest.fixture(scope="module")
def searchable(module_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searchable]:
    root = tmp_path_factory.mktemp("searchable")
    archive = Archive.open(Settings.load(root / "lamina-data", env=module_backend.env("searchable")))
    try:
        yield build(archive, root / "files")
    finally:
        archive.close()


@dataclass(frozen=True)
class Served:
    base_url: str  # QIDO-RS: http://127.0.0.1:PORT/dicomweb
    dimse: DimseServer
    searchable: Searchable


@pytest.fixture(scope="module")
def served(searchable: Searchable) -> Iterator[Served]:
    archive = searchable.archive
    calling(archive, "ORACLE")  # the lab adopts the searchable studies: ORACLE finds them all
    dimse = DimseServer(archive, ae_title="LAMINA", port=0)
    dimse.start()
    try:
        with serving(create_app(archive.settings, archive)) as port:
            yield Served(f"http://127.0.0.1:{port}/dicomweb", dimse, searchable)
    finally:
        dimse.stop()


def findscu(served: Served, folder: Path, level: str, *keys: str) -> list[Dataset]:
    """The response identifiers findscu received (``-k`` keys as dcmtk writes them)."""
    folder.mkdir()
    args = [arg for key in ("SpecificCharacterSet=ISO_IR 192", *keys) for arg in ("-k", key)]
    run = subprocess.run(
        [tool("findscu"), "-S", "-aet", "ORACLE", "-aec", served.dimse.ae_title, "-X", "-od", str(folder),
         "127.0.0.1", str(served.dimse.port), "-k", f"QueryRetrieveLevel={level}", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return [pydicom.dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))]


# -- the oracle ------------------------------------------------------------------------------
def tag(keyword: str) -> str:
    found = tag_for_keyword(keyword)
    assert found is not None, keyword
    return f"{found:08X}"


RETURNED = {
    "STUDY": ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate",
              "StudyTime", "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances", "StudyID"),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
               "NumberOfSeriesRelatedInstances", "PatientID", "Manufacturer"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber",
              "Rows", "Columns", "NumberOfFrames", "ImageType"),
}  # fmt: skip
UNIQUE = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
ROUTE = {"STUDY": "/studies", "SERIES": "/series", "IMAGE": "/instances"}
SPECIMEN = "SpecimenDescriptionSequence.SpecimenIdentifier"
WSI = str(VLWholeSlideMicroscopyImageStorage)

# (level, matching keys, the slides whose study / series / instances match; "A" is the annotation)
ORACLE: list[tuple[str, dict[str, str], set[int | str]]] = [
    ("STUDY", {"PatientID": "SYN_0001"}, {0}),  # not SYNX0001
    ("STUDY", {"PatientID": "SYN_*"}, {0}),  # a literal _ before a wild card
    ("STUDY", {"PatientID": "SYN%0002"}, {2}),  # not SYN10002
    ("STUDY", {"PatientID": "SYN%*"}, {2}),  # a literal %
    ("STUDY", {"PatientID": "SYN?000*"}, {0, 2, 3, 4}),
    ("STUDY", {"PatientID": "syn_0001"}, set()),  # other than names, case counts
    ("STUDY", {"PatientID": "syn_*"}, set()),  # with wild cards too, on SQLite as well
    ("STUDY", {"PatientName": "dupont^*"}, {0, 3}),  # names match whatever the case
    ("STUDY", {"PatientName": "MARTIN^JEAN"}, {2}),
    ("STUDY", {"PatientName": "m*"}, {2, 4}),
    ("STUDY", {"PatientName": "MÜLLER^ANNA"}, {4}),
    ("STUDY", {"StudyInstanceUID": "{study0}\\{study2}\\1.2.3"}, {0, 2}),
    ("STUDY", {"StudyDate": "20260101-20260131"}, {0}),
    ("STUDY", {"StudyDate": "20260201-"}, {2, 4}),
    ("STUDY", {"StudyDate": "-20251231"}, {3}),
    ("STUDY", {"StudyDate": "20260302", "StudyTime": "0900-1200"}, {4}),
    ("STUDY", {"StudyTime": "1400-"}, {2}),
    ("STUDY", {"StudyTime": "-1059"}, {0, 4}),
    ("STUDY", {"StudyTime": "08"}, {0}),  # a time of reduced precision: its hour
    ("STUDY", {"ModalitiesInStudy": "ANN"}, {2}),
    ("STUDY", {"ModalitiesInStudy": "CT\\ANN"}, {2}),
    ("STUDY", {"ModalitiesInStudy": "SM"}, {0, 2, 3, 4}),
    ("STUDY", {"ModalitiesInStudy": "sm"}, set()),
    ("STUDY", {"PatientSex": "F", "AccessionNumber": ""}, {0, 4}),  # an empty key is returned
    ("STUDY", {"AccessionNumber": "S26-00?00"}, {0, 2, 3}),
    ("STUDY", {"PatientBirthDate": "19600101-19891231"}, {2, 3, 4}),
    ("STUDY", {"AccessionNumber": "S26-00100\\S26-00300"}, {0, 3}),  # several values: any of them
    ("SERIES", {"Modality": "ANN"}, {"A"}),
    ("SERIES", {"Modality": "SM", "StudyInstanceUID": "{study0}"}, {0, 1}),
    ("SERIES", {SPECIMEN: "S26-00100-B1"}, {1}),
    ("SERIES", {SPECIMEN: "S26_00200*"}, {2}),  # a literal _ in a sequence
    ("SERIES", {"SeriesNumber": "20"}, {"A"}),
    ("SERIES", {"PatientID": "SYN_0001", "SeriesInstanceUID": "{series1}"}, {1}),
    ("IMAGE", {"SOPClassUID": ANNOTATIONS}, {"A"}),
    ("IMAGE", {"SOPClassUID": WSI, "SeriesInstanceUID": "{series3}"}, {3}),
    ("IMAGE", {"SeriesInstanceUID": "{series0}\\{series2}"}, {0, 2}),
    ("IMAGE", {"PatientID": "SYN%0002", "InstanceNumber": "1"}, {"A", "2:1"}),
]


def _expected(searchable: Searchable, level: str, which: set[int | str]) -> set[str]:
    catalog = searchable.archive.catalog
    annotation = searchable.annotation
    uids: set[str] = set()
    for item in which:
        if item == "A":
            uids.add(
                {
                    "STUDY": annotation.StudyInstanceUID,
                    "SERIES": annotation.SeriesInstanceUID,
                    "IMAGE": annotation.SOPInstanceUID,
                }[level]
            )
            continue
        index, _, number = str(item).partition(":")
        slide = searchable.slides[int(index)]
        if level == "STUDY":
            uids.add(slide.study_instance_uid)
        elif level == "SERIES":
            uids.add(slide.series_instance_uid)
        else:
            rows = catalog.instances(slide.id)
            uids |= {row.sop_instance_uid for row in rows if not number or row.instance_number == int(number)}
    return uids


def _values(element: dict[str, Any] | None) -> Any:
    """What to compare of one DICOM JSON element: its values (the specimen identifiers of a
    specimen sequence's items)."""
    if element is None:
        return None
    if element.get("vr") == "SQ":
        return [item.get(tag("SpecimenIdentifier"), {}).get("Value") for item in element.get("Value", [])]
    return element.get("Value")


@pytest.mark.parametrize(("level", "keys", "which"), ORACLE, ids=[str(case[1]) for case in ORACLE])
def test_qido_rs_and_findscu_give_the_same_answers(
    served: Served, tmp_path: Path, level: str, keys: dict[str, str], which: set[int | str]
) -> None:
    # Arrange
    searchable = served.searchable
    slides = searchable.slides
    names = {f"study{i}": s.study_instance_uid for i, s in enumerate(slides)}
    names |= {f"series{i}": s.series_instance_uid for i, s in enumerate(slides)}
    keys = {keyword: value.format(**names) for keyword, value in keys.items()}
    returned = [keyword for keyword in RETURNED[level] if keyword not in keys]
    # Act
    params = [
        (keyword, value.replace("\\", ",") if "UID" in keyword else value) for keyword, value in keys.items()
    ]
    qido = signed.get(
        served.base_url + ROUTE[level], params=[*params, ("includefield", ",".join(returned))], timeout=30
    )
    dimse_keys = [
        f"SpecimenDescriptionSequence[0].SpecimenIdentifier={value}"
        if keyword == SPECIMEN
        else f"{keyword}={value}"
        for keyword, value in keys.items()
    ]
    found = findscu(served, tmp_path / "rsp", level, *dimse_keys, *returned)
    # Assert: the same matches
    assert qido.status_code == 200, qido.text
    unique = tag(UNIQUE[level])
    by_qido = {result[unique]["Value"][0]: result for result in qido.json()}
    by_find = {str(ds[unique].value): ds.to_json_dict() for ds in found}
    assert set(by_qido) == set(by_find) == _expected(searchable, level, which)
    # and the same values of every returned and matched key
    compared = [*returned, *(keyword.split(".")[0] for keyword in keys)]
    for uid, result in by_qido.items():
        for keyword in compared:
            assert _values(result.get(tag(keyword))) == _values(by_find[uid].get(tag(keyword))), (
                uid,
                keyword,
            )
        assert by_find[uid][tag("QueryRetrieveLevel")]["Value"] == [level]


# -- what comes back -------------------------------------------------------------------------
def test_keys_come_back_as_asked(served: Served, tmp_path: Path) -> None:
    # Arrange
    slide = served.searchable.slides[1]
    # Act: a sequence key, a key of a lower level, a key that is no search key
    (study,) = findscu(
        served, tmp_path / "study", "STUDY", f"StudyInstanceUID={slide.study_instance_uid}", "Modality",
        "StudyDescription", "(0009,0010)",
    )  # fmt: skip
    (series,) = findscu(
        served, tmp_path / "series", "SERIES", f"SeriesInstanceUID={slide.series_instance_uid}",
        "SpecimenDescriptionSequence[0].SpecimenIdentifier", "SoftwareVersions",
    )  # fmt: skip
    # Assert
    assert "Modality" in study and study.Modality == ""  # below the level: empty, not one series' value
    assert "StudyDescription" in study
    assert (0x0009, 0x0010) not in study  # private: never returned
    assert study.SpecificCharacterSet == "ISO_IR 192"
    (item,) = series.SpecimenDescriptionSequence
    assert [element.keyword for element in item] == ["SpecimenIdentifier"]  # the item keys asked for
    assert item.SpecimenIdentifier == slide.specimen_id
    assert series.SoftwareVersions  # not in the catalog: from the stored DICOM JSON
    assert series.StudyInstanceUID == slide.study_instance_uid  # the unique keys down to the level


def test_a_study_of_the_annotation_counts_both_series(served: Served, tmp_path: Path) -> None:
    slide = served.searchable.slides[ANNOTATED]
    (study,) = findscu(
        served, tmp_path / "study", "STUDY", f"StudyInstanceUID={slide.study_instance_uid}",
        "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    )  # fmt: skip
    assert list(study.ModalitiesInStudy) == ["ANN", "SM"]
    assert int(study.NumberOfStudyRelatedSeries) == 2
    assert int(study.NumberOfStudyRelatedInstances) == slide.instances + 1


# -- combined date and time matching, negotiated -------------------------------------------------
def _find_negotiating(served: Served, identifier: Dataset, app_info: bytes | None) -> tuple[bytes, list[Any]]:
    """C-FIND by pynetdicom, asking for the C-FIND application information ``app_info``; the
    application information the server accepted, and the (status, identifier) answers."""
    ae = AE(ae_title="ORACLE")
    ae.add_requested_context(STUDY_ROOT_FIND)
    items = []
    if app_info is not None:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = STUDY_ROOT_FIND
        item.service_class_application_information = app_info
        items.append(item)
    assoc = ae.associate("127.0.0.1", served.dimse.port, ae_title=served.dimse.ae_title, ext_neg=items)
    assert assoc.is_established
    try:
        accepted = assoc.acceptor.sop_class_extended.get(STUDY_ROOT_FIND, b"")
        answers = list(assoc.send_c_find(identifier, STUDY_ROOT_FIND))
    finally:
        assoc.release()
    return accepted, answers


def _matched(answers: list[Any]) -> tuple[set[str], int]:
    """The StudyInstanceUIDs answered, and the final status."""
    uids = {str(found.StudyInstanceUID) for state, found in answers if state.Status == status.PENDING}
    return uids, int(answers[-1][0].Status)


def test_combined_date_and_time_matching_when_the_association_negotiated_it(served: Served) -> None:
    # Arrange: from 15 January at 10:00 to 2 March at 10:00 (slide 4's study, 2 March 09:15)
    identifier = _identifier(
        "STUDY", StudyDate="20260115-20260302", StudyTime="1000-1000", StudyInstanceUID=""
    )
    night = _identifier("STUDY", StudyDate="20260301-20260302", StudyTime="2200-1000", StudyInstanceUID="")
    # Act: relational queries, combined date-time matching, fuzzy semantic matching asked for
    accepted, combined = _find_negotiating(served, identifier, b"\x01\x01\x01")
    _, combined_night = _find_negotiating(served, night, b"\x01\x01\x01")
    refused, separate = _find_negotiating(served, identifier, b"\x01\x00")
    _, separate_night = _find_negotiating(served, night, None)
    # Assert
    study = served.searchable.slides[4].study_instance_uid
    assert accepted == b"\x01\x01\x00"  # no fuzzy semantic matching of names
    assert refused == b"\x01\x00"
    assert _matched(combined) == ({study}, status.SUCCESS)
    assert _matched(combined_night) == ({study}, status.SUCCESS)
    assert _matched(separate) == (set(), status.SUCCESS)  # nothing was made between 10:00 and 10:00:59
    assert _matched(separate_night)[1] == status.DOES_NOT_MATCH_SOP_CLASS  # crosses midnight
