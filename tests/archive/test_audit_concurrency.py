"""Appenders racing on the audit log (a server answering viewers in parallel) never fork it."""

from __future__ import annotations

import threading

from sqlalchemy import select

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t


def test_parallel_appends_keep_one_chain(archive: Archive) -> None:
    errors: list[str] = []

    def append_many(worker: int) -> None:
        for index in range(25):
            try:
                with archive.catalog.begin() as conn:
                    # a read first, as real transactions do before they append
                    conn.execute(select(t.audit_log.c.seq).limit(1)).first()
                    audit.append(conn, f"worker-{worker}", "read", "slide/x", {"i": index})
            except Exception as exc:  # any failure is the defect under test
                errors.append(repr(exc))

    threads = [threading.Thread(target=append_many, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with archive.catalog.begin() as conn:
        check = audit.verify(conn)
    assert check.first_bad is None
    assert check.entries == 200
