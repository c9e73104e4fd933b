"""The lab's manifest: identity per file or barcode, with errors that name the row and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamina.archive.manifest import load_manifest
from lamina.errors import ManifestError


def _write(tmp_path: Path, text: str, name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


def test_csv_rows_become_identities(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "file,barcode,patient_id,patient_name,birth_date,sex,accession_number,stain,organ,mpp\n"
        "a.svs,,P1,MARTIN^JEANNE,1950-02-03,female,S26-1,HE,Colon,0.25\n"
        ",BC-9,P2,,19700101,M,S26-2,,,\n",
    )
    manifest = load_manifest(path)
    first = manifest.lookup(Path("/x/a.svs"), None)
    assert first is not None
    assert first.identity.birth_date == "19500203"
    assert first.identity.sex == "F"
    assert first.pixel_spacing is not None and first.pixel_spacing.mpp == pytest.approx(0.25)
    second = manifest.lookup(Path("/x/other.svs"), "BC-9")
    assert second is not None and second.identity.container_id == "BC-9"
    assert manifest.lookup(Path("/x/none.svs"), None) is None


def test_json_manifest(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps([{"file": "b.svs", "patient_id": "P3"}]), "m.json")
    entry = load_manifest(path).lookup(Path("b.svs"), None)
    assert entry is not None and entry.identity.patient_id == "P3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,patient_id,colour\na.svs,P1,blue\n", "row 2: unknown column 'colour'"),
        ("file,birth_date\na.svs,31/02/1950\n", "row 2: birth_date '31/02/1950' is not a date"),
        ("file,sex\na.svs,X\n", "row 2: sex 'X' must be M, F or O"),
        ("patient_id\nP1\n", "row 2: needs a 'file' or a 'barcode'"),
        ("file\na.svs\na.svs\n", "row 3: file 'a.svs' appears twice"),
        ("barcode,mpp\nBC,0.25\n", "row 2: 'mpp' needs a 'file' value"),
        ("file,mpp\na.svs,fast\n", "row 2: mpp 'fast' is not a number"),
        ("file,mpp\na.svs,1000\n", "row 2: mpp 1000.0 is outside"),
        (
            "file,accession_number\na.svs,S26-0000000000000001\n",
            "row 2: accession_number 'S26-0000000000000001' is 20 characters long; DICOM allows 16 (SH)",
        ),
        ("", "the CSV has no header row"),
    ],
)
def test_bad_manifest_names_the_row_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_json_that_is_not_a_list_of_objects(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="must be a list of objects"):
        load_manifest(_write(tmp_path, '{"file": "a.svs"}', "m.json"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a backslash would make PatientID two values
        ("file,patient_id\na.svs,A\\B\n", "row 2: patient_id 'A\\\\B' contains a backslash"),
        ("file,patient_name\na.svs,DUPONT=MARIE\n", "row 2: patient_name 'DUPONT=MARIE' contains '='"),
        ("file,patient_name\na.svs,A^B^C^D^E^F\n", "has 6 parts separated by '^'; DICOM allows 5"),
        ("file,patient_name\na.svs,DUPONT\x1b$BMARIE\n", "control character '\\x1b' (ESC)"),
        ('file,specimen_id\na.svs,"S1\nS2"\n', "row 2: specimen_id 'S1\\nS2' contains the control character"),
        ("file,barcode\na.svs,BC\tX\n", "row 2: barcode 'BC\\tX' contains the control character '\\t' (tab)"),
        (f"file,patient_id\na.svs,{'P' * 65}\n", "is 65 characters long; DICOM allows 64 (LO)"),
        (f"file,patient_name\na.svs,{'N' * 65}\n", "is 65 characters long; DICOM allows 64 for a name (PN)"),
        ("file,stain\na.svs,H\\E\n", "(it becomes DICOM SpecimenShortDescription)"),
    ],
)
def test_a_value_that_would_break_its_dicom_attribute_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    # Arrange
    path = _write(tmp_path, text)
    # Act
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    # Assert: the file, the row, the column, what is wrong; on one line
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"{path}, row 2: ")
    assert "\n" not in str(raised.value)


def test_json_values_that_are_not_text_or_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps([{"file": "a.svs", "patient_id": ["A", "B"]}]), "m.json")
    with pytest.raises(ManifestError, match="row 1: patient_id must be text or a number, not a list"):
        load_manifest(path)
    numbers = load_manifest(_write(tmp_path, json.dumps([{"file": "b.svs", "patient_id": 123}]), "n.json"))
    entry = numbers.lookup(Path("b.svs"), None)
    assert entry is not None and entry.identity.patient_id == "123"


def test_a_manifest_named_with_a_newline_is_quoted(tmp_path: Path) -> None:
    path = _write(tmp_path, "file,sex\na.svs,X\n", "lab\nmanifest.csv")
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    assert "\n" not in str(raised.value)
    assert repr(str(path)) in str(raised.value)
