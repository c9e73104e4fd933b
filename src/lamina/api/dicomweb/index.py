"""What the DICOMweb routes need to find an instance fast: built from the catalog, cached."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.errors import NotFoundError

_CACHED = 4096


@dataclass(frozen=True)
class IndexedInstance:
    """An instance ready to serve: where its object is and where each frame lies in it."""

    row: InstanceRow
    path: str | None  # the object's file, when the store has one
    offsets: npt.NDArray[np.uint64]
    lengths: npt.NDArray[np.uint32]

    @property
    def transfer_syntax_uid(self) -> str:
        return self.row.transfer_syntax_uid

    def frame_span(self, number: int) -> tuple[int, int]:
        """(offset, length) of frame ``number`` (1-based)."""
        return int(self.offsets[number - 1]), int(self.lengths[number - 1])


class InstanceIndex:
    """Instance lookups by (study, series, instance) UIDs, kept in a bounded LRU cache."""

    def __init__(self, archive: Archive, size: int = _CACHED) -> None:
        self.archive = archive
        self._size = size
        self._cache: OrderedDict[str, IndexedInstance] = OrderedDict()
        self._lock = threading.Lock()

    def forget(self, sop: str) -> None:
        """Drop a cached instance (it was just stored again or replaced)."""
        with self._lock:
            self._cache.pop(sop, None)

    def get(self, study: str, series: str, sop: str) -> IndexedInstance:
        with self._lock:
            found = self._cache.get(sop)
            if found is not None:
                self._cache.move_to_end(sop)
        if found is None:
            row = self.archive.catalog.instance(sop)
            if row is None:
                raise NotFoundError(f"instance {sop} is not in this archive")
            found = IndexedInstance(
                row,
                self.archive.store.local_path(row.blob_sha256),
                np.frombuffer(row.frame_offsets, "<u8"),
                np.frombuffer(row.frame_lengths, "<u4"),
            )
            with self._lock:
                self._cache[sop] = found
                if len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        if found.row.study_instance_uid != study or found.row.series_instance_uid != series:
            raise NotFoundError(f"instance {sop} is not in series {series} of study {study}")
        return found
