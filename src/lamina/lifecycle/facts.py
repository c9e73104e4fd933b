"""What the rules look at, read from the catalog in one pass.

:func:`slide_facts` reads every slide not yet expired with what the rules look at, in one query
that joins its case and patient (for pediatric), its case's clock (the latest validated report of
its accession number in its lab), its flag of interest and whether a hold is in force: the
database joins whole tables by hashing once, where a page of slides at a time would look each
case up by its key (a million random reads for a million slides). The rows are streamed
(``yield_per``) and handed over ``batch`` at a time, so memory stays flat whatever the catalog's
size. A slide's facts: its lab, scan date, specimen type, organ, diagnosis code, stain, the
patient's birth date and the study date, the clock, its last access and tier, its interest and
hold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.engine import Connection

from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.times import utc_or_none as _utc
from lamina.lifecycle.evaluate import SlideFacts
from lamina.lifecycle.reports import CLOCK_STATUSES
from lamina.lifecycle.rules import Tier

__all__ = ["FactsRow", "facts_of", "slide_facts"]

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
    t.slides.c.expired_at,
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


def _date(value: str | None) -> dt.date | None:
    """A DICOM DA (YYYYMMDD), or None when absent or not a date."""
    if not value or len(value) != 8 or not value.isdigit():
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


_CLOCK = (
    select(
        t.case_reports.c.tenant,
        t.case_reports.c.accession_number,
        func.max(t.case_reports.c.issued_at).label("clock"),
    )
    .where(t.case_reports.c.status.in_(CLOCK_STATUSES))
    .group_by(t.case_reports.c.tenant, t.case_reports.c.accession_number)
    .subquery("clock")
)
_HELD = select(t.holds.c.slide_id).where(t.holds.c.released_at.is_(None)).distinct().subquery("held")


def _query() -> Select[Any]:
    source = (
        _SOURCE.outerjoin(
            _CLOCK,
            and_(
                _CLOCK.c.tenant == t.studies.c.tenant,
                _CLOCK.c.accession_number == t.studies.c.accession_number,
            ),
        )
        .outerjoin(t.slide_interest, t.slide_interest.c.slide_id == t.slides.c.id)
        .outerjoin(_HELD, _HELD.c.slide_id == t.slides.c.id)
    )
    query = select(
        *_COLUMNS,
        _CLOCK.c.clock,
        t.slide_interest.c.category.label("interest"),
        _HELD.c.slide_id.label("held"),
    ).select_from(source)
    return query


def _row(row: Any) -> FactsRow:
    tenant_of = str(row["tenant"])
    facts = SlideFacts(
        slide_id=str(row["id"]),
        tenant=tenant_of,
        scanned_at=_utc(row["created_at"]) or dt.datetime.now(dt.UTC),
        specimen_type=row["specimen_type"],
        organ=row["organ"],
        diagnosis_code=row["diagnosis_code"],
        stain=row["stain"],
        birth_date=_date(row["birth_date"]),
        study_date=_date(row["study_date"]),
        final_report_at=_utc(row["clock"]),
        last_access_at=_utc(row["last_access_at"]),
        tier=Tier(row["tier"] or "hot"),
        interest=row["interest"],
        held=row["held"] is not None,
        expired=row["expired_at"] is not None,
    )
    return FactsRow(facts, int(row["bytes"]), row["accession_number"])


def slide_facts(
    catalog: Catalog, *, batch: int = 1000, tenant: str | None = None
) -> Iterator[list[FactsRow]]:
    """The facts of every slide not yet expired (of ``tenant``), ``batch`` at a time."""
    query = _query().where(t.slides.c.expired_at.is_(None))
    if tenant is not None:
        query = query.where(t.slides.c.tenant == tenant)
    with catalog.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
        for rows in result.mappings().partitions(batch):
            yield [_row(row) for row in rows]


def facts_of(conn: Connection, slide_id: str) -> FactsRow | None:
    """The facts of one slide, expired or not (None: no such slide), as :func:`slide_facts`
    reads them, with the clock, interest and hold looked up for that slide alone (correlated
    subqueries on their indexes, not the whole tables hashed)."""
    clock = (
        select(func.max(t.case_reports.c.issued_at))
        .where(
            t.case_reports.c.tenant == t.studies.c.tenant,
            t.case_reports.c.accession_number == t.studies.c.accession_number,
            t.case_reports.c.status.in_(CLOCK_STATUSES),
        )
        .scalar_subquery()
    )
    interest = select(t.slide_interest.c.category).where(t.slide_interest.c.slide_id == t.slides.c.id)
    held = select(t.holds.c.slide_id).where(
        t.holds.c.slide_id == t.slides.c.id, t.holds.c.released_at.is_(None)
    )
    query = (
        select(
            *_COLUMNS,
            clock.label("clock"),
            interest.scalar_subquery().label("interest"),
            held.limit(1).scalar_subquery().label("held"),
        )
        .select_from(_SOURCE)
        .where(t.slides.c.id == slide_id)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else _row(row)
