"""A DICOM source's header, read and checked before anything of it is written.

pydicom decodes a value when it is first used and encodes it when it is written, so a damaged
value (a wrong VR, a length that cuts a sequence) surfaces much later, deep inside ``dcmwrite``,
as ``TypeError: With tag (0040,0560) got exception: ...``. Here every public attribute is
decoded once and the header is encoded once as lamina will write it (explicit VR little endian,
UTF-8), at open: what fails is refused with the attribute's keyword and tag, and the trail of
sequences that leads to it.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import BaseTag, Tag

from lamina.errors import CorruptSourceError
from lamina.formats.codec import library_message

_WITH_TAG = re.compile(r"With tag \(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)")
_FIX = "the file is damaged: export it again from the source system"


def describe_tag(tag: BaseTag | int) -> str:
    """``SpecimenDescriptionSequence (0040,0560)``, or the bare tag when it has no keyword."""
    tag = Tag(tag)
    keyword = keyword_for_tag(tag)
    where = f"({tag.group:04X},{tag.element:04X})"
    return f"{keyword} {where}" if keyword else where


def trail_words(trail: list[BaseTag]) -> str:
    """A path of nested attributes: ``A (g,e) > B (g,e)``."""
    return " > ".join(describe_tag(tag) for tag in trail)


def tag_trail(exc: BaseException) -> list[BaseTag]:
    """The attributes pydicom names in an error raised while encoding or decoding a dataset
    (``With tag (0040,0560) got exception: With tag (0040,A043) ...``), outermost first."""
    trail: list[BaseTag] = []
    first = str(exc).strip().split("\n", 1)[0]  # pydicom appends tracebacks to its messages
    for group, element in _WITH_TAG.findall(first):
        tag = Tag(int(group, 16), int(element, 16))
        if not trail or trail[-1] != tag:  # pydicom names the innermost attribute twice
            trail.append(tag)
    return trail


def read_header(path: Path, fp: BinaryIO) -> Dataset:
    """The dataset up to Pixel Data, every public attribute decoded and encodable."""
    where = path
    try:
        dataset = pydicom.dcmread(fp, stop_before_pixels=True)
    except (InvalidDicomError, EOFError) as exc:
        raise CorruptSourceError(where, f"not a readable DICOM file ({library_message(exc)})") from exc
    except OSError as exc:
        raise CorruptSourceError(where, f"cannot be read ({exc.strerror or library_message(exc)})") from exc
    except Exception as exc:  # struct.error, ValueError, ... on a damaged header
        raise CorruptSourceError(
            where, f"not a readable DICOM file (its header is damaged before byte {fp.tell()}); {_FIX}"
        ) from exc
    check_attributes(where, dataset)
    return dataset


def check_attributes(path: Path, dataset: Dataset) -> None:
    """Decode every public attribute, then encode them all as lamina writes them."""
    where = path
    _decode_all(where, dataset, [])
    copy = Dataset()
    for tag in list(dataset.keys()):
        if not tag.is_private and tag.group not in (0x0002, 0x7FE0):
            copy[tag] = dataset[tag]
    copy.SpecificCharacterSet = "ISO_IR 192"
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    try:
        write_dataset(buffer, copy)
    except Exception as exc:
        trail = tag_trail(exc)
        what = trail_words(trail) if trail else "an attribute"
        raise CorruptSourceError(
            where, f"{what}: the value cannot be written as DICOM ({_value_words(exc)}); {_FIX}"
        ) from exc


def _decode_all(path: Path, dataset: Dataset, trail: list[BaseTag]) -> None:
    for tag in list(dataset.keys()):
        if tag.is_private:
            continue
        try:
            element = dataset[tag]
        except Exception as exc:
            raise CorruptSourceError(
                path,
                f"{trail_words([*trail, tag])}: the value cannot be read ({_value_words(exc)}); {_FIX}",
            ) from exc
        if element.VR == "SQ":
            for item in element.value or ():
                _decode_all(path, item, [*trail, tag])


def _value_words(exc: BaseException) -> str:
    """What pydicom found wrong with a value, without its exception's class or tag chain."""
    first = str(exc).strip().split("\n", 1)[0]
    text = _WITH_TAG.sub("", first).replace("got exception:", "").strip(" :")
    if isinstance(exc, struct.error) or type(exc).__name__ == "BytesLengthException" or not text:
        return "the length of the value does not fit its value representation"
    if isinstance(exc, TypeError):  # a value of the wrong kind for its VR, e.g. bytes for a string
        return "the value does not match its value representation"
    return library_message(ValueError(text))
