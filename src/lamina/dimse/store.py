"""What a C-STORE request brings: the received object, as pynetdicom hands it over.

The checks it must pass are the archive's own (:func:`lamina.archive.receive.examine`), the same
as for STOW-RS and watched folders.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from pynetdicom.association import Association
from pynetdicom.events import Event

from lamina.archive.ingest import IngestResult

#: Told the result of each slide received from a released association.
IngestListener = Callable[[IngestResult], None]


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


def drop_partial(association: Association) -> None:
    """pynetdicom leaves the temporary file of a data set cut off mid-way; remove it."""
    message = getattr(getattr(association, "dimse", None), "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    with contextlib.suppress(OSError):
        partial.close()
        Path(partial.name).unlink()
