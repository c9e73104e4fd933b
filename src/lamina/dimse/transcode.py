"""Stored instances re-encoded in an uncompressed transfer syntax, for a peer that accepts no
other: the fallback of a C-STORE when the stored syntax was not accepted.

The header is the stored one, with what the new encoding changes (photometric interpretation,
planar configuration, the Extended Offset Table that only encapsulated frames have); the frames
are decoded one at a time from the stored object and written behind it, so memory stays at one
frame whatever the instance's size. The output size is bounded (``max_bytes``): level 0 of a
slide can be tens of gigabytes once decoded.
"""

from __future__ import annotations

import struct
from typing import IO

import numpy as np
import pydicom
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
)

from lamina.archive.catalog import InstanceRow
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax

#: The stored syntaxes lamina decodes (those of lamina.formats.codec.decode).
DECODABLE = frozenset({JPEGBaseline8Bit, JPEG2000, JPEG2000Lossless, JPEGLSLossless, HTJ2KLossless})
#: The syntaxes it writes.
TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_PIXEL_DATA = struct.pack("<HH", 0x7FE0, 0x0010)
_ENCAPSULATED_ONLY = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")


class TranscodeError(Exception):
    """The instance cannot be re-encoded; ``str()`` says why, for the peer's and the user's log."""


def native_bytes(row: InstanceRow) -> int:
    """The size of the instance's pixels once decoded (8 bits a sample)."""
    return row.number_of_frames * row.rows * row.columns * row.samples_per_pixel


def refusal(row: InstanceRow, max_bytes: int) -> str | None:
    """Why ``row`` cannot be transcoded (one line), or None when it can."""
    if row.transfer_syntax_uid not in DECODABLE:
        return f"lamina cannot decode its stored transfer syntax {UID(row.transfer_syntax_uid).name}"
    if row.number_of_frames < 1:
        return "it has no frames to decode"
    size = native_bytes(row)
    if size > max_bytes:
        return f"{size / 1e6:,.0f} MB uncompressed, over the {max_bytes / 1e6:,.0f} MB transcoding limit"
    return None


def write_native(source: IO[bytes], row: InstanceRow, target: str, out: IO[bytes], max_bytes: int) -> int:
    """Write ``row``'s stored object (``source``, a seekable file) as a Part-10 file in ``target``
    (Explicit or Implicit VR Little Endian) into ``out``; return the bytes written.

    Raises :class:`TranscodeError` when the instance cannot be transcoded or a frame does not
    decode to the instance's own size.
    """
    reason = refusal(row, max_bytes)
    if reason is not None:
        raise TranscodeError(reason)
    if target not in TARGETS:
        raise TranscodeError(f"lamina does not write {UID(target).name}")
    source.seek(0)
    header = pydicom.dcmread(source, stop_before_pixels=True)
    if int(header.get("BitsAllocated", 8)) != 8:
        raise TranscodeError(f"{header.BitsAllocated} bits a sample; lamina decodes 8-bit frames only")
    for keyword in _ENCAPSULATED_ONLY:
        if keyword in header:
            delattr(header, keyword)
    # lamina's decoder hands over RGB (or grey) pixels, interleaved
    header.PhotometricInterpretation = "RGB" if row.samples_per_pixel == 3 else "MONOCHROME2"
    if row.samples_per_pixel > 1:
        header.PlanarConfiguration = 0
    elif "PlanarConfiguration" in header:
        del header.PlanarConfiguration
    header.file_meta.TransferSyntaxUID = UID(target)
    start = out.tell()
    implicit = target == ImplicitVRLittleEndian
    pydicom.dcmwrite(out, header, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    size = native_bytes(row)
    padded = size + (size & 1)
    if target == ExplicitVRLittleEndian:
        out.write(_PIXEL_DATA + b"OB\x00\x00" + struct.pack("<I", padded))
    else:
        out.write(_PIXEL_DATA + struct.pack("<I", padded))
    encoding = FrameEncoding(TransferSyntax(row.transfer_syntax_uid), row.photometric_interpretation)
    shape = (row.rows, row.columns, row.samples_per_pixel)
    offsets = np.frombuffer(row.frame_offsets, "<u8").tolist()
    lengths = np.frombuffer(row.frame_lengths, "<u4").tolist()
    for number, (offset, length) in enumerate(zip(offsets, lengths, strict=True), start=1):
        source.seek(offset)
        frame = source.read(length)
        try:
            pixels = codec.decode(frame, encoding)
        except Exception as exc:  # imagecodecs raises its own errors per codec
            raise TranscodeError(f"frame {number} does not decode ({type(exc).__name__})") from exc
        if pixels.shape != shape:
            raise TranscodeError(f"frame {number} decodes to {pixels.shape}, not {shape}")
        out.write(np.ascontiguousarray(pixels).tobytes())
    if padded != size:
        out.write(b"\x00")
    return out.tell() - start
