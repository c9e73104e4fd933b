"""The storage report on a small real archive, on both backends: volumes per tier and per lab are
the sums of the slides' bytes, months and rates come from the dates the slides carry, the
projection follows the documented method, the plots are valid PNG and SVG, and ``lamina report
--json`` prints the same figures."""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from lamina.archive.archive import Archive
from lamina.cli import cli
from lamina.config import Settings
from lamina.errors import NotFoundError
from lamina.lifecycle.plan import TierPrices
from lamina.lifecycle.rules import Tier
from lamina.reporting import storage_report
from lamina.reporting.plots import plot_names, plots, render
from tests.backends import Backend
from tests.reporting.world import LAB_A, LAB_B, NOW, World, build_world

GB = 1e9


@dataclass(frozen=True)
class Built:
    archive: Archive
    world: World
    env: dict[str, str]
    home: Path


@pytest.fixture(scope="module")
def built(module_backend: Backend) -> Iterator[Built]:
    with tempfile.TemporaryDirectory(prefix="lamina-report-") as tmp:
        root = Path(tmp)
        env = module_backend.env("report")
        archive = Archive.open(Settings.load(root / "home", env=env))
        try:
            yield Built(archive, build_world(archive, root / "samples"), env, root / "home")
        finally:
            archive.close()


def test_volumes_per_tier_and_lab_are_the_sums_of_the_slides_bytes(built: Built) -> None:
    b, freed = built.world.bytes, built.world.freed
    # Act
    report = storage_report(built.archive.catalog, NOW).as_dict()
    # Assert: live slides per tier (the expired one is not live)
    assert report["tiers"]["hot"]["slides"] == 2
    assert report["tiers"]["hot"]["bytes"] == b["interest"] + b["other"]
    assert report["tiers"]["cold"] == {
        "slides": 1,
        "bytes": b["cold"],
        "gb": b["cold"] / GB,
        "eur_per_year": pytest.approx(0.005 * 12 * b["cold"] / GB),
        "kg_co2_per_year": pytest.approx(0.2 * b["cold"] / GB),
    }
    assert report["tiers"]["hot"]["kg_co2_per_year"] == pytest.approx(0.4 * (b["interest"] + b["other"]) / GB)
    assert report["live"]["slides"] == 3 and report["expired"] == {
        "slides": 1,
        "bytes": freed,
        "gb": freed / GB,
    }
    # per lab, with its name, and what expiry freed there
    labs = {lab["tenant"]: lab for lab in report["labs"]}
    assert set(labs) == {LAB_A, LAB_B}
    assert labs[LAB_A]["tiers"]["hot"]["bytes"] == b["interest"]
    assert labs[LAB_A]["tiers"]["cold"]["bytes"] == b["cold"]
    assert labs[LAB_A]["expired"] == {"slides": 1, "bytes": freed, "gb": freed / GB}
    assert labs[LAB_B]["tiers"]["hot"]["bytes"] == b["other"] and labs[LAB_B]["expired"]["slides"] == 0
    assert labs[LAB_B]["name"] == "Anatomie pathologique (Lyon)"
    # slides of interest, by category
    assert report["interest"]["categories"] == {
        "teaching": {"slides": 1, "bytes": b["interest"], "gb": b["interest"] / GB}
    }


