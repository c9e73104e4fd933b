"""The modalities kept on a study's row follow its series, also when two transactions add series
to one study at the same time (catalog/modalities.py)."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import insert, select

from lamina.archive.archive import Archive
from lamina.archive.catalog import modalities
from lamina.archive.catalog import tables as t

STUDY = "2.25.100"


def _add_series(archive: Archive, uid: str, modality: str, barrier: threading.Barrier | None) -> None:
    now = dt.datetime.now(dt.UTC)
    with archive.catalog.begin() as conn:
        conn.execute(
            insert(t.series).values(
                series_instance_uid=uid, study_instance_uid=STUDY, modality=modality, created_at=now
            )
        )
        if barrier is not None:  # both series are inserted before either transaction refreshes
            barrier.wait(timeout=30)
        modalities.refresh(conn, STUDY)


def test_two_transactions_adding_series_to_one_study_both_count(archive: Archive) -> None:
    with archive.catalog.begin() as conn:
        conn.execute(insert(t.studies).values(study_instance_uid=STUDY, created_at=dt.datetime.now(dt.UTC)))
    # SQLite serialises writers (no overlap to provoke); PostgreSQL runs both at once
    postgresql = archive.catalog.engine.dialect.name == "postgresql"
    barrier = threading.Barrier(2) if postgresql else None
    errors: list[BaseException] = []

    def add(uid: str, modality: str) -> None:
        try:
            _add_series(archive, uid, modality, barrier)
        except BaseException as exc:  # a deadlock or a lost update shows here
            errors.append(exc)

    threads = [threading.Thread(target=add, args=args) for args in (("2.25.101", "SM"), ("2.25.102", "ANN"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with archive.catalog.engine.connect() as conn:
        found = conn.execute(select(t.studies.c.modalities).where(t.studies.c.study_instance_uid == STUDY))
        assert found.scalar_one() == "\\ANN\\SM\\"


def test_the_value_and_its_match() -> None:
    assert modalities.joined(["SM", "ANN", "SM", ""]) == "\\ANN\\SM\\"
    assert modalities.joined([]) == ""
    # a modality is matched whole, and LIKE's wild cards in a value are taken literally
    pattern = str(modalities.has("S_").compile(compile_kwargs={"literal_binds": True}))
    assert "'%\\S!_\\%'" in pattern and "ESCAPE '!'" in pattern, pattern
