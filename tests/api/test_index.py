"""The instance index (``lamina.api.dicomweb.index``): a cached instance due for its confirmation
in the catalog is served at once while one query per series confirms it in the thread pool; a
slide deleted by another process stops being served within ``revalidate_s`` plus one query; a
catalog that fails leaves the cached instances served for a bounded time, then 503.

Each test runs a real server on a real archive (both backends); the deletions are made by another
``Archive`` on the same catalog and store, as another process would.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, event, text

from lamina.api.app import create_app
from lamina.api.dicomweb import fastpath
from lamina.api.dicomweb.index import InstanceIndex
from lamina.archive.archive import Archive
from lamina.archive.audit import entries
from lamina.archive.catalog import InstanceRow
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.sample import write_samples
from tests.signin import auth_headers, signed
from tests.support import ingest_path, serving

STORED = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}


def _fast(answer: httpx.Response) -> bool:
    """Whether the fast path gave this answer (its boundary is fixed for the process)."""
    assert answer.status_code == 200, answer.text
    return f"boundary={fastpath._BOUNDARY}" in answer.headers["content-type"]


def _url(port: int, row: InstanceRow, frame: int = 1) -> str:
    return (
        f"http://127.0.0.1:{port}/dicomweb/studies/{row.study_instance_uid}/series/"
        f"{row.series_instance_uid}/instances/{row.sop_instance_uid}/frames/{frame}"
    )


def _wait(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def slide(archive: Archive, tmp_path: Path) -> tuple[str, list[InstanceRow]]:
    """A slide stored in the test's archive: (its id, its pyramid's instances, level 0 first)."""
    write_samples(tmp_path / "src", ["aperio_svs"], size=(1024, 768), seed=9)
    result = ingest_path(Ingestor(archive.catalog, archive.store), tmp_path / "src" / "aperio_svs.svs")
    assert result.ok, result.reason
    rows = [row for row in archive.catalog.instances(result.slide_id or "") if row.level is not None]
    rows.sort(key=lambda row: row.level or 0)
    assert len(rows) >= 2 and len({row.series_instance_uid for row in rows}) == 1
    return result.slide_id or "", rows


@pytest.fixture
def served(archive: Archive) -> Iterator[tuple[int, InstanceIndex]]:
    """A server on the test's archive: (its port, its instance index)."""
    app = create_app(archive.settings.with_(workers=0, verify_cron=None), archive)
    with serving(app) as port:
        yield port, app.state.index


def _catalog_statements(archive: Archive) -> list[str]:
    """The SQL statements the archive's catalog runs from now on that read the instances table."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if "instances" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(archive.catalog.engine, "before_cursor_execute", record)
    return seen


def test_a_due_instance_is_served_at_once_and_its_series_confirmed_in_one_query(
    archive: Archive, slide: tuple[str, list[InstanceRow]], served: tuple[int, InstanceIndex]
) -> None:
    _, rows = slide
    port, index = served
    for row in rows:  # each instance indexed by the routed handler
        assert signed.get(_url(port, row), headers=STORED).status_code == 200
    cached = [
        index.get(row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid) for row in rows
    ]
    due = time.monotonic() - index.revalidate_s - 1
    for instance in cached:
        instance.checked_at = due  # as if 6 s had passed
    statements = _catalog_statements(archive)

    answers: list[httpx.Response] = []
    with httpx.Client(headers=auth_headers(_url(port, rows[0]))) as client:
        threads = [
            threading.Thread(
                target=lambda: answers.append(client.get(_url(port, rows[0], 2), headers=STORED))
            )
            for _ in range(16)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    _wait(lambda: all(instance.checked_at > due for instance in cached), "the series was not confirmed")

    assert len(answers) == 16 and all(_fast(answer) for answer in answers)  # none waited on the catalog
    assert index.confirmations == 1
    assert len(statements) == 1, statements  # every cached instance of the series in one query
    assert all(time.monotonic() - instance.checked_at < index.revalidate_s for instance in cached)


def test_a_slide_deleted_by_another_process_stops_being_served(
    archive: Archive, slide: tuple[str, list[InstanceRow]], served: tuple[int, InstanceIndex]
) -> None:
    slide_id, rows = slide
    port, index = served
    index.revalidate_s = 0.3
    url = _url(port, rows[0])
    assert signed.get(url, headers=STORED).status_code == 200
    assert _fast(signed.get(url, headers=STORED))
    other = Archive.open(archive.settings)  # another process's view of the same archive
    try:
        other.delete_slide(slide_id, "lamina-test", "scanned twice")
        deleted = time.monotonic()
        statuses: list[int] = []
        while time.monotonic() - deleted < index.revalidate_s + 3.0:
            statuses.append(signed.get(url, headers=STORED).status_code)
            if statuses[-1] == 404:
                gone_after = time.monotonic() - deleted
                break
            time.sleep(0.02)
        statuses += [signed.get(url, headers=STORED).status_code for _ in range(5)]
    finally:
        other.close()

    assert statuses[-1] == 404, f"still served {time.monotonic() - deleted:.1f} s after the deletion"
    first = statuses.index(404)
    assert set(statuses[:first]) <= {200} and set(statuses[first:]) == {404}  # never served again
    # within revalidate_s plus one query (and this machine's scheduling)
    assert gone_after < index.revalidate_s + 2.0
    with archive.catalog.engine.connect() as conn:
        assert "damaged" not in {entry.action for entry in entries(conn)}


def _rename_instances(settings: Settings, old: str, new: str) -> None:
    """Rename the catalog's instances table from another connection: every query of it fails."""
    engine = create_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
    finally:
        engine.dispose()


def test_a_failing_catalog_leaves_cached_instances_served_for_a_bounded_time(
    archive: Archive,
    slide: tuple[str, list[InstanceRow]],
    served: tuple[int, InstanceIndex],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, rows = slide
    port, index = served
    index.revalidate_s, index.stale_s = 0.2, 2.0
    url = _url(port, rows[0])
    assert signed.get(url, headers=STORED).status_code == 200
    cached = index.get(rows[0].study_instance_uid, rows[0].series_instance_uid, rows[0].sop_instance_uid)
    caplog.set_level(logging.WARNING, logger="lamina.api.index")

    _rename_instances(archive.settings, "instances", "instances_away")  # the catalog fails
    try:
        broken = cached.checked_at
        served_while_failing = []
        while time.monotonic() - broken < index.revalidate_s + index.stale_s - 0.5:
            served_while_failing.append(_fast(signed.get(url, headers=STORED)))
            time.sleep(0.05)
        _wait(lambda: time.monotonic() - broken > index.revalidate_s + index.stale_s, "time", 5)
        refused = signed.get(url, headers=STORED)
    finally:
        _rename_instances(archive.settings, "instances_away", "instances")
    again = signed.get(url, headers=STORED)

    assert served_while_failing and all(served_while_failing)  # from the cache, on the loop
    assert cached.checked_at == broken  # never confirmed while the catalog failed
    assert index.confirmations == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "lamina.api.index"]
    assert warnings and "could not confirm 1 cached instance(s)" in warnings[0]
    assert len(warnings) == 1  # logged once per 10 s, not for every retry
    assert refused.status_code == 503, refused.text  # too long unconfirmed: the catalog is asked
    assert "catalog cannot be read" in refused.json()["detail"]
    assert again.status_code == 200  # the catalog back: indexed again
