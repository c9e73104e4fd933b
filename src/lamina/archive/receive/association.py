"""The instances of one DIMSE association, kept durably until it ends, then received whole.

Layout: ``$LAMINA_HOME/incoming/dimse/<association id>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``,
so that a series is one folder. An instance is acknowledged (C-STORE Success) only once its
file and folder entry are on disk (fsync). When the peer releases the association, a
``RELEASED`` marker (holding the calling AE title) seals the spool and it is handed to
:class:`AssociationIngest`, which receives it on a thread of its own (a peer never waits for a
conversion), so that a scanner pushing a slide as one instance per level sees the whole slide
appear at once, or not at all. An aborted association's spool is removed.

``incoming/dimse/`` belongs to one DIMSE server per data folder (:meth:`AssociationSpools.take`
locks it). At its start, :meth:`AssociationSpools.recover` hands back the sealed spools of a
previous run and removes the unsealed ones, whose peers never saw their association end; it
touches nothing else under ``incoming/``.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import logging
import os
import queue
import re
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from lamina.archive.priority import lower_priority
from lamina.archive.receive.receiver import Receipt, Receiver
from lamina.archive.receive.spool import spool_error
from lamina.errors import ConfigurationError, SourceError, StorageError
from lamina.formats.dicom import check_uid

log = logging.getLogger("lamina.receive")

DIMSE = "dimse"
#: The marker that seals a spool; its text is the calling AE title.
RELEASED = "RELEASED"
_SUFFIX = ".dcm"
_PART = ".part"
#: Association spools of releases before ``incoming/dimse/``: ``incoming/<UTC time>-<hex>``.
_LEGACY = re.compile(r"^[0-9]{8}T[0-9]{12}-[0-9a-f]{8}$")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _uid(keyword: str, value: str) -> str:
    """A valid UID, or ValueError: spool paths are made of UIDs, which also keeps a peer's values
    out of other folders."""
    try:
        return check_uid(Path(keyword), keyword, value)
    except SourceError as exc:
        raise ValueError(exc.reason) from None


class AssociationSpool:
    """One association's received instances, grouped by series.

    Parameters
    ----------
    folder
        ``incoming/dimse/<association id>``; created with the first instance.
    calling_ae_title
        The peer's AE title, the receiving's actor in the audit log.
    """

    def __init__(self, folder: Path, calling_ae_title: str) -> None:
        self.folder = folder
        self.calling_ae_title = calling_ae_title
        self.objects = 0
        #: series with an instance that could not be kept: incomplete, never received
        self.broken: set[str] = set()

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def sealed(self) -> bool:
        return (self.folder / RELEASED).is_file()

    def _series_folder(self, series_instance_uid: str) -> Path:
        folder = self.folder / series_instance_uid
        if not folder.is_dir():
            if not self.folder.is_dir():
                self.folder.mkdir(parents=True)
                _fsync(self.folder.parent)
            folder.mkdir()
            _fsync(self.folder)
        return folder

    def put(self, received: Path | bytes, series_instance_uid: str, sop_instance_uid: str) -> Path:
        """Keep one instance durably: moved (or copied) from ``received``, a Part-10 file or its bytes.

        Raises
        ------
        StorageError
            The spool cannot be written (:class:`~lamina.errors.InsufficientStorageError` when
            its disk is full); the C-STORE fails, and nothing of the instance is left.
        """
        series = _uid("SeriesInstanceUID", series_instance_uid)
        sop = _uid("SOPInstanceUID", sop_instance_uid)
        part = None
        try:
            folder = self._series_folder(series)
            target = folder / f"{sop}{_SUFFIX}"
            part = folder / f"{sop}{_SUFFIX}{_PART}"
            if isinstance(received, bytes):
                with part.open("wb") as out:
                    out.write(received)
            else:
                _move(received, part)
            _fsync(part)
            part.replace(target)
            _fsync(folder)
        except OSError as exc:
            if part is not None:
                part.unlink(missing_ok=True)
            self.broken.add(series)
            raise spool_error(self.folder, exc, "the DIMSE spool") from exc
        self.objects += 1
        return target

    def seal(self) -> list[str]:
        """Mark the association as released: the spool is complete and may be received. A series
        with an instance that could not be kept is removed first (the peer was told of the
        failure and sends it again): the series it returns; a slide is received whole or not."""
        for series in sorted(self.broken):
            shutil.rmtree(self.folder / series, ignore_errors=True)
        marker = self.folder / RELEASED
        marker.write_text(self.calling_ae_title, "utf-8")
        _fsync(marker)
        _fsync(self.folder)
        return sorted(self.broken)

    def series(self) -> dict[str, tuple[Path, ...]]:
        """Each series' files, sorted (a stable order gives a stable source fingerprint)."""
        found: dict[str, tuple[Path, ...]] = {}
        if not self.folder.is_dir():
            return found
        for folder in sorted(self.folder.iterdir()):
            if folder.is_dir():
                files = tuple(sorted(p for p in folder.iterdir() if p.name.endswith(_SUFFIX)))
                if files:
                    found[folder.name] = files
        return found

    def files(self) -> list[Path]:
        return [file for files in self.series().values() for file in files]

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _move(source: Path, target: Path) -> None:
    """A rename where the received file is on the spool's file system, else a copy."""
    try:
        source.replace(target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(source, target)


class AssociationSpools:
    """``incoming/dimse/``: the association spools of the one DIMSE server of a data folder."""

    def __init__(self, incoming: Path) -> None:
        self.incoming = incoming
        self.root = incoming / DIMSE
        self._lock_file: IO[bytes] | None = None

    def take(self) -> None:
        """Become the one receiver of this data folder's associations (a file lock, released at
        :meth:`release` or when the process ends): two would receive, or remove, each other's."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = (self.root / ".lock").open("ab")
        except OSError as exc:
            raise StorageError(
                f"cannot create {self.root} ({exc.strerror}); LAMINA_HOME must be writable"
            ) from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ConfigurationError(
                f"another DIMSE server already receives into {self.root}; stop it, or give this one "
                "its own LAMINA_HOME"
            ) from None
        self._lock_file = handle

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def new(self, calling_ae_title: str) -> AssociationSpool:
        """A spool with a fresh association id: the UTC time, then random hex (sorts by arrival)."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        return AssociationSpool(self.root / f"{stamp}-{secrets.token_hex(4)}", calling_ae_title)

    def recover(self) -> tuple[list[AssociationSpool], int]:
        """After a restart (holding :meth:`take`): the sealed spools to receive, and how many
        unsealed ones were removed. Spools of earlier releases, directly in ``incoming/``, are
        moved in first."""
        self._adopt_legacy()
        sealed: list[AssociationSpool] = []
        removed = 0
        for folder in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if not folder.is_dir():
                continue
            marker = folder / RELEASED
            if marker.is_file():
                sealed.append(AssociationSpool(folder, marker.read_text("utf-8", errors="replace").strip()))
            else:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return sealed, removed

    def _adopt_legacy(self) -> None:
        if not self.incoming.is_dir():
            return
        for folder in self.incoming.iterdir():
            if _LEGACY.match(folder.name) and folder.is_dir():
                try:
                    folder.rename(self.root / folder.name)
                except OSError as exc:
                    log.warning("DIMSE spool %s of an earlier release not moved: %s", folder, exc.strerror)


Listener = Callable[[AssociationSpool, Receipt], None]


class AssociationIngest:
    """A queue of sealed spools and the thread that receives them, one at a time.

    Parameters
    ----------
    receiver
        Receives into the served archive.
    listener
        Called with each spool and its :class:`Receipt` once received (the DIMSE server logs it),
        before the spool is removed.
    nice
        The nice value the receiving thread runs at (:mod:`lamina.archive.priority`).
    """

    def __init__(self, receiver: Receiver, listener: Listener | None = None, nice: int = 0) -> None:
        self._receiver = receiver
        self._nice = nice
        self._listener = listener
        self._queue: queue.Queue[AssociationSpool | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="lamina-association-ingest", daemon=True)
        self._thread.start()

    def submit(self, spool: AssociationSpool) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(spool)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted spool is received; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self) -> None:
        """Finish the spool in hand; spools still queued stay sealed on disk for the next start."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(None)
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        lower_priority(self._nice)  # long work: serving keeps the CPU first
        while (spool := self._queue.get()) is not None:
            try:
                if not self._stopping.is_set():
                    self._receive(spool)
            except Exception as exc:  # the thread must outlive one bad spool; it stays for a restart
                log.error("DIMSE spool %s not received: %s: %s", spool.id, type(exc).__name__, exc)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
        with self._idle:
            self._pending = 0  # what was still queued waits on disk, sealed, for the next start
            self._idle.notify_all()

    def _receive(self, spool: AssociationSpool) -> None:
        receipt = self._receiver.receive(spool.files(), actor=f"dimse:{spool.calling_ae_title}")
        if self._listener is not None:
            self._listener(spool, receipt)
        if receipt.may_pass_later:
            # the peer was told Success: what failed for a full disk or a service down is kept,
            # sealed, and received again at the next start (what was stored is a duplicate then)
            log.warning(
                "DIMSE spool %s kept for the next start: some instances could not be stored yet", spool.id
            )
        else:
            spool.discard()
