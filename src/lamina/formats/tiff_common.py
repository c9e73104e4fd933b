"""What the TIFF-family readers share: detecting and opening a TIFF with clear errors, spacing,
the pyramid.

tifffile parses a TIFF's directories lazily and, on a damaged file, raises whatever the damage
provokes (``TiffFileError``, but also ``TypeError``, ``ValueError``, ``KeyError``...). Every
TIFF reader goes through :func:`open_tiff` and :func:`reading_page`, which turn them into a
:class:`CorruptSourceError` naming the page and what is wrong.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import tifffile

from lamina.errors import CorruptSourceError, MissingMetadataError, SourceError
from lamina.formats.codec import damage, library_message
from lamina.formats.source import SourceOptions
from lamina.model.geometry import SizeMm, SizePx

if TYPE_CHECKING:
    from lamina.formats.source import SlideSource

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"


def is_tiff(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) in TIFF_MAGICS
    except OSError:
        return False


def sniff_tiff(
    path: Path,
    check: Callable[[tifffile.TiffFile], bool],
    reader: type[SlideSource],
    damaged: bool = False,
) -> bool:
    """The ``detect`` of a TIFF-family reader: ``check`` of the file as tifffile opens it (its first
    page only). A TIFF that tifffile cannot open, or whose first page cannot be read, is claimed
    when its name has one of the reader's suffixes (or when ``damaged`` says to claim any), so
    that opening it says what is damaged."""
    if not is_tiff(path):
        return False
    try:
        with tifffile.TiffFile(path) as tiff:
            tiff.pages.first  # noqa: B018 - raises when there is no readable first page
            return bool(check(tiff))
    except Exception:
        return damaged or reader.named_like(path)


def pages_of(tiff: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    """The top-level pages (tifffile hands over pages, not frames, unless told otherwise)."""
    return [page for page in tiff.pages if isinstance(page, tifffile.TiffPage)]


def _words(exc: BaseException) -> str:
    """What tifffile found wrong, in words: its own errors say it; Python's say nothing to a user."""
    if isinstance(exc, tifffile.TiffFileError):
        return library_message(exc)
    return "its directories are inconsistent"


def open_tiff(path: Path) -> tifffile.TiffFile:
    """Open a TIFF and check that every page's data lies inside the file (truncation)."""
    try:
        tiff = tifffile.TiffFile(path)
    except OSError as exc:
        raise CorruptSourceError(path, f"cannot be read ({exc.strerror or library_message(exc)})") from exc
    except Exception as exc:
        raise CorruptSourceError(path, f"not a readable TIFF ({_words(exc)}); is the file complete?") from exc
    try:
        pages = _all_pages(path, tiff)
        if not pages:
            raise CorruptSourceError(path, "the TIFF holds no image")
        for page in pages:
            check_tiles_inside(path, tiff, page)
        _check_ifd_chain_ends(path, tiff, pages[-1])
    except BaseException:
        tiff.close()
        raise
    return tiff


def _all_pages(path: Path, tiff: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    """Every page, read now: a damaged directory is reported here with its number."""
    pages: list[tifffile.TiffPage] = []
    try:
        for page in tiff.pages:
            if isinstance(page, tifffile.TiffPage):
                pages.append(page)
    except Exception as exc:
        raise CorruptSourceError(
            path, f"the TIFF's image directory {len(pages)} is damaged ({_words(exc)}); {_DAMAGED}"
        ) from exc
    return pages


@contextmanager
def reading_page(path: Path, page: tifffile.TiffPage, what: str | None = None) -> Iterator[None]:
    """Turn what tifffile, imagecodecs or the codec raise while reading ``page`` into a
    CorruptSourceError that names the page (and ``what`` it holds, e.g. "the label image")."""
    try:
        yield
    except SourceError:
        raise
    except Exception as exc:
        where = f"{what} (page {page.index})" if what else f"page {page.index}"
        raise CorruptSourceError(path, f"{where} cannot be read: {damage(exc)}; {_DAMAGED}") from exc


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
    offsets, counts = page.dataoffsets, page.databytecounts
    if len(offsets) != len(counts):
        raise CorruptSourceError(
            path,
            f"page {page.index} lists {len(offsets)} tile or strip offsets but {len(counts)} byte "
            f"counts: its image directory is damaged; {_DAMAGED}",
        )
    for offset, count in zip(offsets, counts, strict=True):
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
