"""De-identification of a slide's DICOM instances (PS3.15 Annex E), for slides leaving the site.

- :func:`is_sent`: whether an instance leaves at all (LABEL never; OVERVIEW only blanked);
- :func:`deidentify_instance`: one stored Part 10 instance into a de-identified one: header by
  the tables of :mod:`.rules` (a keep list), frames copied byte for byte (:mod:`.stream`);
- :func:`identity_findings`: the same checks on a dataset received by an archive.

A slide whose de-identification cannot be made certain is quarantined for a person to review:
the functions return one-line reasons that name attributes by keyword and tag, never a value.

>>> from lamina.exchange.deid import is_sent
>>> is_sent("VOLUME", ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]), is_sent("LABEL", [])
(True, False)
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset

from lamina.exchange.deid.findings import identifying_values, identity_findings
from lamina.exchange.deid.images import BLANKED, blank_overview, image_flavor, is_sent
from lamina.exchange.deid.stream import (
    copy_pixel_data,
    encode_header,
    file_meta,
    unsupported_syntax,
)
from lamina.exchange.deid.transform import deidentify_dataset
from lamina.exchange.keys import ExchangeKeys
from lamina.model.enums import ImageFlavorValues

__all__ = [
    "DeidOptions",
    "DeidOutcome",
    "PreparedInstance",
    "deidentify_instance",
    "identity_findings",
    "is_sent",
    "prepare_instance",
    "write_prepared",
]

_PIXEL_HEADER = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
_ITEM = struct.Struct("<II")


@dataclass(frozen=True)
class DeidOptions:
    """``keep_overview``: send the OVERVIEW with its label area blanked (:mod:`.images`).
    ``warehouses``: the health-data warehouses whose pseudonyms go in OtherPatientIDsSequence
    (each needs a key in ``[exchange.warehouses]``)."""

    keep_overview: bool = False
    warehouses: tuple[str, ...] = ()


@dataclass
class DeidOutcome:
    """What became of one instance. When ``quarantine`` is not empty nothing was written."""

    sop_instance_uid: str = ""
    series_instance_uid: str = ""
    study_instance_uid: str = ""
    quarantine: list[str] = field(default_factory=list)
    #: Attributes removed or emptied, by keyword and tag (values are never named).
    removed: list[str] = field(default_factory=list)
    #: Where each frame lies in the new file, when each frame is one fragment (lamina's layout);
    #: otherwise None: index the file again with formats.dicom_frames.locate_frames.
    frame_offsets: npt.NDArray[np.uint64] | None = None
    frame_lengths: npt.NDArray[np.uint32] | None = None
    size: int = 0
    #: SHA-256 of the frames in order, hashed as they were copied (None without the index)
    frames_sha256: str | None = None

    @property
    def sent(self) -> bool:
        return not self.quarantine


@dataclass
class PreparedInstance:
    """An instance whose new header is made (:func:`prepare_instance`), its frames not yet
    copied (:func:`write_prepared`): what is sent is known, and its size, before a byte of it."""

    outcome: DeidOutcome
    header: bytes = b""
    #: where the source's Pixel Data element starts
    pixels_at: int = 0
    number_of_frames: int = 1
    #: the blanked overview's Pixel Data element, which replaces the source's
    pixels: bytes | None = None

    def size(self, source_size: int) -> int:
        """The size of the de-identified file, from the source's size."""
        body = len(self.pixels) if self.pixels is not None else source_size - self.pixels_at
        return len(self.header) + body


