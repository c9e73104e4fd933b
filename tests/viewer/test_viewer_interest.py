"""The open slide's lifecycle panel in the viewer, in headless Chromium (``tests/viewer/interest.mjs``):
a pathologist of the slide's lab reads that its case has no final report yet, flags it as a
teaching slide from the keyboard, reads it back, sees the server's one line when a change is
refused, and unflags it; a technician of the lab reads the state and is offered no change; a
person who administers the lab (and reads its slides) holds the slide and releases it. The audit
log has every change with its person as actor."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from lamina.api.app import create_app
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import SlideRow
from lamina.config import Settings
from lamina.governance.passwords import Passwords
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.sample import write_samples
from tests.signin import OPERATOR, TEST_LAB, register_operator
from tests.support import serving
from tests.viewer.test_viewer import PASSWORD, _ingest, _run

PATHOLOGIST = "patho-interest"
TECHNICIAN = "tech-interest"


class Served(NamedTuple):
    url: str
    archive: Archive
    slide: SlideRow


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-viewer-interest-") as tmp:
        root = Path(tmp)
        write_samples(root / "case", ["tiled_tiff"], size=(1024, 768))
        settings = Settings.load(root / "lamina-data", env={})
        archive = Archive.open(settings)
        (slide,) = _ingest(archive, root / "case")
        register_operator(archive.catalog)  # the tests' lab adopts the slide; its operator holds every role
        registry, passwords = Registry(archive.catalog), Passwords(archive.catalog)
        registry.add_person(PATHOLOGIST, TEST_LAB, [Role.PATHOLOGIST], "Pathologist", "tests")
        registry.add_person(TECHNICIAN, TEST_LAB, [Role.TECHNICIAN], "Technician", "tests")
        for person in (PATHOLOGIST, TECHNICIAN, OPERATOR):
            passwords.set(person, PASSWORD, "tests")
        try:
            with serving(create_app(settings, archive)) as port:
                yield Served(f"http://127.0.0.1:{port}", archive, slide)
        finally:
            archive.close()


def _audited(archive: Archive, actor: str, slide_id: str) -> list[str]:
    """The changes audited with ``actor`` on the slide, oldest first (its openings, ``read``, left out)."""
    with archive.catalog.engine.connect() as conn:
        entries = audit.entries(conn, actor=actor)
    return [e.action for e in entries if e.entity == f"slide/{slide_id}" and e.action != "read"]


def test_a_pathologist_flags_and_unflags_a_slide_in_the_viewer_and_others_see_what_they_may(
    served: Served, tmp_path: Path
) -> None:
    slide = served.slide
    seen = _run(
        "interest.mjs",
        tmp_path,
        url=served.url,
        password=PASSWORD,
        study=slide.study_instance_uid,
        series=slide.series_instance_uid,
        pathologist=PATHOLOGIST,
        technician=TECHNICIAN,
        operator=OPERATOR,
    )

    patho = seen["pathologist"]
    assert patho["sign_in"]["status"] == 200, patho["sign_in"]
    # the panel found lamina's slide id from the series, and says what is kept and why
    opened = patho["opened"]
    assert opened["slide"] == slide.id, opened
    assert opened["lines"]["clock"] == "No final report yet: kept (never expired by age)", opened
    assert opened["lines"]["tier"].startswith("Hot storage"), opened
    assert opened["changes"] == ["flag"], opened  # a pathologist flags; holds are the lab admin's
    # flagged from the keyboard: the panel says so, and offers to unflag
    flagged = patho["flagged"]
    assert flagged["status"] == 200, flagged
    interest = flagged["lines"]["interest"]
    assert interest.startswith(f"Slide of interest: teaching — 'a fine sarcoma' ({PATHOLOGIST}, "), flagged
    assert flagged["changes"] == ["unflag"] and "teaching" in flagged["notice"], flagged
    # a refused change: the server's one line, and the flag stays
    refused = patho["refused"]
    assert refused["status"] == 400 and "reason" in refused["error"] and "1000 characters" in refused["error"]
    assert "interest" in refused["lines"], refused
    unflagged = patho["unflagged"]
    assert unflagged["status"] == 200 and "interest" not in unflagged["lines"], unflagged
    assert unflagged["changes"] == ["flag"], unflagged
    assert _audited(served.archive, PATHOLOGIST, slide.id) == ["interest-flag", "interest-unflag"]

    # a technician reads the state, and is offered no change
    tech = seen["technician"]
    assert tech["sign_in"]["status"] == 200, tech["sign_in"]
    assert tech["opened"]["lines"]["clock"].startswith("No final report yet"), tech
    assert tech["opened"]["changes"] == [], tech
    assert _audited(served.archive, TECHNICIAN, slide.id) == []

    # the lab's admin (a pathologist there too) holds it and releases it
    operator = seen["operator"]
    assert operator["opened"]["changes"] == ["flag", "hold"], operator["opened"]
    held = operator["held"]
    assert held["status"] == 201 and held["lines"]["hold"].startswith("Under legal hold since "), held
    assert "'proceedings 2026/117' (test-operator)" in held["lines"]["hold"]
    assert held["changes"] == ["flag", "hold", "release"], held
    released = operator["released"]
    assert released["status"] == 200 and "hold" not in released["lines"], released
    assert _audited(served.archive, OPERATOR, slide.id) == ["hold", "hold-release"]

    # the one answer of 400 or more is the refused unflag (and Chromium's console line for it)
    unexpected = [error for error in seen["errors"] if "400" not in error]
    assert unexpected == [], seen["errors"]

    # the words for the other states, shaped as the API's
    words = {name: dict(lines) for name, lines in seen["words"].items()}
    assert words["kept"]["clock"] == (
        "Care slide — kept until 2027-01-12 (30 days after the final report of 2026-12-13, rule 'default')"
    )
    assert words["due"]["clock"].startswith("Care slide — retention ended on 2027-01-12 (30 days after ")
    assert words["due"]["clock"].endswith(": expired at the next lifecycle run")
    assert words["interest"] == {
        "interest": "Slide of interest: teaching — 'a fine sarcoma' (p, 2027-01-02): never expired",
        "clock": "Final report of 2026-12-13",
        "tier": "Hot storage: opens at once",
    }
    assert words["held_cold"]["hold"] == "Under legal hold since 2027-01-03 — 'proceedings' (a)"
    assert words["held_cold"]["tier"] == (
        "Cold storage: restored when opened (a minute or more): back to hot storage at the next lifecycle run"
    )
    assert words["review"]["clock"] == "No final report yet: to review (rule 'biopsies')"
    assert words["expired"] == {
        "expired": "Expired on 2027-01-13 (rule 'default'): only its thumbnail and record are kept"
    }
