"""Fixtures: a fresh archive per test, on each catalog backend.

``archive`` runs every test that uses it twice: on the embedded SQLite catalog and on PostgreSQL
(a database created for the test and dropped after it). PostgreSQL comes from
``LAMINA_TEST_POSTGRES_URL`` or the server on 127.0.0.1:5432; where none answers those runs are
skipped with a message saying how to enable them, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from tests.s3server import S3Server, start_s3_server
from tests.support import need

POSTGRES_URL = os.environ.get(
    "LAMINA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_reachable() -> bool:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for the embedded SQLite catalog; else the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    need(
        _postgres_reachable(),
        f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string(hide_password=True)} "
        "(set LAMINA_TEST_POSTGRES_URL to a server where databases may be created)",
    )
    name = f"lamina_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    env = {"LAMINA_DATABASE_URL": database_url} if database_url else {}
    return Settings.load(tmp_path / "lamina-data", env=env)


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    opened = Archive.open(settings)
    yield opened
    opened.close()


@pytest.fixture
def ingestor(archive: Archive) -> Ingestor:
    return Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS on loopback for the whole session (fails under CI when ``weed`` is missing)."""
    yield from start_s3_server(tmp_path_factory)
