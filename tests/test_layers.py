"""Layers call downward only: the domain (model, formats, archive, mapping, jobs) never imports the
protocol and interface layers above it (api, dimse, cli, viewer), not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "lamina"
LOWER = ("model", "formats", "archive", "mapping", "jobs", "annotations")
UPPER = ("lamina.api", "lamina.dimse", "lamina.cli", "lamina.viewer")


def _module(path: Path) -> str:
    return ".".join(("lamina", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")


def _imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at any depth (functions, branches), relative ones resolved
    from ``module``, its dotted name (by default, from where it lies under src/)."""
    module = module or _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _upward(name: str) -> bool:
    return any(name == upper or name.startswith(upper + ".") for upper in UPPER)


@pytest.mark.parametrize("layer", LOWER)
def test_the_domain_never_imports_the_layers_above_it(layer: str) -> None:
    files = sorted((SRC / layer).rglob("*.py"))
    assert files, f"no modules under src/lamina/{layer}"
    # Act
    upward = [
        f"{path.relative_to(SRC.parent)}:{line} imports {name}"
        for path in files
        for line, name in _imports(path)
        if _upward(name)
    ]
    # Assert
    assert upward == [], "\n".join(upward)


def test_the_check_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    """The reader itself: an upward import hidden in a function or written relatively is found."""
    source = (
        "def later():\n"
        "    from lamina.api.dicomweb import stow\n"
        "    import lamina.cli.common\n"
        "from ..dimse import server\n"
        "from . import queue\n"
    )
    probe = tmp_path / "probe.py"
    probe.write_text(source, "utf-8")
    names = [name for _, name in _imports(probe, "lamina.jobs.probe")]
    assert sorted(name for name in names if _upward(name)) == [
        "lamina.api.dicomweb",
        "lamina.api.dicomweb.stow",
        "lamina.cli.common",
        "lamina.dimse",
        "lamina.dimse.server",
    ]
    assert "lamina.jobs.queue" in names
