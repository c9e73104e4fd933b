"""An expired slide in the viewer, in headless Chromium (``tests/viewer/expired.mjs``): the
worklist shows it with its thumbnail and an "expired" badge (QIDO-RS InstanceAvailability
UNAVAILABLE); opening it shows the thumbnail its trace kept and the server's one-line 410
explanation instead of the deep zoom."""

from __future__ import annotations

import datetime as dt
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
from lamina.lifecycle.expire import expire_slide
from lamina.sample import write_samples
from tests.signin import OPERATOR, register_operator
from tests.support import serving
from tests.viewer.test_viewer import PASSWORD, _ingest, _one_case, _run


class Served(NamedTuple):
    url: str
    live: SlideRow
    expired: SlideRow


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-viewer-expired-") as tmp:
        root = Path(tmp)
        write_samples(root / "case", ["aperio_svs", "tiled_tiff"], size=(1024, 768))
        _one_case(root / "case" / "manifest.csv")
        settings = Settings.load(root / "lamina-data", env={})
        archive = Archive.open(settings)
        live, expired = sorted(_ingest(archive, root / "case"), key=lambda slide: slide.format)
        register_operator(archive.catalog)
        Passwords(archive.catalog).set(OPERATOR, PASSWORD, "tests")
        done = expire_slide(
            archive.catalog,
            archive.store,
            expired.id,
            rule="care-30d",
            rule_digest="0" * 64,
            report_at=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
            thumbnail_side=512,
            actor="operator:test",
        )
        assert done.status == "expired", done
        try:
            with serving(create_app(settings, archive)) as port:
                yield Served(f"http://127.0.0.1:{port}", live, expired)
        finally:
            archive.close()


def test_the_worklist_flags_an_expired_slide_and_opening_it_explains(served: Served, tmp_path: Path) -> None:
    seen = _run(
        "expired.mjs",
        tmp_path,
        url=served.url,
        person=OPERATOR,
        password=PASSWORD,
        expired=served.expired.series_instance_uid,
    )

    assert seen["sign_in"]["status"] == 200, seen["sign_in"]
    # the case's two slides, the expired one badged, with the thumbnail its trace kept
    assert seen["worklist"]["slides"] == 2 and seen["worklist"]["badges"] == 1, seen["worklist"]
    assert seen["worklist"]["badge"] == "expired" and seen["worklist"]["thumbnail"] > 0
    # opened: its thumbnail and the server's one line, no deep zoom
    opened = seen["opened"]
    assert opened["thumbnail"] > 0 and not opened["deep_zoom"], opened
    assert f"slide {served.expired.id} expired on " in opened["message"]
    assert "only its thumbnail and record are kept" in opened["message"]
    # the one answer of 400 or more is the opening's 410 (and Chromium's console line for it)
    unexpected = [error for error in seen["errors"] if "410" not in error]
    assert unexpected == [], seen["errors"]
    assert any(r["status"] == 410 and r["url"].endswith("/metadata") for r in seen["api"]), seen["api"]
