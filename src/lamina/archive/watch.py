"""Watched folders: how scanners hand over slides.

A scanner (or a person) writes slides into a folder; a :class:`Watcher` ingests each one once it
is complete and then moves it out of the way:

* a *unit* is what one ingest reads, as :func:`lamina.archive.discover.discover` sees it: a file,
  an MRXS file with its data folder, or the DICOM files of one series;
* a unit is complete when the size and modification time of every member stayed the same for
  ``stable_s`` seconds (tracked between scans), or when a done-marker file lies beside it
  (``NAME.svs.done`` or ``NAME.done`` for ``done_marker=".done"``; for a folder of DICOM files,
  ``FOLDER.done`` beside it or ``FOLDER/.done`` inside it);
* after the ingest, a unit whose slide is visible in the catalog (ingested, or an exact duplicate
  of a stored slide; its objects were verified by the ingest) is moved to ``FOLDER/done/``, any
  other to ``FOLDER/failed/`` with ``NAME.reason.txt`` beside it, keeping its relative path.
  Nothing is deleted from the scanner's folder; ``done/`` and ``failed/`` are never scanned.

Several watchers (processes on one host, or hosts sharing the folder) may watch one folder. Before
ingesting, a watcher claims the unit by creating ``FOLDER/.claims/<relative path>.claim`` with
``O_CREAT | O_EXCL`` (it records host, pid, time and a token); only the creator goes on. The unit is
moved before the claim is removed, and a watcher that wins a claim checks that the unit is still
there, unchanged, so a unit is never ingested twice. A claim whose process is gone is *stale* and
may be taken over: at once when its pid is not alive on this host, after ``claim_timeout_s``
(1 h by default) when it was made on another host (whose processes cannot be checked from here).
Takeover renames the stale claim to a private name (one rename wins) and checks it was the
stale one before creating a fresh claim.

NFS caveat: ``O_EXCL`` creation and ``rename`` are atomic on a local filesystem and on NFSv3+/v4
servers, but not on NFSv2 or on some FUSE and SMB mounts; client attribute caching can also delay
size and time changes by a few seconds (use a ``stable_s`` well above the mount's ``actimeo``, or
done markers), and hosts' clocks may disagree (claim ages use the claim's own recorded time and
this host's clock). Even where claims fail, the catalog refuses a second copy of one source
(the duplicate check by content), so a race ends as a duplicate, never as two slides.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lamina.archive.archive import Archive
from lamina.archive.discover import _IGNORED, _IGNORED_SUFFIXES, Candidate, discover
from lamina.archive.ingest import IngestOptions, IngestResult, IngestStatus
from lamina.archive.manifest import Manifest
from lamina.errors import UnavailableError

DONE = "done"
FAILED = "failed"
CLAIMS = ".claims"
_RESERVED = {DONE, FAILED, CLAIMS}

Signature = tuple[tuple[str, int, int], ...]  # (member, size, mtime_ns) for each member


@dataclass
class _Seen:
    signature: Signature
    since: float  # monotonic time the signature was first seen


@dataclass(frozen=True)
class Claim:
    path: Path
    token: str


class Watcher:
    """Ingests the complete slides of one folder, each once, even with several watchers on it."""

    def __init__(
        self,
        archive: Archive,
        folder: Path,
        stable_s: float = 5.0,
        done_marker: str | None = None,
        manifest: Manifest | None = None,
        *,
        options: IngestOptions | None = None,
        claim_timeout_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        submit: Callable[[Candidate, Signature, Claim], None] | None = None,
    ) -> None:
        self.archive = archive
        self.folder = Path(folder).absolute()
        self.stable_s = stable_s
        self.done_marker = done_marker or None
        self.manifest = manifest
        self.options = options or IngestOptions(actor="lamina-watch")
        self.claim_timeout_s = claim_timeout_s
        self.clock = clock
        #: hands a claimed unit to the job queue instead of ingesting it here
        self.submit = submit
        self.host = socket.gethostname()
        self.receiver = archive.receiver()
        self._seen: dict[str, _Seen] = {}
        #: units seen but not yet complete after the last scan
        self.pending = 0

    # -- scanning -------------------------------------------------------------------------------

    def scan_once(self) -> list[IngestResult]:
        """One pass: ingest and move every complete unit this watcher can claim."""
        self.folder.mkdir(parents=True, exist_ok=True)
        results: list[IngestResult] = []
        present: set[str] = set()
        pending = 0
        for candidate in self._candidates():
            key = str(candidate.path)
            present.add(key)
            signature = _signature(candidate)
            if signature is None:  # vanished while looking
                continue
            if not self._complete(key, signature, candidate):
                pending += 1
                continue
            result = self._handle(candidate, signature)
            self._seen.pop(key, None)
            if result is not None:
                results.append(result)
        for key in list(self._seen):
            if key not in present:
                del self._seen[key]
        self.pending = pending
        return results

    def run(
        self,
        stop_event: threading.Event,
        interval_s: float = 1.0,
        on_result: Callable[[IngestResult], None] | None = None,
    ) -> None:
        """Scan every ``interval_s`` seconds until ``stop_event`` is set (the current unit finishes)."""
        while not stop_event.is_set():
            for result in self.scan_once():
                if on_result is not None:
                    on_result(result)
                if stop_event.is_set():
                    break
            stop_event.wait(interval_s)

    def _candidates(self) -> list[Candidate]:
        try:
            entries = sorted(self.folder.iterdir())
        except FileNotFoundError:
            return []
        roots = []
        for entry in entries:
            if entry.name in _RESERVED or entry.name.startswith("."):
                continue
            if entry.is_dir() and _is_mrxs_folder(entry):
                continue  # walked with its .mrxs file
            if not entry.is_dir() and (entry.name in _IGNORED or entry.suffix.lower() in _IGNORED_SUFFIXES):
                continue  # as discover's walk skips them inside folders
            roots.append(entry)
        if not roots:
            return []
        candidates = discover(roots)
        if self.done_marker:
            candidates = [c for c in candidates if not c.path.name.endswith(self.done_marker)]
        return [c for c in candidates if c.path.exists()]

    def _complete(self, key: str, signature: Signature, candidate: Candidate) -> bool:
        if self._markers(candidate):
            return True
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None or seen.signature != signature:
            self._seen[key] = seen = _Seen(signature, now)
        return now - seen.since >= self.stable_s

    def _markers(self, candidate: Candidate) -> list[Path]:
        """The done-marker files that exist for this unit."""
        marker = self.done_marker
        if not marker:
            return []
        path = candidate.path
        names = [path.parent / (path.name + marker), path.parent / (path.stem + marker)]
        folder = _series_folder(candidate, self.folder)
        if folder is not None:
            names += [folder.parent / (folder.name + marker), folder / marker]
        return [name for name in dict.fromkeys(names) if name.is_file()]

    # -- one unit -------------------------------------------------------------------------------

    def _handle(self, candidate: Candidate, signature: Signature) -> IngestResult | None:
        claim = self._claim(candidate)
        if claim is None:
            return None  # another watcher has it
        if self.submit is not None:
            # queued: a worker ingests, moves and releases (Watcher.process); the claim held by
            # this live process keeps the next scans from submitting the unit again
            try:
                self.submit(candidate, signature, claim)
            except BaseException:
                self._release(claim)
                raise
            return None
        return self.process(candidate, signature, claim)

    def process(
        self, candidate: Candidate, signature: Signature, claim: Claim, *, final: bool = True
    ) -> IngestResult | None:
        """Ingest a claimed unit, move it to done/ or failed/, release the claim. With ``final``
        off, a failure of a service that may come back raises UnavailableError (the job is
        retried, the unit stays claimed where it is)."""
        record = _read_claim(claim.path)
        if record is None or record.get("token") != claim.token:
            return None  # the claim was taken over: the new holder handles the unit
        release = True
        try:
            # won the claim: the unit may have been handled (and moved) by the previous holder
            if _signature(candidate) != signature:
                return None
            markers = self._markers(candidate)
            result = self.receiver.ingest(candidate, self.manifest, self.options)
            if result.retryable and not final:
                release = False
                raise UnavailableError(result.reason or "a storage service is unavailable")
            # a slide must be visible in the catalog (DICOM objects kept as they are have none)
            visible = result.ok
            if visible and result.slide_id and self.archive.catalog.slide(result.slide_id) is None:
                visible = False
                result.status, result.reason = IngestStatus.FAILED, "the slide is not visible in the catalog"
            self._move(candidate, markers, DONE if visible else FAILED, None if visible else result)
            return result
        finally:
            if release:
                self._release(claim)

    def _move(self, candidate: Candidate, markers: list[Path], to: str, failed: IngestResult | None) -> None:
        roots = _roots(candidate, self.folder)
        dest_root = self.folder / to
        moves = [(root, dest_root / root.relative_to(self.folder)) for root in [*roots, *markers]]
        n = 0
        while any(_exists(dest if n == 0 else _numbered(dest, n)) for _, dest in moves):
            n += 1
        for source, dest in moves:
            target = dest if n == 0 else _numbered(dest, n)
            target.parent.mkdir(parents=True, exist_ok=True)
            source.rename(target)
        if failed is not None:
            primary = _series_folder(candidate, self.folder) or candidate.path
            target = dest_root / primary.relative_to(self.folder)
            target = target if n == 0 else _numbered(target, n)
            reason = " ".join((failed.reason or "failed").split())
            target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
        # a folder of DICOM files emptied by the move goes too (only if empty: nothing is lost)
        folder = _series_folder(candidate, self.folder)
        if folder is not None:
            with contextlib.suppress(OSError):
                folder.rmdir()

    # -- claims ---------------------------------------------------------------------------------

    def _claim_path(self, candidate: Candidate) -> Path:
        relative = candidate.path.relative_to(self.folder)
        return self.folder / CLAIMS / relative.parent / (relative.name + ".claim")

    def _claim(self, candidate: Candidate) -> Claim | None:
        path = self._claim_path(candidate)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            token = uuid.uuid4().hex
            record = {
                "host": self.host,
                "pid": os.getpid(),
                "time": dt.datetime.now(dt.UTC).isoformat(),
                "token": token,
            }
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over(path):
                    return None
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(record, out)
                out.flush()
                os.fsync(out.fileno())
            return Claim(path, token)
        return None

    def _is_stale(self, record: dict[str, object] | None, path: Path) -> bool:
        if record is None:  # being written right now, or damaged: judge by the file's age
            with contextlib.suppress(OSError):
                return time.time() - path.stat().st_mtime > self.claim_timeout_s
            return False
        pid = record.get("pid")
        if record.get("host") == self.host and isinstance(pid, int):
            return not _pid_alive(pid)
        try:
            made = dt.datetime.fromisoformat(str(record.get("time")))
        except ValueError:
            return False
        return (dt.datetime.now(dt.UTC) - made).total_seconds() > self.claim_timeout_s

    def _take_over(self, path: Path) -> bool:
        """Remove a stale claim; True if the caller may try to claim again."""
        record = _read_claim(path)
        if not self._is_stale(record, path):
            return False
        private = path.with_name(f"{path.name}.stale-{self.host}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            path.rename(private)  # among watchers taking over, one rename wins
        except FileNotFoundError:
            return True  # released or taken meanwhile: try O_EXCL again
        if _read_claim(private) != record:
            # another watcher replaced the stale claim with a live one before this rename: give it back
            with contextlib.suppress(OSError):
                os.link(private, path)
            private.unlink(missing_ok=True)
            return False
        private.unlink(missing_ok=True)
        return True

    def _release(self, claim: Claim) -> None:
        record = _read_claim(claim.path)
        if record is not None and record.get("token") == claim.token:
            claim.path.unlink(missing_ok=True)
        for parent in claim.path.parents:  # prune empty claim folders below .claims/
            if parent == self.folder / CLAIMS or self.folder / CLAIMS not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break


def _read_claim(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signature(candidate: Candidate) -> Signature | None:
    try:
        stats = [(member, member.stat()) for member in candidate.members]
    except OSError:
        return None
    return tuple((str(member), st.st_size, st.st_mtime_ns) for member, st in stats)


def _is_mrxs_folder(path: Path) -> bool:
    return any((path.parent / f"{path.name}{suffix}").is_file() for suffix in (".mrxs", ".MRXS"))


def _series_folder(candidate: Candidate, root: Path) -> Path | None:
    """The folder of a multi-file unit that is not an MRXS slide, if all its files lie in one."""
    if len(candidate.members) < 2 or candidate.path.suffix.lower() == ".mrxs":
        return None
    parents = {member.parent for member in candidate.members}
    if len(parents) != 1:
        return None
    (folder,) = parents
    return folder if folder != root else None


def _roots(candidate: Candidate, root: Path) -> list[Path]:
    """What to move: the file; an MRXS file and its folder; each file of a DICOM series."""
    if candidate.path.suffix.lower() == ".mrxs" and len(candidate.members) > 1:
        folder = candidate.path.with_suffix("")
        return [candidate.path, folder] if folder.is_dir() else [candidate.path]
    return [member for member in candidate.members if member.exists()]


def _numbered(path: Path, n: int) -> Path:
    """``scan.mrxs`` -> ``scan-1.mrxs``, ``scan/`` -> ``scan-1/``: the same n keeps pairs together."""
    return path.with_name(f"{path.stem}-{n}{path.suffix}")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()
