"""The storage report and the cost calculator over HTTP (``lamina.api.reporting``): a lab admin
reads its lab's report and plots, another lab is 404 to it, a platform admin reads every lab and
the node's; the calculator answers anyone signed in, with lamina costs's figures, and refuses bad
or unbounded values naming the parameter."""

from __future__ import annotations

import io
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from lamina.api import reporting
from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.config import Settings
from lamina.costs.measured import measure
from lamina.costs.model import PRIVATE_500K_CASES, estimate
from lamina.governance.issuer import LocalIssuer
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.reporting.plots import plot_names
from tests.reporting.world import LAB_A, LAB_B, World, build_world
from tests.signin import signed
from tests.support import serving


@pytest.fixture(scope="module")
def backend_env() -> dict[str, str]:
    """The embedded default: the report's SQL runs on both backends in tests/reporting."""
    return {}


@dataclass(frozen=True)
class Served:
    url: str
    archive: Archive
    world: World
    tokens: dict[str, str]  # who -> bearer token


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-report-api-") as tmp:
        root = Path(tmp)
        settings = Settings.load(root / "home", env={})
        archive = Archive.open(settings)
        try:
            world = build_world(archive, root / "samples")
            registry = Registry(archive.catalog)
            people = {
                "platform": (LAB_A, Role.PLATFORM_ADMIN),
                "lyon-admin": (LAB_B, Role.LAB_ADMIN),
                "pathologist": (LAB_A, Role.PATHOLOGIST),
            }
            for person, (lab, role) in people.items():
                registry.add_person(person, lab, [role], person, "tests")
            issuer = LocalIssuer.open(settings.home)
            tokens = {person: issuer.issue(person, 3600) for person in people}
            with serving(create_app(settings, archive)) as port:
                yield Served(f"http://127.0.0.1:{port}", archive, world, tokens)
        finally:
            archive.close()


def _as(served: Served, who: str, path: str) -> httpx.Response:
    return httpx.get(
        f"{served.url}{path}", headers={"Authorization": f"Bearer {served.tokens[who]}"}, timeout=60
    )


def test_a_lab_admin_reads_its_own_lab_only(served: Served) -> None:
    b = served.world.bytes
    # Act: the tests' operator is lab A's admin
    own = signed.get(f"{served.url}/api/tenants/{LAB_A}/report")
    other = signed.get(f"{served.url}/api/tenants/{LAB_B}/report")
    node = signed.get(f"{served.url}/api/report")
    lyon = _as(served, "lyon-admin", f"/api/tenants/{LAB_A}/report")
    pathologist = _as(served, "pathologist", f"/api/tenants/{LAB_A}/report")
    # Assert
    assert own.status_code == 200, own.text
    found = own.json()
    assert found["tenant"] == LAB_A and [lab["tenant"] for lab in found["labs"]] == [LAB_A]
    assert found["tiers"]["hot"]["bytes"] == b["interest"] and found["tiers"]["cold"]["bytes"] == b["cold"]
    assert found["expired"]["bytes"] == served.world.freed
    assert [p["years"] for p in found["projections"]] == [1, 10]
    assert other.status_code == 404 and lyon.status_code == 404
    assert node.status_code == 403 and pathologist.status_code == 403


def test_a_platform_admin_reads_every_lab_and_the_node(served: Served) -> None:
    b = served.world.bytes
    node = _as(served, "platform", "/api/report")
    lyon = _as(served, "platform", f"/api/tenants/{LAB_B}/report")
    nowhere = _as(served, "platform", "/api/tenants/130781810/report")
    assert node.status_code == 200 and lyon.status_code == 200
    assert {lab["tenant"] for lab in node.json()["labs"]} == {LAB_A, LAB_B}
    assert node.json()["live"]["bytes"] == b["interest"] + b["cold"] + b["other"]
    assert lyon.json()["live"]["bytes"] == b["other"]
    assert nowhere.status_code == 404


def test_plots_from_the_allow_list_as_png_and_svg(served: Served) -> None:
    assert set(plot_names()) == reporting._PLOT_NAMES
    # Act
    png = signed.get(f"{served.url}/api/tenants/{LAB_A}/report/plots/volume.png")
    again = signed.get(f"{served.url}/api/tenants/{LAB_A}/report/plots/volume.png")
    svg = signed.get(f"{served.url}/api/tenants/{LAB_A}/report/plots/co2.svg")
    node = _as(served, "platform", "/api/report/plots/projection.png")
    refused = [
        signed.get(f"{served.url}/api/tenants/{LAB_A}/report/plots/{name}")
        for name in ("volume.gif", "..%2Fsecret.png", "volume")
    ]
    other = signed.get(f"{served.url}/api/tenants/{LAB_B}/report/plots/volume.png")
    # Assert
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert again.content == png.content  # kept for a while
    assert Image.open(io.BytesIO(png.content)).size == (800, 450)
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert ET.fromstring(svg.content).tag == "{http://www.w3.org/2000/svg}svg"
    assert svg.headers["x-content-type-options"] == "nosniff"
    assert node.status_code == 200 and Image.open(io.BytesIO(node.content)).format == "PNG"
    assert [answer.status_code for answer in refused] == [404, 404, 404]
    assert other.status_code == 404


def test_the_cost_calculator(served: Served) -> None:
    # Act
    preset = _as(served, "pathologist", "/api/costs?preset=private")
    custom = signed.get(
        f"{served.url}/api/costs",
        params=[
            ("slides", "120000"),
            ("sites", "2"),
            ("price", "archive_gb_month=0.005"),
            ("sector", "private"),
        ],
    )
    measured = signed.get(f"{served.url}/api/costs", params={"measured": "true", "tenant": LAB_A})
    foreign = signed.get(f"{served.url}/api/costs", params={"measured": "true", "tenant": LAB_B})
    whole = signed.get(f"{served.url}/api/costs", params={"measured": "true"})
    bad = {
        query: signed.get(f"{served.url}/api/costs?{query}")
        for query in (
            "slides=-3",
            "slides=1e300",
            "slides=1000&cases=10",
            "sites=1.5",
            "preset=huge",
            "price=depreciation_years=1000000000",
            "price=nothing",
            "colour=blue",
        )
    }
    # Assert
    assert preset.status_code == 200, preset.text
    want = estimate(PRIVATE_500K_CASES).as_dict()
    assert preset.json()["cost_per_slide"] == pytest.approx(want["cost_per_slide"])
    assert custom.status_code == 200, custom.text
    assert custom.json()["slides_per_year"] == 120_000 and custom.json()["inputs"]["sector"] == "private"
    assert custom.json()["prices"]["archive_gb_month"] == 0.005
    assert measured.status_code == 200, measured.text
    assert measured.json()["measured"]["slides"] == measure(served.archive.catalog, LAB_A).slides
    assert measured.json()["measured"]["tenant"] == LAB_A
    assert foreign.status_code == 404 and whole.status_code == 403
    for query, answer in bad.items():
        assert answer.status_code == 400, (query, answer.text)
    assert "slides" in bad["slides=-3"].json()["detail"]
    assert "depreciation_years" in bad["price=depreciation_years=1000000000"].json()["detail"]
    assert "colour" in bad["colour=blue"].json()["detail"]
