"""The exchange's shared fixture: a site and an archive (tests/exchange/test_push.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.archive.archive import Archive
from lamina.governance.issuer import LocalIssuer
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.lifecycle.marks import Interest, Marks, Target
from tests.backends import Backend
from tests.exchange.test_push import LAB, OTHER, _planted_case, _settings


@pytest.fixture
def world(tmp_path: Path, backend: Backend) -> Iterator[dict[str, object]]:
    """The site (lab LAB, two slides of one patient flagged of interest) and the archive (labs
    LAB and OTHER, a sender account in each, with its token), each on its own catalog and store
    of the test's backend."""
    site_settings = _settings(tmp_path / "site", backend.env("site"))
    site = Archive.open(site_settings)
    try:
        Registry(site.catalog).add_tenant(LAB, "Anatomie pathologique, site", "tests")
        slides = [_planted_case(site, tmp_path / f"in{seed}", seed) for seed in (3, 4)]
        for slide_id in slides:
            Marks(site.catalog).flag(Target(slide=slide_id), Interest.RESEARCH, "a rare case", "patho")
    finally:
        site.close()
    archive_settings = _settings(tmp_path / "archive", backend.env("archive"), role="archive")
    archive = Archive.open(archive_settings)
    try:
        registry = Registry(archive.catalog)
        tokens = {}
        for lab, person in ((LAB, "sender-a"), (OTHER, "sender-b")):
            registry.add_tenant(lab, f"lab {lab}", "tests")
            registry.add_person(person, lab, (Role.TECHNICIAN,), "", "tests")
            tokens[lab] = LocalIssuer.open(archive_settings.home).issue(person, 3600)
    finally:
        archive.close()
    yield {"site": site_settings, "archive": archive_settings, "slides": slides, "tokens": tokens}
