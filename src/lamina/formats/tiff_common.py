"""What the TIFF-family readers share: opening a TIFF with a clear error, spacing, the pyramid."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path

import tifffile

from lamina.errors import CorruptSourceError, MissingMetadataError
from lamina.formats.source import SourceOptions
from lamina.model.geometry import SizeMm, SizePx

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_tiff(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) in TIFF_MAGICS
    except OSError:
        return False


def pages_of(tiff: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    """The top-level pages (tifffile hands over pages, not frames, unless told otherwise)."""
    return [page for page in tiff.pages if isinstance(page, tifffile.TiffPage)]


def open_tiff(path: Path) -> tifffile.TiffFile:
    """Open a TIFF and check that every page's data lies inside the file (truncation)."""
    try:
        tiff = tifffile.TiffFile(path)
        pages = pages_of(tiff)
    except (tifffile.TiffFileError, ValueError, IndexError, OSError, KeyError, struct.error) as exc:
        raise CorruptSourceError(path, f"not a readable TIFF ({exc}); is the file complete?") from exc
    if not pages:
        tiff.close()
        raise CorruptSourceError(path, "the TIFF holds no image")
    try:
        for page in pages:
            check_tiles_inside(path, tiff, page)
        _check_ifd_chain_ends(path, tiff, pages[-1])
    except CorruptSourceError:
        tiff.close()
        raise
    return tiff


def _check_ifd_chain_ends(path: Path, tiff: tifffile.TiffFile, last: tifffile.TiffPage) -> None:
    """tifffile stops quietly at an IFD pointer past the end; a complete file's chain ends at 0."""
    handle = tiff.filehandle
    big = tiff.is_bigtiff
    order = tiff.byteorder
    handle.seek(last.offset)
    count_format, entry, pointer = (order + "Q", 20, order + "Q") if big else (order + "H", 12, order + "I")
    (count,) = struct.unpack(count_format, handle.read(struct.calcsize(count_format)))
    handle.seek(last.offset + struct.calcsize(count_format) + count * entry)
    raw = handle.read(struct.calcsize(pointer))
    following = struct.unpack(pointer, raw)[0] if len(raw) == struct.calcsize(pointer) else -1
    if following != 0:
        raise CorruptSourceError(
            path,
            f"truncated: the TIFF's image directory chain points at byte {following} past "
            f"the end ({handle.size} bytes); copy the file again from the scanner",
        )


def check_tiles_inside(path: Path, tiff: tifffile.TiffFile, page: tifffile.TiffPage) -> None:
    """A truncated file has tile offsets past its end: refuse it before writing anything."""
    size = tiff.filehandle.size
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
        if count and offset + count > size:
            raise CorruptSourceError(
                path,
                f"truncated: a tile of page {page.index} ends at byte {offset + count} "
                f"but the file has {size} bytes; copy the file again from the scanner",
            )


def level_spacing(base: SizeMm, base_size: SizePx, size: SizePx) -> SizeMm:
    """Spacing of a level from the base level's.

    Scanners downsample by powers of two and round the level's size down, so the ratio of sizes
    is slightly off (300 px -> 37 px is 8.1, not 8). The nominal power of two is the true
    factor; it is used when the ratio is within 5 % of it, else the measured ratio.
    """
    ratio = base_size.width / size.width
    nominal = 2.0 ** round(math.log2(ratio)) if ratio > 0 else ratio
    if abs(ratio / nominal - 1) < 0.05 and abs(base_size.height / size.height / nominal - 1) < 0.05:
        return base.scaled(nominal)
    return SizeMm(
        base.width * base_size.width / size.width,
        base.height * base_size.height / size.height,
    )


def require_spacing(path: Path, found: SizeMm | None, options: SourceOptions, where: str) -> SizeMm:
    """The file's spacing; else the one the user gave (--mpp, manifest); else a clear error.

    A file's own spacing is never overridden: the user's value is for files that lack one.
    """
    if found is not None and found.width > 0 and found.height > 0:
        return found
    if options.pixel_spacing is not None:
        return options.pixel_spacing
    raise MissingMetadataError(
        path,
        f"no pixel spacing ({where}); give it with --mpp MICRONS (e.g. --mpp 0.25) "
        "or an 'mpp' column in the manifest",
    )


def resolution_spacing(page: tifffile.TiffPage) -> SizeMm | None:
    """Pixel spacing from XResolution/YResolution when the unit is a length."""
    unit = int(page.tags.valueof("ResolutionUnit", 2))
    per_mm = {3: 10.0, 2: 25.4}.get(unit)  # CENTIMETER, INCH
    xres = page.tags.valueof("XResolution")
    yres = page.tags.valueof("YResolution")
    if per_mm is None or not xres or not yres:
        return None
    x = xres[0] / xres[1] if isinstance(xres, tuple) else float(xres)
    y = yres[0] / yres[1] if isinstance(yres, tuple) else float(yres)
    if x <= 0 or y <= 0:
        return None
    spacing = SizeMm(per_mm / x, per_mm / y)
    # 72 or 96 dpi defaults from image editors are not a microscope's resolution
    return None if spacing.width > 0.1 else spacing


def sorted_levels(pages: Sequence[tifffile.TiffPage]) -> list[tifffile.TiffPage]:
    return sorted(pages, key=lambda p: -int(p.imagewidth) * int(p.imagelength))
