"""What the rules look at, read from the catalog a batch at a time.

:func:`slide_facts` walks the slides not yet expired in id order, ``batch`` at a time (a keyset
page on the primary key: the same cost wherever it is), and gives each slide's
:class:`~lamina.lifecycle.evaluate.SlideFacts`: its lab, scan date, specimen type, organ,
diagnosis code, stain, the patient's birth date and the study date (for pediatric), the clock of
its case (the latest validated report of its accession number in its lab), its last access and
tier, its flag of interest and whether a hold is in force. Memory stays flat: one batch at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection

from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.lifecycle.evaluate import SlideFacts
from lamina.lifecycle.reports import clock_of
from lamina.lifecycle.rules import Tier

__all__ = ["FactsRow", "slide_facts"]

_SOURCE = t.slides.join(t.studies, t.slides.c.study_instance_uid == t.studies.c.study_instance_uid).outerjoin(
    t.patients, t.studies.c.patient_pk == t.patients.c.pk
)
_COLUMNS = (
    t.slides.c.id,
    t.slides.c.tenant,
    t.slides.c.created_at,
    t.slides.c.specimen_type,
    t.slides.c.organ,
    t.slides.c.diagnosis_code,
    t.slides.c.stain,
    t.slides.c.tier,
    t.slides.c.last_access_at,
    t.slides.c.bytes,
    t.studies.c.accession_number,
    t.studies.c.study_date,
    t.patients.c.birth_date,
)


@dataclass(frozen=True)
class FactsRow:
    """A slide's facts, with what the plan counts (its bytes) and its case's accession number."""

    facts: SlideFacts
    bytes: int
    accession_number: str | None


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _date(value: str | None) -> dt.date | None:
    """A DICOM DA (YYYYMMDD), or None when absent or not a date."""
    if not value or len(value) != 8 or not value.isdigit():
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def _batch(conn: Connection, after: str | None, size: int, tenant: str | None) -> list[FactsRow]:
    query = select(*_COLUMNS).select_from(_SOURCE).where(t.slides.c.expired_at.is_(None))
    if after is not None:
        query = query.where(t.slides.c.id > after)
    if tenant is not None:
        query = query.where(t.slides.c.tenant == tenant)
    rows = conn.execute(query.order_by(t.slides.c.id).limit(size)).mappings().all()
    if not rows:
        return []
    ids = [str(row["id"]) for row in rows]
    clocks = clock_of(
        conn, [(str(row["tenant"]), str(row["accession_number"])) for row in rows if row["accession_number"]]
    )
    interest = {
        str(a): str(b)
        for a, b in conn.execute(
            select(t.slide_interest.c.slide_id, t.slide_interest.c.category).where(
                t.slide_interest.c.slide_id.in_(ids)
            )
        )
    }
    held = {
        str(row[0])
        for row in conn.execute(
            select(t.holds.c.slide_id).where(t.holds.c.slide_id.in_(ids), t.holds.c.released_at.is_(None))
        )
    }
    found = []
    for row in rows:
        slide_id, tenant_of = str(row["id"]), str(row["tenant"])
        accession = row["accession_number"]
        facts = SlideFacts(
            slide_id=slide_id,
            tenant=tenant_of,
            scanned_at=_utc(row["created_at"]) or dt.datetime.now(dt.UTC),
            specimen_type=row["specimen_type"],
            organ=row["organ"],
            diagnosis_code=row["diagnosis_code"],
            stain=row["stain"],
            birth_date=_date(row["birth_date"]),
            study_date=_date(row["study_date"]),
            final_report_at=clocks.get((tenant_of, str(accession))) if accession else None,
            last_access_at=_utc(row["last_access_at"]),
            tier=Tier(row["tier"] or "hot"),
            interest=interest.get(slide_id),
            held=slide_id in held,
            expired=False,
        )
        found.append(FactsRow(facts, int(row["bytes"]), accession))
    return found


def slide_facts(
    catalog: Catalog, *, batch: int = 1000, tenant: str | None = None
) -> Iterator[list[FactsRow]]:
    """The facts of every slide not yet expired (of ``tenant``), ``batch`` at a time, in id order."""
    after: str | None = None
    while True:
        with catalog.engine.connect() as conn:
            rows = _batch(conn, after, batch, tenant)
        if not rows:
            return
        yield rows
        after = rows[-1].facts.slide_id
