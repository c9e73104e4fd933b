"""JPEG helpers shared by the TIFF-based sample writers.

Whole-slide scanners that store JPEG in TIFF (Aperio, Philips, ...) write one
set of quantisation and Huffman tables in the ``JPEGTables`` tag and
*abbreviated* JPEG streams (no DQT/DHT segments) in each tile or strip. This
module reproduces that layout: every segment is encoded with libjpeg-turbo
(through imagecodecs) at the same quality with the standard (non-optimised)
Huffman tables, so all segments share byte-identical tables, which are then
split off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import imagecodecs
import numpy as np
from numpy.typing import NDArray

__all__ = ["encode_jpeg", "encode_strips", "encode_tiles", "split_tables"]

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_TABLE_MARKERS = frozenset({0xDB, 0xC4})  # DQT, DHT
_DROPPED_MARKERS = frozenset(range(0xE0, 0xF0))  # APPn (JFIF) segments


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def encode_jpeg(pixels: NDArray[np.uint8], quality: int, coding: str = "YCBCR") -> bytes:
    """Encode an RGB array as a baseline JPEG interchange stream.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(height, width, 3)`` uint8 RGB pixels.
    quality : int
        libjpeg quality factor (1-100).
    coding : str, optional
        ``"YCBCR"`` (default): YCbCr with 4:2:0 chroma subsampling, two
        quantisation tables. ``"RGB"``: no colour transform, no subsampling,
        one table for all components (Aperio's "JPEG/RGB").

    Returns
    -------
    bytes
        A complete JPEG stream with standard Huffman tables.
    """
    encoded = imagecodecs.jpeg8_encode(
        np.ascontiguousarray(pixels),
        quality,
        colorspace="RGB",
        outcolorspace=coding,
        subsampling="420" if coding == "YCBCR" else "444",
        optimize=False,
    )
    return bytes(encoded)


def _renumber(segment: bytes, marker: int, ids: bytes) -> bytes:
    """Replace the component identifiers in an SOF0 or SOS segment."""
    data = bytearray(segment)
    first, step = (10, 3) if marker == 0xC0 else (5, 2)
    for index, component in enumerate(ids):
        data[first + index * step] = component
    return bytes(data)


def split_tables(stream: bytes, component_ids: bytes | None = None) -> tuple[bytes, bytes]:
    """Split a JPEG interchange stream into tables and an abbreviated stream.

    Parameters
    ----------
    stream : bytes
        A complete JPEG stream (SOI ... EOI).
    component_ids : bytes, optional
        New component identifiers for the frame and scan headers, e.g.
        ``b"\\x00\\x01\\x02"`` as in Aperio files (which a standalone decoder
        would take for YCbCr: readers must honour the TIFF photometric).

    Returns
    -------
    tables : bytes
        ``SOI + DQT/DHT segments + EOI``, the value of a TIFF ``JPEGTables`` tag.
    image : bytes
        ``SOI + SOF + SOS + entropy-coded data + EOI`` without tables or APPn.
    """
    if stream[:2] != _SOI:
        raise ValueError("not a JPEG stream")
    tables = bytearray(_SOI)
    image = bytearray(_SOI)
    pos = 2
    while pos < len(stream):
        marker = stream[pos + 1]
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        segment = stream[pos : pos + 2 + length]
        if component_ids is not None and marker in (0xC0, 0xDA):
            segment = _renumber(segment, marker, component_ids)
        if marker == 0xDA:  # SOS: the rest is scan data up to and with EOI
            image += segment + stream[pos + 2 + length :]
            break
        if marker in _TABLE_MARKERS:
            tables += segment
        elif marker not in _DROPPED_MARKERS:
            image += segment
        pos += 2 + length
    tables += _EOI
    return bytes(tables), bytes(image)


def _shared(streams: list[bytes], component_ids: bytes | None) -> tuple[bytes, list[bytes]]:
    parts = [split_tables(stream, component_ids) for stream in streams]
    tables = parts[0][0]
    if any(part[0] != tables for part in parts):
        raise RuntimeError("JPEG segments do not share identical tables")
    return tables, [part[1] for part in parts]


def _tiles(pixels: NDArray[np.uint8], tile: int) -> Iterator[NDArray[np.uint8]]:
    height, width = pixels.shape[:2]
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            block = pixels[top : top + tile, left : left + tile]
            if block.shape[:2] != (tile, tile):
                pad = ((0, tile - block.shape[0]), (0, tile - block.shape[1]), (0, 0))
                block = np.pad(block, pad, mode="edge")
            yield block


def encode_tiles(
    pixels: NDArray[np.uint8],
    tile: int,
    quality: int,
    coding: str = "YCBCR",
    component_ids: bytes | None = None,
) -> tuple[bytes, list[bytes]]:
    """Encode an image as TIFF JPEG tiles sharing one ``JPEGTables`` value.

    Edge tiles are padded to the full tile size by repeating the last row or
    column, as scanners do (the padding is outside the image and ignored).

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(height, width, 3)`` uint8 RGB pixels.
    tile : int
        Tile width and height in pixels (a multiple of 16).
    quality : int
        JPEG quality factor.
    coding : str, optional
        ``"YCBCR"`` (4:2:0) or ``"RGB"``, see :func:`encode_jpeg`.
    component_ids : bytes, optional
        Component identifiers to write, see :func:`split_tables`.

    Returns
    -------
    tables : bytes
        The shared JPEG tables.
    tiles : list of bytes
        Abbreviated JPEG streams, in TIFF tile order (row-major).
    """
    with ThreadPoolExecutor(_workers()) as pool:
        streams = list(pool.map(lambda block: encode_jpeg(block, quality, coding), _tiles(pixels, tile)))
    return _shared(streams, component_ids)


def encode_strips(
    pixels: NDArray[np.uint8],
    rows_per_strip: int,
    quality: int,
    coding: str = "YCBCR",
    component_ids: bytes | None = None,
) -> tuple[bytes, list[bytes]]:
    """Encode an image as TIFF JPEG strips sharing one ``JPEGTables`` value.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(height, width, 3)`` uint8 RGB pixels.
    rows_per_strip : int
        Rows in each strip (a multiple of 16); the last strip may be shorter.
    quality : int
        JPEG quality factor.
    coding : str, optional
        ``"YCBCR"`` (4:2:0) or ``"RGB"``, see :func:`encode_jpeg`.
    component_ids : bytes, optional
        Component identifiers to write, see :func:`split_tables`.

    Returns
    -------
    tables : bytes
        The shared JPEG tables.
    strips : list of bytes
        Abbreviated JPEG streams, one per strip, top to bottom.
    """
    height = pixels.shape[0]
    streams = [
        encode_jpeg(pixels[top : top + rows_per_strip], quality, coding)
        for top in range(0, height, rows_per_strip)
    ]
    return _shared(streams, component_ids)
