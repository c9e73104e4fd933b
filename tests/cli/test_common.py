"""What every command shares (``cli/common.py``): one line per account on the terminal, library
warnings sent to logging, file names quoted. Run as a user runs ``lamina``, on both backends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from lamina.sample import write_samples
from tests.support import shared_file

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(backend_env: dict[str, str]) -> Run:
    def lamina(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LAMINA_HOME": str(home), "COLUMNS": "200", **backend_env}
        return subprocess.run(
            [sys.executable, "-m", "lamina", *args], capture_output=True, text=True, env=env, timeout=300
        )

    return lamina


def _overlong_uid_series(folder: Path) -> Path:
    """A sample DICOM series whose DimensionOrganizationUID is 65 characters long (UI allows 64):
    pydicom warns when it reads it; lamina writes its own dimension organisation anyway."""
    (sample,) = write_samples(folder / "in", ["dicom_wsi"], size=(300, 200), seed=5)
    for path in sample.path.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = "1." + "2" * 63
        ds.save_as(path, enforce_file_format=True)
    return sample.path


def test_pydicom_warnings_stay_off_the_terminal(tmp_path: Path, run: Run) -> None:
    # Arrange: one series pydicom warns about and ingests, one file it warns about and lamina refuses
    series = _overlong_uid_series(tmp_path)
    refused = tmp_path / "in" / "small_dicom.dcm"
    shutil.copyfile(shared_file("dicom-pathml/small_dicom.dcm"), refused)
    # Act
    done = run(tmp_path / "home", "ingest", str(series), str(refused))
    # Assert: lamina's account of each file, and nothing of pydicom's on stderr
    assert done.returncode == 1, done.stdout + done.stderr
    assert "exceeds the maximum length" not in done.stderr
    assert "UserWarning" not in done.stderr and "warn_and_log" not in done.stderr
    assert done.stderr.strip() == ""
    assert "small_dicom.dcm: SeriesInstanceUID" in done.stdout
    assert "dicom_wsi/" in done.stdout and "ingested" in done.stdout


def test_a_qptiff_is_listed_with_its_format(tmp_path: Path, run: Run) -> None:
    qptiff = shared_file("perkinelmer-qptiff/small_vectra.qptiff")
    done = run(tmp_path / "home", "ingest", "--json", str(qptiff))
    (summary,) = json.loads(done.stdout)
    assert summary["format"] == "perkinelmer_qptiff", summary
    assert summary["status"] == "ingested", summary
    table = run(tmp_path / "home", "ingest", str(qptiff)).stdout
    row = next(line for line in table.splitlines() if "small_vectra.qptiff" in line and "│" in line)
    assert "tiled_tiff" not in row
    assert [cell.strip() for cell in row.split("│")][3] == "perkinelmer_qptiff"


@pytest.mark.parametrize("name", ["cut\nslide.svs", "[red]cut.svs", "cut\x1b[31m.svs"])
def test_a_file_name_is_quoted_and_its_line_stays_one(name: str, tmp_path: Path, run: Run) -> None:
    # Arrange: a damaged SVS whose name holds a newline, console markup or an escape sequence
    folder = tmp_path / "in"
    folder.mkdir()
    damaged = folder / name
    damaged.write_bytes(b"II*\x00\x08\x00\x00\x00")
    # Act
    done = run(tmp_path / "home", "ingest", str(damaged))
    # Assert: one "failed" line naming the file as written (repr-quoted when it has control
    # characters), and the same name in the table
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed")]
    assert len(failed) == 1, done.stdout
    shown = repr(str(damaged)) if not name.isprintable() else str(damaged)
    assert failed[0].startswith(f"failed {shown}: "), failed[0]
    assert "\x1b" not in done.stdout
