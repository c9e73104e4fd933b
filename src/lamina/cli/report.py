"""``lamina report``: the storage report (volume per tier and lab, months, slides of interest,
projection, euros and CO2), as tables or JSON, with its plots as PNG and SVG."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import click
from rich.table import Table

from lamina.cli.common import console, handle_errors, open_archive
from lamina.errors import RequestError
from lamina.governance.model import check_finess
from lamina.lifecycle.plan import TierPrices
from lamina.lifecycle.rules import Tier
from lamina.reporting.report import PROJECTION_METHOD, StorageReport, storage_report

_NOW_HELP = "Report as if it were this date and time (ISO 8601; default: now)."


def _when(value: str | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(
            "--now", f"{value!r}: an ISO 8601 date (2027-03-31) or date and time (2027-03-31T18:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _per_tier(pairs: tuple[str, ...], option: str, defaults: dict[Tier, float]) -> dict[Tier, float]:
    found = dict(defaults)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        try:
            tier, value = Tier(key.strip()), float(raw)
        except ValueError:
            raise RequestError(
                option, f"{pair!r}: give TIER=NUMBER, TIER hot or cold (e.g. cold=0.004)"
            ) from None
        if not sep or not math.isfinite(value) or value < 0:
            raise RequestError(option, f"{pair!r}: give TIER=NUMBER with a number >= 0")
        found[tier] = value
    return found


def prices_from(eur: tuple[str, ...], co2: tuple[str, ...]) -> TierPrices:
    """The lifecycle's default prices with ``--price`` and ``--co2`` (``TIER=VALUE``) applied."""
    base = TierPrices()
    return TierPrices(
        _per_tier(eur, "--price", dict(base.eur_per_gb_month)),
        _per_tier(co2, "--co2", dict(base.kg_co2_per_gb_year)),
    )


def _tables(report: StorageReport) -> None:
    found = report.as_dict()
    tiers = Table(
        title=f"live slides on {report.now:%Y-%m-%d}" + (f", lab {report.tenant}" if report.tenant else "")
    )
    for column in ("tier", "slides", "GB", "€ a year", "kg CO2 a year"):
        tiers.add_column(column, justify="left" if column == "tier" else "right")
    for name, row in found["tiers"].items():
        tiers.add_row(
            name,
            f"{row['slides']:,}",
            f"{row['gb']:,.3f}",
            f"{row['eur_per_year']:,.2f}",
            f"{row['kg_co2_per_year']:,.3f}",
        )
    console.print(tiers)
    labs = Table(title="per lab")
    for column in ("lab", "hot GB", "cold GB", "live slides", "expired", "GB freed"):
        labs.add_column(column, justify="left" if column == "lab" else "right")
    for lab in found["labs"]:
        labs.add_row(
            f"{lab['tenant']} {lab['name'] or ''}".strip(),
            f"{lab['tiers']['hot']['gb']:,.3f}",
            f"{lab['tiers']['cold']['gb']:,.3f}",
            f"{lab['live']['slides']:,}",
            f"{lab['expired']['slides']:,}",
            f"{lab['expired']['gb']:,.3f}",
        )
    console.print(labs)
    months = Table(title="per month (UTC)")
    for column in ("month", "ingested", "GB in", "expired", "GB freed"):
        months.add_column(column, justify="right")
    for month in found["months"]:
        if month["ingested"]["slides"] or month["expired"]["slides"]:
            months.add_row(
                month["month"],
                f"{month['ingested']['slides']:,}",
                f"{month['ingested']['gb']:,.3f}",
                f"{month['expired']['slides']:,}",
                f"{month['expired']['gb']:,.3f}",
            )
    console.print(months)
    interest = found["interest"]
    console.print(
        f"slides of interest: {interest['total']['slides']:,} ({interest['total']['gb']:,.3f} GB)"
        + "".join(f"; {name} {row['slides']:,}" for name, row in interest["categories"].items()),
        highlight=False,
        markup=False,
    )
    projected = Table(title="projection")
    for column in ("in", "hot GB", "cold GB", "€ a year", "kg CO2 a year"):
        projected.add_column(column, justify="right")
    for item in found["projections"]:
        projected.add_row(
            f"{item['years']:g} year(s)",
            f"{item['gb']['hot']:,.3f}",
            f"{item['gb']['cold']:,.3f}",
            f"{sum(item['eur_per_year'].values()):,.2f}",
            f"{sum(item['kg_co2_per_year'].values()):,.3f}",
        )
    console.print(projected)
    console.print(f"method: {PROJECTION_METHOD}", highlight=False, markup=False)
    glass = found["glass"]
    hot = glass["tiers"]["hot"]
    if hot["kg_co2_per_slide_year"]:
        console.print(
            f"one digital slide ({glass['gb_per_digital_slide']:.3g} GB) stored hot: "
            f"{hot['kg_co2_per_slide_year']:.3g} kg CO2 a year, one glass slide's "
            f"{glass['glass_slide_kg_co2']} kg after {hot['years_to_one_glass_slide']:.3g} years",
            highlight=False,
            markup=False,
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--plots", "plots_dir", type=click.Path(path_type=Path), help="Write the plots (PNG, SVG) here."
)
@click.option("--tenant", help="This lab's slides only (FINESS).")
@click.option("--now", default=None, help=_NOW_HELP)
@click.option(
    "--price", "eur", multiple=True, metavar="TIER=EUR", help="€ per GB and month of a tier; repeatable."
)
@click.option("--co2", multiple=True, metavar="TIER=KG", help="kg CO2 per GB and year of a tier; repeatable.")
@click.pass_context
@handle_errors
def report(
    ctx: click.Context,
    as_json: bool,
    plots_dir: Path | None,
    tenant: str | None,
    now: str | None,
    eur: tuple[str, ...],
    co2: tuple[str, ...],
) -> None:
    """The storage report: slides and GB per tier and per lab, ingested and expired per month,
    slides of interest, the volume projected over 1 and 10 years, € and kg CO2 a year.

    Defaults: hot 0.025 €/GB/month and 0.4 kg CO2/GB/year, cold 0.005 € and 0.2 kg (the report's
    figures); see docs/reporting.md.
    """
    when = _when(now)
    prices = prices_from(eur, co2)
    lab = check_finess(tenant, "--tenant") if tenant else None
    archive = open_archive(ctx)
    try:
        found = storage_report(archive.catalog, when, tenant=lab, prices=prices)
    finally:
        archive.close()
    written: list[Path] = []
    if plots_dir is not None:
        from lamina.reporting.plots import plots  # matplotlib: only when asked for

        written = plots(found, plots_dir)
    if as_json:
        click.echo(json.dumps({**found.as_dict(), "plots": [str(path) for path in written]}, indent=2))
        return
    _tables(found)
    for path in written:
        console.print(f"wrote {path}", highlight=False, markup=False)
