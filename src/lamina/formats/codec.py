"""Byte-level JPEG and JPEG 2000 helpers, and the encoders used when pixels must be re-encoded.

Copying a scanner's compressed tiles into DICOM frames needs small, lossless edits of the
stream (merging shared JPEG tables, marking RGB-coded JPEG); the entropy-coded data is never
touched. Pixels are decoded and re-encoded only for images a source cannot hand over as
DICOM frames (LZW, Deflate, uncompressed), and for generated pyramid levels.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import imagecodecs
import numpy as np
import numpy.typing as npt

from lamina.formats.source import FrameEncoding, TransferSyntax

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
#: Adobe APP14 segment with transform 0: the components are R, G, B (no colour transform).
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
JPEG_QUALITY = 90
_THREADS = os.cpu_count() or 1


@dataclass(frozen=True)
class JpegInfo:
    """What a JPEG stream's header says: frame type, components and their sampling."""

    sof: int  # 0xC0 baseline, 0xC1 extended, 0xC2 progressive, 0xC3 lossless
    components: tuple[int, ...]  # component identifiers
    sampling: tuple[tuple[int, int], ...]  # (h, v) per component
    adobe_transform: int | None
    precision: int
    width: int
    height: int

    @property
    def subsampled(self) -> bool:
        return len({s for s in self.sampling}) > 1

    @property
    def rgb_coded(self) -> bool:
        """True when the components are R, G, B rather than Y, Cb, Cr."""
        if self.adobe_transform is not None:
            return self.adobe_transform == 0
        return self.components == (0x52, 0x47, 0x42)


