"""The audit log: append-only, each entry hash-chained to the one before.

``hash = SHA-256(prev_hash | seq | at | actor | action | entity | detail)``; editing, removing,
inserting or reordering an entry breaks the chain at that entry, which :func:`verify` names.
Cutting entries off the end leaves a shorter chain that still verifies: that is found only by
comparing the head with a copy kept elsewhere (an anchor), which a later release adds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from lamina.archive.catalog import tables as t

GENESIS = "0" * 64


def entry_hash(
    prev_hash: str, seq: int, at: dt.datetime, actor: str, action: str, entity: str, detail: str
) -> str:
    text = "|".join([prev_hash, str(seq), at.isoformat(), actor, action, entity, detail])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def append(conn: Connection, actor: str, action: str, entity: str, detail: dict[str, Any]) -> int:
    """Append an entry inside the caller's transaction; return its sequence number."""
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
class AuditCheck:
    entries: int
    first_bad: int | None
    reason: str | None


def verify(conn: Connection) -> AuditCheck:
    prev, expected_seq, count = GENESIS, 1, 0
    for row in conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq)).mappings():
        count += 1
        seq = int(row["seq"])
        at = row["at"] if row["at"].tzinfo else row["at"].replace(tzinfo=dt.UTC)
        if seq != expected_seq:
            return AuditCheck(count, seq, f"entry {expected_seq} is missing")
        if row["prev_hash"] != prev:
            return AuditCheck(count, seq, "does not chain to the entry before it")
        digest = entry_hash(prev, seq, at, row["actor"], row["action"], row["entity"], row["detail"])
        if digest != row["hash"]:
            return AuditCheck(count, seq, "its content was changed")
        prev, expected_seq = digest, seq + 1
    return AuditCheck(count, None, None)
