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


@pytest.fixture
def lamina_here(backend_env: dict[str, str], tmp_path: Path) -> Run:
    """``lamina(*args)`` run in this process (click's runner): the same command, arguments,
    output streams and exit code, without starting an interpreter for each call. For the tests of
    what a command answers to bad arguments, where a process adds nothing but its start-up."""
    from click.testing import CliRunner

    from lamina.cli import cli

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {"LAMINA_HOME": str(tmp_path / "home"), "COLUMNS": "200", **backend_env}
        result = CliRunner().invoke(cli, list(args), env=env, prog_name="lamina")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return subprocess.CompletedProcess(["lamina", *args], result.exit_code, result.stdout, result.stderr)

    return run
