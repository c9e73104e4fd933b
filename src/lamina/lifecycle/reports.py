"""The events that start a case's clock: its final diagnostic report, from the LIS.

A report names its case by the lab and the accession number, and may come before the case's
slides: it is kept (``case_reports``) and counts as soon as slides of that accession arrive, since
the clock of a slide is read from the reports of its case when the lifecycle runs. A report whose
status is ``final``, ``amended``, ``corrected`` or ``appended`` (FHIR R4 DiagnosticReport.status)
starts the clock at its ``issued`` time; a later one restarts it (the clock is the latest). Other
statuses (``preliminary``, ``partial``, ``registered``, ...) are recorded and start nothing; a
report ``entered-in-error`` withdraws the earlier report with the same identifier. A case without
a report that counts is never expired by age.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import RequestError
from lamina.governance.model import check_finess

__all__ = ["CLOCK_STATUSES", "STATUSES", "CaseReport", "record_report"]

#: FHIR R4 DiagnosticReport.status values
STATUSES = (
    "registered",
    "partial",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "appended",
    "cancelled",
    "entered-in-error",
    "unknown",
)
#: the statuses of a validated report: they start (or restart) the case's clock
CLOCK_STATUSES = ("final", "amended", "corrected", "appended")
_MAX_ACCESSION = 64


@dataclass(frozen=True)
class CaseReport:
    id: str
    tenant: str
    accession_number: str
    status: str
    issued_at: dt.datetime
    received_at: dt.datetime
    report_id: str | None
    source: str
    actor: str
    #: slides of the case on this node when the report came (0: kept for when they arrive)
    slides: int = 0

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of ``--json`` and of the API."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "accession_number": self.accession_number,
            "status": self.status,
            "issued_at": self.issued_at.isoformat(),
            "received_at": self.received_at.isoformat(),
            "report_id": self.report_id,
            "source": self.source,
            "actor": self.actor,
            "slides": self.slides,
            "starts_clock": self.status in CLOCK_STATUSES,
        }


def check_accession(value: str, parameter: str = "ACCESSION") -> str:
    """``value`` trimmed if it can be an accession number, else :class:`RequestError`."""
    text = value.strip()
    if not text or len(text) > _MAX_ACCESSION or not text.isprintable():
        raise RequestError(
            parameter, f"{value!r}: an accession number is 1 to {_MAX_ACCESSION} printable characters"
        )
    return text


def record_report(
    catalog: Catalog,
    tenant: str,
    accession_number: str,
    status: str,
    issued_at: dt.datetime,
    *,
    source: str,
    actor: str,
    report_id: str | None = None,
) -> CaseReport:
    """Record a report of the case ``accession_number`` of ``tenant`` (audited)."""
    code = check_finess(tenant, "tenant")
    accession = check_accession(accession_number)
    if status not in STATUSES:
        raise RequestError("status", f"{status!r}: one of {', '.join(STATUSES)}")
    if issued_at.tzinfo is None:
        raise RequestError(
            "issued", "give the time zone of the report's validation (e.g. 2026-03-02T14:05:00+01:00)"
        )
    now = dt.datetime.now(dt.UTC)
    issued = issued_at.astimezone(dt.UTC)
    if issued > now + dt.timedelta(minutes=5):
        raise RequestError("issued", f"{issued.isoformat()} is in the future: the report's validation time")
    if report_id is not None and (len(report_id) > 128 or not report_id.isprintable()):
        raise RequestError("id", "a report identifier is at most 128 printable characters")
    report = CaseReport(uuid.uuid4().hex, code, accession, status, issued, now, report_id, source, actor)
    with catalog.begin() as conn:
        if status == "entered-in-error" and report_id:
            conn.execute(
                delete(t.case_reports).where(
                    t.case_reports.c.tenant == code,
                    t.case_reports.c.accession_number == accession,
                    t.case_reports.c.report_id == report_id,
                )
            )
        conn.execute(
            insert(t.case_reports).values(
                id=report.id,
                tenant=code,
                accession_number=accession,
                status=status,
                issued_at=issued,
                received_at=now,
                report_id=report_id,
                source=source,
                actor=actor,
            )
        )
        slides = _slides_of_case(conn, code, accession)
        audit.append(
            conn,
            actor,
            "case-report",
            f"case/{code}/{accession}",
            {
                "status": status,
                "issued_at": issued.isoformat(),
                "report_id": report_id,
                "source": source,
                "slides": slides,
            },
        )
    return CaseReport(**{**report.__dict__, "slides": slides})


def _slides_of_case(conn: Connection, tenant: str, accession: str) -> int:
    query = (
        select(func.count())
        .select_from(
            t.slides.join(t.studies, t.slides.c.study_instance_uid == t.studies.c.study_instance_uid)
        )
        .where(t.studies.c.tenant == tenant, t.studies.c.accession_number == accession)
    )
    return int(conn.execute(query).scalar_one())
