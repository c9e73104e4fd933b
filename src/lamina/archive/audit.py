"""The audit log: append-only, each entry hash-chained to the one before.

``hash = SHA-256(prev_hash | seq | at | actor | action | entity | detail)``; editing, removing,
inserting or reordering an entry breaks the chain at that entry, which :func:`verify` names.
Cutting entries off the end leaves a shorter chain that still verifies, and so does a log whose
every hash an attacker recomputed after editing it: both are found only by comparing the head (or
the :func:`merkle_root`) with a copy kept elsewhere, an *anchor*. ``lamina audit verify`` prints
``head: seq N hash H`` and the Merkle root for the operator to keep, and ``--anchor N:H`` checks a
log against one kept earlier.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, insert, literal, or_, select

from lamina.archive.catalog import tables as t
from lamina.archive.catalog.times import utc as _utc

GENESIS = "0" * 64


def entry_hash(
    prev_hash: str, seq: int, at: dt.datetime, actor: str, action: str, entity: str, detail: str
) -> str:
    text = "|".join([prev_hash, str(seq), at.isoformat(), actor, action, entity, detail])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def append(conn: Connection, actor: str, action: str, entity: str, detail: dict[str, Any]) -> int:
    """Append an entry inside the caller's transaction; return its sequence number.

    The caller's transaction must be a write transaction (``Catalog.begin``): on SQLite it holds
    the write lock from its start; on PostgreSQL the table is locked here until it commits, so
    two appenders never chain to the same entry.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
    last = conn.execute(
        select(t.audit_log.c.seq, t.audit_log.c.hash).order_by(t.audit_log.c.seq.desc()).limit(1)
    ).first()
    seq, prev = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    text = json.dumps(detail, sort_keys=True, separators=(",", ":"))
    conn.execute(
        insert(t.audit_log).values(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            entity=entity,
            detail=text,
            prev_hash=prev,
            hash=entry_hash(prev, seq, at, actor, action, entity, text),
        )
    )
    return seq


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: dt.datetime
    actor: str
    action: str
    entity: str
    detail: dict[str, Any]
    hash: str


def _detail(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}


def entries(
    conn: Connection,
    slide: str | None = None,
    actor: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    action: str | None = None,
    limit: int | None = None,
) -> list[AuditEntry]:
    """The entries that match every filter given, oldest first.

    ``slide`` matches the slide's own entries (``slide/<id>``: ingest, export) and those of its
    instances (``instance/<SOP Instance UID>``: store). ``since`` is inclusive, ``until`` exclusive;
    naive datetimes are taken as UTC. ``limit`` keeps the newest ``limit`` of the matches.
    """
    log = t.audit_log
    query: Select[Any] = select(log)
    if slide is not None:
        uids = select(literal("instance/") + t.instances.c.sop_instance_uid).where(
            t.instances.c.slide_id == slide
        )
        query = query.where(or_(log.c.entity == f"slide/{slide}", log.c.entity.in_(uids)))
    if actor is not None:
        query = query.where(log.c.actor == actor)
    if action is not None:
        query = query.where(log.c.action == action)
    if since is not None:
        query = query.where(log.c.at >= _utc(since))
    if until is not None:
        query = query.where(log.c.at < _utc(until))
    if limit is not None:
        query = query.order_by(log.c.seq.desc()).limit(max(limit, 0))
    else:
        query = query.order_by(log.c.seq)
    rows = [
        AuditEntry(
            seq=int(row["seq"]),
            at=_utc(row["at"]),
            actor=row["actor"],
            action=row["action"],
            entity=row["entity"],
            detail=_detail(row["detail"]),
            hash=row["hash"],
        )
        for row in conn.execute(query).mappings()
    ]
    return sorted(rows, key=lambda e: e.seq)


@dataclass(frozen=True)
class AuditCheck:
    """What :func:`verify` found: ``first_bad`` and ``reason`` are None when the chain is whole.

    ``head_seq``/``head_hash`` are the last entry in the log (None when it is empty): the anchor
    an operator keeps to detect later truncation or wholesale rewriting.
    """

    entries: int
    first_bad: int | None
    reason: str | None
    head_seq: int | None = None
    head_hash: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad is None


