"""A stored instance (DICOM Part 10) de-identified into another file, its frames untouched.

Only the header is read (``dcmread(..., stop_before_pixels=True)`` leaves the file at the Pixel
Data element); the new file meta and header are written, then the Pixel Data element is copied
byte for byte in chunks: its tag, VR and length, the Basic Offset Table and every fragment. The
frames are never decoded, and memory stays bounded whatever the instance's size. Because every
fragment is copied as it is, the Extended Offset Table (relative to the first fragment) stays
right, and the new frame index is the old one shifted by the header's change in length.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID

from lamina.formats.dicom_modules import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

_ITEM = 0xE000FFFE
_SEQ_DELIMITER = 0xE0DDFFFE
_PIXEL_DATA = b"\xe0\x7f\x10\x00"
_CHUNK = 4 << 20
#: Transfer syntaxes whose Pixel Data this module walks: explicit VR little endian, native or
#: encapsulated (every syntax lamina writes).
_IMPLICIT = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")


@dataclass(frozen=True)
class CopiedPixels:
    """Where the copied frames lie in the new file (one fragment per frame), when they do."""

    frame_offsets: npt.NDArray[np.uint64] | None
    frame_lengths: npt.NDArray[np.uint32] | None
    size: int
    #: SHA-256 of the frames' fragments in order (the Basic Offset Table left out), hashed as
    #: they were copied; None with the index
    frames_sha256: str | None = None


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def unsupported_syntax(transfer_syntax: str) -> str | None:
    """Why this module cannot copy the Pixel Data of such a file, or None."""
    if transfer_syntax in (_IMPLICIT, _BIG_ENDIAN, *_DEFLATED):
        return f"TransferSyntaxUID (0002,0010): {transfer_syntax} is not explicit VR little endian"
    return None


def encode_header(dataset: pydicom.Dataset) -> bytes:
    """The preamble (128 zero bytes), file meta and dataset, as one Part 10 header."""
    dataset.preamble = b"\x00" * 128
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def copy_pixel_data(source: BinaryIO, out: BinaryIO, written: int, number_of_frames: int) -> CopiedPixels:
    """Copy the Pixel Data element at ``source``'s position to ``out``, of which ``written``
    bytes are already written. Raises ValueError when the element is not where it should be,
    is truncated, or is followed by anything (trailing attributes are not reviewed: refused)."""
    head = _exactly(source, 12)
    if head[:4] != _PIXEL_DATA or head[4:6] not in (b"OB", b"OW"):
        raise ValueError("the header is not followed by an explicit VR Pixel Data element")
    out.write(head)
    position = written + 12
    (length,) = struct.unpack("<I", head[8:12])
    offsets: list[int] = []
    lengths: list[int] = []
    frames = hashlib.sha256()
    if length != 0xFFFFFFFF:
        _copy(source, out, length)
        position += length
    else:
        first = True
        while True:
            item = _exactly(source, 8)
            tag, item_length = struct.unpack("<II", item)
            out.write(item)
            position += 8
            if tag == _SEQ_DELIMITER:
                break
            if tag != _ITEM or item_length == 0xFFFFFFFF:
                raise ValueError(f"unexpected tag {tag:08x} inside encapsulated Pixel Data")
            if not first:
                offsets.append(position)
                lengths.append(item_length)
            _copy(source, out, item_length, None if first else frames)
            first = False
            position += item_length
    if source.read(1):
        raise ValueError("the file goes on after its Pixel Data (attributes there are not reviewed)")
    if offsets and len(offsets) == number_of_frames:
        return CopiedPixels(
            np.asarray(offsets, np.uint64), np.asarray(lengths, np.uint32), position, frames.hexdigest()
        )
    return CopiedPixels(None, None, position)


def _exactly(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise ValueError("the file ends inside its Pixel Data: it is truncated")
    return data


def _copy(source: BinaryIO, out: BinaryIO, size: int, hasher: Any = None) -> None:
    left = size
    while left:
        chunk = source.read(min(left, _CHUNK))
        if not chunk:
            raise ValueError("the file ends inside its Pixel Data: it is truncated")
        out.write(chunk)
        if hasher is not None:
            hasher.update(chunk)
        left -= len(chunk)
