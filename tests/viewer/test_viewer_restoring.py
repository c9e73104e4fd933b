"""A slide on the cold tier in the viewer, in headless Chromium (``tests/viewer/restoring.mjs``):
its link opened, the viewer's opening (the series' metadata) answers 202 with ``Retry-After``;
the page says "Restoring the slide…" with the server's line and when it tries again, asks again
after that delay (``readyFetch`` in ``dicomweb.js``), and once the restore is done (the cold
tier's delay, a thread of the server on the embedded default) the slide opens and its tiles are
drawn, with no error on the way."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.archive.catalog import SlideRow
from lamina.config import Settings
from lamina.governance.passwords import Passwords
from lamina.lifecycle.rules import Tier
from lamina.lifecycle.tiers import TierMover
from lamina.sample import write_samples
from tests.signin import OPERATOR, register_operator
from tests.support import serving
from tests.viewer.test_viewer import PASSWORD, _ingest, _run

#: The cold tier's restore delay
DELAY_S = 2


class Served(NamedTuple):
    url: str
    archive: Archive
    cold: SlideRow


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-viewer-restoring-") as tmp:
        root = Path(tmp)
        write_samples(root / "in", ["tiled_tiff"], size=(1024, 768), seed=3)
        env = {"LAMINA_COLD_URL": str(root / "cold"), "LAMINA_COLD_RESTORE_DELAY_S": str(DELAY_S)}
        settings = Settings.load(root / "lamina-data", env=env)
        archive = Archive.open(settings)
        (slide,) = _ingest(archive, root / "in")
        register_operator(archive.catalog)
        Passwords(archive.catalog).set(OPERATOR, PASSWORD, "tests")
        mover = TierMover.for_archive(archive)
        assert mover is not None
        assert mover.move_slide(slide.id, Tier.COLD, "lifecycle").status == "moved"
        try:
            with serving(create_app(settings, archive)) as port:
                yield Served(f"http://127.0.0.1:{port}", archive, slide)
        finally:
            archive.close()


def test_a_cold_slide_says_restoring_then_opens(served: Served, tmp_path: Path) -> None:
    cold = served.cold

    seen = _run(
        "restoring.mjs",
        tmp_path,
        url=served.url,
        person=OPERATOR,
        password=PASSWORD,
        study=cold.study_instance_uid,
        series=cold.series_instance_uid,
    )

    assert seen["sign_in"]["status"] == 200, seen["sign_in"]
    # while it is restored: the server's line and the delay, no deep zoom yet
    restoring = seen["restoring"]
    assert not restoring["deep_zoom"], restoring
    assert f"slide {cold.id} is on the cold tier and is being restored" in restoring["message"]
    waited = re.search(r"\(trying again in (\d+) s\)$", restoring["message"])
    assert waited and DELAY_S <= int(waited[1]) <= DELAY_S + 1, restoring  # Retry-After
    # then the slide, drawn, the message gone
    opened = seen["opened"]
    assert opened["width"] > 0 and opened["distinct"] > 50 and opened["message"] is None, opened
    assert served.archive.catalog.slide(cold.id).tier == "hot"  # type: ignore[union-attr]
    # the opening: 202 (asked once more after Retry-After while the copy ran, or not), then 200
    openings = [
        r["status"] for r in seen["api"] if r["url"].endswith(f"/{cold.series_instance_uid}/metadata")
    ]
    assert openings[0] == 202 and openings[-1] == 200 and set(openings[:-1]) == {202}, openings
    # no answer of 400 or more, no console or page error (a 202 is neither)
    assert seen["errors"] == [], seen["errors"]
