"""Fixtures: a fresh embedded archive (SQLite + folder) in a temporary folder per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(tmp_path / "lamina-data", env={})


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    opened = Archive.open(settings)
    yield opened
    opened.close()


@pytest.fixture
def ingestor(archive: Archive) -> Ingestor:
    return Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
