"""Locating frames in Pixel Data: every inconsistency is a reason, never a struct error."""

from __future__ import annotations

import io
import struct

import pytest

from lamina.formats.dicom_frames import locate_frames

_TAG = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"


def _item(data: bytes) -> bytes:
    return struct.pack("<II", 0xE000FFFE, len(data)) + data


def _pixel_data(bot: bytes, *fragments: bytes) -> bytes:
    return _TAG + _item(bot) + b"".join(_item(f) for f in fragments) + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def test_fragments_one_per_frame() -> None:
    data = _pixel_data(b"", b"ab", b"cd")
    spans = locate_frames(io.BytesIO(data), 0, 2, True, True, 0, len(data))
    assert [span.length for span in spans] == [2, 2]


@pytest.mark.parametrize(
    ("data", "frames", "words"),
    [
        (_TAG[:6], 1, "ends inside the Pixel Data element's header"),
        (
            _pixel_data(b"\x00" * 6, b"ab", b"cd", b"ef"),
            2,
            "Basic Offset Table holds 6 bytes, not 4 per frame",
        ),
        (_pixel_data(b"", b"ab", b"cd")[:-12], 2, "ends without a sequence delimiter"),
        (_pixel_data(b"", b"ab", b"cd", b"ef"), 2, "3 fragments for 2 frames and no usable offset table"),
    ],
)
def test_damaged_pixel_data_is_a_reason(data: bytes, frames: int, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        locate_frames(io.BytesIO(data), 0, frames, True, True, 0, len(data))