def prepare_instance(
    source: BinaryIO, keys: ExchangeKeys, options: DeidOptions = DeidOptions()
) -> PreparedInstance:
    """The new header of the Part 10 instance read from ``source`` (seekable, at its start),
    reading only its header (and, for an overview kept blanked, its small image); the outcome
    says why it is quarantined, when it is."""
    outcome = DeidOutcome()
    prepared = PreparedInstance(outcome)
    try:
        header = pydicom.dcmread(source, stop_before_pixels=True)
    except Exception:
        outcome.quarantine.append("not a readable DICOM Part 10 file (its header cannot be read)")
        return prepared
    prepared.pixels_at = source.tell()
    syntax = str(header.file_meta.get("TransferSyntaxUID", ""))
    reason = unsupported_syntax(syntax)
    if reason:
        outcome.quarantine.append(reason)
        return prepared
    kind = image_flavor("", [str(v) for v in header.get("ImageType", [])])
    frames: list[bytes] | None = None
    if kind == ImageFlavorValues.OVERVIEW and options.keep_overview:
        source.seek(0)
        blanked = blank_overview(source)
        if isinstance(blanked, str):
            outcome.quarantine.append(blanked)
            return prepared
        header, frames = blanked  # type: ignore[assignment]  # a FileDataset's data, blanked
        syntax = str(header.file_meta.TransferSyntaxUID)
    elif not is_sent("", [str(v) for v in header.get("ImageType", [])], options.keep_overview):
        outcome.quarantine.append(f"ImageType (0008,0008): a {kind or 'unknown'} image is not sent")
        return prepared
    if str(header.get("BurnedInAnnotation", "")).upper() == "YES":
        outcome.quarantine.append("BurnedInAnnotation (0028,0301) is YES on an image to be sent")
    result = deidentify_dataset(header, keys, options.warehouses)
    outcome.removed = result.removed
    outcome.quarantine.extend(result.quarantine)
    ds = result.dataset
    outcome.sop_instance_uid = str(ds.get("SOPInstanceUID", ""))
    outcome.series_instance_uid = str(ds.get("SeriesInstanceUID", ""))
    outcome.study_instance_uid = str(ds.get("StudyInstanceUID", ""))
    if outcome.quarantine:
        return prepared
    if frames is not None:
        ds.DeidentificationMethod = [*ds.DeidentificationMethod, BLANKED]
    ds.file_meta = file_meta(str(ds.SOPClassUID), outcome.sop_instance_uid, syntax)
    encoded = encode_header(ds)
    outcome.quarantine.extend(_left_over(encoded, header))
    if outcome.quarantine:
        return prepared
    prepared.header = encoded
    prepared.number_of_frames = int(ds.get("NumberOfFrames", 1))
    prepared.pixels = _encapsulated(frames) if frames is not None else None
    return prepared


def write_prepared(prepared: PreparedInstance, source: BinaryIO, out: BinaryIO) -> DeidOutcome:
    """Write a prepared instance to ``out``: its new header, then its frames copied from
    ``source`` byte for byte (hashed as they go). A Pixel Data found damaged on the way is a
    quarantine, with ``out`` holding a partial file that the caller discards."""
    outcome = prepared.outcome
    if outcome.quarantine:
        return outcome
    out.write(prepared.header)
    if prepared.pixels is not None:
        pixels: BinaryIO = io.BytesIO(prepared.pixels)
    else:
        source.seek(prepared.pixels_at)
        pixels = source
    try:
        copied = copy_pixel_data(pixels, out, len(prepared.header), prepared.number_of_frames)
    except ValueError as exc:
        outcome.quarantine.append(f"PixelData (7FE0,0010): {exc}")
        return outcome
    outcome.frame_offsets, outcome.frame_lengths, outcome.size = (
        copied.frame_offsets,
        copied.frame_lengths,
        copied.size,
    )
    outcome.frames_sha256 = copied.frames_sha256
    return outcome


def deidentify_instance(
    source: BinaryIO, out: BinaryIO, keys: ExchangeKeys, options: DeidOptions = DeidOptions()
) -> DeidOutcome:
    """De-identify the Part 10 instance read from ``source`` (seekable, at its start) into
    ``out``: :func:`prepare_instance`, then :func:`write_prepared`. Nothing is written to
    ``out`` when the outcome is quarantined (a label, an image with burned-in text, an attribute
    no table covers, an identifying value left over)."""
    prepared = prepare_instance(source, keys, options)
    if prepared.outcome.quarantine:
        return prepared.outcome
    return write_prepared(prepared, source, out)


def _left_over(encoded: bytes, source: Dataset) -> list[str]:
    """The last check: no identifying value of the source (names, IDs, dates of birth, barcodes,
    labels, institutions) is anywhere in the new header, as UTF-8, upper case or Latin-1."""
    found = []
    upper = encoded.upper()
    for where, value in identifying_values(source):
        forms = {value.encode("utf-8"), value.encode("latin-1", "ignore")}
        if any(form in encoded for form in forms) or value.upper().encode("utf-8") in upper:
            found.append(f"an identifying value of {where} is still in the header")
    return sorted(set(found))


def _encapsulated(frames: list[bytes]) -> bytes:
    """A Pixel Data element of ``frames``, one fragment each, an empty Basic Offset Table."""
    parts = [_PIXEL_HEADER, _ITEM.pack(0xE000FFFE, 0)]
    for frame in frames:
        padded = frame + b"\x00" * (len(frame) & 1)
        parts += [_ITEM.pack(0xE000FFFE, len(padded)), padded]
    parts.append(_ITEM.pack(0xE0DDFFFE, 0))
    return b"".join(parts)
