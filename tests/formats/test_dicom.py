"""DICOM WSI of other systems: refusals name the attribute or the frame at fault."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from lamina.archive.discover import Candidate
from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats.dicom import DicomSource
from lamina.formats.registry import open_source
from lamina.formats.source import SourceOptions
from lamina.model.enums import PatientSexValues
from lamina.sample import write_samples
from tests.fuzz.campaign import read_through
from tests.fuzz.mutate import apply
from tests.support import shared_file


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("dicom")
    (sample,) = write_samples(folder, ["dicom_wsi"], size=(300, 200), seed=4)
    return sorted(sample.path.glob("*.dcm"))


def _volume(series: list[Path]) -> Path:
    return next(p for p in series if "VOLUME" in pydicom.dcmread(p, stop_before_pixels=True).ImageType)


def _changed(path: Path, folder: Path, **values: object) -> Path:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    out = folder / path.name
    ds.save_as(out, enforce_file_format=True)
    return out


def test_a_damaged_jpeg_ls_frame_is_named_with_its_tile(tmp_path: Path) -> None:
    # Arrange: two bytes of the real JPEG-LS file flipped (a mutant of the fuzz campaign)
    source = shared_file("dicom-highdicom/sm_image_jpegls.dcm")
    damaged = tmp_path / source.name
    damaged.write_bytes(apply(source.read_bytes(), ((9888, 1, b"\x19"), (8823, 1, b"\x00"))))
    # Act
    with pytest.raises(CorruptSourceError) as raised:
        read_through(Candidate(damaged, (damaged,)))
    # Assert
    assert "cannot be decoded: the JPEG-LS data is damaged (" in raised.value.reason
    assert raised.value.reason.startswith("frame ")


def test_a_photometric_interpretation_the_iod_does_not_use_is_refused(
    series: list[Path], tmp_path: Path
) -> None:
    changed = _changed(_volume(series), tmp_path, PhotometricInterpretation="PALETTE COLOR")
    with pytest.raises(UnsupportedFormatError, match="PhotometricInterpretation 'PALETTE COLOR' is not one"):
        DicomSource(changed, SourceOptions())


def test_a_number_of_frames_that_is_not_a_number_is_named(series: list[Path], tmp_path: Path) -> None:
    volume = _volume(series)
    data = volume.read_bytes()
    ds = pydicom.dcmread(volume, stop_before_pixels=True)
    frames = str(ds.NumberOfFrames).encode()
    # the IS value as written (padded to an even length), replaced by letters of the same length
    at = data.index(b"\x28\x00\x08\x00IS")
    length = int.from_bytes(data[at + 6 : at + 8], "little")
    assert data[at + 8 : at + 8 + length].strip() == frames
    damaged = tmp_path / volume.name
    damaged.write_bytes(data[: at + 8] + b"x" * length + data[at + 8 + length :])
    with pytest.raises(CorruptSourceError, match=r"NumberOfFrames \(0028,0008\)"):
        DicomSource(damaged, SourceOptions())


def test_a_patient_sex_outside_the_defined_terms_is_not_kept_in_the_identity(
    series: list[Path], tmp_path: Path
) -> None:
    for path in series:
        _changed(path, tmp_path, PatientSex="U")
    changed = sorted(tmp_path.glob("*.dcm"))
    with open_source(changed[0], SourceOptions(members=tuple(changed))) as source:
        assert source.metadata.identity.sex is None
    with open_source(series[0], SourceOptions(members=tuple(series))) as source:
        assert source.metadata.identity.sex in tuple(PatientSexValues)
