"""A minimal classic-TIFF writer with full control over tags and layout.

tifffile always adds resolution tags and filters some tags (ImageDepth, ...)
from ``extratags``; vendor layouts such as Aperio SVS or Philips TIFF need an
exact tag set, so the vendor writers build their IFDs with this module.
Each page's image data is written first, followed by its IFD and the IFD's
out-of-line values; IFDs are chained in order. Output is byte-for-byte
deterministic.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ASCII",
    "FLOAT",
    "LONG",
    "RATIONAL",
    "SHORT",
    "SLONG",
    "UNDEFINED",
    "Page",
    "lzw_strips",
    "write_tiff",
]

ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SLONG, FLOAT = 2, 3, 4, 5, 7, 9, 11
TagValue = str | bytes | Sequence[int] | Sequence[float] | Sequence[tuple[int, int]]
_FORMATS = {SHORT: "H", LONG: "I", SLONG: "i", FLOAT: "f"}
_LIMIT = 2**32 - 1


@dataclass
class Page:
    """One TIFF image file directory and its image data.

    Attributes
    ----------
    width, height : int
        Image size in pixels.
    segments : list of bytes
        Encoded tiles (row-major) or strips (top to bottom).
    compression : int
        TIFF Compression code (1 none, 5 LZW, 7 JPEG, 8 deflate).
    photometric : int
        PhotometricInterpretation (2 RGB, 6 YCbCr).
    tile : int or None
        Square tile size, or ``None`` for a stripped image.
    rows_per_strip : int or None
        RowsPerStrip of a stripped image (default: the image height).
    tags : dict
        Further tags, ``{code: (type, value)}``; ``ASCII`` values are ``str``.
    """

    width: int
    height: int
    segments: list[bytes]
    compression: int
    photometric: int = 2
    tile: int | None = None
    rows_per_strip: int | None = None
    tags: dict[int, tuple[int, TagValue]] = field(default_factory=dict)

    def all_tags(self, offsets: list[int]) -> dict[int, tuple[int, TagValue]]:
        """Return the complete tag set, given the file offsets of the segments.

        Parameters
        ----------
        offsets : list of int
            Offset of each segment in the file.

        Returns
        -------
        dict
            ``{code: (type, value)}`` with the structural tags filled in.
        """
        tags: dict[int, tuple[int, TagValue]] = {
            256: (LONG, [self.width]),
            257: (LONG, [self.height]),
            258: (SHORT, [8, 8, 8]),
            259: (SHORT, [self.compression]),
            262: (SHORT, [self.photometric]),
            277: (SHORT, [3]),
            284: (SHORT, [1]),
        }
        counts = [len(segment) for segment in self.segments]
        if self.tile is None:
            tags[273] = (LONG, offsets)
            tags[278] = (LONG, [self.rows_per_strip or self.height])
            tags[279] = (LONG, counts)
        else:
            tags[322] = (LONG, [self.tile])
            tags[323] = (LONG, [self.tile])
            tags[324] = (LONG, offsets)
            tags[325] = (LONG, counts)
        tags.update(self.tags)
        return tags


def _encode(kind: int, value: TagValue) -> tuple[int, bytes]:
    if kind == ASCII:
        assert isinstance(value, str)
        data = value.encode("ascii") + b"\0"
        return len(data), data
    if kind == UNDEFINED:
        assert isinstance(value, bytes)
        return len(value), value
    assert not isinstance(value, str | bytes)
    if kind == RATIONAL:
        pairs = [item for item in value if isinstance(item, tuple)]
        return len(pairs), b"".join(struct.pack("<II", *pair) for pair in pairs)
    numbers = [item for item in value if isinstance(item, int | float)]
    return len(numbers), struct.pack(f"<{len(numbers)}{_FORMATS[kind]}", *numbers)


def write_tiff(path: Path, pages: Sequence[Page], ndpi: bool = False) -> None:
    """Write a little-endian classic TIFF file.

    Parameters
    ----------
    path : pathlib.Path
        Output file, overwritten.
    pages : sequence of Page
        The IFDs in order.
    ndpi : bool, optional
        Use Hamamatsu's NDPI layout: the header and every next-IFD pointer
        are followed by the (zero) high 32 bits of a 64-bit offset, and each
        IFD by the (zero) high 32 bits of its N value/offset fields. Plain
        TIFF readers still read the file as classic TIFF.

    Raises
    ------
    ValueError
        If the file would exceed the 4 GiB classic-TIFF limit.
    """
    high = 4 if ndpi else 0
    with path.open("wb") as fh:
        fh.write(b"II*\0\0\0\0\0" + b"\0" * high)
        next_pointer = 4
        for page in pages:
            offsets = []
            for segment in page.segments:
                offsets.append(fh.tell())
                fh.write(segment)
            fh.write(b"\0" * (fh.tell() % 2))
            ifd = fh.tell()
            entries = sorted(page.all_tags(offsets).items())
            external = ifd + 2 + 12 * len(entries) + 4 + high * (1 + len(entries))
            head = bytearray(struct.pack("<H", len(entries)))
            tail = bytearray()
            for code, (kind, value) in entries:
                count, data = _encode(kind, value)
                if len(data) <= 4:
                    head += struct.pack("<HHI", code, kind, count) + data.ljust(4, b"\0")
                else:
                    head += struct.pack("<HHII", code, kind, count, external + len(tail))
                    tail += data + b"\0" * (len(data) % 2)
            head += b"\0\0\0\0" + b"\0" * high * (1 + len(entries))
            fh.write(head + tail)
            if fh.tell() > _LIMIT:
                raise ValueError(f"{path}: classic TIFF cannot exceed 4 GiB")
            fh.seek(next_pointer)
            fh.write(struct.pack("<I", ifd))
            fh.seek(0, 2)
            next_pointer = ifd + 2 + 12 * len(entries)


def lzw_strips(pixels: NDArray[np.uint8], rows_per_strip: int) -> list[bytes]:
    """Encode RGB pixels as LZW strips with horizontal differencing (Predictor 2).

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(height, width, 3)`` uint8 RGB pixels.
    rows_per_strip : int
        Rows in each strip.

    Returns
    -------
    list of bytes
        One LZW stream per strip.
    """
    delta = pixels.copy()
    delta[:, 1:] = pixels[:, 1:] - pixels[:, :-1]
    return [
        bytes(imagecodecs.lzw_encode(delta[top : top + rows_per_strip].tobytes()))
        for top in range(0, pixels.shape[0], rows_per_strip)
    ]
