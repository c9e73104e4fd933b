"""What a C-STORE request brings: the received object, its header, and whether they agree."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.events import Event

from lamina.dimse.spool import is_uid


def received_object(event: Event) -> tuple[Path | bytes, int]:
    """The received object: pynetdicom's temporary Part-10 file, or (not chunked) its bytes."""
    try:
        path = event.dataset_path
    except AttributeError:
        path = None
    if path is not None:
        return Path(path), Path(path).stat().st_size
    data = event.encoded_dataset()
    return data, len(data)


def read_header(received: Path | bytes) -> Dataset:
    source: Any = received if isinstance(received, Path) else io.BytesIO(received)
    return pydicom.dcmread(
        source,
        stop_before_pixels=True,
        specific_tags=["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"],
    )


def mismatch(header: Dataset, sop_class: str, sop_instance: str) -> str | None:
    """Why the data set does not fit its C-STORE request, or None."""
    if str(header.get("SOPClassUID", "")) != sop_class:
        return "SOPClassUID differs from the request's"
    if str(header.get("SOPInstanceUID", "")) != sop_instance:
        return "SOPInstanceUID differs from the request's"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not is_uid(str(header.get(keyword, ""))):
            return f"{keyword} missing or not a valid UID"
    return None


def drop_partial(association: Association) -> None:
    """pynetdicom leaves the temporary file of a data set cut off mid-way; remove it."""
    message = getattr(getattr(association, "dimse", None), "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    with contextlib.suppress(OSError):
        partial.close()
        Path(partial.name).unlink()
