"""Find the reader for a file: formats register under the entry-point group ``lamina.formats``."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from lamina.errors import UnsupportedFormatError
from lamina.formats.source import SlideSource, SourceOptions

GROUP = "lamina.formats"


@cache
def available_formats() -> tuple[type[SlideSource], ...]:
    """Every registered reader, highest priority first."""
    found: dict[str, type[SlideSource]] = {}
    for entry in entry_points(group=GROUP):
        cls = entry.load()
        found[cls.format_name] = cls
    if not found:  # running from a source tree that was never installed
        from lamina.formats.dicom import DicomSource
        from lamina.formats.histech import HistechSource
        from lamina.formats.ndpi import NdpiSource
        from lamina.formats.ome import OmeTiffSource
        from lamina.formats.philips import PhilipsSource
        from lamina.formats.svs import SvsSource
        from lamina.formats.tiff import TiledTiffSource

        readers = (
            SvsSource,
            DicomSource,
            NdpiSource,
            PhilipsSource,
            HistechSource,
            OmeTiffSource,
            TiledTiffSource,
        )
        found = {cls.format_name: cls for cls in readers}
    return tuple(sorted(found.values(), key=lambda cls: -cls.priority))


#: Scanner formats a later release reads, recognised by their extension so that the refusal says
#: what the file is rather than "not a slide".
NOT_YET = {
    ".mrxs": "3DHistech MRXS",
    ".bif": "Roche BIF",
    ".scn": "Leica SCN",
    ".vsi": "Evident VSI",
    ".isyntax": "Philips iSyntax",
    ".czi": "Zeiss CZI",
    ".qptiff": "PerkinElmer QPTIFF",
}


def detect_format(path: Path) -> type[SlideSource]:
    for cls in available_formats():
        if cls.detect(path):
            return cls
    vendor = NOT_YET.get(path.suffix.lower())
    if vendor is not None:
        raise UnsupportedFormatError(path, f"{vendor} files are not supported yet")
    names = ", ".join(cls.display_name for cls in available_formats())
    raise UnsupportedFormatError(path, f"not a slide format lamina reads ({names})")


def open_source(path: Path, options: SourceOptions | None = None) -> SlideSource:
    """Open ``path`` with the reader that claims it. Raises a :class:`SourceError` subclass."""
    return detect_format(path)(path, options or SourceOptions())
