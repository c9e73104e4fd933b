"""Slide formats lamina recognises but does not read yet, so that their refusal names them.

A file no reader claims is refused as ``<vendor> files are not supported yet`` when its content
says what it is (a TIFF that tifffile flags as one of ``TIFF_VENDORS``) or, failing that, its
extension; otherwise as "not a slide format lamina reads". The tiled TIFF reader leaves such TIFFs
alone, so that the ingest summary does not list them as tiled TIFFs it then refuses. Every format
the report names has a reader now; these are the other formats OpenSlide or Bio-Formats read that
labs may still hold (the scanners that write them are older or rare in French labs).
"""

from __future__ import annotations

from pathlib import Path

import tifffile

from lamina.formats.tiff_common import is_tiff

#: By extension (lower case).
NOT_YET: dict[str, str] = {
    ".vms": "Hamamatsu VMS",
    ".vmu": "Hamamatsu VMU",
    ".svslide": "Sakura SVSlide",
    ".kfb": "KFBio KFB",
    ".sdpc": "SQRAY SDPC",
}
#: TIFF-family formats by tifffile's flag for them.
TIFF_VENDORS: dict[str, str] = {}


def tiff_vendor(tiff: tifffile.TiffFile) -> str | None:
    """The format of a TIFF lamina does not read yet, if it is one of ``TIFF_VENDORS``."""
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
