"""Find the reader for a file: formats register under the entry-point group ``lamina.formats``.

The entry points are the only list of readers (``pyproject.toml``, ``[project.entry-points]``):
an installed lamina always has them, and a plug-in adds its own the same way. Readers are asked
in order of priority, highest first; each ``detect`` follows the contract of
:mod:`lamina.formats.source`.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from lamina.errors import ConfigurationError, UnsupportedFormatError
from lamina.formats.source import SlideSource, SourceOptions
from lamina.formats.unsupported import not_yet

GROUP = "lamina.formats"
_REINSTALL = "reinstall lamina (scripts/install, or pip install -e .) so that its entry points are registered"


@cache
def available_formats() -> tuple[type[SlideSource], ...]:
    """Every registered reader, highest priority first."""
    found: dict[str, type[SlideSource]] = {}
    for entry in entry_points(group=GROUP):
        try:
            cls = entry.load()
        except Exception as exc:
            raise ConfigurationError(
                f"the slide reader {entry.name!r} ({entry.value}) cannot be loaded ({exc}); {_REINSTALL}"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, SlideSource)):
            raise ConfigurationError(
                f"the entry point {entry.name!r} of {GROUP!r} is {entry.value}, not a SlideSource"
            )
        found[cls.format_name] = cls
    if not found:
        raise ConfigurationError(f"no slide reader is registered under {GROUP!r}; {_REINSTALL}")
    return tuple(sorted(found.values(), key=lambda cls: -cls.priority))


def detect_format(path: Path) -> type[SlideSource]:
    """The reader that claims ``path``, or UnsupportedFormatError saying what the file is."""
    for cls in available_formats():
        if cls.detect(path):
            return cls
    vendor = not_yet(path)
    if vendor is not None:
        raise UnsupportedFormatError(
            path,
            f"{vendor} files are not supported yet; until lamina reads them, convert the slide to "
            "DICOM WSI with a converter that does (e.g. wsidicomizer) and ingest the DICOM files",
        )
    names = ", ".join(cls.display_name for cls in available_formats())
    raise UnsupportedFormatError(path, f"not a slide format lamina reads ({names})")


def open_source(path: Path, options: SourceOptions | None = None) -> SlideSource:
    """Open ``path`` with the reader that claims it. Raises a :class:`SourceError` subclass."""
    return detect_format(path)(path, options or SourceOptions())
