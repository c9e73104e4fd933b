"""Slide formats lamina recognises but does not read yet, so that their refusal names them.

A file no reader claims is refused as ``<vendor> files are not supported yet`` when its content
says what it is (a TIFF that tifffile recognises as PerkinElmer QPTIFF, Leica SCN or Roche BIF)
or, failing that, its extension; otherwise as "not a slide format lamina reads". The tiled TIFF
reader leaves these files alone, so that the ingest summary does not list a QPTIFF as a tiled
TIFF it then refuses.
"""

from __future__ import annotations

from pathlib import Path

import tifffile

from lamina.formats.tiff_common import is_tiff

#: By extension (lower case).
NOT_YET = {
    ".mrxs": "3DHistech MRXS",
    ".bif": "Roche BIF",
    ".scn": "Leica SCN",
    ".isyntax": "Philips iSyntax",
    ".czi": "Zeiss CZI",
}
#: TIFF-family formats by tifffile's flag for them.
TIFF_VENDORS = {
    "is_scn": "Leica SCN",
    "is_bif": "Roche BIF",
}


def tiff_vendor(tiff: tifffile.TiffFile) -> str | None:
    """The format of a TIFF lamina does not read yet (QPTIFF, SCN, BIF), if it is one."""
    return next((name for flag, name in TIFF_VENDORS.items() if getattr(tiff, flag, False)), None)


def not_yet(path: Path) -> str | None:
    """The name of the format of ``path`` when it is one lamina does not read yet."""
    if is_tiff(path):
        try:
            with tifffile.TiffFile(path) as tiff:
                vendor = tiff_vendor(tiff)
        except Exception:  # a damaged TIFF: its extension still says what it is
            vendor = None
        if vendor is not None:
            return vendor
    return NOT_YET.get(path.suffix.lower())
