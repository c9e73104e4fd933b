"""Compare and report in the viewer, in headless Chromium with the mouse (``tests/viewer/compare.mjs``):
a pathologist opens a slide, reads the other slide of its block and the patient's prior slides
(newest first; another lab's slide of the same patient never listed) and the case's "Report"
link (the LIS's URL, opened in a new tab without access to the page), opens a prior from the
panel, ticks three more slides and shows the four side by side; a drag in one pane moves the
others by the same micrometres."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy import update

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.governance.passwords import Passwords
from lamina.governance.registry import Registry
from lamina.lifecycle.reports import ReportForm, record_report
from tests.signin import OPERATOR, TEST_LAB, register_operator
from tests.support import ingest_case, serving
from tests.viewer.test_viewer import OTHER_LAB, PASSWORD, _run

PATIENT = "CMPAT0001"
CASE = "A26-00400"
REPORT_URL = "https://lis.example.org/cr-acp/A26-00400.pdf"
#: name: (lab, accession, specimen, stain, study date)
SLIDES = {
    "he": (TEST_LAB, CASE, f"{CASE}-A1", "HE", "20260301"),
    "pas": (TEST_LAB, CASE, f"{CASE}-A1", "PAS", "20260301"),
    "prior_2025": (TEST_LAB, "A25-00060", "A25-00060-A1", "HE", "20250610"),
    "prior_2024": (TEST_LAB, "A24-00110", "A24-00110-A1", "HE", "20240115"),
    "lab_b": (OTHER_LAB, "B25-00009", "B25-00009-A1", "HE", "20251201"),
}


class Served(NamedTuple):
    url: str
    slides: dict[str, tuple[str, str]]  # name: (study, series)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-viewer-compare-") as tmp:
        root = Path(tmp)
        settings = Settings.load(root / "lamina-data", env={})
        archive = Archive.open(settings)
        try:
            register_operator(archive.catalog)
            Registry(archive.catalog).add_tenant(OTHER_LAB, "Anatomie pathologique B (tests)", "tests")
            Passwords(archive.catalog).set(OPERATOR, PASSWORD, "tests")
            ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
            slides: dict[str, tuple[str, str]] = {}
            for seed, (name, (lab, accession, specimen, stain, date)) in enumerate(SLIDES.items(), 1):
                slide_id = ingest_case(
                    ingestor, root / name, seed=seed, tenant=lab, size=(1024, 768),
                    patient_id=PATIENT, accession_number=accession, specimen_id=specimen, stain=stain,
                )  # fmt: skip
                row = archive.catalog.slide(slide_id)
                assert row is not None
                slides[name] = (row.study_instance_uid, row.series_instance_uid)
                with archive.catalog.begin() as conn:
                    conn.execute(
                        update(t.studies)
                        .where(t.studies.c.study_instance_uid == row.study_instance_uid)
                        .values(study_date=date)
                    )
            # the LIS's final report of the case, with its URL (as POST /fhir/DiagnosticReport keeps it)
            record_report(
                archive.catalog, TEST_LAB, CASE, "final", dt.datetime.now(dt.UTC), source="fhir", actor="lis",
                form=ReportForm(REPORT_URL, "application/pdf", "CR-ACP"),
            )  # fmt: skip
            with serving(create_app(settings, archive)) as port:
                yield Served(f"http://127.0.0.1:{port}", slides)
        finally:
            archive.close()


def test_compare_with_priors_four_side_by_side_and_the_report(served: Served, tmp_path: Path) -> None:
    slides = served.slides
    series = {name: found[1] for name, found in slides.items()}
    study, first = slides["he"]
    # Act
    seen = _run(
        "compare.mjs", tmp_path, url=served.url, person=OPERATOR, password=PASSWORD, study=study, series=first
    )
    # Assert
    assert seen["sign_in"]["status"] == 200, seen["sign_in"]
    # the block's other slide, the priors newest first; lab B's slide of the same patient nowhere
    assert seen["first"]["same_block"] == [series["pas"]], seen["first"]
    assert seen["first"]["priors"] == [series["prior_2025"], series["prior_2024"]], seen["first"]
    assert seen["first"]["report"] == {
        "href": REPORT_URL, "target": "_blank", "rel": "noopener noreferrer", "text": "Report"
    }  # fmt: skip
    assert not [url for url in seen["urls"] if series["lab_b"] in url]
    # the prior opened from the panel; its own priors: the 2026 case's two slides, then 2024
    prior = seen["prior"]
    assert prior["hash"].endswith(f"/{series['prior_2025']}"), prior
    assert sorted(prior["priors"][:2]) == sorted([series["he"], series["pas"]]), prior
    assert prior["priors"][2:] == [series["prior_2024"]], prior
    assert prior["report"] is None  # that case's report gave no URL
    assert prior["button"] == "Side by side (4)"
    # four panes: the prior and the three ticked, the report beside the two slides of its case
    compare = seen["compare"]
    assert compare["panes"] == 4
    shown = compare["hash"].removeprefix("#/compare/").split("/")[1::2]
    assert shown == [series["prior_2025"], *prior["priors"]], compare["hash"]
    assert compare["reports"] == [None, REPORT_URL, REPORT_URL, None], compare["reports"]
    assert compare["readouts"] == ["10×"] * 4, compare["readouts"]
    # the drag in the third pane moved every pane by the same micrometres
    moves = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(compare["after"], compare["before"], strict=True)]
    leader = moves[2]
    assert abs(leader[0]) > 20 and abs(leader[1]) > 10, (moves, compare)
    for dx, dy in moves:
        assert dx == pytest.approx(leader[0], abs=0.5) and dy == pytest.approx(leader[1], abs=0.5), moves
    # the same slides' size: linked from the whole slide, they show the very same place
    for centre in compare["after"]:
        assert centre == pytest.approx(compare["after"][2], abs=0.5), compare["after"]
    assert [e for e in seen["errors"] if "favicon" not in e] == [], seen["errors"]
