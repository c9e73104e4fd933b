"""Reusable :class:`SourceImage` implementations: TIFF tiles read as stored, and decoded pixels."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import tifffile

from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats import codec
from lamina.formats.source import Buffer, FrameEncoding, Pixels, SourceImage, TransferSyntax, check_geometry
from lamina.model.enums import ImageFlavorValues, LossyImageCompressionMethodValues
from lamina.model.enums import PhotometricInterpretationValues as Photometric
from lamina.model.geometry import SizeMm, SizePx

_JPEG = {7}
_JPEG2000 = {33003, 33004, 33005, 34712}
#: The Compression values tifffile knows (another value is a damaged tag).
_TIFF_COMPRESSIONS = frozenset(int(value) for value in tifffile.COMPRESSION)
#: Read this many bytes at once when tiles are stored contiguously.
_READ_CHUNK = 8 << 20
#: How far ahead of the reads the kernel is asked to fetch from disk.
_PREFETCH = 32 << 20


def _prefetch(fd: int, offset: int, length: int) -> None:
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)


class TiffTiledImage(SourceImage):
    """A tiled TIFF page whose tiles are handed over as stored when DICOM can carry them."""

    def __init__(
        self,
        tiff: tifffile.TiffFile,
        page: tifffile.TiffPage,
        flavor: ImageFlavorValues,
        pixel_spacing: SizeMm | None,
    ) -> None:
        self._tiff = tiff
        self._page = page
        self._fd = tiff.filehandle.fileno()
        self._path = Path(tiff.filehandle.path)
        self.flavor = flavor
        self.size = SizePx(int(page.imagewidth), int(page.imagelength))
        self.tile_size = SizePx(int(page.tilewidth), int(page.tilelength))
        self.samples_per_pixel = int(page.samplesperpixel)
        self.pixel_spacing = pixel_spacing
        self._offsets: Sequence[int] = page.dataoffsets
        self._counts: Sequence[int] = page.databytecounts
        if int(page.planarconfig) == 2:
            raise UnsupportedFormatError(
                self._path,
                f"page {page.index} stores its colour planes apart; lamina reads interleaved samples",
            )
        check_geometry(self._path, f"page {page.index}", self.size, self.tile_size, len(self._offsets))
        self._tables: bytes | None = page.jpegtables or None
        self._mark_rgb = False
        compression = int(page.compression)
        if compression not in _TIFF_COMPRESSIONS:
            raise CorruptSourceError(
                self._path,
                f"page {page.index}: Compression {compression} is not a TIFF compression scheme; "
                "the file is damaged or truncated: copy it again from the scanner",
            )
        self.encoding = None
        self.source_lossy = compression in _JPEG or compression in _JPEG2000
        first = self._first_tile()
        if first is not None and compression in _JPEG:
            info = codec.jpeg_info(codec.merge_jpeg_tables(self._tables, first, False))
            rgb = info.rgb_coded or (
                # A TIFF that says RGB and carries a 3-component JPEG without an Adobe marker
                # stores R, G, B (TIFF TechNote 2); Aperio does this with component ids 1, 2, 3.
                int(page.photometric) == 2 and len(info.components) == 3 and not info.subsampled
            )
            self._mark_rgb = rgb and info.adobe_transform is None
            encoding = codec.jpeg_encoding(info)
            if (info.width, info.height) != (self.tile_size.width, self.tile_size.height):
                encoding = None  # a DICOM frame is a whole tile; re-encode instead
            if encoding is not None and rgb:
                encoding = FrameEncoding(encoding.transfer_syntax, Photometric.RGB, encoding.lossy_method)
            self.encoding = encoding
        elif first is not None and compression in _JPEG2000:
            self.encoding = codec.j2k_encoding(codec.j2k_info(first))
            self.source_lossy = self.encoding.transfer_syntax is TransferSyntax.JPEG_2000

    def _first_tile(self) -> bytes | None:
        for offset, count in zip(self._offsets, self._counts, strict=True):
            if count:
                return os.pread(self._fd, min(count, 4096), offset)
        return None

    @cached_property
    def _blank(self) -> bytes:
        """The frame used where a sparse TIFF has no tile: white, in this image's encoding."""
        assert self.encoding is not None
        white = np.full((self.tile_size.height, self.tile_size.width, self.samples_per_pixel), 255, np.uint8)
        return codec.encode_like(white, self.encoding)

    def _wrap(self, raw: bytes) -> bytes:
        if self._tables is not None or self._mark_rgb:
            return codec.merge_jpeg_tables(self._tables, raw, self._mark_rgb)
        return raw

    def read_frame(self, index: int) -> bytes:
        count = self._counts[index]
        if not count:
            return self._blank
        return self._wrap(os.pread(self._fd, count, self._offsets[index]))

    def frame_lengths(self) -> Sequence[int] | None:
        if self.encoding is None or not all(self._counts):
            return None
        tables = self._tables if self.encoding.transfer_syntax is TransferSyntax.JPEG_BASELINE_8BIT else None
        return [codec.merged_length(tables, count, self._mark_rgb) for count in self._counts]

    def iter_frames(self) -> Iterator[bytes]:
        for parts in self.iter_frame_parts():
            yield bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def iter_frame_parts(self) -> Iterator[Sequence[Buffer]]:
        """Read tiles in large sequential chunks when they lie in order in the file, and hand
        each one over as (shared JPEG header, view of the tile) without copying it."""
        offsets, counts = self._offsets, self._counts
        index, total = 0, len(offsets)
        head = None
        if self._tables is not None or self._mark_rgb:
            head = codec.merge_jpeg_tables(self._tables, codec.SOI, self._mark_rgb)
        while index < total:
            if not counts[index]:
                yield (self._blank,)
                index += 1
                continue
            start, end = offsets[index], index
            # gather the run of tiles stored back to back, up to the chunk size
            while (
                end + 1 < total
                and counts[end + 1]
                and offsets[end + 1] == offsets[end] + counts[end]
                and offsets[end + 1] + counts[end + 1] - start <= _READ_CHUNK
            ):
                end += 1
            length = offsets[end] + counts[end] - start
            # ask the kernel to read ahead the chunks that follow while this one is processed
            _prefetch(self._fd, start + length, _PREFETCH)
            chunk = os.pread(self._fd, length, start)
            if self.read_observer is not None:
                self.read_observer(self._path, start, chunk)
            view = memoryview(chunk)
            for i in range(index, end + 1):
                lo = offsets[i] - start
                tile = view[lo : lo + counts[i]]
                yield (tile,) if head is None else (head, tile[2:])
            index = end + 1

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        index = row * self.grid.width + col
        count = self._counts[index]
        shape = (self.tile_size.height, self.tile_size.width, self.samples_per_pixel)
        if not count:
            return np.full(shape, 255, np.uint8)
        raw = os.pread(self._fd, count, self._offsets[index])
        try:
            pixels, _, _ = self._page.decode(raw, index, jpegtables=self._tables)
            return np.asarray(pixels, dtype=np.uint8).reshape(shape)
        except Exception as exc:
            raise CorruptSourceError(
                self._path,
                f"page {self._page.index}, tile ({col}, {row}) cannot be decoded: {codec.damage(exc)}; "
                "the file is damaged: copy it again from the scanner",
            ) from exc


