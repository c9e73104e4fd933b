"""The README's examples are run as written, so that they never rot: its ``$ lamina`` lines, in
order, in a fresh working folder and ``LAMINA_HOME``, by the runner of ``tests/test_docs.py`` (the
same rules: ``# exit N: TEXT``, no server behind a prompt)."""

from __future__ import annotations

from pathlib import Path

from lamina.sample import SAMPLE_FORMATS
from tests.support import REPO
from tests.test_docs import Command, parse, prompted_lines, run


def readme_commands() -> list[Command]:
    inside, outside = prompted_lines(REPO / "README.md")
    assert outside == [], "a '$ ' line outside a console block of the README would not be run"
    return [parse("README.md", number, line) for number, line in inside]


def test_readme_examples_run(tmp_path: Path) -> None:
    # Arrange
    commands = readme_commands()
    assert len(commands) >= 5

    # Act / Assert: each command exits as shown
    run(commands, tmp_path)

    # Assert: what the walk-through exports
    # every sample and the TCGA slide
    assert len(list((tmp_path / "out").iterdir())) == len(SAMPLE_FORMATS) + 1
