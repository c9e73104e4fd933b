"""The storage report and the cost calculator over HTTP, mounted at ``/api`` (the same as ``lamina
report --json`` and ``lamina costs --json``).

``GET /api/tenants/{finess}/report``
    The lab's storage report (:func:`~lamina.reporting.report.storage_report`): its lab admin, or
    a platform admin (:data:`~lamina.api.auth.Rule.ADMINISTER`; another lab is 404).
``GET /api/tenants/{finess}/report/plots/{name}``
    One of its plots, ``volume``, ``months``, ``projection`` or ``co2``, as ``.png`` or ``.svg``.
``GET /api/report``, ``GET /api/report/plots/{name}``
    The same over every lab of the node: platform admins (:data:`~lamina.api.auth.Rule.PLATFORM`).
``GET /api/costs?slides=...&sector=...&price=KEY=VALUE...``
    The report's cost model (:func:`~lamina.costs.model.estimate`) for anyone signed in; the
    query's names are ``lamina costs``'s options (``slides-per-case``, ``retention-days``...),
    each number bounded. ``measured=true&tenant=FINESS`` takes slides a year and GB a slide from
    that lab's catalog (a lab where the principal holds a role; a platform admin: any, or the
    whole node without ``tenant``).

The catalog is read in a worker thread; a plot is drawn on demand and kept
:data:`PLOT_SECONDS` for the next request of the same plot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import threading
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from lamina.api.auth import principal
from lamina.api.governance import path_lab
from lamina.archive.catalog import Catalog
from lamina.costs.measured import MeasuredVolumes, measure
from lamina.costs.model import PRIVATE_500K_CASES, PUBLIC_SECTOR, CostInputs, Sector, UnitPrices, estimate
from lamina.errors import NotFoundError, PermissionDeniedError, RequestError
from lamina.governance.decide import Action
from lamina.governance.model import check_finess
from lamina.governance.registry import Registry
from lamina.reporting.report import storage_report

__all__ = ["COST_OPTIONS", "PLOT_SECONDS", "routes"]

#: how long a drawn plot is served again without drawing it
PLOT_SECONDS = 60.0
_PLOTS_KEPT = 64
_PLOT_NAMES = frozenset(
    f"{name}.{ext}" for name in ("volume", "months", "projection", "co2") for ext in ("png", "svg")
)
_MEDIA = {"png": "image/png", "svg": "image/svg+xml"}

#: the calculator's query parameters (``lamina costs``'s options): the model's field, and its bounds
COST_OPTIONS: dict[str, tuple[str, float, float]] = {
    "slides": ("slides_per_year", 1, 1e9),
    "cases": ("cases_per_year", 1, 1e9),
    "slides-per-case": ("slides_per_case", 0.1, 1_000),
    "pathologists": ("pathologists", 0, 1e6),
    "sites": ("sites", 1, 1e5),
    "scanners": ("scanners", 0, 1e6),
    "retention-days": ("retention_days", 0, 36_500),
    "interest-share": ("interest_share", 0, 1),
}
_INTEGERS = {"pathologists", "sites", "scanners"}
_OTHER = ("preset", "sector", "price", "measured", "tenant")
_PRESETS = {"private": PRIVATE_500K_CASES, "public": PUBLIC_SECTOR}
_MAX_PRICES = 20
_PRICE_BOUNDS = {
    "depreciation_years": (1.0, 100.0),
    "slides_per_scanner_year": (1.0, 1e9),
    "slides_per_staff_year": (1.0, 1e9),
}


# -- the report --------------------------------------------------------------------------------------------


def _report(request: Request, lab: bool) -> dict[str, Any]:
    catalog: Catalog = request.app.state.archive.catalog
    tenant = path_lab(Registry(catalog), request.path_params["finess"]) if lab else None
    return storage_report(catalog, dt.datetime.now(dt.UTC), tenant=tenant).as_dict()


async def tenant_report(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_report, request, True))


async def node_report(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_report, request, False))


class _Plots:
    """Plots drawn in the last :data:`PLOT_SECONDS`, by lab (``None``: the node) and file name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str | None, str], tuple[float, bytes]] = {}

    def get(self, catalog: Catalog, tenant: str | None, name: str) -> bytes:
        key, clock = (tenant, name), time.monotonic()
        with self._lock:
            found = self._kept.get(key)
        if found is not None and clock - found[0] < PLOT_SECONDS:
            return found[1]
        from lamina.reporting.plots import render  # matplotlib: only once a plot is asked for

        drawn = render(storage_report(catalog, dt.datetime.now(dt.UTC), tenant=tenant), name)
        with self._lock:
            self._kept = {k: v for k, v in self._kept.items() if clock - v[0] < PLOT_SECONDS}
            if len(self._kept) >= _PLOTS_KEPT:
                self._kept.pop(next(iter(self._kept)))
            self._kept[key] = (clock, drawn)
        return drawn


