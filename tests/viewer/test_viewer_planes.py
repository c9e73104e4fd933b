"""A z-stack of fluorescence channels in the viewer, in headless Chromium (``tests/viewer/planes.mjs``):
the real cellSens slide (2 channels x 11 focal planes, 16-bit) opens at its middle plane with both
channels (their names, colours and windows in the channel panel); the focus slider switches the
tiles to the frames of the plane chosen; a channel switched off is no longer asked for; a window
set by hand is sent with every tile of its channel."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.governance.passwords import Passwords
from tests.signin import OPERATOR, register_operator
from tests.support import ingest_path, serving, shared_file
from tests.viewer.test_viewer import PASSWORD, _run

VSI = "olympus-vsi/vsi-ets-test-jpg2k.vsi"
PLANES = 11


class Served(NamedTuple):
    url: str
    slide: str  # the slide page's hash


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-viewer-planes-") as tmp:
        settings = Settings.load(Path(tmp) / "lamina-data", env={})
        archive = Archive.open(settings)
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
        result = ingest_path(ingestor, shared_file(VSI).parent)
        assert result.status == "ingested", result.reason
        (row,) = archive.catalog.instances(result.slide_id or "")
        register_operator(archive.catalog)
        Passwords(archive.catalog).set(OPERATOR, PASSWORD, "tests")
        try:
            with serving(create_app(settings, archive)) as port:
                yield Served(
                    f"http://127.0.0.1:{port}",
                    f"#/slide/{row.study_instance_uid}/{row.series_instance_uid}",
                )
        finally:
            archive.close()


def _frame(z: int, c: int) -> str:
    """The frame number of plane z of channel c (one tile per plane), as the JSON's keys."""
    return str(1 + z + c * PLANES)


def test_focus_slider_and_channels_choose_the_frames_asked_for(served: Served, tmp_path: Path) -> None:
    seen = _run(
        "planes.mjs",
        tmp_path,
        url=served.url,
        person=OPERATOR,
        password=PASSWORD,
        slide=served.slide,
        planes=PLANES,
        shots=str(tmp_path / "shot"),
    )

    assert seen["sign_in"]["status"] == 200, seen["sign_in"]
    assert not seen["errors"], seen["errors"]
    # the panel: the middle plane of 11, both channels on, named and coloured, with their windows
    panel = seen["panel"]
    assert (panel["focus"], panel["focus_max"]) == (5, 10) and panel["focus_text"].startswith("Plane 6 of 11")
    names = [channel["name"] for channel in panel["channels"]]
    assert [name.split(" ")[0] for name in names] == ["C405", "C488"], names
    assert all(channel["on"] and channel["colour"] != "rgb(255, 255, 255)" for channel in panel["channels"])
    assert all(0 <= int(channel["low"]) < int(channel["high"]) for channel in panel["channels"]), panel
    # opened: the middle plane's frames of both channels, each with its channel's window
    assert set(seen["opened"]["frames"]) == {_frame(5, 0), _frame(5, 1)}, seen["opened"]
    assert None not in seen["opened"]["windows"]
    # the slider at plane 9: that plane's frames, of both channels, and no other
    assert set(seen["focused"]["frames"]) == {_frame(8, 0), _frame(8, 1)}, seen["focused"]
    assert seen["focused"]["text"].startswith("Plane 9 of 11")
    # the second channel off, then plane 3: only the first channel's frame of plane 3
    assert set(seen["one_channel"]["frames"]) == {_frame(2, 0)}, seen["one_channel"]
    # a window by hand (10 to 110): the first channel's tiles asked again with it
    assert set(seen["windowed"]["frames"]) == {_frame(2, 0)}, seen["windowed"]
    assert seen["windowed"]["windows"] == ["60,100,linear-exact"]
    assert seen["lit"] > 0.001, "the canvas stayed black"
