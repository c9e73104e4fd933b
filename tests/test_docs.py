"""The commands in docs/ are run as written, as the README's are (``tests/test_readme.py``).

Every page under ``docs/`` is read, ``decisions/`` included. In a ```` ```console ```` block, a line
``$ lamina ...`` is a command. A page's commands run in order, as ``python -m lamina``, in a
working folder of their own with a fresh ``LAMINA_HOME`` (``lamina-data`` inside it): pages never
share an archive. ``../shared/`` in a command is the test data beside the repository, as in the
README; a page that uses it needs that folder.

- A command must exit 0, unless its comment says ``# exit N: TEXT``: then it must exit ``N``, and
  ``TEXT`` must be in what it printed (stdout or stderr; runs of white space count as one space).
- ``NAME=value`` words before ``lamina`` are set in that command's environment.
- A command that starts a server or runs until it is stopped (``lamina serve``, ``lamina demo``
  without ``--no-serve``, ``lamina worker``, ``lamina watch`` without ``--once``) is not run:
  the pages show it without the ``$`` prompt (or outside a console block), and a prompted one
  fails here rather than hanging the suite. The servers are tested in ``tests/cli``,
  ``tests/api`` and ``tests/dimse``.
- Only ``lamina`` commands take the prompt: another prompted command fails here, so that every
  line shown with ``$`` is a line that was run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO, TESTDATA, need

DOCS = REPO / "docs"
_FENCE = re.compile(r"^\s*```+\s*([\w+-]*)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_EXPECT = re.compile(r"^exit (\d+)(?::\s*(.*))?$")
#: Sub-commands that run until they are stopped, unless given the option that ends them.
_LONG_RUNNING = {"serve": None, "worker": None, "demo": "--no-serve", "watch": "--once"}


@dataclass(frozen=True)
class Command:
    """One prompted line of a page: where it is, what it runs, and what it must give."""

    page: str
    line: int
    text: str
    words: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    status: int
    output: str | None

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: $ {self.text}"


def _split_comment(line: str) -> tuple[str, str | None]:
    """The command and its trailing comment (a ``#`` after white space, outside quotes)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1 :].strip()
    return line.rstrip(), None


def prompted_lines(path: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The ``$ `` lines of a page: those inside console blocks, and those anywhere else."""
    inside: list[tuple[int, str]] = []
    outside: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        opened = _FENCE.match(line)
        if opened:
            fence = None if fence is not None else opened.group(1).lower()
            continue
        if line.startswith("$ "):
            (inside if fence == "console" else outside).append((number, line[2:]))
    return inside, outside


def parse(page: str, number: int, line: str) -> Command:
    """A prompted line read into a :class:`Command`; ValueError when it cannot be run here."""
    text, comment = _split_comment(line)
    words = shlex.split(text)
    env = []
    while words and _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env.append((name, value))
    where = f"{page}:{number}"
    if not words or words[0] != "lamina":
        raise ValueError(f"{where}: only lamina commands take the '$ ' prompt (show others without it)")
    sub = next((word for word in words[1:] if not word.startswith("-")), None)
    if sub in _LONG_RUNNING and (_LONG_RUNNING[sub] is None or _LONG_RUNNING[sub] not in words):
        raise ValueError(f"{where}: 'lamina {sub}' runs until stopped; show it without the '$ ' prompt")
    expected = _EXPECT.match(comment or "")
    return Command(
        page,
        number,
        text,
        tuple(words),
        tuple(env),
        int(expected.group(1)) if expected else 0,
        expected.group(2) if expected and expected.group(2) else None,
    )


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def page_commands() -> dict[str, list[tuple[int, str]]]:
    """Each page with prompted lines in console blocks, by its path under docs/."""
    found = {}
    for path in pages():
        inside, _ = prompted_lines(path)
        if inside:
            found[str(path.relative_to(DOCS))] = inside
    return found


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_every_prompted_line_is_in_a_console_block() -> None:
    # Arrange: every page, and where each shows a prompt
    stray = {
        str(path.relative_to(DOCS)): [number for number, _ in prompted_lines(path)[1]] for path in pages()
    }

    # Assert: a '$ ' line outside a console block would be skipped by the runner below
    assert {page: lines for page, lines in stray.items() if lines} == {}


def test_pages_show_runnable_commands() -> None:
    # Arrange / Act
    found = page_commands()

    # Assert: the pages that walk a user through lamina have commands the runner finds and accepts
    assert {"data-path.md", "serving.md"} <= set(found)
    for page, lines in found.items():
        for number, line in lines:
            parse(page, number, line)  # raises on a line the runner would refuse


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    found, fence = set(), False
    for line in path.read_text("utf-8").splitlines():
        if _FENCE.match(line):
            fence = not fence
        elif not fence and line.startswith("#"):
            found.add(_slug(line.lstrip("#")))
    return found


def test_links_resolve() -> None:
    # Arrange: every relative link of the README and of docs/ to a file of the repository
    broken = []
    for page in [REPO / "README.md", *pages()]:
        for match in _LINK.finditer(page.read_text("utf-8")):
            target = match.group(1)
            path, _, anchor = target.partition("#")
            if re.match(r"^[a-z]+:", target):
                continue  # an address on the web
            dest = (page.parent / path).resolve() if path else page
            if not dest.is_relative_to(REPO):
                continue  # ../shared/: beside the repository, not in it

            # Assert: the file exists, and so does the heading an anchor names
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_parse_reads_environment_status_and_output() -> None:
    # Act
    command = parse(
        "p.md", 3, 'LAMINA_WORKERS=0 lamina delete ab --reason "a # b" --yes   # exit 1: not found'
    )

    # Assert
    assert command.env == (("LAMINA_WORKERS", "0"),)
    assert command.words == ("lamina", "delete", "ab", "--reason", "a # b", "--yes")
    assert (command.status, command.output) == (1, "not found")
    with pytest.raises(ValueError, match="runs until stopped"):
        parse("p.md", 4, "lamina serve --port 8001")
    with pytest.raises(ValueError, match="only lamina commands"):
        parse("p.md", 5, "curl http://127.0.0.1:8000/healthz")
    assert parse("p.md", 6, "lamina watch in/ --once").status == 0


def run(commands: list[Command], folder: Path) -> None:
    """Run ``commands`` in order in ``folder``, with ``folder/lamina-data`` as a fresh data folder,
    and check each one's exit status and output."""
    if any("../shared/" in word for command in commands for word in command.words):
        need(TESTDATA.exists(), "../shared/testdata")
    base = {**os.environ, "LAMINA_HOME": str(folder / "lamina-data")}
    for name in [name for name in base if name.startswith("LAMINA_") and name != "LAMINA_HOME"]:
        del base[name]  # the pages' defaults, not the caller's settings
    for name in ("COLUMNS", "LINES"):  # pytest-xdist sets 80 columns: tables as a pipe gets them
        base.pop(name, None)
    for command in commands:
        words = [word.replace("../shared/", f"{TESTDATA.parent}/") for word in command.words]
        done = subprocess.run(
            [sys.executable, "-m", "lamina", *words[1:]],
            cwd=folder,
            env={**base, **dict(command.env)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        printed = f"{done.stdout}\n{done.stderr}"
        assert done.returncode == command.status, f"{command}\nexit {done.returncode}\n{printed[-3000:]}"
        assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-3000:]}"
        if command.output is not None:
            assert _flat(command.output) in _flat(printed), f"{command}\n{printed[-3000:]}"


@pytest.mark.parametrize("page", sorted(page_commands()))
def test_page_commands_run(page: str, tmp_path: Path) -> None:
    # Arrange: the page's commands, in a folder of their own (tmp_path is this page's alone)
    commands = [parse(page, number, line) for number, line in page_commands()[page]]

    # Act / Assert: each exits as the page says, and prints what it says
    run(commands, tmp_path)
