"""The slides to compare with the one open, and its case's report: ``GET /api/slides/related``.

``?study=STUDY&series=SERIES[&limit=N]`` (the slide's Study and Series Instance UIDs, as the
viewer's address holds them) answers::

    {"slide": {...}, "block_by": "specimen" | "case",
     "same_block": [slide...], "priors": [slide...],
     "more": {"same_block": bool, "priors": bool},
     "report": {"url", "content_type", "title", "status", "issued_at"} | null}

each slide ``{slide, study, series, lab, accession, date, label, container, specimen,
description, stain, organ, expired}`` (:mod:`lamina.archive.related`: what a block is, what
priors are). The slide itself must be one the principal may read (404 otherwise, like an absent
one); the lists keep only the slides it may search, in the query (QIDO-RS's
:func:`~lamina.governance.decide.visible_series`): a slide of a lab it has no right in is never
listed. ``limit`` bounds each list (1 to 50, default 20). ``report`` is the link the LIS gave
with the case's newest report that has one (FHIR ``DiagnosticReport.presentedForm.url``, kept by
``POST /fhir/DiagnosticReport``; http(s) only), or null. Asking is not an opening of the slide:
nothing is audited.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from lamina.api.auth import principal
from lamina.api.params import uid
from lamina.archive.related import MAX_LIMIT, related_slides
from lamina.errors import NotFoundError, RequestError
from lamina.governance.access import Access
from lamina.governance.decide import Action, visible_series
from lamina.lifecycle.reports import report_form

__all__ = ["routes"]

_DEFAULT_LIMIT = 20
_NO_SLIDE = "no such slide in this archive"


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", "")
    if not text:
        return _DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise RequestError("limit", f"{text[:20]!r}: a number from 1 to {MAX_LIMIT}")
    return int(text)


def related(request: Request) -> Response:
    """``GET /api/slides/related`` (blocking: run in the thread pool)."""
    who = principal(request)
    query = request.query_params
    study, series = uid(query.get("study"), "study"), uid(query.get("series"), "series")
    limit = _limit(request)
    access: Access = request.app.state.access
    # the slide itself: readable, or 404 like an absent one (not audited: nothing is opened)
    access.require(who, Action.READ, access.series(study, series))
    catalog = request.app.state.archive.catalog
    found = related_slides(catalog, study, series, visible_series(who), limit)
    if found is None:
        raise NotFoundError(_NO_SLIDE)
    report: dict[str, Any] | None = None
    if found.slide.accession:
        with catalog.engine.connect() as conn:
            kept = report_form(conn, found.slide.tenant, found.slide.accession)
        if kept is not None:
            case_report, form = kept
            report = {
                **form.as_dict(),
                "status": case_report.status,
                "issued_at": case_report.issued_at.isoformat(),
            }
    return JSONResponse(
        {
            "slide": found.slide.as_dict(),
            "block_by": found.block_by,
            "same_block": [each.as_dict() for each in found.same_block],
            "priors": [each.as_dict() for each in found.priors],
            "more": {"same_block": found.more_same_block, "priors": found.more_priors},
            "report": report,
        }
    )


def routes() -> list[BaseRoute]:
    """The route, to mount at ``/api``."""
    return [Route("/slides/related", related)]
