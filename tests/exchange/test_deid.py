"""De-identification of a slide converted by lamina, with identifying values planted everywhere a
DICOM header can hold them: none is left, frames are the same bytes, dates move by the patient's
offset, UIDs are new and stable, the output is as valid as the input, doubtful slides quarantined."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from lamina.exchange.deid import DeidOptions, DeidOutcome, deidentify_instance, identity_findings, is_sent
from lamina.exchange.keys import ExchangeKeys
from lamina.formats import codec
from lamina.formats.dicom_frames import locate_frames
from lamina.formats.source import FrameEncoding
from lamina.model.slide import SlideIdentity
from tests.exchange.deid_world import SECRETS, convert, plant
from tests.support import dciodvfy_errors

KEYS = ExchangeKeys(b"s" * 32, {"EDS-IDF": b"w" * 32}, where="test")
OPTIONS = DeidOptions(warehouses=("EDS-IDF",))


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    paths = convert(tmp_path_factory.mktemp("slide"))
    for path in paths:
        plant(path)
    return paths


def run(path: Path, options: DeidOptions = OPTIONS, keys: ExchangeKeys = KEYS) -> tuple[DeidOutcome, bytes]:
    out = io.BytesIO()
    with path.open("rb") as fh:
        outcome = deidentify_instance(fh, out, keys, options)
    return outcome, out.getvalue()


def kind(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).ImageType[2])


def sent(slide: list[Path]) -> list[Path]:
    return [path for path in slide if kind(path) in ("VOLUME", "THUMBNAIL")]


def forms(value: str) -> list[bytes]:
    """A value as it may lie in bytes: UTF-8, upper case, space padded, name parts."""
    found = {value.encode(), value.upper().encode(), (value + " ").encode(), value.encode("latin-1")}
    found |= {part.encode() for part in re.split(r"[\^ ]", value) if len(part) >= 4}
    return sorted(found)


def test_no_identifying_value_is_left_anywhere_in_the_sent_files(slide: list[Path]) -> None:
    originals = pydicom.dcmread(slide[0], stop_before_pixels=True)
    uids = [
        str(originals.StudyInstanceUID),
        str(originals.SeriesInstanceUID),
        str(originals.FrameOfReferenceUID),
    ]
    for path in sent(slide):
        # Act
        outcome, raw = run(path)
        # Assert
        assert outcome.quarantine == [], outcome.quarantine
        source = pydicom.dcmread(path, stop_before_pixels=True)
        for name, value in SECRETS.items():
            if name == "private":
                continue  # planted as text only in the quarantine case
            for form in forms(value):
                assert form not in raw, f"{name} left in {path.name}"
        for uid in [*uids, str(source.SOPInstanceUID)]:
            assert uid.encode() not in raw
        assert raw[:128] == b"\x00" * 128
        assert identity_findings(pydicom.dcmread(io.BytesIO(raw))) == []
        assert "ImageComments (0020,4000)" in outcome.removed
        assert "private (0029,1002)" in outcome.removed


def test_what_the_svs_conversion_copies_from_the_vendor_file_is_not_sent(tmp_path: Path) -> None:
    """The Aperio description's Filename, User and ImageID, and the file name, never reach a
    sent file; ScanScope ID (DeviceSerialNumber) is kept by Retain Device Identity."""
    paths = convert(tmp_path, seed=3, identity=SlideIdentity(patient_id="IPP-55"))
    description = tifffile_description(tmp_path / "svs")
    vendor = {key: value for key, value in description.items() if key in ("Filename", "User", "ImageID")}
    assert len(vendor) == 3
    for path in sent(paths):
        outcome, raw = run(path)
        assert outcome.quarantine == []
        for value in [*vendor.values(), *(p.name for p in (tmp_path / "svs").glob("*.svs"))]:
            assert str(value).encode() not in raw
        assert pydicom.dcmread(io.BytesIO(raw)).DeviceSerialNumber == "SS1234"


def tifffile_description(folder: Path) -> dict[str, object]:
    import tifffile
    from tifffile.tifffile import svs_description_metadata

    (svs,) = folder.glob("*.svs")
    with tifffile.TiffFile(svs) as tiff:
        return dict(svs_description_metadata(tiff.pages.first.description))


def test_frames_are_copied_byte_for_byte_and_the_frame_index_follows(slide: list[Path]) -> None:
    for path in sent(slide):
        source = pydicom.dcmread(path)
        # Act
        outcome, raw = run(path)
        # Assert
        result = pydicom.dcmread(io.BytesIO(raw))
        count = int(source.NumberOfFrames)
        before = list(generate_frames(source.PixelData, number_of_frames=count))
        after = list(generate_frames(result.PixelData, number_of_frames=count))
        assert before == after
        assert result.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert result.ExtendedOffsetTable == source.ExtendedOffsetTable
        assert outcome.frame_offsets is not None and outcome.frame_lengths is not None
        spans = locate_frames(
            io.BytesIO(raw), raw.index(b"\xe0\x7f\x10\x00OB"), count, True, True, 0, len(raw)
        )
        assert [span.fragments[0] for span in spans] == spans_of(outcome)
        assert outcome.size == len(raw)
        frames = hashlib.sha256()
        for offset, length in spans_of(outcome):
            frames.update(raw[offset : offset + length])
        assert outcome.frames_sha256 == frames.hexdigest()  # hashed as the frames were copied


def test_dates_move_back_by_one_offset_per_patient_and_times_stay(tmp_path: Path, slide: list[Path]) -> None:
    other = convert(tmp_path, seed=2)  # a second slide of the same patient, another scan
    offset = KEYS.date_offset_days(SECRETS["patient_id"])
    for path in [sent(slide)[0], sent(other)[0]]:
        source = pydicom.dcmread(path, stop_before_pixels=True)
        # Act
        _, raw = run(path)
        # Assert
        result = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
        for keyword in ("StudyDate", "ContentDate"):
            moved = _days(str(source[keyword].value)) - _days(str(result[keyword].value))
            assert moved == offset
        assert (
            _days(str(source.AcquisitionDateTime)[:8]) - _days(str(result.AcquisitionDateTime)[:8]) == offset
        )
        assert str(result.AcquisitionDateTime)[8:] == str(source.AcquisitionDateTime)[8:]
        assert result.StudyTime == source.StudyTime and result.ContentTime == source.ContentTime
        assert result.PatientBirthDate == ""
        assert result.LongitudinalTemporalInformationModified == "MODIFIED"


def _days(text: str) -> int:
    return int(np.datetime64(f"{text[:4]}-{text[4:6]}-{text[6:8]}").astype(int))


def test_uids_are_new_stable_per_site_and_references_follow(slide: list[Path]) -> None:
    path = sent(slide)[0]
    source = pydicom.dcmread(path, stop_before_pixels=True)
    # Act
    first, raw = run(path)
    _, again = run(path)
    other_site, _ = run(path, DeidOptions(), keys=ExchangeKeys(b"o" * 32))
    # Assert
    assert raw == again
    result = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert result[keyword].value == KEYS.uid(str(source[keyword].value)) != source[keyword].value
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID == first.sop_instance_uid
    assert (first.series_instance_uid, first.study_instance_uid) == (
        result.SeriesInstanceUID,
        result.StudyInstanceUID,
    )
    assert other_site.sop_instance_uid != first.sop_instance_uid
    assert result.SOPClassUID == source.SOPClassUID
    specimen = result.SpecimenDescriptionSequence[0]
    assert specimen.SpecimenUID == KEYS.uid(str(source.SpecimenDescriptionSequence[0].SpecimenUID))
    coded = specimen.PrimaryAnatomicStructureSequence[0]
    assert (coded.CodeValue, coded.CodingSchemeDesignator) == ("71854001", "SCT")


def test_the_profile_and_the_pseudonyms_are_recorded(slide: list[Path]) -> None:
    _, raw = run(sent(slide)[0])
    result = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    assert result.PatientIdentityRemoved == "YES"
    assert [item.CodeValue for item in result.DeidentificationMethodCodeSequence] == [
        "113100",
        "113109",
        "113107",
        "113105",
    ]
    assert result.DeidentificationMethod
    assert result.PatientID == KEYS.patient_pseudonym(SECRETS["patient_id"])
    assert result.PatientName == ""
    assert result.AccessionNumber == KEYS.accession_pseudonym(SECRETS["accession"])
    (warehouse,) = result.OtherPatientIDsSequence
    assert warehouse.PatientID == KEYS.patient_pseudonym(SECRETS["patient_id"], "EDS-IDF")
    assert warehouse.IssuerOfPatientID == "EDS-IDF"
    assert re.fullmatch(r"[A-Z2-7]{16}", str(result.ContainerIdentifier))
    steps = result.SpecimenDescriptionSequence[0].SpecimenPreparationSequence[0]
    texts = [
        item.TextValue for item in steps.SpecimenPreparationStepContentItemSequence if "TextValue" in item
    ]
    assert texts == [result.SpecimenDescriptionSequence[0].SpecimenIdentifier]  # the comment item is gone


def test_the_output_is_as_valid_as_the_input_for_dciodvfy(tmp_path: Path, slide: list[Path]) -> None:
    for path in sent(slide):
        _, raw = run(path)
        out = tmp_path / f"deid-{path.name}"
        out.write_bytes(raw)
        new = set(dciodvfy_errors(out)) - set(dciodvfy_errors(path))
        assert new == set(), new


def test_the_overview_is_sent_only_blanked_and_the_label_never(slide: list[Path]) -> None:
    (label,) = [path for path in slide if kind(path) == "LABEL"]
    (overview,) = [path for path in slide if kind(path) == "OVERVIEW"]
    # Act
    refused, nothing = run(label, DeidOptions(keep_overview=True))
    not_kept, none = run(overview)
    kept, raw = run(overview, DeidOptions(keep_overview=True))
    # Assert
    assert refused.quarantine and nothing == b"" and not_kept.quarantine and none == b""
    assert kept.quarantine == []
    result = pydicom.dcmread(io.BytesIO(raw))
    assert identity_findings(result) == []
    encoding = FrameEncoding(result.file_meta.TransferSyntaxUID, result.PhotometricInterpretation)
    (frame,) = generate_frames(result.PixelData, number_of_frames=1)
    pixels = codec.decode(frame, encoding)
    width = pixels.shape[1]
    assert pixels[:, : width * 33 // 100].min() >= 250  # the label's end: white
    assert pixels[:, width // 2 :].min() < 200  # the glass and tissue: as they were


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # the planted partial date
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("private_text", "private attribute (0029,1001) holds text"),
        ("sop_class", "SOPClassUID (0008,0016)"),
        ("unknown_text", "DetectorID (0018,700A) is not in the de-identification tables"),
        ("burned_in", "BurnedInAnnotation (0028,0301) is YES"),
        ("no_patient", "PatientID (0010,0020) is empty"),
        ("partial_date", "StudyDate (0008,0020): a DA value that cannot be moved"),
    ],
)
def test_a_doubtful_instance_is_quarantined_with_reasons_and_nothing_written(
    tmp_path: Path, slide: list[Path], change: str, reason: str
) -> None:
    path = tmp_path / "doubtful.dcm"
    path.write_bytes(sent(slide)[0].read_bytes())
    if change == "private_text":
        plant(path, private_text=True)
    else:
        ds = pydicom.dcmread(path)
        _doubt(ds, change)
        ds.save_as(path, enforce_file_format=True)
    # Act
    outcome, raw = run(path)
    # Assert
    assert raw == b""
    assert any(line.startswith(reason) for line in outcome.quarantine), outcome.quarantine
    for line in outcome.quarantine:
        assert "\n" not in line
        assert not any(value.encode() in line.encode() for value in SECRETS.values())


def _doubt(ds: Dataset, change: str) -> None:
    if change == "sop_class":
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.2"  # VL Microscopic Image
    elif change == "unknown_text":
        ds.DetectorID = "DET-1"
    elif change == "burned_in":
        ds.BurnedInAnnotation = "YES"
    elif change == "no_patient":
        ds.PatientID = ""
    elif change == "partial_date":
        ds.StudyDate = "2026"


def test_is_sent_from_the_catalog_flavor_and_image_type() -> None:
    volume = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    assert is_sent("VOLUME", volume)
    assert is_sent("THUMBNAIL", ["DERIVED", "PRIMARY", "THUMBNAIL", "RESAMPLED"])
    assert not is_sent("LABEL", ["ORIGINAL", "PRIMARY", "LABEL", "NONE"])
    assert not is_sent("VOLUME", ["ORIGINAL", "PRIMARY", "LABEL", "NONE"])  # either one decides
    assert not is_sent("LABEL", volume, keep_overview=True)
    assert not is_sent("OVERVIEW", ["ORIGINAL", "PRIMARY", "OVERVIEW", "NONE"])
    assert is_sent("OVERVIEW", ["ORIGINAL", "PRIMARY", "OVERVIEW", "NONE"], keep_overview=True)
    assert not is_sent("", ["ORIGINAL", "PRIMARY", "LOCALIZER"])


def test_identity_findings_name_what_a_received_file_still_carries(slide: list[Path]) -> None:
    path = sent(slide)[0]
    # Act
    found = identity_findings(pydicom.dcmread(path, stop_before_pixels=True))
    # Assert
    text = "\n".join(found)
    for expected in (
        "PatientIdentityRemoved (0012,0062) is not YES",
        "PatientID (0010,0020) is not a pseudonym",
        "PatientName (0010,0010) holds a value",
        "InstitutionName (0008,0080) is present with a value",
        "PatientBirthDate (0010,0030) is present with a value",
        "ContainerIdentifier (0040,0512) is not a pseudonym",
        "SpecimenDescriptionSequence (0040,0560) > SpecimenDetailedDescription (0040,0602) is present",
    ):
        assert expected in text, text
    assert not any(value in text for value in SECRETS.values())


class _SmallReads(io.FileIO):
    """A file that refuses to hand over more than a chunk at once (nor to be read whole)."""

    def read(self, size: int | None = -1) -> bytes:
        assert size is not None and 0 <= size <= 4 << 20, f"a read of {size} bytes"
        return super().read(size)


def test_the_copy_reads_in_bounded_chunks(slide: list[Path]) -> None:
    out = io.BytesIO()
    with _SmallReads(str(sent(slide)[0])) as fh:
        outcome = deidentify_instance(fh, out, KEYS, OPTIONS)
    assert outcome.quarantine == [] and outcome.size == len(out.getvalue())


def spans_of(outcome: DeidOutcome) -> list[tuple[int, int]]:
    """(offset, length) of each frame in the de-identified file, as the outcome indexes them."""
    assert outcome.frame_offsets is not None and outcome.frame_lengths is not None
    return list(zip(outcome.frame_offsets.tolist(), outcome.frame_lengths.tolist(), strict=True))
