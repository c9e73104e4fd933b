"""3DHISTECH TIFF: its Aperio-like description read with the SVS reader's parser, day first."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from lamina.formats.histech import HistechSource
from lamina.formats.registry import detect_format, open_source
from lamina.formats.svs import AperioDescription
from lamina.sample import write_samples
from lamina.sample.histech import description

TEXT = (
    "68608x95232 (256x256) JPEG/RGB Q=80|Date = 29/12/2009|Time = 12:43:52|MPP = 0.2325|"
    "3dh_PixelSizeX = 0.2325|3dh_PixelSizeY = 0.2325|3dh_Filter = Default"
)


def test_the_description_without_a_vendor_prefix_is_read_by_tifffile() -> None:
    # Act
    described = AperioDescription.parse(TEXT, "Aperio ")
    # Assert: the header is the file's own, without the prefix tifffile needed
    assert described.header == "68608x95232 (256x256) JPEG/RGB Q=80"
    assert described.number("MPP") == 0.2325
    assert described.string("3dh_Filter") == "Default"
    assert described.acquired(day_first=True) == dt.datetime(2009, 12, 29, 12, 43, 52)


def test_the_sample_gives_its_date_day_first_and_its_header(tmp_path: Path) -> None:
    # Arrange: the sample writes Date = 28/11/2026, Time = 09:14:02
    (sample,) = write_samples(tmp_path, ["histech_tiff"], size=(300, 200), seed=1)
    assert detect_format(sample.path) is HistechSource
    # Act
    with open_source(sample.path) as source:
        meta = source.metadata
    # Assert
    assert meta.acquisition_datetime == dt.datetime(2026, 11, 28, 9, 14, 2)
    assert meta.manufacturer == "3DHISTECH"
    assert meta.description == description(300, 200, 0.243).split("|")[0]
