"""The dashboard (``viewer/static/dashboard.html``) in headless Chromium: a lab admin follows the
viewer's link, signs in, sees its lab's storage figures and the four plots (fetched with the
token, drawn from blob: URLs), then the cost calculator on a preset."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.config import Settings
from lamina.costs.model import PRIVATE_500K_CASES, estimate
from lamina.governance.passwords import Passwords
from tests.reporting.world import LAB_A, LAB_B, World, build_world
from tests.signin import OPERATOR, register_operator
from tests.support import serving
from tests.viewer.test_viewer import PASSWORD, _run


@pytest.fixture(scope="module")
def backend_env() -> dict[str, str]:
    """The embedded default: the page reads the same JSON on both backends."""
    return {}


class Served(NamedTuple):
    url: str
    world: World


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-dashboard-") as tmp:
        root = Path(tmp)
        settings = Settings.load(root / "home", env={})
        archive = Archive.open(settings)
        try:
            world = build_world(archive, root / "samples")
            register_operator(archive.catalog)  # lab A's admin (and pathologist, technician)
            Passwords(archive.catalog).set(OPERATOR, PASSWORD, "tests")
            with serving(create_app(settings, archive)) as port:
                yield Served(f"http://127.0.0.1:{port}", world)
        finally:
            archive.close()


def test_a_lab_admin_sees_the_storage_report_its_plots_and_the_costs(served: Served, tmp_path: Path) -> None:
    # Act
    seen = _run("dashboard.mjs", tmp_path, url=served.url, person=OPERATOR, password=PASSWORD)
    # Assert: signed in from the viewer's link
    assert seen["link"] == "dashboard.html" and seen["sign_in"]["status"] == 200, seen.get("sign_in")
    storage = seen["storage"]
    # the lab of the admin only (no "every lab": not a platform admin)
    assert storage["labs"] == [LAB_A]
    hot, cold = served.world.bytes["interest"], served.world.bytes["cold"]
    assert f"hot\t1\t{hot / 1e9:,.3f}" in storage["tiers"], storage["tiers"]
    assert f"cold\t1\t{cold / 1e9:,.3f}" in storage["tiers"], storage["tiers"]
    assert LAB_A in storage["perLab"] and LAB_B not in storage["perLab"]
    assert "teaching 1" in storage["interest"]
    assert [p["plot"] for p in storage["plots"]] == [
        f"tenants/{LAB_A}/report/plots/{name}.png" for name in ("volume", "months", "projection", "co2")
    ]
    assert all(p["width"] == 800 and p["blob"] for p in storage["plots"]), storage["plots"]
    # the calculator: the private preset's cost per slide
    cost = estimate(PRIVATE_500K_CASES).cost_per_slide
    assert f"Cost per slide\t{cost:,.2f} €" in seen["costs"], seen["costs"]
    # nothing went wrong but the page's probe of the node's report (403: not a platform admin)
    probe = (
        f"403 {served.url}/api/report",
        "console: Failed to load resource: the server responded with a status of 403",
    )
    assert [error for error in seen["errors"] if not error.startswith(probe)] == [], seen["errors"]
