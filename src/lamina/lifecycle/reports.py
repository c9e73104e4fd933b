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
import urllib.parse
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import RequestError
from lamina.governance.model import check_finess

__all__ = [
    "CLOCK_STATUSES",
    "STATUSES",
    "CaseReport",
    "ReportForm",
    "check_form_url",
    "record_report",
    "report_form",
]

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
#: the longest report URL kept (an LIS's links are far shorter)
MAX_FORM_URL = 2048
_MAX_FORM_TYPE = 128
_MAX_FORM_TITLE = 255


@dataclass(frozen=True)
class ReportForm:
    """Where the report itself is read (FHIR ``DiagnosticReport.presentedForm``): its http(s) URL,
    media type and title as the LIS gives them."""

    url: str
    content_type: str | None = None
    title: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"url": self.url, "content_type": self.content_type, "title": self.title}


def check_form_url(value: str, parameter: str = "url") -> str:
    """``value`` if it is an absolute http or https URL of at most :data:`MAX_FORM_URL`
    characters (what a browser may open as a link: never ``javascript:`` or ``data:``), else
    :class:`RequestError` naming ``parameter``."""
    text = value.strip()
    if not text or len(text) > MAX_FORM_URL or not text.isprintable() or any(c.isspace() for c in text):
        raise RequestError(parameter, f"a report URL is 1 to {MAX_FORM_URL} characters, no spaces")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise RequestError(parameter, f"{text[:80]!r}: only an absolute http or https URL is kept")
    return text


def _check_form(form: ReportForm) -> ReportForm:
    url = check_form_url(form.url, "presentedForm.url")
    content_type = (form.content_type or "").strip()[:_MAX_FORM_TYPE] or None
    title = (form.title or "").strip()[:_MAX_FORM_TITLE] or None
    return ReportForm(url, content_type, title)


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
    form: ReportForm | None = None

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
            "form": None if self.form is None else self.form.as_dict(),
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
    form: ReportForm | None = None,
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
    form = None if form is None else _check_form(form)
    report = CaseReport(
        uuid.uuid4().hex, code, accession, status, issued, now, report_id, source, actor, form=form
    )
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
                form_url=None if form is None else form.url,
                form_type=None if form is None else form.content_type,
                form_title=None if form is None else form.title,
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
                "form_url": None if form is None else form.url,
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


def report_form(conn: Connection, tenant: str, accession: str) -> tuple[CaseReport, ReportForm] | None:
    """The newest report of the case ``accession`` of ``tenant`` that gives its URL (by its
    validation time, then its arrival), with that URL; None when none does."""
    c = t.case_reports.c
    query = (
        select(t.case_reports)
        .where(c.tenant == tenant, c.accession_number == accession, c.form_url.is_not(None))
        .where(c.status.not_in(("entered-in-error", "cancelled")))
        .order_by(c.issued_at.desc(), c.received_at.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    form = ReportForm(str(row["form_url"]), row["form_type"], row["form_title"])
    report = CaseReport(
        str(row["id"]),
        str(row["tenant"]),
        str(row["accession_number"]),
        str(row["status"]),
        row["issued_at"],
        row["received_at"],
        row["report_id"],
        str(row["source"]),
        str(row["actor"]),
        form=form,
    )
    return report, form
