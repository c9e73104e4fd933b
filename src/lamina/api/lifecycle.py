"""The care lifecycle over HTTP, mounted at ``/api``: a lab's retention rules, and a slide's flag of
interest, legal holds and lifecycle state (the same as ``lamina lifecycle rules``, ``lamina
interest`` and ``lamina hold``).

``GET /api/tenants/{finess}/lifecycle-rules``, ``PUT``
    The lab's rules in force as TOML (``application/toml``; the default rules' TOML when the lab
    has none of its own); replace them (a TOML body, ``application/toml`` or ``text/plain``, at
    most 1 MiB): checked whole, a malformed document is 400 naming its line, rule and field (also
    as the problem's ``line``, ``rule`` and ``field`` members) and the rules in force stay. The
    lab's admin (:data:`~lamina.api.auth.Rule.ADMINISTER`).
``GET /api/slides/{slide}/lifecycle``
    The slide's state: tier, expired or not (with its trace), flag of interest, holds in force,
    its case's clock (the latest validated report), the rule that matches and what is due now
    (:func:`~lamina.lifecycle.evaluate.evaluate`), and what the principal ``may`` change on it
    (``{"flag": ..., "hold": ...}``: the rules of the two routes below, for a client that offers
    only what it may do). Whoever may read the slide, and its lab's admin.
``PUT /api/slides/{slide}/interest`` ``{"category", "reason"}``, ``DELETE`` (``{"reason"}`` or ``?reason=``)
    Flag the slide as of interest (``research``, ``teaching``, ``innovation``, ``expertise``,
    ``follow-up``), or take the flag off. A pathologist of the slide's lab
    (:data:`~lamina.api.auth.Rule.ANNOTATE_SLIDE`: a grant from another lab does not reach it).
``POST /api/slides/{slide}/holds`` ``{"reason"}`` (201), ``DELETE`` (``{"reason"}`` or ``?reason=``)
    Put the slide under a legal hold; release every hold in force on it. The lab's admin
    (:data:`~lamina.api.auth.Rule.ADMINISTER_SLIDE`).

A slide the principal cannot see is 404 like an absent one. Every change is audited with the
principal as actor, and answers the slide's state (with ``may``, and ``holds_made`` or
``holds_released``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from lamina.api.auth import principal
from lamina.api.governance import json_body, path_lab, text_field
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import NotFoundError, PayloadTooLargeError, RequestError
from lamina.exchange.push import transfer_of
from lamina.governance.decide import Action, Resource
from lamina.governance.registry import Registry
from lamina.lifecycle.evaluate import SlideFacts, evaluate
from lamina.lifecycle.facts import facts_of
from lamina.lifecycle.marks import Interest, Marks, Target
from lamina.lifecycle.policy import Policies
from lamina.lifecycle.rules import DEFAULT_RULES, MAX_BYTES, RuleError

__all__ = ["TOML", "routes", "slide_state"]

TOML = "application/toml"
_TOML_IN = (TOML, "text/plain")
#: the lifecycle's parameter names (the CLI's) to this API's fields
_FIELDS = {"--reason": "reason", "--category": "category"}


# -- a slide's state --------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return (value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)).isoformat()


def _read_state(conn: Connection, slide_id: str) -> tuple[SlideFacts, dict[str, Any]]:
    """The slide's facts (as :mod:`lamina.lifecycle.facts` reads them) and what the answer adds."""
    found = facts_of(conn, slide_id)
    if found is None:
        raise NotFoundError("no such slide in this archive; 'lamina slides' lists them")
    facts, accession = found.facts, found.accession_number
    interest = (
        conn.execute(
            select(
                t.slide_interest.c.category,
                t.slide_interest.c.reason,
                t.slide_interest.c.flagged_at,
                t.slide_interest.c.flagged_by,
            ).where(t.slide_interest.c.slide_id == slide_id)
        )
        .mappings()
        .first()
    )
    holds = (
        conn.execute(
            select(t.holds.c.id, t.holds.c.reason, t.holds.c.held_at, t.holds.c.held_by)
            .where(t.holds.c.slide_id == slide_id, t.holds.c.released_at.is_(None))
            .order_by(t.holds.c.held_at)
        )
        .mappings()
        .all()
    )
    trace = (
        conn.execute(
            select(
                t.slide_traces.c.expired_at,
                t.slide_traces.c.rule,
                t.slide_traces.c.report_at,
                t.slide_traces.c.thumbnail_sha256,
                t.slide_traces.c.bytes_freed,
            ).where(t.slide_traces.c.slide_id == slide_id)
        )
        .mappings()
        .first()
    )
    extra: dict[str, Any] = {
        "accession_number": accession,
        "expired_at": _iso(trace["expired_at"]) if trace is not None else None,
        "interest": None
        if interest is None
        else {
            "category": interest["category"],
            "reason": interest["reason"],
            "flagged_at": _iso(interest["flagged_at"]),
            "flagged_by": interest["flagged_by"],
        },
        "holds": [
            {"id": h["id"], "reason": h["reason"], "held_at": _iso(h["held_at"]), "held_by": h["held_by"]}
            for h in holds
        ],
        "transfer": transfer_of(conn, slide_id),
        "trace": None
        if trace is None
        else {
            "expired_at": _iso(trace["expired_at"]),
            "rule": trace["rule"],
            "report_at": _iso(trace["report_at"]),
            "thumbnail": trace["thumbnail_sha256"] is not None,
            "bytes_freed": trace["bytes_freed"],
        },
    }
    return facts, extra


