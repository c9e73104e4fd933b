"""The tamper-evident audit log: verify names the first edited, removed, inserted or reordered
entry; show filters by slide, actor, time and action; ``lamina audit`` exit codes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, delete, insert, select, update

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from tests.support import ingest_path, lamina_env, shared_file

LOG = t.audit_log


@dataclass(frozen=True)
class Built:
    first: str  # slide ingested by alice, then exported by carol
    second: str  # slide ingested by bob


def _build(archive: Archive, ingestor: Ingestor, out: Path) -> Built:
    """Three entries: 1 ingest (alice), 2 ingest (bob), 3 export of the first slide (carol)."""
    first = ingest_path(ingestor, shared_file("aperio/CMU-1-Small-Region.svs"), actor="alice")
    second = ingest_path(ingestor, shared_file("aperio-synthetic/small.svs"), actor="bob")
    assert first.status == second.status == "ingested", (first.reason, second.reason)
    assert first.slide_id and second.slide_id
    archive.export(out, [first.slide_id], actor="carol")
    return Built(first.slide_id, second.slide_id)


@pytest.fixture
def built(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> Built:
    return _build(archive, ingestor, tmp_path / "out")


def _rows(conn: Connection) -> dict[int, dict[str, Any]]:
    return {int(r["seq"]): dict(r) for r in conn.execute(select(LOG).order_by(LOG.c.seq)).mappings()}


def _check(archive: Archive) -> audit.AuditCheck:
    with archive.catalog.engine.connect() as conn:
        return audit.verify(conn)


def _shift_up_from(conn: Connection, seq: int) -> None:
    """Renumber entries ``seq``.. one up, as an attacker making room would (highest first)."""
    for s in sorted(_rows(conn), reverse=True):
        if s >= seq:
            conn.execute(update(LOG).where(LOG.c.seq == s).values(seq=s + 1))


def test_an_untouched_log_verifies_and_names_its_head(archive: Archive, built: Built) -> None:
    check = _check(archive)
    assert check.ok and (check.entries, check.first_bad, check.reason) == (3, None, None)
    with archive.catalog.engine.connect() as conn:
        rows = _rows(conn)
        root = audit.merkle_root(conn)
    assert [r["action"] for r in rows.values()] == ["ingest", "ingest", "export"]
    assert (check.head_seq, check.head_hash) == (3, rows[3]["hash"])
    assert root == audit.merkle_root_of([r["hash"] for r in rows.values()])
    assert len(root) == 64 and root != audit.merkle_root_of([rows[1]["hash"], rows[2]["hash"]])


def test_an_edited_entry_is_named(archive: Archive, built: Built) -> None:
    with archive.catalog.begin() as conn:
        conn.execute(update(LOG).where(LOG.c.seq == 2).values(detail='{"source":"elsewhere"}'))
    check = _check(archive)
    assert check.first_bad == 2 and check.reason and check.reason.startswith("edited")
    assert check.entries == 2


def test_an_edited_entry_whose_hash_was_recomputed_is_named(archive: Archive, built: Built) -> None:
    with archive.catalog.begin() as conn:
        row = _rows(conn)[2]
        at = row["at"].replace(tzinfo=row["at"].tzinfo or dt.UTC).astimezone(dt.UTC)
        forged = audit.entry_hash(
            row["prev_hash"], 2, at, "mallory", row["action"], row["entity"], row["detail"]
        )
        conn.execute(update(LOG).where(LOG.c.seq == 2).values(actor="mallory", hash=forged))
    check = _check(archive)
    assert check.first_bad == 2 and check.reason and check.reason.startswith("rewritten")


def test_a_removed_entry_is_named(archive: Archive, built: Built) -> None:
    with archive.catalog.begin() as conn:
        conn.execute(delete(LOG).where(LOG.c.seq == 2))
    check = _check(archive)
    assert (check.first_bad, check.reason) == (2, "missing: entry 1 is followed by entry 3")


def test_a_removed_entry_hidden_by_renumbering_is_named(archive: Archive, built: Built) -> None:
    with archive.catalog.begin() as conn:
        conn.execute(delete(LOG).where(LOG.c.seq == 2))
        conn.execute(update(LOG).where(LOG.c.seq == 3).values(seq=2))
    check = _check(archive)
    assert check.first_bad == 2 and check.reason and "removed" in check.reason


def test_a_forged_entry_inserted_in_the_middle_is_named(archive: Archive, built: Built) -> None:
    with archive.catalog.begin() as conn:
        prev = _rows(conn)[1]["hash"]
        _shift_up_from(conn, 2)
        at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        detail = json.dumps({"dest": "/tmp/stolen"})
        entity = f"slide/{built.first}"
        digest = audit.entry_hash(prev, 2, at, "mallory", "export", entity, detail)
        conn.execute(
            insert(LOG).values(
                seq=2,
                at=at,
                actor="mallory",
                action="export",
                entity=entity,
                detail=detail,
                prev_hash=prev,
                hash=digest,
            )
        )
    check = _check(archive)
    assert check.first_bad == 2 and check.reason and check.reason.startswith("inserted")
    assert "entry 3 was written after entry 1" in check.reason


def test_swapped_entries_are_named(archive: Archive, built: Built) -> None:
    columns = ("at", "actor", "action", "entity", "detail", "prev_hash", "hash")
    with archive.catalog.begin() as conn:
        rows = _rows(conn)
        for seq, other in ((2, 3), (3, 2)):
            conn.execute(update(LOG).where(LOG.c.seq == seq).values({c: rows[other][c] for c in columns}))
    check = _check(archive)
    assert check.first_bad == 2 and check.reason and check.reason.startswith("out of order")


def test_a_cut_off_tail_is_found_only_against_an_anchor(archive: Archive, built: Built) -> None:
    head = _check(archive)
    assert head.head_seq == 3 and head.head_hash
    with archive.catalog.begin() as conn:
        conn.execute(delete(LOG).where(LOG.c.seq == 3))
    assert _check(archive).ok  # the chain alone cannot tell
    with archive.catalog.engine.connect() as conn:
        check = audit.verify(conn, (head.head_seq, head.head_hash))
        assert audit.verify(conn, (2, _rows(conn)[2]["hash"])).ok
        assert not audit.verify(conn, (2, "0" * 64)).ok
    assert check.first_bad == 3 and check.reason and "before the anchor" in check.reason


def test_show_filters_by_slide_actor_action_and_time(archive: Archive, built: Built) -> None:
    with archive.catalog.engine.connect() as conn:
        everything = audit.entries(conn)
        assert [e.seq for e in everything] == [1, 2, 3]
        assert everything[0].detail["source"].endswith("CMU-1-Small-Region.svs")
        assert [e.seq for e in audit.entries(conn, slide=built.first)] == [1, 3]
        assert [e.seq for e in audit.entries(conn, slide=built.second)] == [2]
        assert audit.entries(conn, slide="nope") == []
        assert [e.seq for e in audit.entries(conn, actor="bob")] == [2]
        assert [e.seq for e in audit.entries(conn, action="export")] == [3]
        assert [e.seq for e in audit.entries(conn, action="ingest", actor="carol")] == []
        assert [e.seq for e in audit.entries(conn, limit=2)] == [2, 3]
    # spread the entries over three days (show does not verify)
    days = {1: dt.datetime(2026, 3, 1, 9), 2: dt.datetime(2026, 3, 2, 9), 3: dt.datetime(2026, 3, 3, 9)}
    with archive.catalog.begin() as conn:
        for seq, at in days.items():
            conn.execute(update(LOG).where(LOG.c.seq == seq).values(at=at.replace(tzinfo=dt.UTC)))
    with archive.catalog.engine.connect() as conn:
        since = audit.entries(conn, since=dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
        assert [e.seq for e in since] == [2, 3]
        assert since[0].at == dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
        until = audit.entries(conn, until=dt.datetime(2026, 3, 2, 9))  # naive = UTC; exclusive
        assert [e.seq for e in until] == [1]
        paris = dt.timezone(dt.timedelta(hours=1))
        window = audit.entries(conn, since=dt.datetime(2026, 3, 2, 10, tzinfo=paris), until=days[3])
        assert [e.seq for e in window] == [2]


# -- the command line --------------------------------------------------------------------------


def _lamina(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = lamina_env(settings)
    return subprocess.run(
        [sys.executable, "-m", "lamina", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_verify_and_show(settings: Settings, tmp_path: Path) -> None:
    archive = Archive.open(settings)
    try:
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
        built = _build(archive, ingestor, tmp_path / "out")
    finally:
        archive.close()

    good = _lamina(settings, "audit", "verify")
    assert good.returncode == 0, good.stderr
    assert "ok: 3 entries checked" in good.stdout
    assert "head: seq 3 hash " in good.stdout and "merkle root: " in good.stdout
    report = json.loads(_lamina(settings, "audit", "verify", "--json").stdout)
    assert report["ok"] and report["entries"] == 3 and report["head"]["seq"] == 3
    anchor = f"3:{report['head']['hash']}"

    shown = _lamina(settings, "audit", "show", "--slide", built.first, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [(e["seq"], e["actor"], e["action"]) for e in json.loads(shown.stdout)] == [
        (1, "alice", "ingest"),
        (3, "carol", "export"),
    ]
    table = _lamina(settings, "audit", "show", "--actor", "bob", "--since", "2000-01-01")
    assert table.returncode == 0 and "bob" in table.stdout and "carol" not in table.stdout
    assert json.loads(_lamina(settings, "audit", "show", "--until", "2000-01-01", "--json").stdout) == []
    bad_date = _lamina(settings, "audit", "show", "--since", "yesterday")
    assert bad_date.returncode == 2 and "not an ISO date" in bad_date.stderr

    archive = Archive.open(settings)
    try:
        with archive.catalog.begin() as conn:
            conn.execute(update(LOG).where(LOG.c.seq == 2).values(actor="mallory"))
    finally:
        archive.close()
    broken = _lamina(settings, "audit", "verify")
    assert broken.returncode == 1, broken.stderr
    assert "entry 2: edited" in broken.stdout and "Traceback" not in broken.stderr
    # a broken log gives no head or root that a user could keep as a trusted anchor
    assert "head: seq" not in broken.stdout and "merkle root:" not in broken.stdout
    failed = json.loads(_lamina(settings, "audit", "verify", "--json").stdout)
    assert failed["first_bad"] == 2 and failed["head"] is None and failed["merkle_root"] is None
    assert _lamina(settings, "audit", "verify", "--anchor", anchor).returncode == 1