def jpeg_info(stream: bytes) -> JpegInfo:
    """Parse the markers up to SOS. Raises ValueError on a stream that is not JPEG."""
    if not stream.startswith(SOI):
        raise ValueError("not a JPEG stream (no SOI marker)")
    pos, adobe, sof = 2, None, None
    n = len(stream)
    while pos + 4 <= n:
        if stream[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        marker = stream[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", stream[pos + 2 : pos + 4])
        body = stream[pos + 4 : pos + 2 + length]
        if marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
            adobe = body[11]
        elif marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            precision = body[0]
            height, width = struct.unpack(">HH", body[1:5])
            count = body[5]
            comps = tuple(body[6 + 3 * i] for i in range(count))
            sampling = tuple((body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(count))
            sof = (marker, comps, sampling, precision, width, height)
        elif marker == 0xDA:
            break
        pos += 2 + length
    if sof is None:
        raise ValueError("JPEG stream has no frame header (SOF)")
    marker, comps, sampling, precision, width, height = sof
    return JpegInfo(marker, comps, sampling, adobe, precision, width, height)


def merge_jpeg_tables(tables: bytes | None, tile: bytes, mark_rgb: bool) -> bytes:
    """Make an abbreviated TIFF JPEG tile a complete stream, byte for byte otherwise.

    ``tables`` is the TIFF JPEGTables value (SOI, DQT/DHT segments, EOI); its segments go
    right after the tile's SOI. ``mark_rgb`` inserts an Adobe APP14 (transform 0) segment so
    every decoder knows the components are RGB.
    """
    head = SOI + (ADOBE_RGB if mark_rgb else b"")
    if tables:
        head += tables[2:-2]
    return head + tile[2:]


def merged_length(tables: bytes | None, tile_length: int, mark_rgb: bool) -> int:
    """The length ``merge_jpeg_tables`` returns, without building it."""
    extra = (len(ADOBE_RGB) if mark_rgb else 0) + (len(tables) - 4 if tables else 0)
    return tile_length + extra


def jpeg_encoding(info: JpegInfo) -> FrameEncoding | None:
    """The DICOM encoding of a JPEG stream, or None when DICOM has no transfer syntax for it."""
    if info.precision != 8 or info.sof != 0xC0:
        return None
    if len(info.components) == 1:
        photometric = "MONOCHROME2"
    elif info.rgb_coded:
        photometric = "RGB"
    else:
        photometric = "YBR_FULL_422" if info.subsampled else "YBR_FULL"
    return FrameEncoding(TransferSyntax.JPEG_BASELINE_8BIT, photometric, "ISO_10918_1")


@dataclass(frozen=True)
class J2kInfo:
    components: int
    mct: bool
    reversible: bool


def j2k_info(codestream: bytes) -> J2kInfo:
    """Read SIZ and COD of a JPEG 2000 codestream (not a JP2 file)."""
    if not codestream.startswith(b"\xff\x4f\xff\x51"):
        raise ValueError("not a JPEG 2000 codestream (no SOC/SIZ markers)")
    (siz_len,) = struct.unpack(">H", codestream[4:6])
    (csiz,) = struct.unpack(">H", codestream[4 + 36 : 4 + 38])
    pos = 4 + siz_len
    while pos + 4 <= len(codestream):
        marker, length = struct.unpack(">HH", codestream[pos : pos + 4])
        if marker == 0xFF52:  # COD
            body = codestream[pos + 4 : pos + 2 + length]
            mct = body[4] == 1
            reversible = body[9] == 1
            return J2kInfo(csiz, mct, reversible)
        if marker == 0xFF90:  # SOT: no COD in the main header
            break
        pos += 2 + length
    raise ValueError("JPEG 2000 codestream has no COD marker")


def j2k_encoding(info: J2kInfo) -> FrameEncoding:
    if info.components == 1:
        photometric = "MONOCHROME2"
    elif info.mct:
        photometric = "YBR_RCT" if info.reversible else "YBR_ICT"
    else:
        photometric = "RGB"
    if info.reversible:
        return FrameEncoding(TransferSyntax.JPEG_2000_LOSSLESS, photometric)
    return FrameEncoding(TransferSyntax.JPEG_2000, photometric, "ISO_15444_1")


def lossless_encoding(samples: int) -> FrameEncoding:
    """What lamina writes when it must re-encode pixels that were never lossy."""
    photometric = "MONOCHROME2" if samples == 1 else "YBR_RCT"
    return FrameEncoding(TransferSyntax.JPEG_2000_LOSSLESS, photometric)


def lossy_encoding(samples: int) -> FrameEncoding:
    """What lamina writes when it re-encodes pixels that were already lossy (generated levels)."""
    photometric = "MONOCHROME2" if samples == 1 else "YBR_FULL_422"
    return FrameEncoding(TransferSyntax.JPEG_BASELINE_8BIT, photometric, "ISO_10918_1")


def encode(pixels: npt.NDArray[np.uint8], encoding: FrameEncoding) -> bytes:
    """Encode one frame in ``encoding`` (one of ``lossless_encoding`` / ``lossy_encoding``)."""
    data = np.ascontiguousarray(pixels if pixels.shape[-1] != 1 else pixels[..., 0])
    if encoding.transfer_syntax is TransferSyntax.JPEG_2000_LOSSLESS:
        return bytes(
            imagecodecs.jpeg2k_encode(
                data, level=0, codecformat="J2K", reversible=True, mct=data.ndim == 3, numthreads=_THREADS
            )
        )
    if encoding.transfer_syntax is TransferSyntax.JPEG_BASELINE_8BIT:
        return bytes(imagecodecs.jpeg8_encode(data, level=JPEG_QUALITY, subsampling=(2, 2)))
    raise ValueError(f"lamina does not encode {encoding.transfer_syntax}")


def decode(frame: bytes, encoding: FrameEncoding) -> npt.NDArray[np.uint8]:
    """Decode one frame of ``encoding`` to RGB (or grey) pixels, shape (rows, columns, samples)."""
    ts = encoding.transfer_syntax
    if ts is TransferSyntax.JPEG_BASELINE_8BIT:
        pixels = imagecodecs.jpeg8_decode(frame)
    elif ts in (TransferSyntax.JPEG_2000, TransferSyntax.JPEG_2000_LOSSLESS, TransferSyntax.HTJ2K_LOSSLESS):
        pixels = imagecodecs.jpeg2k_decode(frame)
    elif ts is TransferSyntax.JPEG_LS_LOSSLESS:
        pixels = imagecodecs.jpegls_decode(frame)
    else:
        raise ValueError(f"cannot decode frames of transfer syntax {ts}")
    array = np.asarray(pixels, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array
