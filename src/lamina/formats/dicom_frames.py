"""Locate the frames of a DICOM file's Pixel Data without loading it (encapsulated or native)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

_ITEM = 0xE000FFFE
_SEQ_DELIMITER = 0xE0DDFFFE


@dataclass(frozen=True)
class FrameSpan:
    """Where one frame's bytes are, as (offset, length) fragments inside the file."""

    fragments: tuple[tuple[int, int], ...]

    @property
    def length(self) -> int:
        return sum(length for _, length in self.fragments)


def locate_frames(
    fp: BinaryIO,
    pixel_data_tell: int,
    number_of_frames: int,
    encapsulated: bool,
    explicit_vr: bool,
    frame_size: int,
    file_size: int,
    extended_offsets: list[int] | None = None,
) -> list[FrameSpan]:
    """Walk the Pixel Data element at ``pixel_data_tell`` and return a span per frame.

    Raises ValueError with a reason on any inconsistency (truncation, missing items).
    """
    fp.seek(pixel_data_tell)
    header = fp.read(12 if explicit_vr else 8)
    if len(header) < (12 if explicit_vr else 8):
        raise ValueError("the file ends inside the Pixel Data element's header: it is truncated")
    length = struct.unpack("<I", header[8:12] if explicit_vr else header[4:8])[0]
    start = pixel_data_tell + len(header)
    if not encapsulated:
        if start + number_of_frames * frame_size > file_size:
            raise ValueError(
                f"Pixel Data holds {file_size - start} bytes, {number_of_frames} frames need "
                f"{number_of_frames * frame_size}: the file is truncated"
            )
        return [FrameSpan(((start + i * frame_size, frame_size),)) for i in range(number_of_frames)]
    if length != 0xFFFFFFFF:
        raise ValueError("encapsulated Pixel Data must have undefined length")
    pos = start
    items: list[tuple[int, int]] = []
    while True:
        fp.seek(pos)
        head = fp.read(8)
        if len(head) < 8:
            raise ValueError("Pixel Data ends without a sequence delimiter: the file is truncated")
        tag, item_length = struct.unpack("<II", head)
        if tag == _SEQ_DELIMITER:
            break
        if tag != _ITEM:
            raise ValueError(f"unexpected tag {tag:08x} inside encapsulated Pixel Data")
        if pos + 8 + item_length > file_size:
            raise ValueError("a Pixel Data fragment runs past the end of the file: truncated")
        items.append((pos + 8, item_length))
        pos += 8 + item_length
    if not items:
        raise ValueError("encapsulated Pixel Data has no Basic Offset Table item")
    (bot_pos, bot_length), fragments = items[0], items[1:]
    if not fragments:
        raise ValueError("encapsulated Pixel Data has no fragments")
    if len(fragments) == number_of_frames:
        return [FrameSpan((fragment,)) for fragment in fragments]
    offsets = extended_offsets
    if not offsets and bot_length:
        if bot_length % 4:
            raise ValueError(f"the Basic Offset Table holds {bot_length} bytes, not 4 per frame")
        fp.seek(bot_pos)
        offsets = list(struct.unpack(f"<{bot_length // 4}I", fp.read(bot_length)))
    if number_of_frames == 1:
        return [FrameSpan(tuple(fragments))]
    if not offsets or len(offsets) != number_of_frames:
        raise ValueError(
            f"{len(fragments)} fragments for {number_of_frames} frames and no usable offset table"
        )
    first = fragments[0][0] - 8
    spans: list[list[tuple[int, int]]] = [[] for _ in offsets]
    bounds = [first + offset for offset in offsets]
    frame = 0
    for fragment in fragments:
        while frame + 1 < len(bounds) and fragment[0] - 8 >= bounds[frame + 1]:
            frame += 1
        spans[frame].append(fragment)
    if any(not span for span in spans):
        raise ValueError("the offset table points at no fragment for some frames")
    return [FrameSpan(tuple(span)) for span in spans]


def read_span(fd: int, span: FrameSpan) -> bytes:
    import os

    if len(span.fragments) == 1:
        offset, length = span.fragments[0]
        return os.pread(fd, length, offset)
    return b"".join(os.pread(fd, length, offset) for offset, length in span.fragments)
