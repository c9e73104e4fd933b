"""The cost of digitising a pathology structure: investment, yearly operation, archive, per slide.

A pure model after the French ministerial report on the digitisation of pathology (*numérisation
de l'anatomie et cytologie pathologiques*, November 2024, §2.8). The report's own §2.8 tables were
not available to us: the **unit prices** below are the report's figures as issue 11 quotes them;
the **structure of the model** (what is investment, what is operation, how storage accumulates)
and the **sizing rates** (scanner throughput, extra staff per slide) are lamina's reconstruction,
chosen so that the report's two worked examples come out within 5 % (``docs/costs.md`` sets the
two side by side). Every default says which it is.

Money is in euros, as ``float``: the inputs are estimates with two or three significant figures,
so decimal arithmetic would only dress them in false precision; figures are rounded for display.

The model, for one structure (or an aggregate of structures, a region or a sector)::

    investment  = scanners × scanner price + pathologists × workstation + sites × (IMS + LIS interface)
    operation   = maintenance (share of the scanners' price a year) + network (sites × a month × 12)
                  + hot storage (care slides held for the retention) + staff (extra FTE)
    archive     = slides of interest, each year's intake kept ``archive_years`` at the archive price
    cost a year = investment / depreciation years + operation + archive (mean over those years)
    per slide   = cost a year / slides a year;  per case = per slide × slides per case

Example
-------
>>> result = estimate(PRIVATE_500K_CASES)
>>> round(result.cost_per_slide, 1)
2.9
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lamina.errors import RequestError

__all__ = [
    "NATIONAL_PATHOLOGISTS",
    "NATIONAL_SLIDES_PER_YEAR",
    "PRIVATE_500K_CASES",
    "PUBLIC_SECTOR",
    "PUBLIC_SECTOR_SLIDES_PER_YEAR",
    "CostInputs",
    "CostResult",
    "Sector",
    "UnitPrices",
    "estimate",
]

#: the report: ~29 million slides a year in France (histology ~9.6 M acts × 3–5 slides)
NATIONAL_SLIDES_PER_YEAR = 29_000_000
#: the report: 1,581 pathologists (223 structures: 130 public, 93 private)
NATIONAL_PATHOLOGISTS = 1_581
#: the report's national histology acts a year, ~9.6 million
NATIONAL_ACTS_PER_YEAR = 9_600_000
#: GB as storage is priced: 10**9 bytes
GB = 1_000_000_000


class Sector(StrEnum):
    """Who buys: a public structure pays the scanner's price before VAT (HT), a private one with it (TTC)."""

    PUBLIC = "public"
    PRIVATE = "private"


def _check(
    parameter: str, value: float, *, low: float = 0.0, high: float | None = None, above: bool = False
) -> None:
    if (
        not math.isfinite(value)
        or value < low
        or (above and value <= low)
        or (high is not None and value > high)
    ):
        bound = f"> {low:g}" if above else f">= {low:g}"
        span = f"between {low:g} and {high:g}" if high is not None else f"a number {bound}"
        raise RequestError(parameter, f"{value:g} is out of range: give {span}")


