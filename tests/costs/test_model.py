"""The cost model: the report's two worked examples reproduced from their inputs, the arithmetic
item by item, units, monotonicity, and the errors that name the bad parameter."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.costs.model import (
    PRIVATE_500K_CASES,
    PUBLIC_SECTOR,
    CostInputs,
    Sector,
    UnitPrices,
    estimate,
)
from lamina.errors import RequestError

#: how close lamina's reconstruction must come to the report's published figures
TOLERANCE = 0.05


def test_the_private_500k_case_structure_costs_about_3_euros_a_slide() -> None:
    # Act
    result = estimate(PRIVATE_500K_CASES)

    # Assert: the report's ≈ 3 € a slide, within 5 %
    assert result.cost_per_slide == pytest.approx(3.0, rel=TOLERANCE)
    assert result.slides_per_year == 1_500_000 and result.cases_per_year == 500_000
    # the sizing behind it: 1.5 M slides / 60,000 a scanner; 1.5 M × 1,581 / 29 M pathologists
    assert (result.scanners, result.pathologists) == (25, 82)
    assert result.staff_fte == pytest.approx(7.5)
    # the investment, item by item, at the private (TTC) scanner price
    assert result.investment_items == {
        "scanners": 25 * 350_000,
        "workstations": 82 * 2_000,
        "ims_lis": 5 * 200_000,
    }
    assert result.investment == 9_914_000


def test_the_public_sector_costs_106_million_euros_or_2_8_euros_a_slide_over_5_years() -> None:
    # Act
    result = estimate(PUBLIC_SECTOR)

    # Assert: the report's two public figures, within 5 %
    assert result.total_over_period == pytest.approx(106_000_000, rel=TOLERANCE)
    assert result.cost_per_slide == pytest.approx(2.8, rel=TOLERANCE)
    # 130 structures, each with its IMS/LIS interface and at least one scanner (HT price)
    assert result.scanners == 130
    assert result.investment_items["scanners"] == 130 * 220_000
    assert result.investment_items["ims_lis"] == 130 * 200_000


def test_figures_add_up_and_carry_their_units() -> None:
    # Arrange: one site, 100,000 slides of 2 GB, 60 days hot, 10 % of interest
    inputs = CostInputs(slides_per_year=100_000, gb_per_slide=2.0, retention_days=60, interest_share=0.1)

    # Act
    result = estimate(inputs)

    # Assert: storage held, in GB
    assert result.hot_gb == pytest.approx(100_000 * 2.0 * 60 / 365)
    assert result.archive_gb_added_per_year == pytest.approx(20_000)
    assert result.archive_gb == pytest.approx(20_000 * 3)  # years 1..5 hold 1..5 years: 3 on average
    assert result.archive_gb_steady == pytest.approx(20_000 * 10)
    # money: 2.5 ct a GB a month, 12 months
    assert result.operation_items["hot_storage"] == pytest.approx(result.hot_gb * 0.025 * 12)
    assert result.archive_per_year == pytest.approx(60_000 * 0.025 * 12)
    assert result.operation_items["network"] == 12_000
    assert result.operation_items["maintenance"] == pytest.approx(0.2 * result.investment_items["scanners"])
    # CO2: 0.4 kg a hot GB a year, 0.2 a cold one
    assert result.co2_kg_per_year == pytest.approx(result.hot_gb * 0.4 + 60_000 * 0.2)
    # a year's cost = the investment over 5 years + operation + archive; per slide, per case
    expected = result.investment / 5 + result.operation_per_year + result.archive_per_year
    assert result.cost_per_year == pytest.approx(expected)
    assert result.total_over_period == pytest.approx(5 * expected)
    assert result.cost_per_slide == pytest.approx(result.total_over_period / (5 * 100_000))
    assert result.cost_per_case == pytest.approx(3 * result.cost_per_slide)
    assert result.running_cost_per_slide == pytest.approx((expected - result.investment / 5) / 100_000)


def test_a_private_structure_pays_the_scanner_with_vat() -> None:
    public = estimate(CostInputs(sector=Sector.PUBLIC))
    private = estimate(CostInputs(sector=Sector.PRIVATE))
    assert private.investment_items["scanners"] / public.investment_items["scanners"] == pytest.approx(
        350 / 220
    )
    assert private.cost_per_slide > public.cost_per_slide


def test_given_sizing_is_used_and_an_undersized_one_noted() -> None:
    result = estimate(CostInputs(slides_per_year=300_000, scanners=2, pathologists=7, staff_fte=0))
    assert (result.scanners, result.pathologists, result.staff_fte) == (2, 7, 0)
    assert result.operation_items["staff"] == 0
    assert result.notes == ("2 scanner(s) digitise about 120,000 slides a year; 300,000 need 5",)


def test_an_archive_kept_less_than_the_period_stops_growing() -> None:
    result = estimate(CostInputs(archive_years=2))
    # years 1..5 hold 1, 2, 2, 2, 2 years of intake
    assert result.archive_gb == pytest.approx(result.archive_gb_added_per_year * 9 / 5)
    assert result.archive_gb_steady == pytest.approx(result.archive_gb_added_per_year * 2)


volumes = st.floats(min_value=1_000, max_value=50_000_000)
shares = st.floats(min_value=0.0, max_value=1.0)
factors = st.floats(min_value=1.0, max_value=10.0)


@settings(max_examples=60, deadline=None)
@given(slides=volumes, more=factors, share=shares, days=st.floats(0, 365), sites=st.integers(1, 200))
def test_more_slides_never_cost_less(
    slides: float, more: float, share: float, days: float, sites: int
) -> None:
    inputs = CostInputs(slides_per_year=slides, interest_share=share, retention_days=days, sites=sites)
    bigger = dataclasses.replace(inputs, slides_per_year=slides * more)
    assert estimate(bigger).cost_per_year >= estimate(inputs).cost_per_year * (1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from([f.name for f in dataclasses.fields(UnitPrices)]), factor=factors, slides=volumes)
def test_a_higher_price_never_costs_less_and_a_higher_rate_never_more(
    key: str, factor: float, slides: float
) -> None:
    # Arrange: a dearer price, or a higher throughput (fewer scanners, less staff)
    base = UnitPrices()
    value = getattr(base, key) * factor
    changed = base.with_values({key: round(value) if key == "depreciation_years" else value})
    inputs = CostInputs(slides_per_year=slides)

    # Act
    before, after = estimate(inputs, base), estimate(inputs, changed)

    # Assert
    if key.startswith("co2_"):
        assert after.co2_kg_per_year >= before.co2_kg_per_year and after.cost_per_year == before.cost_per_year
    elif key.startswith("slides_per_") or key == "depreciation_years":
        assert after.cost_per_year <= before.cost_per_year * (1 + 1e-12)
    else:
        assert after.cost_per_year >= before.cost_per_year * (1 - 1e-12)


@settings(max_examples=40, deadline=None)
@given(cases=volumes, per_case=st.floats(min_value=0.5, max_value=20))
def test_cases_and_slides_describe_the_same_volume(cases: float, per_case: float) -> None:
    by_cases = estimate(CostInputs(slides_per_year=None, cases_per_year=cases, slides_per_case=per_case))
    by_slides = estimate(CostInputs(slides_per_year=cases * per_case, slides_per_case=per_case))
    assert by_cases.cost_per_year == pytest.approx(by_slides.cost_per_year)
    assert by_cases.cases_per_year == pytest.approx(by_slides.cases_per_year)
    assert math.isfinite(by_cases.cost_per_case)


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"pathologists": -1}, "pathologists"),
        ({"scanners": -2}, "scanners"),
        ({"sites": 0}, "sites"),
        ({"interest_share": 1.5}, "interest_share"),
        ({"retention_days": -30}, "retention_days"),
        ({"slides_per_year": 0}, "slides_per_year"),
        ({"cases_per_year": 10}, "slides_per_year"),  # both volumes given
        ({"gb_per_slide": float("nan")}, "gb_per_slide"),
    ],
)
def test_bad_inputs_name_their_parameter(changes: dict[str, float], parameter: str) -> None:
    with pytest.raises(RequestError) as raised:
        dataclasses.replace(CostInputs(), **changes)
    assert raised.value.parameter == parameter


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"scanner_price": "1"}, "unknown key 'scanner_price'"),
        ({"workstation": "cheap"}, "is not a number"),
        ({"maintenance_share": "-0.1"}, "maintenance_share: -0.1 is out of range"),
        ({"depreciation_years": "2.5"}, "not a whole number"),
        ({"slides_per_scanner_year": "0"}, "slides_per_scanner_year: 0 is out of range"),
    ],
)
def test_bad_prices_name_the_price_option(values: dict[str, str], message: str) -> None:
    with pytest.raises(RequestError) as raised:
        UnitPrices().with_values(values)
    assert raised.value.parameter == "--price"
    assert message in str(raised.value)


def test_prices_set_by_key() -> None:
    prices = UnitPrices().with_values({"archive_gb_month": "0.004", "depreciation_years": "7"})
    assert (prices.archive_gb_month, prices.depreciation_years) == (0.004, 7)
    assert prices.scanner(Sector.PUBLIC) == 220_000 and prices.scanner(Sector.PRIVATE) == 350_000


def test_the_docs_show_the_figures_lamina_computes() -> None:
    # docs/costs.md sets lamina's figures beside the report's: they must be the model's own
    text = (Path(__file__).parents[2] / "docs" / "costs.md").read_text(encoding="utf-8")
    for preset in (PRIVATE_500K_CASES, PUBLIC_SECTOR):
        result = estimate(preset)
        for figure in (
            f"{result.investment:,.0f} €",
            f"{result.operation_per_year:,.0f} €",
            f"{result.archive_per_year:,.0f} €",
            f"{result.total_over_period:,.0f} €",
            f"{result.cost_per_slide:.2f} €",
            f"{result.co2_kg_per_year:,.0f} kg",
        ):
            assert figure in text, figure
