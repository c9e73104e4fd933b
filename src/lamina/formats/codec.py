"""Byte-level JPEG and JPEG 2000 helpers, and the encoders used when pixels must be re-encoded.

Copying a scanner's compressed tiles into DICOM frames needs small, lossless edits of the
stream (merging shared JPEG tables, marking RGB-coded JPEG); the entropy-coded data is never
touched. Pixels are decoded and re-encoded only for images a source cannot hand over as
DICOM frames (LZW, Deflate, uncompressed), and for generated pyramid levels.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt

from lamina.errors import CodecError
from lamina.formats.source import FrameEncoding, TransferSyntax
from lamina.model.enums import LossyImageCompressionMethodValues as Method
from lamina.model.enums import PhotometricInterpretationValues as Photometric

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
    """Parse the markers up to SOS. Raises CodecError on a stream that is not JPEG."""
    if not stream.startswith(SOI):
        raise CodecError("not a JPEG stream (no start-of-image marker)")
    pos, adobe, sof = 2, None, None
    n = len(stream)
    while pos + 4 <= n:
        if stream[pos] != 0xFF:
            raise CodecError(f"the JPEG header is damaged: a marker is expected at byte {pos}")
        marker = stream[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", stream[pos + 2 : pos + 4])
        body = stream[pos + 4 : pos + 2 + length]
        if marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
            adobe = body[11]
        elif marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7):
            if len(body) < 6 or len(body) < 6 + 3 * body[5]:
                raise CodecError(f"the JPEG frame header at byte {pos} is cut short")
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
        raise CodecError("the JPEG stream has no frame header (SOF marker)")
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
        photometric = Photometric.MONOCHROME2
    elif info.rgb_coded:
        photometric = Photometric.RGB
    else:
        photometric = ycbcr_photometric()
    return FrameEncoding(TransferSyntax.JPEG_BASELINE_8BIT, photometric, Method.ISO_10918_1)


def ycbcr_photometric() -> Photometric:
    """The PhotometricInterpretation of YCbCr JPEG frames, subsampled or not: YBR_FULL_422.

    The VL WSI IOD does not allow YBR_FULL (PS3.3 C.8.12.4.1.5), and PS3.3 C.7.6.3.1.2 says of
    YBR_FULL_422 that the sub-sampling in a JPEG bit stream may differ from the name; decoders
    take it from the stream. Hamamatsu's own DICOM labels its 4:4:4 JPEG tiles this way.
    """
    return Photometric.YBR_FULL_422


@dataclass(frozen=True)
class J2kInfo:
    components: int
    mct: bool
    reversible: bool


def j2k_info(codestream: bytes) -> J2kInfo:
    """Read SIZ and COD of a JPEG 2000 codestream (not a JP2 file)."""
    if not codestream.startswith(b"\xff\x4f\xff\x51"):
        raise CodecError("not a JPEG 2000 codestream (no SOC and SIZ markers)")
    if len(codestream) < 4 + 38:
        raise CodecError("the JPEG 2000 codestream is cut short inside its SIZ marker")
    (siz_len,) = struct.unpack(">H", codestream[4:6])
    (csiz,) = struct.unpack(">H", codestream[4 + 36 : 4 + 38])
    pos = 4 + siz_len
    while pos + 4 <= len(codestream):
        marker, length = struct.unpack(">HH", codestream[pos : pos + 4])
        if marker == 0xFF52:  # COD
            body = codestream[pos + 4 : pos + 2 + length]
            if len(body) < 10:
                raise CodecError(f"the JPEG 2000 COD marker at byte {pos} is cut short")
            mct = body[4] == 1
            reversible = body[9] == 1
            return J2kInfo(csiz, mct, reversible)
        if marker == 0xFF90:  # SOT: no COD in the main header
            break
        pos += 2 + length
    raise CodecError("the JPEG 2000 codestream has no COD marker in its main header")


def j2k_encoding(info: J2kInfo) -> FrameEncoding:
    if info.components == 1:
        photometric = Photometric.MONOCHROME2
    elif info.mct:
        photometric = Photometric.YBR_RCT if info.reversible else Photometric.YBR_ICT
    else:
        photometric = Photometric.RGB
    if info.reversible:
        return FrameEncoding(TransferSyntax.JPEG_2000_LOSSLESS, photometric)
    return FrameEncoding(TransferSyntax.JPEG_2000, photometric, Method.ISO_15444_1)


#: The lossless codecs lamina writes pixel-exact frames in: JPEG-LS (the default, chosen by
#: measured speed and size: 5 times faster to encode and decode than JPEG 2000 and a little
#: smaller on tissue; docs/decisions/0011) or JPEG 2000 (OpenSlide 4's DICOM reader reads only
#: this one; ``lamina export --transfer-syntax jpeg2000`` writes it from JPEG-LS too).
LOSSLESS_CODECS = ("jpeg-ls", "jpeg2000")
#: ``auto``: JPEG-LS for a slide whose pyramid lamina re-encodes (pixel-exact sources: there the
#: codec's speed decides the ingest's); JPEG 2000 for the few frames it re-encodes in a slide
#: whose base level is copied as stored (labels, overviews, missing levels), so that every reader
#: of those copied tiles, OpenSlide included, still opens the whole series.
DEFAULT_LOSSLESS = "auto"


def lossless_codec_of(choice: str, base_copied: bool) -> str:
    """The codec that ``choice`` (``auto`` or one of ``LOSSLESS_CODECS``) gives a slide."""
    if choice != "auto":
        return choice
    return "jpeg2000" if base_copied else "jpeg-ls"


def lossless_encoding(samples: int, codec_name: str = "jpeg2000") -> FrameEncoding:
    """What lamina writes when it must re-encode pixels that were never lossy."""
    if codec_name == "jpeg-ls":
        photometric = Photometric.MONOCHROME2 if samples == 1 else Photometric.RGB
        return FrameEncoding(TransferSyntax.JPEG_LS_LOSSLESS, photometric)
    photometric = Photometric.MONOCHROME2 if samples == 1 else Photometric.YBR_RCT
    return FrameEncoding(TransferSyntax.JPEG_2000_LOSSLESS, photometric)


def lossy_encoding(samples: int) -> FrameEncoding:
    """What lamina writes when it re-encodes pixels that were already lossy (generated levels)."""
    photometric = Photometric.MONOCHROME2 if samples == 1 else Photometric.YBR_FULL_422
    return FrameEncoding(TransferSyntax.JPEG_BASELINE_8BIT, photometric, Method.ISO_10918_1)


def encode_like(pixels: npt.NDArray[Any], encoding: FrameEncoding) -> bytes:
    """Encode a frame lamina adds to an image whose frames are in ``encoding`` (a blank tile of a
    sparse image): in the same codec, losslessly unless the image is baseline JPEG (a JPEG 2000
    lossless codestream sits among lossy JPEG 2000 frames as well)."""
    samples = pixels.shape[-1] if pixels.ndim == 3 else 1
    syntax = encoding.transfer_syntax
    if syntax is TransferSyntax.JPEG_BASELINE_8BIT:
        return encode(pixels, lossy_encoding(samples))
    if syntax is TransferSyntax.JPEG_LS_LOSSLESS:
        return encode(pixels, lossless_encoding(samples, "jpeg-ls"))
    return encode(pixels, lossless_encoding(samples, "jpeg2000"))


def encode(
    pixels: npt.NDArray[Any], encoding: FrameEncoding, quality: int = JPEG_QUALITY, threads: int = _THREADS
) -> bytes:
    """Encode one frame in ``encoding`` (one of ``lossless_encoding`` / ``lossy_encoding``);
    uint8 samples, or uint16 grey samples (JPEG 2000 only). ``quality``: JPEG's, 1 to 100;
    ``threads``: the JPEG 2000 encoder's (1 when frames are encoded side by side)."""
    data = np.ascontiguousarray(pixels if pixels.shape[-1] != 1 else pixels[..., 0])
    lossless = (TransferSyntax.JPEG_2000_LOSSLESS, TransferSyntax.JPEG_LS_LOSSLESS)
    if data.dtype != np.uint8 and encoding.transfer_syntax not in lossless:
        raise CodecError(f"lamina encodes {data.dtype} samples in JPEG 2000 or JPEG-LS only")
    if encoding.transfer_syntax is TransferSyntax.JPEG_LS_LOSSLESS:
        return bytes(imagecodecs.jpegls_encode(data, level=0))
    if encoding.transfer_syntax is TransferSyntax.JPEG_2000_LOSSLESS:
        return bytes(
            imagecodecs.jpeg2k_encode(
                data, level=0, codecformat="J2K", reversible=True, mct=data.ndim == 3, numthreads=threads
            )
        )
    if encoding.transfer_syntax is TransferSyntax.JPEG_BASELINE_8BIT:
        return bytes(imagecodecs.jpeg8_encode(data, level=quality, subsampling=(2, 2)))
    raise CodecError(f"lamina does not encode {encoding.transfer_syntax}")


