"""``lamina lifecycle restore SLIDE...``: an operator brings cold slides back to the hot tier now
(after the cold tier's restore delay), verified, audited with the operator, the cold copy kept;
a hot slide is left as it is; without a cold tier, or for no such slide, a one-line error."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.cli import cli
from lamina.config import Settings
from lamina.governance.registry import Registry
from lamina.lifecycle.rules import Tier
from lamina.lifecycle.tiers import TierMover
from tests.lifecycle.test_expire_crash import LAB, _sample

DELAY_S = 0.5


def test_lamina_lifecycle_restore(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cold = {"LAMINA_COLD_URL": f"file://{tmp_path / 'cold'}", "LAMINA_COLD_RESTORE_DELAY_S": str(DELAY_S)}
    archive = Archive.open(Settings.load(home, env=cold))
    try:
        Registry(archive.catalog).add_tenant(LAB, "HCL")
        slide = _sample(archive, tmp_path / "samples", "s1", "A26-1", 1)
        mover = TierMover.for_archive(archive)
        assert mover is not None
        digests = {row.blob_sha256 for row in archive.catalog.instances(slide)}
        mover.move_slide(slide, Tier.COLD, "lifecycle")
    finally:
        archive.close()
    env = {"LAMINA_HOME": str(home)}
    # Act
    no_tier = CliRunner().invoke(cli, ["lifecycle", "restore", slide], env=env)
    env |= cold
    started = time.monotonic()
    done = CliRunner().invoke(cli, ["lifecycle", "restore", slide, "--json"], env=env)
    waited = time.monotonic() - started
    again = CliRunner().invoke(cli, ["lifecycle", "restore", slide], env=env)
    unknown = CliRunner().invoke(cli, ["lifecycle", "restore", "nope"], env=env)
    # Assert
    assert no_tier.exit_code == 2 and "no cold tier is configured" in no_tier.stderr
    assert done.exit_code == 0, done.output
    (item,) = json.loads(done.stdout)["restored"]
    assert item["slide"] == slide and item["status"] == "restored"
    assert item["objects"] == item["copied"] == len(digests) and item["bytes_copied"] > 0
    assert waited >= DELAY_S, "the cold tier's restore delay is waited out"
    assert again.exit_code == 0 and f"slide {slide}: already hot" in again.output
    assert unknown.exit_code == 2 and "no slide nope" in unknown.stderr
    archive = Archive.open(Settings.load(home, env=cold))
    try:
        assert archive.catalog.slide(slide).tier == "hot"  # type: ignore[union-attr]
        mover = TierMover.for_archive(archive)
        assert mover is not None
        assert all(archive.store.exists(d) and mover.cold.store.exists(d) for d in digests)
        with archive.catalog.engine.connect() as conn:
            (entry,) = audit.entries(conn, slide=slide, action="tier-restore")
    finally:
        archive.close()
    assert entry.detail["to"] == "hot" and entry.actor.startswith("operator:")
