"""``lamina case final``, ``lamina interest``, ``lamina hold`` and ``lamina lifecycle
plan|run|rules`` as an operator runs them (embedded default): a report starts the clock, the plan
shows what is due with its totals, a flag and a hold keep slides, the run expires the rest and is
idempotent, a malformed rules file is refused with its line and the rules in force stay."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.sample import write_samples

Run = Callable[..., subprocess.CompletedProcess[str]]
LAB = "690781810"


@pytest.fixture
def backend_env() -> dict[str, str]:
    """The embedded default only: these commands parse, print and call lamina.lifecycle, whose
    behaviour on both backends is tested in tests/lifecycle."""
    return {}


def test_the_care_lifecycle_from_the_command_line(lamina: Run, tmp_path: Path) -> None:
    # Arrange: three slides of three cases in one lab
    write_samples(tmp_path / "samples", ["aperio_svs", "tiled_tiff", "ome_tiff"], size=(768, 512), seed=21)
    manifest = tmp_path / "samples" / "manifest.csv"
    assert lamina("tenants", "add", LAB, "HCL").returncode == 0
    ingested = lamina("ingest", str(tmp_path / "samples"), "--manifest", str(manifest), "--json")
    assert ingested.returncode == 0, ingested.stderr
    slides = {row["slide_id"]: row for row in json.loads(ingested.stdout)}
    listed = json.loads(lamina("slides", "--json").stdout)
    accessions = {row["id"]: row["accession_number"] for row in listed}
    care, interest, held = sorted(slides)
    # Act: reports, a flag, a hold
    for slide_id in (care, interest, held):
        done = lamina("case", "final", accessions[slide_id], "--at", "2026-01-05T10:00:00+01:00", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["slides"] == 1
    flagged = lamina("interest", interest, "--category", "teaching", "--reason", "a fine sample")
    assert flagged.returncode == 0 and "of interest (teaching)" in flagged.stdout, flagged.stderr
    assert lamina("hold", held, "--reason", "request 2026/1").returncode == 0
    plan = lamina("lifecycle", "plan", "--now", "2026-03-01", "--json")
    table = lamina("lifecycle", "plan", "--now", "2026-03-01")
    # Assert: only the care slide is due
    assert plan.returncode == 0, plan.stderr
    *items, totals = [json.loads(line) for line in plan.stdout.splitlines()]
    assert [(item["slide"], item["action"], item["rule"]) for item in items] == [(care, "expire", "default")]
    assert totals["totals"]["actions"] == {"expire": 1} and totals["totals"]["gb_freed"] >= 0
    assert "kg CO2/year saved" in table.stdout and care in table.stdout
    # the run expires it; again, nothing more; releasing the hold lets the held slide go
    run = lamina("lifecycle", "run", "--now", "2026-03-01", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["done"]["actions"] == {"expire": 1}
    assert (
        json.loads(lamina("lifecycle", "run", "--now", "2026-03-01", "--json").stdout)["done"]["actions"]
        == {}
    )
    released = lamina("hold", "release", held, "--reason", "closed")
    assert released.returncode == 0, released.stderr
    last = json.loads(lamina("lifecycle", "run", "--now", "2026-03-01", "--json").stdout)
    assert last["done"]["actions"] == {"expire": 1}
    entries = json.loads(lamina("audit", "show", "--json").stdout)
    actions = [(e["action"], e["actor"].split(":")[0]) for e in entries]
    for action in ("case-report", "interest-flag", "hold", "hold-release", "expire"):
        assert (action, "operator") in actions, (action, actions)


def test_rules_are_checked_whole_and_the_rules_in_force_stay(lamina: Run, tmp_path: Path) -> None:
    assert lamina("tenants", "add", LAB, "HCL").returncode == 0
    good = tmp_path / "rules.toml"
    good.write_text(
        '[defaults]\ncare_days = 90\n\n[[rule]]\nname = "cytology"\n'
        'specimen_types = ["cytology"]\nkeep = true\n'
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[defaults]\ncare_days = 90\n\n[[rule]]\nname = "x"\ncare_days = "thirty"\n')
    # Act
    set_good = lamina("lifecycle", "rules", "set", str(good))
    set_bad = lamina("lifecycle", "rules", "set", str(bad))
    shown = lamina("lifecycle", "rules", "show")
    # Assert
    assert set_good.returncode == 0 and "2 rule(s) in force (cytology, default)" in set_good.stdout, (
        set_good.stderr
    )
    assert set_bad.returncode == 2
    assert "bad.toml, line 6, rule 'x', field care_days" in " ".join(set_bad.stderr.split())
    assert shown.stdout == good.read_text()
    wrong = lamina("case", "final", "S26-1", "--at", "yesterday")
    assert wrong.returncode == 2 and "--at" in wrong.stderr


def test_a_report_with_its_link_and_a_link_that_is_not_http(lamina: Run) -> None:
    # Arrange
    assert lamina("tenants", "add", LAB, "HCL").returncode == 0
    url = "https://lis.example.org/cr-acp/S26-9.pdf"
    # Act
    kept = lamina("case", "final", "S26-9", "--url", url, "--json")
    refused = lamina("case", "final", "S26-9", "--url", "javascript:alert(1)")
    # Assert: the link kept with the report (the viewer's Report link); another scheme refused
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["form"] == {"url": url, "content_type": None, "title": None}
    assert refused.returncode == 2 and "--url" in refused.stderr and "http" in refused.stderr
