"""What the DICOMweb routes need to find an instance fast: built from the catalog, cached."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.errors import NotFoundError

_CACHED = 4096


@dataclass
class IndexedInstance:
    """An instance ready to serve: where its object is and where each frame lies in it."""

    row: InstanceRow
    path: str | None  # the object's file, when the store has one
    offsets: npt.NDArray[np.uint64]
    lengths: npt.NDArray[np.uint32]
    _fd: list[int] = field(default_factory=lambda: [-1], compare=False, repr=False)
    #: when the catalog last confirmed the instance (monotonic seconds)
    checked_at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def transfer_syntax_uid(self) -> str:
        return self.row.transfer_syntax_uid

    def fd(self) -> int | None:
        """A descriptor kept open on the object's file while the instance is cached."""
        if self.path is None:
            return None
        if self._fd[0] < 0:
            self._fd[0] = os.open(self.path, os.O_RDONLY)
        return self._fd[0]

    def close(self) -> None:
        if self._fd[0] >= 0:
            os.close(self._fd[0])
            self._fd[0] = -1

    def frame_span(self, number: int) -> tuple[int, int]:
        """(offset, length) of frame ``number`` (1-based)."""
        return self._spans[number - 1]

    @functools.cached_property
    def _spans(self) -> list[tuple[int, int]]:
        return list(zip(self.offsets.tolist(), self.lengths.tolist(), strict=True))


class InstanceIndex:
    """Instance lookups by (study, series, instance) UIDs, kept in a bounded LRU cache."""

    #: a cached instance is confirmed in the catalog again after this long, so that a slide
    #: deleted by another process stops being served (one primary-key lookup per instance)
    revalidate_s = 5.0

    def __init__(self, archive: Archive, size: int = _CACHED) -> None:
        self.archive = archive
        self._size = size
        self._cache: OrderedDict[str, IndexedInstance] = OrderedDict()
        self._lock = threading.Lock()

    def forget(self, sop: str) -> None:
        """Drop a cached instance (it was just stored again or replaced)."""
        with self._lock:
            dropped = self._cache.pop(sop, None)
        if dropped is not None:
            dropped.close()

    def cached(self, study: str, series: str, sop: str) -> IndexedInstance | None:
        """The instance if it is cached and was confirmed within ``revalidate_s``, without a
        catalog query (so it may run on the event loop); None otherwise."""
        with self._lock:
            found = self._cache.get(sop)
            if found is not None:
                self._cache.move_to_end(sop)
        if found is None or time.monotonic() - found.checked_at > self.revalidate_s:
            return None
        if found.row.study_instance_uid != study or found.row.series_instance_uid != series:
            return None
        return found

    def get(self, study: str, series: str, sop: str) -> IndexedInstance:
        """The instance, from the cache or the catalog; 404 when it is not in this archive.

        Blocking (a catalog query on a miss, and every ``revalidate_s`` for a cached instance):
        call it in the thread pool, never on the event loop.
        """
        with self._lock:
            found = self._cache.get(sop)
            if found is not None:
                self._cache.move_to_end(sop)
        if found is not None and time.monotonic() - found.checked_at > self.revalidate_s:
            if self.archive.catalog.instance(sop) is None:
                self.forget(sop)
                raise NotFoundError(f"instance {sop} is not in this archive")
            found.checked_at = time.monotonic()
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
                    self._cache.popitem(last=False)[1].close()
        if found.row.study_instance_uid != study or found.row.series_instance_uid != series:
            raise NotFoundError(f"instance {sop} is not in series {series} of study {study}")
        return found
