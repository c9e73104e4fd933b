"""The archive's side of the exchange over HTTP (:mod:`lamina.exchange.receiving`), under ``/api``:

- ``POST /exchange/slides``: a site announces a de-identified slide of interest (JSON, at most
  :data:`MAX_BODY_BYTES`); 200 ``{"status": "expected"}`` or, for a series verified already,
  ``{"status": "verified", "acknowledgement": {...}}``; 409 when another lab announced it.
- ``POST /exchange/slides/{series}/verify`` (``{"instances": [{"sop_instance_uid",
  "frames_sha256"}]}`` when the announcement left the digests out): 200 verified with the
  acknowledgement; 409
  ``{"status": "incomplete", "missing": [...]}``; 422 ``{"status": "refused", "reasons": [...]}``.
- ``POST /exchange/withdrawals`` ``{"patient_pseudonym"}``: the lab's patient opposes research use;
  200 ``{"withdrawn": n}`` (:func:`lamina.exchange.consent.withdraw`, audited).

Each behind :data:`~lamina.api.auth.Rule.EXCHANGE`; the lab is the principal's (a ``tenant`` key
when it sends for several), never taken otherwise from the body. On a site node every route
answers 404, saying that only an archive answers them.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from lamina.api.auth import principal
from lamina.api.governance import json_body
from lamina.errors import ExchangeError, RequestError
from lamina.exchange.consent import withdraw
from lamina.exchange.receiving import (
    ANNOUNCEMENT_KEYS,
    Announcement,
    announce,
    parse_digests,
    require_archive,
    sending_lab,
    verify,
)

__all__ = ["MAX_BODY_BYTES", "routes"]

#: the largest body taken: an announcement of 1,000 instances is about 200 KB
MAX_BODY_BYTES = 512 * 1024


def _refusal(exc: ExchangeError) -> Response:
    return JSONResponse(exc.body, status_code=exc.status)


async def announce_slide(request: Request) -> Response:
    """``POST /api/exchange/slides``."""
    require_archive(request.app.state.settings)
    who = principal(request)
    body = await json_body(request, (), ANNOUNCEMENT_KEYS, MAX_BODY_BYTES)  # missing keys: from_json
    tenant = sending_lab(who, body.get("tenant"))
    announcement = Announcement.from_json(body)
    try:
        answer = await run_in_threadpool(announce, request.app.state.archive.catalog, tenant, announcement)
    except ExchangeError as exc:
        return _refusal(exc)
    return JSONResponse(answer)


async def verify_slide(request: Request) -> Response:
    """``POST /api/exchange/slides/{series}/verify`` (a body, when any, may name the ``tenant``)."""
    require_archive(request.app.state.settings)
    who = principal(request)
    asked, digests = None, {}
    if request.headers.get("content-length", "").strip("0") or "transfer-encoding" in request.headers:
        body = await json_body(request, (), ("tenant", "instances"), MAX_BODY_BYTES)
        asked = body.get("tenant")
        if "instances" in body:
            digests = parse_digests(body["instances"])
    tenant = sending_lab(who, asked)
    series = str(request.path_params["series"])
    try:
        answer = await run_in_threadpool(verify, request.app.state.archive, tenant, series, who.id, digests)
    except ExchangeError as exc:
        return _refusal(exc)
    request.app.state.access.forget()  # a slide withdrawn before it was verified is hidden now
    return JSONResponse(answer)


async def withdraw_patient(request: Request) -> Response:
    """``POST /api/exchange/withdrawals``."""
    require_archive(request.app.state.settings)
    who = principal(request)
    body = await json_body(request, ("patient_pseudonym",), ("tenant",))
    pseudonym = body.get("patient_pseudonym")
    if not isinstance(pseudonym, str):
        raise RequestError("patient_pseudonym", "the patient's pseudonym: a string of 64 hexadecimal digits")
    tenant = sending_lab(who, body.get("tenant"))
    count = await run_in_threadpool(withdraw, request.app.state.archive.catalog, tenant, pseudonym, who.id)
    request.app.state.access.forget()  # hidden from grants at once, not after the owners' cache
    return JSONResponse({"withdrawn": count})


def routes() -> list[BaseRoute]:
    """The exchange's routes, to mount at ``/api``."""
    return [
        Route("/exchange/slides", announce_slide, methods=["POST"]),
        Route("/exchange/slides/{series}/verify", verify_slide, methods=["POST"]),
        Route("/exchange/withdrawals", withdraw_patient, methods=["POST"]),
    ]
