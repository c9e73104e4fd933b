"""The storage report's plots, as PNG and SVG, with matplotlib.

Figures are drawn on matplotlib's :class:`~matplotlib.figure.Figure` directly, never through
``pyplot``: no global figure manager, no GUI backend (the Agg canvas renders PNG, the SVG one SVG),
so a server may draw them from several threads at once. :data:`PLOTS` names each plot; the files
are ``NAME.png`` and ``NAME.svg``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lamina.errors import NotFoundError
from lamina.lifecycle.rules import Tier
from lamina.reporting.report import GLASS_SLIDE_KG_CO2, StorageReport, Volume, project

__all__ = ["FORMATS", "PLOTS", "plot_names", "plots", "render"]

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
_COLORS = {Tier.HOT: "#c0392b", Tier.COLD: "#2e86c1"}
_GB = 1e9
# no creation date in the files: the same report draws the same bytes
_METADATA: dict[str, dict[str, str | None]] = {"png": {"Software": None}, "svg": {"Date": None}}


def _volume(report: StorageReport, axes: Axes) -> None:
    labs = report.labs or []
    names = [lab.tenant for lab in labs] or ["(none)"]
    bottom = [0.0] * len(names)
    for tier in (Tier.HOT, Tier.COLD):
        values = [lab.tiers.get(tier, Volume()).bytes / _GB for lab in labs] or [0.0]
        axes.bar(names, values, bottom=bottom, label=tier.value, color=_COLORS[tier])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_title("Live volume per lab and tier")
    axes.set_ylabel("GB")
    axes.legend()


def _months(report: StorageReport, axes: Axes) -> None:
    months = [month.month for month in report.months]
    axes.plot(months, [m.ingested.bytes / _GB for m in report.months], marker="o", label="ingested")
    axes.plot(months, [m.expired.bytes / _GB for m in report.months], marker="o", label="freed by expiry")
    axes.set_title("Ingested and expired per month")
    axes.set_ylabel("GB")
    axes.tick_params(axis="x", labelrotation=60, labelsize=7)
    axes.legend()


def _projection(report: StorageReport, axes: Axes) -> None:
    years = list(range(11))
    points = [project(report, year) for year in years]
    for tier in (Tier.HOT, Tier.COLD):
        axes.plot(
            years, [p.tiers[tier] / _GB for p in points], marker="o", label=tier.value, color=_COLORS[tier]
        )
    axes.plot(
        years, [sum(p.tiers.values()) / _GB for p in points], linestyle="--", color="#555", label="total"
    )
    axes.set_title("Projected volume (last 12 months' rates)")
    axes.set_xlabel("years from now")
    axes.set_ylabel("GB")
    axes.legend()


def _co2(report: StorageReport, axes: Axes) -> None:
    labels = ["now", *(f"in {p.years:g} y" for p in report.projections)]
    now = {tier: report.kg_co2_per_year(tier) for tier in (Tier.HOT, Tier.COLD)}
    rows = [now, *(dict(p.kg_co2_per_year) for p in report.projections)]
    bottom = [0.0] * len(labels)
    for tier in (Tier.HOT, Tier.COLD):
        values = [row[tier] for row in rows]
        axes.bar(labels, values, bottom=bottom, label=tier.value, color=_COLORS[tier])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    glass = report.live.slides * GLASS_SLIDE_KG_CO2
    if glass:
        axes.axhline(
            glass, color="#555", linestyle=":", label=f"live slides as glass ({GLASS_SLIDE_KG_CO2} kg each)"
        )
    axes.set_title("Storage CO2 per year")
    axes.set_ylabel("kg CO2 a year")
    axes.legend()


#: name -> what draws it
PLOTS: dict[str, Callable[[StorageReport, Axes], None]] = {
    "volume": _volume,
    "months": _months,
    "projection": _projection,
    "co2": _co2,
}


def plot_names() -> list[str]:
    """Every file name :func:`plots` writes (``volume.png``, ``volume.svg``, ...)."""
    return [f"{name}.{ext}" for name in PLOTS for ext in FORMATS]


def render(report: StorageReport, filename: str) -> bytes:
    """The plot ``filename`` (one of :func:`plot_names`) of ``report``, as bytes.

    Raises
    ------
    NotFoundError
        Not a plot's file name.
    """
    name, _, ext = filename.partition(".")
    if name not in PLOTS or ext not in FORMATS:
        raise NotFoundError(f"no plot {filename!r}; the plots are {', '.join(plot_names())}")
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    PLOTS[name](report, figure.add_subplot())
    buffer = io.BytesIO()
    figure.savefig(buffer, format=ext, dpi=100, metadata=_METADATA[ext])
    return buffer.getvalue()


def plots(report: StorageReport, directory: Path) -> list[Path]:
    """Write every plot of ``report`` into ``directory`` (made if missing) as PNG and SVG; the files."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename in plot_names():
        path = directory / filename
        path.write_bytes(render(report, filename))
        written.append(path)
    return written
