"""Fixity: re-read every object the catalog references, recompute its SHA-256, report what is wrong.

An object is *missing* when the store no longer has it, *corrupt* when its bytes no longer hash to
the digest that names it (or cannot be read), and *orphaned* when the store holds it but no
instance references it. Orphans are not damage (a crash between a blob write and its catalog
transaction leaves them, and a sweep removes them) but they are reported, with the same grace
period as :func:`lamina.archive.sweep.sweep` so that an ingest in progress is not counted.

Objects are read in parallel by a few threads (``hashlib`` releases the GIL while it hashes large
buffers), optionally under one bandwidth limit shared by all of them, so that a fixity run on a
production store does not starve the reads of pathologists.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from lamina.archive import audit
from lamina.archive.blobstore import BlobStore
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.archive.priority import background_pool
from lamina.archive.sweep import find_orphans
from lamina.errors import LaminaError, NotFoundError, UnavailableError

__all__ = [
    "CorruptObject",
    "FixityReport",
    "MissingObject",
    "Reference",
    "TokenBucket",
    "verify",
]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Reference:
    """One catalog instance that references an object.

    Attributes
    ----------
    slide_id : str or None
        The slide the instance belongs to (None for objects outside any slide).
    sop_instance_uid : str
        The instance's SOP Instance UID.
    """

    slide_id: str | None
    sop_instance_uid: str

    def as_dict(self) -> dict[str, Any]:
        """The reference as a JSON-ready mapping.

        Returns
        -------
        dict
            ``slide_id`` and ``sop_instance_uid``.
        """
        return {"slide_id": self.slide_id, "sop_instance_uid": self.sop_instance_uid}


@dataclass(frozen=True)
class MissingObject:
    """A referenced object the store no longer has.

    Attributes
    ----------
    sha256 : str
        The object's digest.
    references : list of Reference
        The instances that reference it.
    """

    sha256: str
    references: list[Reference]


@dataclass(frozen=True)
class CorruptObject:
    """A referenced object whose bytes no longer match its digest, or cannot be read.

    Attributes
    ----------
    sha256 : str
        The digest that names the object.
    reads_as : str or None
        The SHA-256 of the bytes actually read; None when reading failed.
    size : int
        The number of bytes read.
    expected_size : int
        The size the catalog recorded.
    references : list of Reference
        The instances that reference it.
    error : str or None
        Why the object could not be read, when it could not.
    """

    sha256: str
    reads_as: str | None
    size: int
    expected_size: int
    references: list[Reference]
    error: str | None = None


@dataclass(frozen=True)
class FixityReport:
    """The outcome of one fixity run.

    Attributes
    ----------
    checked : int
        Referenced objects read (missing ones included).
    bytes : int
        Bytes read and hashed.
    missing : list of MissingObject
        Referenced objects the store lacks, by digest.
    corrupt : list of CorruptObject
        Referenced objects whose bytes do not hash to their name, by digest.
    orphaned : list of str
        Digests of stored objects no instance references, older than the grace period.
    seconds : float
        Wall-clock duration of the run.
    """

    checked: int
    bytes: int
    missing: list[MissingObject] = field(default_factory=list)
    corrupt: list[CorruptObject] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: objects of cold-tier slides not checked (no cold store was given)
    cold_skipped: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is missing or corrupt (orphans alone are not damage)."""
        return not self.missing and not self.corrupt

    def problems(self) -> list[dict[str, Any]]:
        """One row per damaged instance: what ``lamina verify`` prints, one line each.

        Returns
        -------
        list of dict
            ``slide_id``, ``sop_instance_uid``, ``sha256`` and ``problem`` (``"missing"`` or
            ``"corrupt"``), in slide then digest order.
        """
        rows: list[dict[str, Any]] = []
        damaged: list[tuple[str, str, list[Reference]]] = [
            *((m.sha256, "missing", m.references) for m in self.missing),
            *((c.sha256, "corrupt", c.references) for c in self.corrupt),
        ]
        for digest, problem, references in damaged:
            for ref in references:
                rows.append(
                    {
                        "slide_id": ref.slide_id,
                        "sop_instance_uid": ref.sop_instance_uid,
                        "sha256": digest,
                        "problem": problem,
                    }
                )
        rows.sort(key=lambda row: (row["slide_id"] or "", row["sha256"], row["sop_instance_uid"]))
        return rows

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready mapping (what ``lamina verify --json`` prints).

        Returns
        -------
        dict
            Counts, the missing, corrupt and orphaned objects, and one row per damaged instance.
        """
        return {
            "ok": self.ok,
            "checked": self.checked,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "cold_skipped": self.cold_skipped,
            "missing": [
                {"sha256": m.sha256, "references": [r.as_dict() for r in m.references]} for m in self.missing
            ],
            "corrupt": [
                {
                    "sha256": c.sha256,
                    "reads_as": c.reads_as,
                    "size": c.size,
                    "expected_size": c.expected_size,
                    "error": c.error,
                    "references": [r.as_dict() for r in c.references],
                }
                for c in self.corrupt
            ],
            "orphaned": list(self.orphaned),
            "problems": self.problems(),
        }


class TokenBucket:
    """A bandwidth limit shared by threads: ``take(n)`` returns once ``n`` more bytes fit the rate.

    The bucket starts empty and may go into debt by one read (a store yields chunks of its own
    size); the reader that went into debt sleeps until it is paid back. Over a run of ``total``
    bytes the time taken is therefore at least ``total / rate`` less one second's burst, whatever
    the number of threads.

    Parameters
    ----------
    rate : int
        Bytes per second, at least 1.
    burst : int, optional
        The most bytes that idle time may save up (default: one second's worth).
    """

    def __init__(self, rate: int, burst: int | None = None) -> None:
        if rate < 1:
            raise ValueError(f"the bandwidth limit must be at least 1 byte/s, got {rate}")
        self.rate = rate
        self.burst = rate if burst is None else max(1, burst)
        self._tokens = 0.0
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self, count: int) -> None:
        """Account for ``count`` bytes read, sleeping as long as the rate requires.

        Parameters
        ----------
        count : int
            Bytes just read.
        """
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= count
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


@dataclass
class _Shared:
    """What the worker threads share: the work list, the results, and the progress count."""

    work: Iterator[str]
    expected: dict[str, int]
    references: dict[str, list[Reference]]
    bucket: TokenBucket | None
    progress: Progress | None
    total: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: int = 0
    checked: int = 0
    missing: list[MissingObject] = field(default_factory=list)
    corrupt: list[CorruptObject] = field(default_factory=list)

    def next_digest(self) -> str | None:
        with self.lock:
            return next(self.work, None)

    def advance(self, count: int) -> None:
        with self.lock:
            self.done += count
            if self.progress is not None:
                self.progress(self.done, max(self.total, self.done))


def _check_one(store: BlobStore, digest: str, shared: _Shared) -> None:
    """Hash one object and record it as checked, missing or corrupt."""
    hasher = hashlib.sha256()
    size = 0
    refs = shared.references[digest]
    expected = shared.expected[digest]
    error: str | None = None
    try:
        for chunk in store.open(digest):
            if shared.bucket is not None:
                shared.bucket.take(len(chunk))
            hasher.update(chunk)
            size += len(chunk)
            shared.advance(len(chunk))
    except (NotFoundError, FileNotFoundError):
        with shared.lock:
            shared.checked += 1
            shared.missing.append(MissingObject(digest, refs))
        return
    except OSError as exc:
        error = f"cannot be read: {exc.strerror or exc}"
    except UnavailableError:
        raise  # the store is down: no verdict on this object, the run stops and says why
    except LaminaError as exc:  # a store's read error (an S3 5xx, a checksum refused): this object
        error = f"cannot be read: {exc}"
    reads_as = hasher.hexdigest() if error is None else None
    with shared.lock:
        shared.checked += 1
        if reads_as != digest:
            shared.corrupt.append(CorruptObject(digest, reads_as, size, expected, refs, error))


def _work(store: BlobStore, shared: _Shared) -> None:
    while (digest := shared.next_digest()) is not None:
        _check_one(store, digest, shared)


def _referenced(catalog: Catalog, tier: str = "hot") -> tuple[dict[str, list[Reference]], dict[str, int]]:
    """Every digest referenced on ``tier`` (the instances of the slides there, and on the hot tier
    the instances outside any slide and the thumbnails of expired slides' traces), with its
    referencing instances and recorded size (a thumbnail's size is its object's: -1, not
    compared)."""
    references: dict[str, list[Reference]] = {}
    sizes: dict[str, int] = {}
    on_tier = func.coalesce(t.slides.c.tier, "hot") == tier
    query = (
        select(
            t.instances.c.blob_sha256,
            t.instances.c.slide_id,
            t.instances.c.sop_instance_uid,
            t.instances.c.bytes,
        )
        .select_from(t.instances.outerjoin(t.slides, t.instances.c.slide_id == t.slides.c.id))
        .where(on_tier)
    )
    thumbnails = select(t.slide_traces.c.thumbnail_sha256, t.slide_traces.c.slide_id).where(
        t.slide_traces.c.thumbnail_sha256.is_not(None)
    )
    with catalog.engine.connect() as conn:
        for digest, slide_id, uid, size in conn.execute(query):
            references.setdefault(str(digest), []).append(Reference(slide_id, str(uid)))
            sizes[str(digest)] = int(size)
        if tier == "hot":
            for digest, slide_id in conn.execute(thumbnails):
                references.setdefault(str(digest), []).append(Reference(str(slide_id), "thumbnail"))
                sizes.setdefault(str(digest), -1)
    for refs in references.values():
        refs.sort(key=lambda ref: (ref.slide_id or "", ref.sop_instance_uid))
    return references, sizes


def _orphans(catalog: Catalog, store: BlobStore, grace_s: float) -> list[str]:
    """Stored objects no instance references, older than ``grace_s`` (as the sweep finds them)."""
    return sorted(find_orphans(catalog, store, grace_s))


def verify(
    catalog: Catalog,
    store: BlobStore,
    workers: int = 2,
    max_bytes_per_s: int | None = None,
    progress: Progress | None = None,
    *,
    orphan_grace_s: float = 3600.0,
    actor: str = "lamina",
    nice: int = 0,
    cold_store: BlobStore | None = None,
) -> FixityReport:
    """Re-read and re-hash every referenced object; list missing, corrupt and orphaned objects.

    Parameters
    ----------
    catalog : Catalog
        The catalog whose instances name the objects to check.
    store : BlobStore
        The blob store holding them.
    workers : int, optional
        Threads reading and hashing in parallel (default 2).
    max_bytes_per_s : int, optional
        A bandwidth limit shared by all workers, in bytes per second; None for none.
    progress : callable, optional
        Called as ``progress(bytes_done, bytes_total)`` as reading goes, from the worker threads
        (one at a time).
    orphan_grace_s : float, optional
        Unreferenced objects younger than this many seconds are not reported as orphans (an
        ingest may still be committing them); 0 reports all. Default one hour, as the sweep.
    actor : str, optional
        Who runs the check, for the audit entry.
    nice : int, optional
        The nice value the reading threads run at (:mod:`lamina.archive.priority`); 0 (default)
        leaves them at the caller's.
    cold_store : BlobStore, optional
        The cold tier (:mod:`lamina.lifecycle.tiers`): the objects of the slides on it are
        checked there. Without it, they are not checked (``cold_skipped`` counts them): they are
        not in ``store``, and are not missing from it.

    Returns
    -------
    FixityReport
        The counts and the problems found, each list sorted by digest.

    Raises
    ------
    ValueError
        When ``workers`` is below 1 or ``max_bytes_per_s`` below 1.

    Notes
    -----
    One ``verify`` entry, with the counts, is appended to the audit log in its own transaction.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    started = time.perf_counter()
    bucket = TokenBucket(max_bytes_per_s) if max_bytes_per_s is not None else None
    tiers = [("hot", store)]
    cold_references, _ = _referenced(catalog, "cold")
    if cold_store is not None:
        tiers.append(("cold", cold_store))
    checked, done, missing, corrupt = 0, 0, [], []
    for tier, tier_store in tiers:
        references, sizes = _referenced(catalog, tier)
        digests = sorted(references)
        shared = _Shared(
            work=iter(digests),
            expected=sizes,
            references=references,
            bucket=bucket,
            progress=progress,
            total=sum(max(0, size) for size in sizes.values()),
        )
        with background_pool(workers, nice, "fixity") as pool:
            count = min(workers, max(1, len(digests)))
            futures = [pool.submit(_work, tier_store, shared) for _ in range(count)]
            for future in futures:
                future.result()
        checked, done = checked + shared.checked, done + shared.done
        missing += shared.missing
        corrupt += shared.corrupt
    orphaned = _orphans(catalog, store, orphan_grace_s)
    report = FixityReport(
        checked=checked,
        bytes=done,
        missing=sorted(missing, key=lambda m: m.sha256),
        corrupt=sorted(corrupt, key=lambda c: c.sha256),
        orphaned=orphaned,
        seconds=time.perf_counter() - started,
        cold_skipped=0 if cold_store is not None else len(cold_references),
    )
    with catalog.begin() as conn:
        audit.append(
            conn,
            actor,
            "verify",
            "blobstore",
            {
                "checked": report.checked,
                "bytes": report.bytes,
                "missing": len(report.missing),
                "corrupt": len(report.corrupt),
                "orphaned": len(report.orphaned),
            },
        )
    return report


def verify_one(catalog: Catalog, store: BlobStore, sha256: str) -> FixityReport:
    """Re-hash one referenced object (a damage reported at read time, before its repair); an
    object no instance references is reported checked and fine (nothing to repair)."""
    started = time.perf_counter()
    query = select(t.instances.c.slide_id, t.instances.c.sop_instance_uid, t.instances.c.bytes).where(
        t.instances.c.blob_sha256 == sha256
    )
    with catalog.engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        return FixityReport(0, 0, [], [], [], time.perf_counter() - started)
    refs = sorted(
        (Reference(slide, str(uid)) for slide, uid, _ in rows),
        key=lambda r: (r.slide_id or "", r.sop_instance_uid),
    )
    shared = _Shared(
        work=iter([sha256]),
        expected={sha256: int(rows[0][2])},
        references={sha256: refs},
        bucket=None,
        progress=None,
        total=int(rows[0][2]),
    )
    _check_one(store, sha256, shared)
    return FixityReport(
        checked=shared.checked,
        bytes=shared.done,
        missing=shared.missing,
        corrupt=shared.corrupt,
        orphaned=[],
        seconds=time.perf_counter() - started,
    )