def slide_state(catalog: Catalog, slide_id: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """The JSON state of one slide at ``now`` (default: now): what the viewer shows."""
    moment = now or dt.datetime.now(dt.UTC)
    with catalog.engine.connect() as conn:
        facts, extra = _read_state(conn, slide_id)
    policies = Policies(catalog)
    rules = DEFAULT_RULES if facts.expired else policies.for_tenant(facts.tenant)
    outcome = evaluate(rules, facts, moment)
    return {
        "slide": slide_id,
        "tenant": facts.tenant,
        "accession_number": extra["accession_number"],
        "tier": facts.tier.value,
        "expired": facts.expired,
        "expired_at": extra["expired_at"],
        "trace": extra["trace"],
        "interest": extra["interest"],
        "transfer": extra["transfer"],
        "held": facts.held,
        "holds": extra["holds"],
        "report_at": _iso(facts.final_report_at),
        "last_access_at": _iso(facts.last_access_at),
        "rule": outcome.rule or None,
        "rules_digest": None if facts.expired else rules.digest,
        "action": outcome.action.value,
        "reason": outcome.reason,
        "retain_until": _iso(outcome.retain_until),
        "due_at": _iso(outcome.due_at),
        "now": moment.isoformat(),
    }


# -- helpers ------------------------------------------------------------------------------------------


def _slide(request: Request) -> Resource:
    """The path's slide, as its rule found it (lamina.api.auth)."""
    found = request.scope.get("state", {}).get("slide")
    assert isinstance(found, Resource) and found.slide_id is not None, "a slide route without its slide rule"
    return found


@contextmanager
def _fields() -> Iterator[None]:
    """The lifecycle's errors, naming this API's fields instead of the CLI's options."""
    try:
        yield
    except RequestError as error:
        field = _FIELDS.get(error.parameter)
        if field is None:
            raise
        raise RequestError(field, str(error).removeprefix(f"{error.parameter}: ")) from None


def _category(value: str) -> Interest:
    try:
        return Interest(value)
    except ValueError:
        names = ", ".join(item.value for item in Interest)
        raise RequestError("category", f"{value!r}: one of {names}") from None


async def _reason(request: Request) -> str:
    """The reason of a DELETE: ``?reason=``, or a JSON body ``{"reason": ...}``."""
    given = request.query_params.get("reason")
    if given is not None:
        return given
    if (
        not request.headers.get("content-length", "").strip("0")
        and "transfer-encoding" not in request.headers
    ):
        raise RequestError("reason", 'say why: ?reason=... or a JSON body {"reason": "..."}')
    return text_field(await json_body(request, ("reason",), ()), "reason")


def _may(request: Request) -> dict[str, bool]:
    """What the principal may change on the path's slide, as the slide rules of
    :mod:`lamina.api.auth` decide: flag it as of interest (``ANNOTATE_SLIDE``), hold it or release
    its holds (``ADMINISTER_SLIDE``): an action its roles allow in the slide's lab."""
    allowed = principal(request).allowed_in(_slide(request).tenant)
    return {"flag": Action.ANNOTATE in allowed, "hold": Action.ADMINISTER in allowed}


def _state(request: Request, slide_id: str, **extra: Any) -> dict[str, Any]:
    return {**slide_state(request.app.state.archive.catalog, slide_id), "may": _may(request), **extra}


# -- the endpoints ----------------------------------------------------------------------------------------


def _lab(request: Request) -> str:
    return path_lab(Registry(request.app.state.archive.catalog), str(request.path_params["finess"]))


def get_lifecycle_rules(request: Request) -> Response:
    code = _lab(request)
    policies = Policies(request.app.state.archive.catalog)
    text = policies.document(code)
    source = "lab" if text is not None else "default"
    if text is None:
        text = DEFAULT_RULES.to_toml()
    return Response(
        text,
        media_type=f"{TOML}; charset=utf-8",
        headers={"X-Lamina-Rules": source, "ETag": f'"{policies.for_tenant(code).digest}"'},
    )


async def put_lifecycle_rules(request: Request) -> Response:
    who = principal(request)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in _TOML_IN:
        raise RequestError(
            "Content-Type", f"send the rules as {TOML} (or text/plain), not {media or 'nothing'}"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        raise PayloadTooLargeError(
            f"the rules of {declared} bytes are over the {MAX_BYTES} byte limit (1 MiB)"
        )
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BYTES:
            raise PayloadTooLargeError(f"the rules are over the {MAX_BYTES} byte limit (1 MiB)")
    try:
        text = bytes(raw).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RequestError("body", f"line {line}: not UTF-8 text; send the rules as UTF-8") from None
    source = "lifecycle-rules"

    def put() -> dict[str, Any]:
        code = _lab(request)
        rules = Policies(request.app.state.archive.catalog).set(code, text, source, who.id)
        return {"tenant": code, "digest": rules.digest, "rules": [rule.name for rule in rules.rules]}

    try:
        answer = await run_in_threadpool(put)
    except RuleError as error:
        # the problem's own members say where, for a client that shows them beside the text
        return JSONResponse(
            {
                "type": "about:blank",
                "title": "Bad request",
                "status": 400,
                "detail": str(error),
                "line": error.line,
                "rule": error.where,
                "field": error.field,
            },
            status_code=400,
            media_type="application/problem+json",
        )
    return JSONResponse(answer)


def get_slide_lifecycle(request: Request) -> Response:
    return JSONResponse(_state(request, str(_slide(request).slide_id)))


async def flag_interest(request: Request) -> Response:
    who = principal(request)
    slide = str(_slide(request).slide_id)
    body = await json_body(request, ("category", "reason"), ())
    category, reason = _category(text_field(body, "category")), text_field(body, "reason")

    def flag() -> dict[str, Any]:
        with _fields():
            Marks(request.app.state.archive.catalog).flag(Target(slide=slide), category, reason, who.id)
        return _state(request, slide)

    return JSONResponse(await run_in_threadpool(flag))


async def unflag_interest(request: Request) -> Response:
    who = principal(request)
    slide = str(_slide(request).slide_id)
    reason = await _reason(request)

    def unflag() -> dict[str, Any]:
        with _fields():
            Marks(request.app.state.archive.catalog).unflag(Target(slide=slide), reason, who.id)
        return _state(request, slide)

    return JSONResponse(await run_in_threadpool(unflag))


async def add_hold(request: Request) -> Response:
    who = principal(request)
    slide = str(_slide(request).slide_id)
    reason = text_field(await json_body(request, ("reason",), ()), "reason")

    def hold() -> dict[str, Any]:
        with _fields():
            made = Marks(request.app.state.archive.catalog).hold(Target(slide=slide), reason, who.id)
        return _state(request, slide, holds_made=made)

    return JSONResponse(await run_in_threadpool(hold), status_code=201)


async def release_holds(request: Request) -> Response:
    who = principal(request)
    slide = str(_slide(request).slide_id)
    reason = await _reason(request)

    def release() -> dict[str, Any]:
        with _fields():
            released = Marks(request.app.state.archive.catalog).release(Target(slide=slide), reason, who.id)
        return _state(request, slide, holds_released=released)

    return JSONResponse(await run_in_threadpool(release))


def routes() -> list[BaseRoute]:
    """The lifecycle routes, to mount at ``/api``."""
    return [
        Route("/tenants/{finess}/lifecycle-rules", get_lifecycle_rules, methods=["GET"]),
        Route("/tenants/{finess}/lifecycle-rules", put_lifecycle_rules, methods=["PUT"]),
        Route("/slides/{slide}/lifecycle", get_slide_lifecycle, methods=["GET"]),
        Route("/slides/{slide}/interest", flag_interest, methods=["PUT"]),
        Route("/slides/{slide}/interest", unflag_interest, methods=["DELETE"]),
        Route("/slides/{slide}/holds", add_hold, methods=["POST"]),
        Route("/slides/{slide}/holds", release_holds, methods=["DELETE"]),
    ]
