"""The codec raises lamina's CodecError, naming the codec and what is wrong, never a library's."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest

from lamina.errors import CodecError, LaminaError
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax
from lamina.model.enums import PhotometricInterpretationValues


def _jpeg(subsampling: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 255, (16, 16, 3), np.uint8)
    return bytes(imagecodecs.jpeg8_encode(pixels, level=90, subsampling=subsampling))


def test_a_damaged_frame_names_its_codec() -> None:
    # Arrange: a JPEG cut in the middle of its entropy-coded data, then garbage
    frame = _jpeg((2, 2))
    damaged = frame[: len(frame) // 2] + b"\xff\x7f" * 8
    # Act
    with pytest.raises(CodecError) as raised:
        codec.decode(damaged, FrameEncoding(TransferSyntax.JPEG_BASELINE_8BIT, "YBR_FULL_422"))
    # Assert: lamina's error (and still a ValueError for the callers that caught that)
    assert isinstance(raised.value, LaminaError) and isinstance(raised.value, ValueError)
    assert str(raised.value).startswith("the JPEG data is damaged (")
    assert "Error" not in str(raised.value)


@pytest.mark.parametrize(
    ("stream", "words"),
    [
        (b"GIF89a", "not a JPEG stream"),
        (b"\xff\xd8\x00\x00\x00\x00", "a marker is expected at byte 2"),
        (b"\xff\xd8\xff\xc0\x00\x05\x08\x00", "the JPEG frame header at byte 2 is cut short"),
        (b"\xff\xd8\xff\xda\x00\x02", "no frame header"),
    ],
)
def test_a_jpeg_header_that_is_not_one(stream: bytes, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        codec.jpeg_info(stream)


def test_a_cut_jpeg_2000_header() -> None:
    with pytest.raises(CodecError, match="cut short inside its SIZ marker"):
        codec.j2k_info(b"\xff\x4f\xff\x51\x00\x29")


@pytest.mark.parametrize("subsampling", [(2, 2), (1, 1)], ids=["4:2:0", "4:4:4"])
def test_ycbcr_jpeg_is_labelled_ybr_full_422_subsampled_or_not(subsampling: tuple[int, int]) -> None:
    # the VL WSI IOD has no YBR_FULL; YBR_FULL_422 names YCbCr JPEG whatever its sub-sampling
    encoding = codec.jpeg_encoding(codec.jpeg_info(_jpeg(subsampling)))
    assert encoding is not None
    assert encoding.photometric_interpretation is PhotometricInterpretationValues.YBR_FULL_422


def test_an_unknown_transfer_syntax_is_refused() -> None:
    frame = _jpeg((2, 2))
    with pytest.raises(CodecError, match="cannot decode frames of transfer syntax"):
        codec.decode(frame, FrameEncoding(TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN, "RGB"))


def test_a_frame_declaring_more_pixels_than_its_tile_is_refused_before_decoding() -> None:
    # a damaged header could declare 65535x65535: the decoder would allocate it all
    pixels = np.zeros((32, 48, 3), np.uint8)
    for frame, syntax in [
        (bytes(imagecodecs.jpeg8_encode(pixels)), TransferSyntax.JPEG_BASELINE_8BIT),
        (bytes(imagecodecs.jpegls_encode(pixels)), TransferSyntax.JPEG_LS_LOSSLESS),
        (
            bytes(imagecodecs.jpeg2k_encode(pixels, codecformat="J2K", level=0)),
            TransferSyntax.JPEG_2000_LOSSLESS,
        ),
    ]:
        assert codec.declared_size(frame, syntax) == (48, 32)
        with pytest.raises(CodecError, match="header declares 48x32 pixels in a frame of 16x16"):
            codec.decode(frame, FrameEncoding(syntax, "RGB"), (16, 16))
        assert codec.decode(frame, FrameEncoding(syntax, "RGB"), (48, 32)).shape == (32, 48, 3)