#: The codecs by transfer syntax, and their names in messages.
_DECODERS: dict[TransferSyntax, tuple[str, Callable[[bytes], Any]]] = {
    TransferSyntax.JPEG_BASELINE_8BIT: ("JPEG", imagecodecs.jpeg8_decode),
    TransferSyntax.JPEG_2000: ("JPEG 2000", imagecodecs.jpeg2k_decode),
    TransferSyntax.JPEG_2000_LOSSLESS: ("JPEG 2000", imagecodecs.jpeg2k_decode),
    TransferSyntax.HTJ2K_LOSSLESS: ("HTJ2K", imagecodecs.jpeg2k_decode),
    TransferSyntax.JPEG_LS_LOSSLESS: ("JPEG-LS", imagecodecs.jpegls_decode),
}


def decode(frame: bytes, encoding: FrameEncoding, size: tuple[int, int] | None = None) -> npt.NDArray[Any]:
    """Decode one frame of ``encoding`` to RGB (or grey) pixels, shape (rows, columns, samples):
    uint8, or uint16 for a frame of more than 8 bits (JPEG 2000, JPEG-LS).

    ``size`` (columns, rows), when given, bounds the work: a frame whose header declares a larger
    image is refused before a decoder allocates it. Raises CodecError, naming the codec and what
    its library found wrong, for a damaged frame.
    """
    found = _DECODERS.get(encoding.transfer_syntax)
    if found is None:
        raise CodecError(f"cannot decode frames of transfer syntax {encoding.transfer_syntax}")
    name, decoder = found
    if size is not None:
        declared = declared_size(frame, encoding.transfer_syntax)
        if declared is not None and (declared[0] > size[0] or declared[1] > size[1]):
            raise CodecError(
                f"the {name} header declares {declared[0]}x{declared[1]} pixels in a frame of "
                f"{size[0]}x{size[1]}"
            )
    try:
        pixels = decoder(frame)
    except MemoryError as exc:
        raise CodecError(f"the {name} header declares an image too large to decode") from exc
    except Exception as exc:  # imagecodecs raises one error class per codec
        raise CodecError(f"the {name} data is damaged ({library_message(exc)})") from exc
    array = np.asarray(pixels)
    if array.dtype not in (np.uint8, np.uint16):
        raise CodecError(f"the {name} frame decodes to {array.dtype} samples, not 8 or 16-bit unsigned")
    return array[..., None] if array.ndim == 2 else array