def _seq_with_hash(conn: Connection, digest: str) -> int | None:
    found = conn.execute(
        select(t.audit_log.c.seq).where(t.audit_log.c.hash == digest).order_by(t.audit_log.c.seq).limit(1)
    ).scalar()
    return None if found is None else int(found)


def _chain_break(conn: Connection, row: Any, seq: int, at: dt.datetime) -> tuple[int, str]:
    """Name the first bad entry when entry ``seq`` does not chain to entry ``seq - 1``."""
    before = seq - 1
    target = _seq_with_hash(conn, str(row["prev_hash"]))
    if target is not None and target < before:
        return (
            target + 1,
            f"inserted: entry {seq} was written after entry {target}, "
            f"so entries {target + 1}..{before} were put in between",
        )
    if target is not None and target >= seq:
        return seq, f"out of order: it was written after entry {target}, which now comes after it"
    own = entry_hash(
        str(row["prev_hash"]), seq, at, row["actor"], row["action"], row["entity"], row["detail"]
    )
    if own == row["hash"] and before >= 1:
        return before, f"rewritten: entry {seq} was written after a different entry {before}"
    return seq, f"does not chain to entry {before}: an entry before it was removed, or it was moved"


def verify(conn: Connection, anchor: tuple[int, str] | None = None) -> AuditCheck:
    """Walk the chain from the first entry; name the first entry that was edited, removed, inserted
    or reordered. With ``anchor`` (a ``(seq, hash)`` kept from an earlier verify), also check that
    entry is still there with that hash, which finds truncation and a wholesale rewrite."""
    last = conn.execute(
        select(t.audit_log.c.seq, t.audit_log.c.hash).order_by(t.audit_log.c.seq.desc()).limit(1)
    ).first()
    head_seq, head_hash = (None, None) if last is None else (int(last[0]), str(last[1]))

    def bad(count: int, seq: int, reason: str) -> AuditCheck:
        return AuditCheck(count, seq, reason, head_seq, head_hash)

    prev, expected_seq, count = GENESIS, 1, 0
    for row in conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq)).mappings():
        count += 1
        seq = int(row["seq"])
        at = _utc(row["at"])
        if seq > expected_seq:
            if expected_seq == 1:
                return bad(count, 1, f"missing: the log starts at entry {seq}")
            return bad(count, expected_seq, f"missing: entry {expected_seq - 1} is followed by entry {seq}")
        if seq < expected_seq:  # only without the primary key
            return bad(count, seq, "duplicate: this sequence number appears twice")
        if row["prev_hash"] != prev:
            first, reason = _chain_break(conn, row, seq, at)
            return bad(count, first, reason)
        digest = entry_hash(prev, seq, at, row["actor"], row["action"], row["entity"], row["detail"])
        if digest != row["hash"]:
            return bad(count, seq, "edited: its content does not match its hash")
        if anchor is not None and seq == anchor[0] and digest != anchor[1]:
            return bad(count, seq, "does not match the anchor: the log was rewritten up to here")
        prev, expected_seq = digest, seq + 1
    if anchor is not None and anchor[0] >= expected_seq:
        return bad(
            count, expected_seq, f"missing: the log ends at entry {expected_seq - 1}, before the anchor"
        )
    return AuditCheck(count, None, None, head_seq, head_hash)


def merkle_root_of(hashes: list[str]) -> str:
    """The Merkle root of entry hashes (hex), RFC 6962 style: leaves ``SHA-256(0x00 | h)``, nodes
    ``SHA-256(0x01 | left | right)``, an odd node carried up unchanged; SHA-256 of nothing when empty."""
    if not hashes:
        return hashlib.sha256(b"").hexdigest()
    level = [hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest() for h in hashes]
    while len(level) > 1:
        paired = [
            hashlib.sha256(b"\x01" + a + b).digest() for a, b in zip(level[::2], level[1::2], strict=False)
        ]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0].hex()


def merkle_root(conn: Connection) -> str:
    """The Merkle root over every entry's stored hash in sequence order: one value to keep (anchor)
    elsewhere. The chain itself cannot reveal a cut-off tail; comparing against a kept root or head can."""
    hashes = conn.execute(select(t.audit_log.c.hash).order_by(t.audit_log.c.seq)).scalars()
    return merkle_root_of([str(h) for h in hashes])
