"""Test helpers: the real test slides in ../shared/testdata, tools used as oracles, ingest."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lamina.archive.discover import Candidate, discover
from lamina.archive.ingest import IngestOptions, Ingestor, IngestResult

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO.parent / "shared" / "testdata"
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, what: str) -> None:
    """Skip when something is missing on a user's machine; fail under CI, where it must be there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI=true requires it")
    pytest.skip(f"{what} is missing (run scripts/install, or clone shared/testdata beside the repo)")


def shared_file(relative: str) -> Path:
    path = TESTDATA / relative
    need(path.exists(), f"test slide ../shared/testdata/{relative}")
    return path


def tool(name: str) -> str:
    found = shutil.which(name)
    need(found is not None, f"the tool {name!r}")
    assert found is not None
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's Error lines for one file (warnings are not errors)."""
    run = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]



def ingest_path(ingestor: Ingestor, path: Path, **options: object) -> IngestResult:
    candidates = discover([path])
    assert len(candidates) == 1, candidates
    return ingestor.ingest(candidates[0], options=IngestOptions(**options))  # type: ignore[arg-type]


def single(path: Path) -> Candidate:
    return Candidate(path, (path,))