def declared_size(frame: bytes, transfer_syntax: TransferSyntax) -> tuple[int, int] | None:
    """(columns, rows) as a JPEG, JPEG-LS or JPEG 2000 frame's header declares them; None when
    the header cannot be read (the decoder then says what is wrong)."""
    try:
        if frame.startswith(b"\xff\x4f\xff\x51") and len(frame) >= 24:  # JPEG 2000: SIZ
            x, y, x0, y0 = struct.unpack(">IIII", frame[8:24])
            return x - x0, y - y0
        if transfer_syntax in (TransferSyntax.JPEG_BASELINE_8BIT, TransferSyntax.JPEG_LS_LOSSLESS):
            info = jpeg_info(frame)
            return info.width, info.height
    except CodecError:
        return None
    return None


def library_message(exc: BaseException) -> str:
    """What a reader library said, as a clause of lamina's message: its first line, at most 160
    characters, without the name of its exception class (which tells a user nothing)."""
    lines = str(exc).strip().splitlines()
    text = lines[0][:160].strip() if lines else ""
    return text or "no detail given"


#: imagecodecs' error classes (one per codec), by the name of the codec in messages.
_CODEC_NAMES = {
    "Jpeg8Error": "JPEG",
    "JpegError": "JPEG",
    "Ljpeg8Error": "JPEG",
    "Jpeg2kError": "JPEG 2000",
    "JpeglsError": "JPEG-LS",
    "DeflateError": "Deflate",
    "ZlibError": "Deflate",
    "LzwError": "LZW",
    "PackbitsError": "PackBits",
    "WebpError": "WebP",
    "JpegxlError": "JPEG XL",
    "ZstdError": "Zstandard",
    "LzmaError": "LZMA",
}


def damage(exc: BaseException) -> str:
    """What is wrong, in words, when decoding a tile or an image raised ``exc``."""
    if isinstance(exc, CodecError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "the header declares an image too large to decode"
    name = _CODEC_NAMES.get(type(exc).__name__)
    if name is not None:
        return f"the {name} data is damaged ({library_message(exc)})"
    if type(exc).__name__ == "TiffFileError":  # tifffile's own words say what it found
        return f"the TIFF data is damaged ({library_message(exc)})"
    return "the compressed data or the tags are inconsistent"
