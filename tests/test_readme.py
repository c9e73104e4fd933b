"""The README's examples are run as written, so that they never rot."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.support import REPO, TESTDATA, need

COMMAND = re.compile(r"^\$ (lamina .*?)(?:\s+#.*)?$")


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text("utf-8")
    return [match.group(1) for line in text.splitlines() if (match := COMMAND.match(line))]


def test_readme_examples_run(tmp_path: Path) -> None:
    need(TESTDATA.exists(), "../shared/testdata")
    commands = readme_commands()
    assert len(commands) >= 5
    env = {**os.environ, "LAMINA_HOME": str(tmp_path / "lamina-data")}
    for command in commands:
        words = shlex.split(command.replace("../shared/", f"{TESTDATA.parent}/"))
        done = subprocess.run(
            [sys.executable, "-m", "lamina", *words[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"{command}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    assert len(list((tmp_path / "out").iterdir())) == 8  # 7 samples and the TCGA slide
