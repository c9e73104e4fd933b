"""``lamina costs``: the report's cost model as a calculator, on its presets, your figures, or
this node's measured volumes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
from rich.table import Table

from lamina.cli.common import console, handle_errors, open_archive
from lamina.costs.measured import MeasuredVolumes, measure
from lamina.costs.model import (
    PRIVATE_500K_CASES,
    PUBLIC_SECTOR,
    CostInputs,
    CostResult,
    Sector,
    UnitPrices,
    estimate,
)
from lamina.errors import RequestError
from lamina.governance.model import check_finess

PRESETS = {"private": PRIVATE_500K_CASES, "public": PUBLIC_SECTOR}
#: the model's field -> the option that sets it, so that an error names what the user typed
OPTIONS = {
    "slides_per_year": "--slides",
    "cases_per_year": "--cases",
    "slides_per_case": "--slides-per-case",
    "pathologists": "--pathologists",
    "sites": "--sites",
    "scanners": "--scanners",
    "retention_days": "--retention-days",
    "interest_share": "--interest-share",
}


def _euros(value: float, cents: bool = False) -> str:
    return f"{value:,.2f} €" if cents else f"{value:,.0f} €"


def _inputs(
    preset: str | None, measured: MeasuredVolumes | None, options: dict[str, Any], sector: str | None
) -> CostInputs:
    if preset is not None and preset not in PRESETS:
        raise RequestError("--preset", f"{preset!r} is not a preset: give private or public")
    base = PRESETS[preset] if preset else CostInputs()
    changes: dict[str, Any] = {key: value for key, value in options.items() if value is not None}
    if options["slides_per_year"] is not None and options["cases_per_year"] is not None:
        raise RequestError("--slides", "give --slides or --cases, not both")
    if options["slides_per_year"] is not None:
        changes["cases_per_year"] = None
    elif options["cases_per_year"] is not None:
        changes["slides_per_year"] = None
    if sector is not None:
        try:
            changes["sector"] = Sector(sector)
        except ValueError:
            raise RequestError("--sector", f"{sector!r} is not a sector: give public or private") from None
    try:
        inputs = dataclasses.replace(base, **changes)
        volume_given = options["slides_per_year"] is not None or options["cases_per_year"] is not None
        return measured.applied(inputs, volume=not volume_given) if measured else inputs
    except RequestError as exc:
        option = OPTIONS.get(exc.parameter, exc.parameter)
        raise RequestError(option, str(exc).split(": ", 1)[1]) from None


def _prices(pairs: tuple[str, ...]) -> UnitPrices:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise RequestError("--price", f"{pair!r} is not KEY=VALUE, e.g. scanner_public=250000")
        values[key.strip()] = value.strip()
    return UnitPrices().with_values(values)


def _table(result: CostResult, measured: MeasuredVolumes | None, preset: str | None) -> None:
    inputs, prices = result.inputs, result.prices
    given = Table(title=f"inputs (preset {preset})" if preset else "inputs", show_header=False)
    given.add_column("input")
    given.add_column("value", justify="right")
    rows = [
        ("sector", inputs.sector.value),
        ("slides a year", f"{result.slides_per_year:,.0f}"),
        ("cases a year", f"{result.cases_per_year:,.0f}"),
        ("slides per case", f"{inputs.slides_per_case:g}"),
        ("pathologists", f"{result.pathologists:,}"),
        ("sites", f"{inputs.sites:,}"),
        ("scanners", f"{result.scanners:,}"),
        ("extra staff (FTE)", f"{result.staff_fte:,.1f}"),
        ("care retention (days)", f"{inputs.retention_days:g}"),
        ("slides of interest", f"{inputs.interest_share:.1%}, kept {inputs.archive_years} years"),
        ("GB per slide", f"{inputs.gb_per_slide:.3g}"),
    ]
    for name, text in rows:
        given.add_row(name, text)
    for key, price in prices.as_dict().items():
        if price != getattr(UnitPrices(), key):
            given.add_row(f"price {key}", f"{price:,g}")
    console.print(given)

    found = Table(title=f"costs (depreciation over {prices.depreciation_years} years)", show_header=False)
    found.add_column("figure")
    found.add_column("value", justify="right")
    for key, euros in result.investment_items.items():
        found.add_row(f"  investment: {key.replace('_', ' / ')}", _euros(euros))
    found.add_row("investment", _euros(result.investment), style="bold")
    for key, euros in result.operation_items.items():
        found.add_row(f"  operation: {key.replace('_', ' ')}", _euros(euros))
    found.add_row("operation a year", _euros(result.operation_per_year), style="bold")
    found.add_row("archive a year (mean over the period)", _euros(result.archive_per_year), style="bold")
    found.add_row(
        f"archive a year (after {inputs.archive_years} years)", _euros(result.archive_per_year_steady)
    )
    found.add_row("cost a year", _euros(result.cost_per_year), style="bold")
    found.add_row(f"total over {prices.depreciation_years} years", _euros(result.total_over_period))
    found.add_row("cost per slide", _euros(result.cost_per_slide, cents=True), style="bold")
    found.add_row("cost per case", _euros(result.cost_per_case, cents=True))
    found.add_row(
        "running cost per slide (investment paid)", _euros(result.running_cost_per_slide, cents=True)
    )
    found.add_row("storage held: hot / archive (GB)", f"{result.hot_gb:,.0f} / {result.archive_gb:,.0f}")
    found.add_row("storage CO2 a year", f"{result.co2_kg_per_year:,.0f} kg")
    found.add_row(
        f"storage CO2 a year (after {inputs.archive_years} years)", f"{result.co2_kg_per_year_steady:,.0f} kg"
    )
    console.print(found)
    if measured is not None:
        whose = f"tenant {measured.tenant}" if measured.tenant else "this node"
        console.print(
            f"measured on {whose}: {measured.slides:,} slide(s) stored in the last {measured.days} days "
            f"(first {measured.first:%Y-%m-%d}), {measured.gb_per_slide:.3g} GB a slide",
            highlight=False,
            markup=False,
        )
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)


@click.command()
@click.option("--preset", metavar="private|public", help="Start from one of the report's worked examples.")
@click.option("--cases", "cases_per_year", type=float, help="Cases a year.")
@click.option("--slides", "slides_per_year", type=float, help="Slides a year (instead of --cases).")
@click.option("--slides-per-case", type=float, help="Slides per case (default 3).")
@click.option("--pathologists", type=int, help="Pathologists (default: from the volume, national ratio).")
@click.option("--sites", type=int, help="Sites (default 1).")
@click.option("--scanners", type=int, help="Scanners (default: from the volume, at least one a site).")
@click.option("--retention-days", type=float, help="Days a care slide stays on hot storage (default 30).")
@click.option(
    "--interest-share", type=float, help="Share of slides kept as slides of interest (default 0.05)."
)
@click.option("--sector", metavar="public|private", help="Scanner price HT (public) or TTC (private).")
@click.option(
    "--price", "prices", multiple=True, metavar="KEY=VALUE", help="A unit price or rate; repeatable."
)
@click.option("--measured", is_flag=True, help="Slides a year and GB a slide from this node's catalog.")
@click.option("--tenant", help="With --measured: count this lab's slides only (FINESS).")
@click.option("--json", "as_json", is_flag=True, help="Print inputs and figures as JSON.")
@click.pass_context
@handle_errors
def costs(
    ctx: click.Context,
    /,
    preset: str | None,
    sector: str | None,
    prices: tuple[str, ...],
    measured: bool,
    tenant: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """The report's cost model: investment, operation, archive, cost per slide and storage CO2.

    Unit prices are the report's (scanner 220 k€ HT public / 350 k€ TTC private, 5 years,
    maintenance 20 % a year, ...); see docs/costs.md for each default and its source.
    """
    if tenant is not None and not measured:
        raise RequestError("--tenant", "only with --measured")
    unit_prices = _prices(prices)
    volumes = None
    if measured:
        archive = open_archive(ctx)
        try:
            volumes = measure(archive.catalog, check_finess(tenant, "--tenant") if tenant else None)
        finally:
            archive.close()
    result = estimate(_inputs(preset, volumes, options, sector), unit_prices)
    if as_json:
        click.echo(
            json.dumps({**result.as_dict(), "measured": volumes.as_dict() if volumes else None}, indent=2)
        )
        return
    _table(result, volumes, preset)
