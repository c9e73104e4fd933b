"""``lamina slides``: the barcode column shows the source's barcode, or none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lamina.sample import write_samples
from tests.support import shared_file

LAMINA = [sys.executable, "-m", "lamina"]


def _lamina(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "LAMINA_HOME": str(home), "COLUMNS": "250", **env}
    return subprocess.run(
        [*LAMINA, *args], capture_output=True, text=True, env=full, timeout=300, check=False
    )


def test_a_slide_without_barcode_shows_none_and_one_with_shows_it(
    tmp_path: Path, backend_env: dict[str, str]
) -> None:
    # Arrange: an Aperio slide that carries no barcode, and a Philips TIFF whose XML has one
    home = tmp_path / "home"
    (sample,) = write_samples(tmp_path / "samples", ["philips_tiff"], size=(512, 384))
    with_barcode = sample.path
    aperio_file = shared_file("aperio/CMU-1-Small-Region.svs")
    assert _lamina(home, backend_env, "ingest", str(aperio_file)).returncode == 0
    assert _lamina(home, backend_env, "ingest", str(with_barcode)).returncode == 0

    # Act
    listed = json.loads(_lamina(home, backend_env, "slides", "--json").stdout)
    table = _lamina(home, backend_env, "slides").stdout

    # Assert: the slide id is never shown as a barcode
    by_format = {slide["format"]: slide for slide in listed}
    aperio, tagged = by_format["aperio_svs"], by_format["philips_tiff"]
    assert aperio["barcode"] is None and aperio["container_id"] == aperio["id"]
    assert tagged["barcode"] and tagged["barcode"] != tagged["id"]
    aperio_line = next(line for line in table.splitlines() if aperio["id"] in line)
    assert aperio_line.count(aperio["id"]) == 1
    assert tagged["barcode"] in table