class DecodedImage(SourceImage):
    """An image held as decoded pixels (associated images, stripped pages): one frame, or tiles."""

    def __init__(
        self,
        pixels: Pixels,
        flavor: ImageFlavorValues,
        pixel_spacing: SizeMm | None,
        source_lossy: bool,
        tile_size: SizePx | None = None,
    ) -> None:
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        self._pixels = np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
        height, width, samples = self._pixels.shape
        self.flavor = flavor
        self.size = SizePx(width, height)
        self.tile_size = tile_size or self.size
        self.samples_per_pixel = samples
        self.pixel_spacing = pixel_spacing
        self.encoding = None
        self.source_lossy = source_lossy

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        tw, th = self.tile_size.width, self.tile_size.height
        tile = self._pixels[row * th : (row + 1) * th, col * tw : (col + 1) * tw]
        if tile.shape[:2] == (th, tw):
            return tile
        out = np.full((th, tw, self.samples_per_pixel), 255, np.uint8)
        out[: tile.shape[0], : tile.shape[1]] = tile
        return out

    def decode_region(self, z: int = 0, c: int = 0) -> Pixels:
        return self._pixels


def read_page_pixels(page: tifffile.TiffPage) -> Pixels:
    """Decode a whole (small) page to uint8 RGB or grey."""
    array = np.asarray(page.asarray())
    if array.dtype != np.uint8:
        raise UnsupportedFormatError(
            Path(page.parent.filehandle.path),
            f"{array.dtype} samples (page {page.index}): lamina reads 8-bit slides",
        )
    return array


_LOSSY_METHODS = {
    7: LossyImageCompressionMethodValues.ISO_10918_1,
    33003: LossyImageCompressionMethodValues.ISO_15444_1,
    33005: LossyImageCompressionMethodValues.ISO_15444_1,
    34712: LossyImageCompressionMethodValues.ISO_15444_1,
}


#: Associated images are decoded whole: a label, an overview or a thumbnail is a few megapixels;
#: a page that declares more is not one (or its size tags are damaged).
MAX_DECODED_PIXELS = 64 << 20


def decoded_page(page: tifffile.TiffPage, flavor: ImageFlavorValues) -> DecodedImage:
    """A small page (label, macro, thumbnail) decoded, with what its compression did to it."""
    pixels = int(page.imagewidth) * int(page.imagelength)
    if pixels > MAX_DECODED_PIXELS:
        raise UnsupportedFormatError(
            Path(page.parent.filehandle.path),
            f"the {flavor.lower()} image (page {page.index}) is {page.imagewidth}x{page.imagelength} "
            f"pixels; lamina decodes associated images of up to {MAX_DECODED_PIXELS >> 20} megapixels",
        )
    image = DecodedImage(read_page_pixels(page), flavor, None, int(page.compression) in _LOSSY_METHODS)
    if image.source_lossy:
        stored = sum(page.databytecounts)
        image.lossy_method = _LOSSY_METHODS[int(page.compression)]
        image.lossy_ratio = image.size.area * image.samples_per_pixel / stored if stored else None
    return image


def require_8bit(path: Path, page: tifffile.TiffPage) -> None:
    """lamina keeps 8-bit brightfield slides; anything else is refused rather than truncated."""
    bits = page.bitspersample
    if bits != 8:
        raise UnsupportedFormatError(
            path, f"{bits}-bit samples (page {page.index}): lamina reads 8-bit brightfield slides"
        )
