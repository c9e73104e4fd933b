"""The catalog's searches (QIDO) and the lifecycle selection reach the large tables through
indexes, on PostgreSQL as on SQLite.

PostgreSQL is asked for its plan with sequential scans disabled: where an index can serve the
query the planner then uses it, so a remaining ``Seq Scan`` on instances or slides means that no
index can, which at 10 million instances would read the whole table.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import event

from lamina.archive.archive import Archive
from lamina.archive.catalog import lifecycle, search
from lamina.archive.catalog.search import Criterion, Range, Single, Wildcard
from lamina.archive.ingest import Ingestor
from tests.support import ingest_path, shared_file

LARGE = ("instances", "slides")


def _plans(archive: Archive, statements: list[tuple[str, Any]]) -> list[list[str]]:
    engine = archive.catalog.engine
    plans = []
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")
            for statement, parameters in statements:
                plans.append([row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)])
        else:
            for statement, parameters in statements:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                plans.append([row[3] for row in rows])
    return plans


def test_qido_queries_use_indexes(archive: Archive, ingestor: Ingestor) -> None:
    result = ingest_path(ingestor, shared_file("aperio/CMU-1-Small-Region.svs"))
    slide = archive.catalog.slide(result.slide_id or "")
    assert slide is not None
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, parameters))

    engine = archive.catalog.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        search.find_studies(engine, [Criterion("StudyDate", Range("19000101", None))], 10, 0)
        search.find_studies(engine, [Criterion("PatientName", Wildcard("DUP*"))], 10, 0)
        search.find_series(engine, [Criterion("StudyInstanceUID", Single(slide.study_instance_uid))], 10, 0)
        search.find_instances(
            engine, [Criterion("SeriesInstanceUID", Single(slide.series_instance_uid))], 10, 0
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements
    for (statement, _), plan in zip(statements, _plans(archive, statements), strict=True):
        text = "\n".join(plan)
        scans = re.findall(r"(?:Seq Scan on|SCAN) (\w+)", text)
        assert not [table for table in scans if table in LARGE], (statement, text)


def test_lifecycle_selection_uses_an_index(archive: Archive) -> None:
    start = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=7)
    after = lifecycle.ExpiringSlide("0123456789ab", "", start + dt.timedelta(days=1))
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):  # not SQLite's BEGIN
            statements.append((statement, parameters))

    engine = archive.catalog.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        lifecycle.expiring(archive.catalog, start, end, limit=1000)  # the first batch of the week
        lifecycle.expiring(archive.catalog, start, end, limit=1000, after=after)  # a later one
        lifecycle.expiring(archive.catalog, start, end, limit=None)  # the whole week
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 3
    for (statement, _), plan in zip(statements, _plans(archive, statements), strict=True):
        text = "\n".join(plan)
        scans = re.findall(r"(?:Seq Scan on|SCAN) (\w+)", text)
        assert not [table for table in scans if table in LARGE], (statement, text)
        assert "ix_slides_retain_until" in text, (statement, text)
