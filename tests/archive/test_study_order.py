"""A page of studies, newest first with undated studies last (QIDO's order), is read from an
index in that order on both databases: no sort of every matching study (at 1 M studies the sort
took 740 ms, the index scan 22 ms; benchmarks/catalog.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from lamina.archive.archive import Archive
from lamina.archive.catalog import search
from lamina.archive.catalog.search import Criterion, Single


def test_a_page_of_studies_is_read_in_order_from_the_index(archive: Archive) -> None:
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    engine = archive.catalog.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        search.find_studies(engine, [], 50, 0)  # the worklist's first page
        search.find_studies(engine, [Criterion("ModalitiesInStudy", Single("SM"))], 50, 100)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    pages = [(s, p) for s, p in statements if "ORDER BY studies.study_date" in s]
    assert len(pages) == 2, statements
    for statement, parameters in pages:
        text = _plan(archive, statement, parameters)
        if engine.dialect.name == "postgresql":
            assert "ix_studies_date_pg" in text and "Sort" not in text, (statement, text)
            # the rows a deep page skips are index entries only, not rows of studies or patients
            assert "Index Only Scan Backward using ix_studies_date_pg" in text, (statement, text)
            assert "patients" not in text, (statement, text)
        else:
            assert "ix_studies_date" in text and "TEMP B-TREE FOR ORDER BY" not in text, (statement, text)
            assert "COVERING INDEX ix_studies_date" in text, (statement, text)
        # ModalitiesInStudy is tested on the index entry: no probe of the series of each study
        assert "series" not in text, (statement, text)


def _plan(archive: Archive, statement: str, parameters: Any) -> str:
    """The plan, with sorts (and sequential scans) made as costly as PostgreSQL can: where an index
    gives the order the planner then uses it, so a remaining Sort means none can."""
    engine = archive.catalog.engine
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_sort = off")
            conn.exec_driver_sql("SET enable_seqscan = off")
            return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        return "\n".join(str(row[3]) for row in rows)
