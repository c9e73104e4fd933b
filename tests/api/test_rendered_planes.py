"""Rendered frames of a z-stack of fluorescence channels (``lamina.api.dicomweb.rendered``): the
real cellSens slide (2 channels x 11 focal planes, 16-bit grey, JPEG 2000) served, each frame
of plane z and channel c rendered as its samples through a window (asked for, or the 0.5-99.5th
percentiles of the frame) and the channel's palette; the instance as its middle plane's channels
added in their colours; a malformed window refused in one line naming ``window``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import imagecodecs
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.encaps import generate_frames

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from tests.signin import signed
from tests.support import ingest_path, serving, shared_file, stored_file

pytestmark = pytest.mark.backend_independent

VSI = "olympus-vsi/vsi-ets-test-jpg2k.vsi"
PLANES, PATHS = 11, 2


class Served(NamedTuple):
    url: str  # the instance's URL
    ds: pydicom.Dataset  # the stored instance


@pytest.fixture
def served(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> Iterator[Served]:
    result = ingest_path(ingestor, shared_file(VSI).parent)
    assert result.status == "ingested", result.reason
    (row,) = archive.catalog.instances(result.slide_id or "")
    ds = pydicom.dcmread(stored_file(archive.store, row.blob_sha256, tmp_path / "stored"))
    with serving(create_app(archive.settings, archive)) as port:
        yield Served(
            f"http://127.0.0.1:{port}/dicomweb/studies/{row.study_instance_uid}"
            f"/series/{row.series_instance_uid}/instances/{row.sop_instance_uid}",
            ds,
        )


def _samples(ds: pydicom.Dataset, z: int, c: int) -> npt.NDArray[np.uint16]:
    """The 16-bit plane z of channel c (one tile per plane in this slide), decoded here."""
    frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    plane: npt.NDArray[np.uint16] = imagecodecs.jpeg2k_decode(frames[z + c * PLANES])
    return plane[: ds.TotalPixelMatrixRows, : ds.TotalPixelMatrixColumns]


def _palette(ds: pydicom.Dataset, c: int) -> npt.NDArray[np.uint8]:
    path = ds.OpticalPathSequence[c]
    tables = [
        np.frombuffer(getattr(path, f"{color}PaletteColorLookupTableData"), "<u2")
        for color in ("Red", "Green", "Blue")
    ]
    return (np.stack(tables, axis=1) >> 8).astype(np.uint8)


def _default(samples: npt.NDArray[Any]) -> tuple[float, float]:
    """0.5th to 99.5th percentiles, else minimum to maximum, else one sample wide."""
    low, high = np.percentile(samples, (0.5, 99.5))
    if high <= low:
        low, high = samples.min(), samples.max()
    return float(low), float(high if high > low else low + 1)


def _windowed(samples: npt.NDArray[Any], low: float, high: float) -> npt.NDArray[np.uint8]:
    y = (samples.astype(np.float64) - low) / (high - low) * 255.0
    return np.rint(np.clip(y, 0, 255)).astype(np.uint8)


def _png(served: Served, path: str, **params: str) -> npt.NDArray[np.uint8]:
    answer = signed.get(f"{served.url}/{path}", params={"accept": "image/png", **params})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    pixels: npt.NDArray[np.uint8] = imagecodecs.png_decode(answer.content)
    return pixels


def test_a_frame_of_plane_z_and_channel_c_is_its_windowed_samples_in_its_colour(served: Served) -> None:
    # planes with a spread of samples, a sparse one (percentiles equal), an empty one
    for z, c in ((4, 0), (5, 1), (10, 0), (0, 0)):
        # Arrange: the default window, the 0.5th to 99.5th percentiles of the frame's samples
        samples = _samples(served.ds, z, c)
        low, high = _default(samples)
        expected = _palette(served.ds, c)[_windowed(samples, low, high)]
        # Act
        rendered = _png(served, f"frames/{1 + z + c * PLANES}/rendered")
        # Assert: RGB, the channel's colour on black, frame by frame
        assert rendered.shape == (*samples.shape, 3)
        assert np.array_equal(rendered, expected), f"plane {z}, channel {c}"
    # the answer says the window it applied, for a viewer to ask every tile with it
    answer = signed.get(f"{served.url}/frames/5/rendered", params={"viewport": "16,16"})
    low, high = _default(_samples(served.ds, 4, 0))
    center, width, function = answer.headers["lamina-window"].split(",")
    assert function == "LINEAR_EXACT"
    assert (float(center), float(width)) == pytest.approx(((low + high) / 2, high - low))


def test_a_window_asked_for_is_applied(served: Served) -> None:
    samples = _samples(served.ds, 3, 0)
    low, high = np.percentile(samples, (10, 90))
    center, width = (low + high) / 2, high - low
    rendered = _png(served, "frames/4/rendered", window=f"{center},{width},linear-exact")
    assert np.array_equal(rendered, _palette(served.ds, 0)[_windowed(samples, low, high)])
    # LINEAR (the default function), with its half-sample offsets (PS3.3 C.11.2.1.2.1)
    linear = _png(served, "frames/4/rendered", window=f"{center},{width}")
    y = ((samples - (center - 0.5)) / (width - 1) + 0.5) * 255
    assert np.array_equal(linear, _palette(served.ds, 0)[np.rint(np.clip(y, 0, 255)).astype(np.uint8)])


def test_the_instance_is_its_middle_planes_channels_added_in_their_colours(served: Served) -> None:
    expected = np.zeros((served.ds.TotalPixelMatrixRows, served.ds.TotalPixelMatrixColumns, 3), np.uint16)
    for c in range(PATHS):
        samples = _samples(served.ds, PLANES // 2, c)
        low, high = _default(samples)
        expected += _palette(served.ds, c)[_windowed(samples, low, high)]
    rendered = _png(served, "rendered")
    assert np.array_equal(rendered, np.minimum(expected, 255).astype(np.uint8))
    thumbnail = _png(served, "thumbnail", viewport="128,128")
    assert thumbnail.ndim == 3 and thumbnail.shape[2] == 3 and max(thumbnail.shape[:2]) == 128


@pytest.mark.parametrize("window", ["1000", "a,b", "100,0", "100,-5,linear-exact", "100,10,cubic", "nan,10"])
def test_a_bad_window_is_a_400_naming_window(served: Served, window: str) -> None:
    answer = signed.get(f"{served.url}/frames/1/rendered", params={"window": window})
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert detail.startswith("window: ") and "\n" not in detail, detail