@dataclass(frozen=True)
class UnitPrices:
    """Unit prices (euros) and the rates that size a structure.

    Parameters
    ----------
    scanner_public
        One slide scanner for a public structure, before VAT: 220,000 € HT (the report).
    scanner_private
        One slide scanner for a private structure, VAT included: 350,000 € TTC (the report).
    maintenance_share
        Scanner maintenance a year, as a share of its price: 0.20 (the report: 20 % a year).
        Counted every year of the depreciation period (lamina: no free warranty year assumed).
    depreciation_years
        Years over which the investment is spread: 5 (the report).
    workstation
        One pathologist's workstation (screen, computer): 2,000 € (the report: 1–3 k€; midpoint).
    ims_lis_per_site
        Image management system and its interface to the LIS, per site: 200,000 € (the report).
    network_per_site_month
        Network link per site and month: 1,000 € (the report).
    hot_gb_month
        Care (hot) storage per GB and month: 0.025 € (the report: 2.5 ct/GB for one month,
        private labs' model).
    archive_gb_month
        Archive storage per GB and month: 0.025 € (lamina: the report's one storage price; a cold
        tier is usually cheaper, set it with ``--price archive_gb_month=...``).
    staff_fte_year
        Loaded yearly cost of one full-time extra staff member (scanning technician, IT):
        50,000 € (lamina's reconstruction; the report lists staff without a figure we could read).
    slides_per_scanner_year
        Slides one scanner digitises in a year: 60,000, i.e. 240 a working day over 250 days
        (lamina's reconstruction: one shift, with rescans, IHC and large sections).
    slides_per_staff_year
        Slides a year per extra full-time staff member: 200,000, i.e. 800 a working day of loading,
        quality control and rescans (lamina's reconstruction).
    co2_hot_kg_gb_year, co2_cold_kg_gb_year
        kg CO2 per GB stored a year: 0.4 hot, 0.2 cold (the report: 0.2–0.4 kg CO2/GB/year).
    """

    scanner_public: float = 220_000.0
    scanner_private: float = 350_000.0
    maintenance_share: float = 0.20
    depreciation_years: int = 5
    workstation: float = 2_000.0
    ims_lis_per_site: float = 200_000.0
    network_per_site_month: float = 1_000.0
    hot_gb_month: float = 0.025
    archive_gb_month: float = 0.025
    staff_fte_year: float = 50_000.0
    slides_per_scanner_year: float = 60_000.0
    slides_per_staff_year: float = 200_000.0
    co2_hot_kg_gb_year: float = 0.4
    co2_cold_kg_gb_year: float = 0.2

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            positive = item.name in {"depreciation_years", "slides_per_scanner_year", "slides_per_staff_year"}
            _check(item.name, getattr(self, item.name), above=positive)
        if self.depreciation_years != int(self.depreciation_years):
            raise RequestError(
                "depreciation_years", f"{self.depreciation_years!r} is not a whole number of years"
            )

    def scanner(self, sector: Sector) -> float:
        """One scanner's price for ``sector``: HT for the public sector, TTC for the private one."""
        return self.scanner_public if sector is Sector.PUBLIC else self.scanner_private

    def with_values(self, values: Mapping[str, str | float]) -> UnitPrices:
        """A copy with ``values`` (``{"scanner_public": "250000"}``) set; an unknown key or a value
        that is not a number raises :class:`RequestError` naming ``--price``."""
        known = {item.name: item for item in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, raw in values.items():
            if key not in known:
                raise RequestError("--price", f"unknown key {key!r}; known keys: {', '.join(known)}")
            try:
                number = float(raw)
            except ValueError:
                raise RequestError("--price", f"{key}={raw!r} is not a number") from None
            if key == "depreciation_years":
                if number != int(number):
                    raise RequestError("--price", f"{key}={raw!r} is not a whole number of years")
                changes[key] = int(number)
            else:
                changes[key] = number
        try:
            return dataclasses.replace(self, **changes)
        except RequestError as exc:
            raise RequestError("--price", str(exc)) from None

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CostInputs:
    """What sizes a structure (or a sector): volume, people, sites, retention.

    Give the volume as ``slides_per_year`` or as ``cases_per_year`` (then slides = cases × slides
    per case), not both. The defaults describe a large lab (the report: 800–1,100 slides a day):
    1,000 slides a working day over 250 days.

    Parameters
    ----------
    slides_per_year, cases_per_year
        The volume: one of the two, the other ``None``.
    slides_per_case
        3.0: the report's ~29 M slides over its ~9.6 M histology acts (it says 3–5 slides an act).
    pathologists
        ``None``: derived from the volume at the national ratio, 29 M slides / 1,581 pathologists
        (the report's figures; lamina's derivation).
    sites
        Sites, each with its IMS/LIS interface and network link, and at least one scanner.
    scanners
        ``None``: derived, ``max(ceil(slides / slides_per_scanner_year), sites)``.
    staff_fte
        Extra full-time staff; ``None``: derived, slides / ``slides_per_staff_year``.
    sector
        Public (scanner HT) or private (scanner TTC).
    retention_days
        How long a care slide stays on hot storage: 30 (the report: 1 month at Kremlin-Bicêtre to
        ~3 months at Rennes; its storage price is for one month).
    interest_share
        Share of slides kept as slides of interest: 0.05 (the report: 5–10 %).
    archive_years
        Years a slide of interest is kept: 10 (the report: at least 10 years).
    gb_per_slide
        Average size of one digital slide: 1.5 GB (the report: 1–2 GB; midpoint), or the lab's own
        measured average (``lamina costs --measured``).
    """

    slides_per_year: float | None = 250_000.0
    cases_per_year: float | None = None
    slides_per_case: float = 3.0
    pathologists: int | None = None
    sites: int = 1
    scanners: int | None = None
    staff_fte: float | None = None
    sector: Sector = Sector.PUBLIC
    retention_days: float = 30.0
    interest_share: float = 0.05
    archive_years: int = 10
    gb_per_slide: float = 1.5

    def __post_init__(self) -> None:
        if (self.slides_per_year is None) == (self.cases_per_year is None):
            raise RequestError(
                "slides_per_year", "give the volume as slides a year or as cases a year, one of the two"
            )
        for name in ("slides_per_year", "cases_per_year"):
            value = getattr(self, name)
            if value is not None:
                _check(name, value, above=True)
        _check("slides_per_case", self.slides_per_case, above=True)
        _check("sites", self.sites, low=1)
        for name in ("pathologists", "scanners", "staff_fte"):
            value = getattr(self, name)
            if value is not None:
                _check(name, value)
        _check("retention_days", self.retention_days)
        _check("interest_share", self.interest_share, high=1.0)
        _check("archive_years", self.archive_years)
        _check("gb_per_slide", self.gb_per_slide, above=True)
        object.__setattr__(self, "sector", Sector(self.sector))

    @property
    def slides(self) -> float:
        """Slides a year, given or from the cases."""
        if self.slides_per_year is not None:
            return float(self.slides_per_year)
        return float(self.cases_per_year or 0.0) * self.slides_per_case

    @property
    def cases(self) -> float:
        """Cases a year, given or from the slides."""
        if self.cases_per_year is not None:
            return float(self.cases_per_year)
        return self.slides / self.slides_per_case

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sector": self.sector.value}


@dataclass(frozen=True)
class CostResult:
    """What :func:`estimate` finds. Euros, GB (10**9 bytes), kg CO2; ``…_per_year`` for a year.

    Parameters
    ----------
    slides_per_year, cases_per_year, pathologists, scanners, staff_fte
        The volume and the sizing used (derived where the inputs left them ``None``).
    investment
        Scanners, workstations and IMS/LIS interfaces, bought once; ``investment_items`` by item.
    operation_per_year
        Maintenance, network, hot storage and staff, every year; ``operation_items`` by item.
    archive_per_year
        The archive of slides of interest, a year, averaged over the depreciation period (the
        archive grows by one year's intake each year).
    archive_per_year_steady
        The same once ``archive_years`` of intake are held (it then stops growing).
    cost_per_year
        investment / depreciation years + operation + archive.
    total_over_period
        investment + depreciation years × (operation + archive).
    cost_per_slide, cost_per_case
        cost_per_year per slide and per case (the same as total_over_period per slide digitised
        over the period).
    running_cost_per_slide
        (operation + archive) per slide: the cost once the investment is paid off.
    hot_gb, archive_gb, archive_gb_steady, archive_gb_added_per_year
        Storage held: care slides; the archive averaged over the period; at steady state; added a year.
    co2_kg_per_year, co2_kg_per_year_steady
        Storage footprint: hot GB × the hot factor + archive GB × the cold factor.
    """

    inputs: CostInputs
    prices: UnitPrices
    slides_per_year: float
    cases_per_year: float
    pathologists: int
    scanners: int
    staff_fte: float
    investment_items: dict[str, float]
    operation_items: dict[str, float]
    investment: float
    operation_per_year: float
    archive_per_year: float
    archive_per_year_steady: float
    cost_per_year: float
    total_over_period: float
    cost_per_slide: float
    cost_per_case: float
    running_cost_per_slide: float
    hot_gb: float
    archive_gb_added_per_year: float
    archive_gb: float
    archive_gb_steady: float
    co2_kg_per_year: float
    co2_kg_per_year_steady: float
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the inputs, the prices, the sizing and the figures."""
        figures = {
            item.name: getattr(self, item.name)
            for item in dataclasses.fields(self)
            if item.name not in {"inputs", "prices", "notes"}
        }
        return {
            "inputs": self.inputs.as_dict(),
            "prices": self.prices.as_dict(),
            **figures,
            "notes": list(self.notes),
        }


def _mean_years_held(period: int, keep: int) -> float:
    """Years of intake the archive holds, on average over ``period`` years: in year k it holds
    min(k, keep) years of intake (counted at the year's end, the cautious side)."""
    return sum(min(year, keep) for year in range(1, period + 1)) / period


def estimate(inputs: CostInputs, prices: UnitPrices | None = None) -> CostResult:
    """The cost of ``inputs`` at ``prices`` (default: :class:`UnitPrices`)."""
    prices = prices or UnitPrices()
    slides = inputs.slides
    years = prices.depreciation_years
    pathologists = (
        inputs.pathologists
        if inputs.pathologists is not None
        else math.ceil(slides * NATIONAL_PATHOLOGISTS / NATIONAL_SLIDES_PER_YEAR)
    )
    scanners = (
        inputs.scanners
        if inputs.scanners is not None
        else max(math.ceil(slides / prices.slides_per_scanner_year), inputs.sites)
    )
    staff_fte = inputs.staff_fte if inputs.staff_fte is not None else slides / prices.slides_per_staff_year
    scanner_price = prices.scanner(inputs.sector)

    investment_items = {
        "scanners": scanners * scanner_price,
        "workstations": pathologists * prices.workstation,
        "ims_lis": inputs.sites * prices.ims_lis_per_site,
    }
    hot_gb = slides * inputs.gb_per_slide * inputs.retention_days / 365.0
    operation_items = {
        "maintenance": scanners * scanner_price * prices.maintenance_share,
        "network": inputs.sites * prices.network_per_site_month * 12,
        "hot_storage": hot_gb * prices.hot_gb_month * 12,
        "staff": staff_fte * prices.staff_fte_year,
    }
    added = slides * inputs.interest_share * inputs.gb_per_slide
    archive_gb = added * _mean_years_held(years, inputs.archive_years)
    archive_gb_steady = added * inputs.archive_years
    archive_per_year = archive_gb * prices.archive_gb_month * 12
    archive_per_year_steady = archive_gb_steady * prices.archive_gb_month * 12

    investment = sum(investment_items.values())
    operation = sum(operation_items.values())
    cost_per_year = investment / years + operation + archive_per_year
    cost_per_slide = cost_per_year / slides
    notes = []
    if inputs.scanners is not None and slides > inputs.scanners * prices.slides_per_scanner_year:
        needed = math.ceil(slides / prices.slides_per_scanner_year)
        capacity = inputs.scanners * prices.slides_per_scanner_year
        notes.append(
            f"{inputs.scanners} scanner(s) digitise about {capacity:,.0f} slides a year; "
            f"{slides:,.0f} need {needed}"
        )
    return CostResult(
        inputs=inputs,
        prices=prices,
        slides_per_year=slides,
        cases_per_year=inputs.cases,
        pathologists=pathologists,
        scanners=scanners,
        staff_fte=staff_fte,
        investment_items=investment_items,
        operation_items=operation_items,
        investment=investment,
        operation_per_year=operation,
        archive_per_year=archive_per_year,
        archive_per_year_steady=archive_per_year_steady,
        cost_per_year=cost_per_year,
        total_over_period=investment + years * (operation + archive_per_year),
        cost_per_slide=cost_per_slide,
        cost_per_case=cost_per_slide * inputs.slides_per_case,
        running_cost_per_slide=(operation + archive_per_year) / slides,
        hot_gb=hot_gb,
        archive_gb_added_per_year=added,
        archive_gb=archive_gb,
        archive_gb_steady=archive_gb_steady,
        co2_kg_per_year=hot_gb * prices.co2_hot_kg_gb_year + archive_gb * prices.co2_cold_kg_gb_year,
        co2_kg_per_year_steady=hot_gb * prices.co2_hot_kg_gb_year
        + archive_gb_steady * prices.co2_cold_kg_gb_year,
        notes=tuple(notes),
    )


#: The public sector's slides a year, as the report's two public figures imply it: 106 M€ over the
#: 5-year period at 2.8 € a slide is 106e6 / (2.8 × 5) ≈ 7.57 M slides a year (about a quarter of
#: the ~29 M national slides). Not a figure the report states: lamina's derivation.
PUBLIC_SECTOR_SLIDES_PER_YEAR = 106_000_000 / (2.8 * 5)

#: The report's private worked example: one structure of 500,000 cases a year (≈ 3 € a slide).
#: The cases, the sector and the prices are the report's; 3 slides a case, the pathologists (from
#: the national ratio), 5 sites and the derived scanners and staff are lamina's reconstruction.
PRIVATE_500K_CASES = CostInputs(slides_per_year=None, cases_per_year=500_000, sites=5, sector=Sector.PRIVATE)

#: The report's public worked example: the public sector, 130 structures, 106 M€, 2.8 € a slide
#: over 5 years. The 130 structures and the prices are the report's; the slides a year are derived
#: from its two figures (see PUBLIC_SECTOR_SLIDES_PER_YEAR); the rest is lamina's derivation.
PUBLIC_SECTOR = CostInputs(slides_per_year=PUBLIC_SECTOR_SLIDES_PER_YEAR, sites=130, sector=Sector.PUBLIC)