def _plot(request: Request, lab: bool) -> Response:
    name = str(request.path_params["name"])
    if name not in _PLOT_NAMES:
        raise NotFoundError(f"no plot {name[:64]!r}; the plots are {', '.join(sorted(_PLOT_NAMES))}")
    catalog: Catalog = request.app.state.archive.catalog
    tenant = path_lab(Registry(catalog), request.path_params["finess"]) if lab else None
    state = request.app.state
    kept = getattr(state, "report_plots", None)
    if not isinstance(kept, _Plots):
        kept = state.report_plots = _Plots()
    body = kept.get(catalog, tenant, name)
    return Response(
        body,
        media_type=_MEDIA[name.rsplit(".", 1)[1]],
        headers={
            "Cache-Control": f"private, max-age={int(PLOT_SECONDS)}",
            "X-Content-Type-Options": "nosniff",
            # an SVG opened on its own runs nothing
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


async def tenant_report_plot(request: Request) -> Response:
    return await run_in_threadpool(_plot, request, True)


async def node_report_plot(request: Request) -> Response:
    return await run_in_threadpool(_plot, request, False)


# -- the cost calculator ---------------------------------------------------------------------------------


def _number(name: str, raw: str) -> float:
    _, low, high = COST_OPTIONS[name]
    try:
        value = float(raw)
    except ValueError:
        raise RequestError(name, f"{raw[:32]!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise RequestError(name, f"{raw[:32]!r} is out of range: give a number between {low:g} and {high:g}")
    if name in _INTEGERS and value != int(value):
        raise RequestError(name, f"{raw[:32]!r}: give a whole number")
    return value


def _prices(pairs: list[str]) -> UnitPrices:
    if len(pairs) > _MAX_PRICES:
        raise RequestError("price", f"at most {_MAX_PRICES} prices")
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise RequestError("price", f"{pair[:64]!r} is not KEY=VALUE, e.g. scanner_public=250000")
        values[key.strip()] = raw.strip()
    try:
        prices = UnitPrices().with_values(values)
    except RequestError as error:
        raise RequestError("price", str(error).removeprefix("--price: ")) from None
    for key, value in prices.as_dict().items():
        low, high = _PRICE_BOUNDS.get(key, (0.0, 1e9))
        if not low <= value <= high:
            raise RequestError(
                "price", f"{key}={value:g} is out of range: give a number between {low:g} and {high:g}"
            )
    return prices


def _flag(raw: str | None) -> bool:
    if raw is None or raw.lower() in ("false", "0", ""):
        return False
    if raw.lower() in ("true", "1"):
        return True
    raise RequestError("measured", f"{raw[:16]!r}: give true or false")


def _measured(request: Request, tenant: str | None) -> MeasuredVolumes:
    who = principal(request)
    platform = Action.ADMINISTER in who.everywhere
    catalog: Catalog = request.app.state.archive.catalog
    if tenant is None:
        if not platform:
            raise PermissionDeniedError(
                Action.ADMINISTER.value,
                "measured: give tenant=FINESS, a lab of yours (the whole node: platform admins)",
            )
        return measure(catalog)
    code = check_finess(tenant, "tenant")
    if not platform and code not in who.tenants():
        raise NotFoundError(
            f"no lab {code} of yours on this node; GET /api/tenants lists the labs you can see"
        )
    return measure(catalog, code)


def _costs(request: Request) -> dict[str, Any]:
    query = request.query_params
    unknown = sorted(set(query) - set(COST_OPTIONS) - set(_OTHER))
    if unknown:
        raise RequestError(
            ", ".join(name[:32] for name in unknown[:5]),
            "unknown; the parameters are " + ", ".join((*COST_OPTIONS, *_OTHER)),
        )
    preset = query.get("preset")
    if preset is not None and preset not in _PRESETS:
        raise RequestError("preset", f"{preset[:32]!r} is not a preset: give private or public")
    changes: dict[str, Any] = {}
    for name, (field, _, _) in COST_OPTIONS.items():
        if name in query:
            value = _number(name, query[name])
            changes[field] = int(value) if name in _INTEGERS else value
    if "slides" in query and "cases" in query:
        raise RequestError("slides", "give slides or cases, not both")
    if "slides" in query:
        changes["cases_per_year"] = None
    elif "cases" in query:
        changes["slides_per_year"] = None
    if "sector" in query:
        try:
            changes["sector"] = Sector(query["sector"])
        except ValueError:
            raise RequestError(
                "sector", f"{query['sector'][:32]!r} is not a sector: give public or private"
            ) from None
    prices = _prices(query.getlist("price"))
    tenant = query.get("tenant")
    measured = _flag(query.get("measured"))
    if tenant is not None and not measured:
        raise RequestError("tenant", "only with measured=true")
    volumes = _measured(request, tenant) if measured else None
    fields = {field: name for name, (field, _, _) in COST_OPTIONS.items()}
    try:
        inputs = dataclasses.replace(_PRESETS[preset] if preset else CostInputs(), **changes)
        if volumes is not None:
            inputs = volumes.applied(inputs, volume="slides" not in query and "cases" not in query)
    except RequestError as error:
        raise RequestError(
            fields.get(error.parameter, error.parameter), str(error).split(": ", 1)[-1]
        ) from None
    found = {**estimate(inputs, prices).as_dict(), "measured": volumes.as_dict() if volumes else None}
    try:
        json.dumps(found, allow_nan=False)
    except ValueError:
        raise RequestError("query", "these figures are out of the model's range: give other values") from None
    return found


async def costs_calculator(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_costs, request))


def routes() -> list[BaseRoute]:
    """The report and calculator routes, to mount at ``/api``."""
    return [
        Route("/tenants/{finess}/report", tenant_report, methods=["GET"]),
        Route("/tenants/{finess}/report/plots/{name}", tenant_report_plot, methods=["GET"]),
        Route("/report", node_report, methods=["GET"]),
        Route("/report/plots/{name}", node_report_plot, methods=["GET"]),
        Route("/costs", costs_calculator, methods=["GET"]),
    ]
