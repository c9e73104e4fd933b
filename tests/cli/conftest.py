"""What the command-line tests share: ``lamina(*args)``, the command run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def lamina(backend_env: dict[str, str], tmp_path: Path) -> Run:
    """``lamina(*args)`` on a fresh archive of the test's backend."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LAMINA_HOME": str(tmp_path / "home"), "COLUMNS": "200", **backend_env}
        return subprocess.run(
            [sys.executable, "-m", "lamina", *args], capture_output=True, text=True, env=env, timeout=120
        )

    return run
