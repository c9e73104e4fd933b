"""``lamina costs`` as a lab director runs it: the report's presets as a table and as JSON, options
and prices over a preset, the node's own measured volumes, and one-line errors naming the option.

The ingest runs as a process (the ``lamina`` fixture); the calculator itself runs in this process
through click's runner, the same command without a second of interpreter start-up each time."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from lamina.cli import cli
from lamina.sample import write_samples

Run = Callable[..., subprocess.CompletedProcess[str]]  # the fixture lamina, tests/cli/conftest.py
LYON = "690781810"


@pytest.fixture
def backend_env() -> dict[str, str]:
    """The embedded default only (SQLite and a folder): the command reads one count and one sum
    from the catalog's slides table, the same on both backends."""
    return {}


def costs(*args: str, home: Path | None = None) -> Result:
    """``lamina costs ARGS`` in this process, on the archive in ``home``."""
    env = {"LAMINA_HOME": str(home)} if home else {}
    return CliRunner().invoke(cli, ["costs", *args], env=env)


def test_the_private_preset_as_a_table() -> None:
    shown = costs("--preset", "private")
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert "inputs (preset private)" in out and "private" in out
    assert "1,500,000" in out and "500,000" in out  # slides and cases a year, with separators
    assert "9,914,000 €" in out  # the investment
    assert "cost per slide" in out and "2.88 €" in out
    assert "storage CO2 a year" in out


def test_the_public_preset_as_json() -> None:
    shown = costs("--preset", "public", "--json")
    assert shown.exit_code == 0, shown.output
    figures = json.loads(shown.stdout)
    assert figures["inputs"]["sites"] == 130 and figures["inputs"]["sector"] == "public"
    assert figures["total_over_period"] == pytest.approx(106_000_000, rel=0.05)
    assert figures["cost_per_slide"] == pytest.approx(2.8, rel=0.05)
    assert figures["prices"]["scanner_public"] == 220_000
    assert figures["measured"] is None


def test_options_and_prices_over_a_preset() -> None:
    shown = costs(
        "--preset",
        "private",
        "--cases",
        "100000",
        "--slides-per-case",
        "2",
        "--sites",
        "2",
        "--scanners",
        "4",
        "--pathologists",
        "20",
        "--retention-days",
        "90",
        "--interest-share",
        "0.1",
        "--price",
        "scanner_private=300000",
        "--price",
        "workstation=3000",
        "--json",
    )
    assert shown.exit_code == 0, shown.output
    figures = json.loads(shown.stdout)
    assert figures["slides_per_year"] == 200_000 and figures["inputs"]["sector"] == "private"
    assert figures["investment_items"] == {
        "scanners": 4 * 300_000,
        "workstations": 20 * 3_000,
        "ims_lis": 2 * 200_000,
    }
    assert figures["hot_gb"] == pytest.approx(200_000 * 1.5 * 90 / 365)
    assert figures["archive_gb_added_per_year"] == pytest.approx(200_000 * 0.1 * 1.5)


def test_measured_volumes_of_this_node(lamina: Run, tmp_path: Path) -> None:
    # Arrange: one slide stored on this node
    (sample,) = write_samples(tmp_path / "samples", ["aperio_svs"], size=(1024, 768), seed=5)
    assert lamina("ingest", str(sample.path)).returncode == 0
    (slide,) = json.loads(lamina("slides", "--json").stdout)

    home = tmp_path / "home"  # the fixture's archive

    # Act
    shown = costs("--measured", "--json", home=home)
    table = costs("--measured", "--slides", "300000", home=home)

    # Assert: one slide a year, of the size the catalog holds
    assert shown.exit_code == 0, shown.output
    figures = json.loads(shown.stdout)
    assert figures["measured"]["slides"] == 1 and figures["measured"]["bytes"] == slide["bytes"]
    assert figures["slides_per_year"] == 1
    assert figures["inputs"]["gb_per_slide"] == pytest.approx(slide["bytes"] / 1e9)
    # a volume given keeps the measured size a slide
    assert table.exit_code == 0, table.output
    assert "300,000" in table.stdout and "measured on this node: 1 slide(s)" in table.stdout
    # a lab without slides has nothing to measure
    other = costs("--measured", "--tenant", LYON, home=home)
    assert other.exit_code == 2
    assert f"no slide of tenant {LYON}" in other.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--pathologists", "-3"], "--pathologists"),
        (["--slides", "-1000"], "--slides"),
        (["--interest-share", "1.5"], "--interest-share"),
        (["--price", "scanner=1"], "--price"),
        (["--tenant", LYON], "--tenant"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(args: list[str], option: str) -> None:
    shown = costs(*args)
    assert shown.exit_code == 2
    assert shown.stderr.startswith(f"error: {option}:"), shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1


def test_the_commands_in_the_docs_run() -> None:
    # docs/costs.md's examples without an archive (the --measured ones are tested above)
    text = (Path(__file__).parents[2] / "docs" / "costs.md").read_text(encoding="utf-8")
    commands = [
        line.removeprefix("$ lamina costs").split("#")[0].split()
        for line in text.splitlines()
        if line.startswith("$ lamina costs") and "--measured" not in line
    ]
    assert len(commands) == 3
    for args in commands:
        shown = costs(*args)
        assert shown.exit_code == 0, (args, shown.output)
        assert "cost per slide" in shown.stdout or "cost_per_slide" in shown.stdout