def test_months_rates_and_the_projection(built: Built) -> None:
    b, freed = built.world.bytes, built.world.freed
    # Act
    report = storage_report(built.archive.catalog, NOW).as_dict()
    # Assert: 24 months up to NOW's, each slide in the month it was stored
    months = {m["month"]: m for m in report["months"]}
    assert len(report["months"]) == 24 and report["months"][0]["month"] == "2024-04"
    assert report["months"][-1]["month"] == "2026-03"
    ingested = {name: m["ingested"]["bytes"] for name, m in months.items() if m["ingested"]["slides"]}
    assert ingested == {
        "2025-03": b["other"],
        "2025-12": b["cold"],
        "2026-01": b["care"],
        "2026-02": b["interest"],
    }
    assert {name: m["expired"]["bytes"] for name, m in months.items() if m["expired"]["slides"]} == {
        "2026-03": freed
    }
    # the rates: the last 365 days (lab B's slide is older)
    rates = report["rates"]
    assert rates["gb_ingested_per_year"] == (b["care"] + b["interest"] + b["cold"]) / GB
    assert rates["gb_ingested_interest_per_year"] == b["interest"] / GB
    assert rates["gb_freed_per_year"] == freed / GB
    # care grows by what came in less what expiry freed; interest accumulates
    one, ten = report["projections"]
    care_rate = b["care"] + b["cold"] - freed
    assert (one["years"], ten["years"]) == (1, 10)
    assert one["care_gb"] * GB == pytest.approx(b["other"] + b["cold"] + care_rate)
    assert ten["care_gb"] * GB == pytest.approx(b["other"] + b["cold"] + 10 * care_rate)
    assert ten["interest_gb"] * GB == pytest.approx(11 * b["interest"])
    # each stream keeps today's tier split: interest is all hot today; care hot (lab B) and cold
    cold_share = b["cold"] / (b["other"] + b["cold"])
    assert ten["gb"]["cold"] * GB == pytest.approx(ten["care_gb"] * GB * cold_share, abs=1)
    assert ten["total_gb"] == pytest.approx(ten["care_gb"] + ten["interest_gb"])
    assert ten["kg_co2_per_year"]["cold"] == pytest.approx(0.2 * ten["gb"]["cold"])
    assert "last 365 days" in report["projection_method"]
    # the glass slide: 0.6 kg beside a digital slide's yearly footprint
    glass = report["glass"]
    per_slide = (b["interest"] + b["other"] + b["cold"]) / 3 / GB
    assert glass["gb_per_digital_slide"] == pytest.approx(per_slide)
    assert glass["tiers"]["hot"]["years_to_one_glass_slide"] == pytest.approx(0.6 / (0.4 * per_slide))


def test_one_lab_and_other_prices(built: Built) -> None:
    b = built.world.bytes
    prices = TierPrices({Tier.HOT: 0.03, Tier.COLD: 0.001}, {Tier.HOT: 0.35, Tier.COLD: 0.1})
    # Act
    report = storage_report(built.archive.catalog, NOW, tenant=LAB_B, prices=prices)
    # Assert
    assert [lab.tenant for lab in report.labs] == [LAB_B]
    assert report.tiers[Tier.HOT].bytes == b["other"] and Tier.COLD not in report.tiers
    assert report.eur_per_year(Tier.HOT) == pytest.approx(0.03 * 12 * b["other"] / GB)
    assert report.months[-1].ingested.slides == 0 and report.interest == {}
    # nothing ingested in its last 365 days: its volume stays as it is
    assert report.projections[1].tiers == {Tier.HOT: b["other"], Tier.COLD: 0}


def test_plots_are_valid_png_and_svg(built: Built, tmp_path: Path) -> None:
    report = storage_report(built.archive.catalog, NOW)
    # Act
    written = plots(report, tmp_path / "plots")
    # Assert
    assert sorted(path.name for path in written) == sorted(plot_names())
    assert {path.stem for path in written} == {"volume", "months", "projection", "co2"}
    for path in written:
        if path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
                assert image.format == "PNG" and image.size == (800, 450)
        else:
            root = ET.parse(path).getroot()
            assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert render(report, "co2.png") == (tmp_path / "plots" / "co2.png").read_bytes()  # no date in the file
    with pytest.raises(NotFoundError, match=r"no plot 'volume\.gif'"):
        render(report, "volume.gif")


def test_lamina_report_json_and_plots(built: Built, tmp_path: Path) -> None:
    env = {"LAMINA_HOME": str(built.home), **built.env}
    # Act
    shown = CliRunner().invoke(
        cli,
        [
            "report",
            "--json",
            "--now",
            NOW.isoformat(),
            "--tenant",
            LAB_A,
            "--plots",
            str(tmp_path),
            "--price",
            "cold=0.002",
        ],
        env=env,
    )
    table = CliRunner().invoke(cli, ["report", "--now", "2026-03-15T12:00"], env=env)
    bad = CliRunner().invoke(cli, ["report", "--price", "warm=1"], env=env)
    # Assert
    assert shown.exit_code == 0, shown.output
    found = json.loads(shown.stdout)
    assert found == {
        **storage_report(
            built.archive.catalog,
            NOW,
            tenant=LAB_A,
            prices=TierPrices({Tier.HOT: 0.025, Tier.COLD: 0.002}),
        ).as_dict(),
        "plots": [str(tmp_path / name) for name in plot_names()],
    }
    assert found["tiers"]["cold"]["bytes"] == built.world.bytes["cold"]
    assert table.exit_code == 0, table.output
    assert "live slides on 2026-03-15" in table.stdout and "2026-02" in table.stdout
    assert bad.exit_code == 2 and "--price" in bad.output and "hot or cold" in bad.output
