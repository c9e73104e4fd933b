"""What the readers of a level kept as one single-plane image per focal plane or channel share:
the frames of those images joined in TILED_FULL order (QPTIFF channels, OME-TIFF planes, NDPI
z-stacks), and the tiles of such a TIFF page decoded where a tile needs them (strips read in bands
of whole strips, a few bands kept; tiles read one at a time).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats.codec import damage
from lamina.formats.source import Buffer, Pixels, ReadObserver, SourceImage

_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"
#: The tile of a stripped page, decoded from the strips that cover it.
STRIP_TILE = 512
#: A strip decoded at once; a taller one (a whole plane in one strip) is refused, not read whole.
MAX_STRIP_BYTES = 256 << 20
Page = tifffile.TiffPage | tifffile.TiffFrame


class JoinedFrames:
    """The frames of single-plane ``images`` (one per plane, in frame order), one after the other:
    what a level whose planes are copied as stored hands the writer."""

    def __init__(self, images: Sequence[SourceImage]) -> None:
        self.images = tuple(images)

    def read_frame(self, index: int, area: int) -> bytes:
        plane, at = divmod(index, area)
        if not 0 <= plane < len(self.images):
            raise IndexError(f"frame {index} of {area * len(self.images)}")
        return self.images[plane].read_frame(at)

    def frame_lengths(self) -> Sequence[int] | None:
        lengths: list[int] = []
        for image in self.images:
            found = image.frame_lengths()
            if found is None:
                return None
            lengths += found
        return lengths

    def iter_frames(self) -> Iterator[bytes]:
        for image in self.images:
            yield from image.iter_frames()

    def iter_frame_parts(self) -> Iterator[Sequence[Buffer]]:
        for image in self.images:
            yield from image.iter_frame_parts()


def read_segment(path: Path, fd: int, page: Page, index: int, observer: ReadObserver | None) -> Pixels:
    """Tile or strip ``index`` of ``page`` read and decoded, or CorruptSourceError naming it."""
    offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
    data = os.pread(fd, count, offset)
    if len(data) != count:
        raise CorruptSourceError(path, f"truncated: segment {index} of page {page.index} ends past the end")
    if observer is not None:
        observer(path, offset, data)
    try:
        segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        return np.asarray(segment)
    except Exception as exc:
        raise CorruptSourceError(
            path, f"page {page.index}, segment {index} cannot be decoded: {damage(exc)}; {_DAMAGED}"
        ) from exc


class StripBands:
    """Stripped pages of one size (one per plane, in frame order), decoded in bands of ``band`` rows of whole
    strips; ``kept`` bands are kept decoded (the band being written and those the 2x2 reads of a
    generated level ask again)."""

    def __init__(
        self,
        path: Path,
        fd: int,
        keyframe: tifffile.TiffPage,
        pages: Sequence[Page],
        band: int,
        dtype: Any,
        kept: int,
    ) -> None:
        """``keyframe``: the page whose tags (size, rows per strip) ``pages`` share."""
        first = keyframe
        self._path, self._fd, self._pages, self._band, self._dtype = path, fd, pages, band, dtype
        self._width, self._height = int(first.imagewidth), int(first.imagelength)
        self._samples = int(first.samplesperpixel)
        self._rows = min(int(first.rowsperstrip or self._height), self._height)
        strip_bytes = self._rows * self._width * self._samples * np.dtype(dtype).itemsize
        if strip_bytes > MAX_STRIP_BYTES:
            raise UnsupportedFormatError(
                path,
                f"page {first.index} is stored in strips of {self._rows} rows ({strip_bytes >> 20} MB "
                "each): convert it to a tiled pyramid (e.g. bfconvert -tilex 512 -tiley 512)",
            )
        strips = -(-self._height // self._rows)
        for page in pages:
            if len(page.dataoffsets) != strips:
                raise CorruptSourceError(
                    path,
                    f"page {page.index} lists {len(page.dataoffsets)} strips, but {self._height} rows "
                    f"in strips of {self._rows} make {strips}; {_DAMAGED}",
                )
        self._kept: OrderedDict[tuple[int, int], Pixels] = OrderedDict()
        self._keep = kept
        self.observer: ReadObserver | None = None

    def band(self, plane: int, index: int) -> Pixels:
        """Rows ``[index * band, (index + 1) * band)`` of plane ``plane``'s page, the last band
        padded with 0."""
        key = (plane, index)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        page = self._pages[plane]
        out = np.zeros((self._band, self._width, self._samples), self._dtype)
        top = index * self._band
        bottom = min(top + self._band, self._height)
        for strip in range(top // self._rows, -(-bottom // self._rows)):
            first = strip * self._rows
            rows = min(self._rows, self._height - first)
            pixels = read_segment(self._path, self._fd, page, strip, self.observer)
            pixels = pixels.reshape(-1, self._width, self._samples)[:rows]
            lo, hi = max(first, top), min(first + rows, bottom)
            out[lo - top : hi - top] = pixels[lo - first : hi - first]
        self._kept[key] = out
        while len(self._kept) > self._keep:
            self._kept.popitem(last=False)
        return out


def page_tile(
    image: SourceImage,
    path: Path,
    fd: int,
    page: Page,
    plane: int,
    col: int,
    row: int,
    bands: StripBands | None,
    observer: ReadObserver | None,
) -> Pixels:
    """Tile (col, row) of ``image``'s plane ``plane``, whose page is ``page``: from its bands when
    it is stripped, else its own tile (a tile of byte count 0 is background, 0), padded with 0."""
    tw, th = image.tile_size.width, image.tile_size.height
    shape = (th, tw, image.samples_per_pixel)
    if bands is not None:
        tile = bands.band(plane, row)[:, col * tw : (col + 1) * tw]
        if tile.shape[1] == tw:
            return tile
        out = np.zeros(shape, image.dtype)
        out[:, : tile.shape[1]] = tile
        return out
    index = row * image.grid.width + col
    if not int(page.databytecounts[index]):
        return np.zeros(shape, image.dtype)
    segment = read_segment(path, fd, page, index, observer)
    return segment.reshape(shape).astype(image.dtype, copy=False)
