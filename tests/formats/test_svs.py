"""Aperio SVS: the description read with tifffile's parser, the acquisition time zone kept."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydicom
import pytest

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.formats.registry import detect_format, open_source
from lamina.formats.source import SourceOptions
from lamina.formats.svs import AperioDescription, SvsSource, acquisition_datetime, time_zone
from lamina.model.geometry import SizeMm
from lamina.sample import write_samples
from tests.support import ingest_path, shared_file, stored_file

GT450 = (
    "Aperio Leica Biosystems GT450 DX v1.0.1\r\n92908x44891 [0,0,92908x44891] (256x256) JPEG/YCC Q=91"
    "|AppMag = 40|Date = 04/12/2023|Time = 08:01:26|Time Zone = GMT+0900|ScanScope ID = SS00000"
    "|MPP = 0.263526|Barcode = 000123"
)


def test_the_description_is_read_with_its_header_values_and_numbers() -> None:
    # Act
    described = AperioDescription.parse(GT450)
    # Assert
    assert described.header.startswith("Aperio Leica Biosystems GT450 DX v1.0.1")
    assert described.number("MPP") == pytest.approx(0.263526)
    assert described.number("AppMag") == 40.0
    assert described.string("ScanScope ID") == "SS00000"
    assert described.number("ScanScope ID") is None


def test_a_numeric_barcode_keeps_its_leading_zeros() -> None:
    # tifffile turns "000123" into 123; the barcode is text
    assert AperioDescription.parse(GT450).string("Barcode") == "000123"


@pytest.mark.parametrize(
    ("text", "hours"),
    [
        ("GMT+01:00", 1.0),
        ("GMT-05:00", -5.0),
        ("GMT+0900", 9.0),
        ("GMT-0330", -3.5),
        ("GMT+9", 9.0),
        ("GMT", 0.0),
        ("UTC+02:00", 2.0),
    ],
)
def test_time_zones_as_aperio_writes_them(text: str, hours: float) -> None:
    zone = time_zone(text)
    assert zone is not None
    assert zone.utcoffset(None) == dt.timedelta(hours=hours)


@pytest.mark.parametrize("text", ["", "CET", "GMT+15:00", "GMT-13", "GMT+01:00 summer", None])
def test_an_unreadable_or_impossible_time_zone_is_left_out(text: str | None) -> None:
    assert time_zone(text) is None


def test_the_acquisition_keeps_its_time_zone() -> None:
    acquired = AperioDescription.parse(GT450).acquired()
    assert acquired == dt.datetime(2023, 4, 12, 8, 1, 26, tzinfo=dt.timezone(dt.timedelta(hours=9)))


def test_dates_month_first_in_two_and_four_digits() -> None:
    assert acquisition_datetime("12/29/09", "09:59:15", None) == dt.datetime(2009, 12, 29, 9, 59, 15)
    assert acquisition_datetime("07/24/2023", None, None) == dt.datetime(2023, 7, 24)
    assert acquisition_datetime("29/12/2009", "12:43:52", None) is None  # not month first
    assert acquisition_datetime("29/12/2009", "12:43:52", None, day_first=True) == dt.datetime(
        2009, 12, 29, 12, 43, 52
    )


def test_real_files_give_a_date_without_time_zone() -> None:
    # Arrange: CMU-1-Small-Region has Date and Time but no Time Zone; the TCGA file has no date
    cmu = shared_file("aperio/CMU-1-Small-Region.svs")
    tcga = shared_file("aperio/tcga-cr-7395-01a-01-ts1.svs")
    # Act
    with open_source(cmu) as source:
        cmu_meta = source.metadata
    with SvsSource(tcga, SourceOptions(SizeMm.from_mpp(0.25))) as source:
        tcga_meta = source.metadata
    # Assert
    assert cmu_meta.acquisition_datetime == dt.datetime(2009, 12, 29, 9, 59, 15)
    assert cmu_meta.acquisition_datetime.tzinfo is None
    assert cmu_meta.objective_power == 20.0
    assert cmu_meta.device_serial_number == "CPAPERIOCS"
    assert cmu_meta.software_versions == ("Aperio Image Library v11.2.1",)
    assert tcga_meta.acquisition_datetime is None
    assert tcga_meta.objective_power is None


def test_the_time_zone_reaches_acquisition_datetime(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: the sample SVS says Date = 11/28/26, Time = 09:14:02, Time Zone = GMT+01:00
    (sample,) = write_samples(tmp_path / "in", ["aperio_svs"], size=(300, 200), seed=3)
    assert detect_format(sample.path) is SvsSource
    # Act
    result = ingest_path(ingestor, sample.path)
    # Assert: DT with its offset; StudyDate and StudyTime in the scanner's local time
    assert result.status == "ingested", result.reason
    row = next(r for r in archive.catalog.instances(result.slide_id or "") if r.level == 0)
    ds = pydicom.dcmread(
        stored_file(archive.store, row.blob_sha256, tmp_path / "out"), stop_before_pixels=True
    )
    assert ds.AcquisitionDateTime == "20261128091402+0100"
    assert (ds.StudyDate, ds.StudyTime) == ("20261128", "091402")
    assert "TimezoneOffsetFromUTC" not in ds
