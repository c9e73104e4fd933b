"""Where requests' instances wait until they are stored: one folder per owning process, swept
when that process is gone.

Layout of ``$LAMINA_HOME/incoming/``::

    stow/<session>/            the requests of one process (STOW-RS bodies, a worker's job)
        OWNER                  locked (flock) by that process for as long as it lives
        <request>/...          one request's instances, removed once its answer is known
    dimse/...                  the DIMSE server's associations (:mod:`.association`)

Every folder has one owner, and only its owner's rule removes it. A session whose ``OWNER``
lock is free belongs to a process that is gone (killed, crashed): :meth:`RequestSpools.sweep`
removes it whole, at a server's or a worker's start and before a process opens its own session.
A lock dies with its process however it ends, and a process id reused later does not hold it,
so a live process's requests are never swept. The DIMSE spools are not touched here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from lamina.errors import InsufficientStorageError, StorageError

STOW = "stow"
OWNER = "OWNER"
#: A session folder without its OWNER file this long after it was made: its process died
#: while making it.
_UNOWNED_GRACE_S = 60.0
#: Request spools of releases before owners (``incoming/stow-<hex>``), removed once this old.
_LEGACY_AGE_S = 3600.0
_LEGACY = re.compile(r"^stow-[0-9a-f]{32}$")


def spool_error(folder: Path, exc: OSError, what: str = "the STOW-RS spool") -> StorageError:
    """The error for a spool that cannot be written: :class:`InsufficientStorageError` naming
    the folder when the disk is full."""
    if exc.errno in InsufficientStorageError.ERRNOS:
        return InsufficientStorageError(
            str(folder),
            f"{what} {folder} is full ({exc.strerror}); free space on that disk or set LAMINA_HOME "
            "to a larger one, then send again",
        )
    return StorageError(f"cannot write {what} {folder} ({exc.strerror}); fix the permissions of $LAMINA_HOME")


class RequestSpools:
    """The request spools of this process under ``incoming/stow/``.

    Parameters
    ----------
    incoming
        ``$LAMINA_HOME/incoming``. Nothing is created before the first :meth:`request`.
    """

    def __init__(self, incoming: Path) -> None:
        self.incoming = incoming
        self.root = incoming / STOW
        self._session: Path | None = None
        self._owner: int | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def request(self) -> Iterator[Path]:
        """A new empty folder for one request's instances, removed with what is in it on exit."""
        folder = self._own() / secrets.token_hex(16)
        try:
            folder.mkdir()
        except OSError as exc:
            raise spool_error(folder, exc) from exc
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def open(self) -> int:
        """Sweep (:meth:`sweep`) and open this process's session now, rather than at the first
        request (a server at its start: none of it then happens while a request waits); how many
        spools were removed."""
        with self._lock:
            if self._session is not None:
                return 0
            swept = self.sweep()
            self._session, self._owner = _open_session(self.root)
            return swept

    def sweep(self) -> int:
        """Remove the sessions of processes that are gone (and old spools of earlier releases);
        how many were removed. Never this process's own, nor any live process's."""
        removed = 0
        if self.root.is_dir():
            for folder in sorted(self.root.iterdir()):
                if folder != self._session and folder.is_dir() and _remove_if_abandoned(folder):
                    removed += 1
        if self.incoming.is_dir():
            for folder in self.incoming.iterdir():
                if _LEGACY.match(folder.name) and _age_s(folder) > _LEGACY_AGE_S:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
        return removed

    def close(self) -> None:
        """Remove this process's session (its requests have ended) and let its lock go."""
        with self._lock:
            session, owner = self._session, self._owner
            self._session = self._owner = None
        if session is not None:
            shutil.rmtree(session, ignore_errors=True)
        if owner is not None:
            os.close(owner)

    def _own(self) -> Path:
        with self._lock:
            if self._session is None:
                self.sweep()
                self._session, self._owner = _open_session(self.root)
            return self._session


def _open_session(root: Path) -> tuple[Path, int]:
    """A session folder of this process, its OWNER file locked; retried when a sweeper of another
    process took the folder for an abandoned one while it was being made."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise spool_error(root, exc) from exc
    for _ in range(5):
        folder = root / f"{os.getpid()}-{secrets.token_hex(6)}"
        try:
            folder.mkdir()
            fd = os.open(folder / OWNER, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise spool_error(folder, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not os.path.samestat(os.fstat(fd), (folder / OWNER).stat()):
                raise FileNotFoundError(folder / OWNER)
            record = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
            os.write(fd, json.dumps(record).encode())
        except OSError:
            os.close(fd)
            continue
        return folder, fd
    raise StorageError(f"cannot open a spool session in {root}; another process keeps removing it")


def _remove_if_abandoned(folder: Path) -> bool:
    """Remove a session whose owner is gone: its OWNER lock is free, or it never had one."""
    try:
        fd = os.open(folder / OWNER, os.O_RDWR)
    except FileNotFoundError:
        if _age_s(folder) <= _UNOWNED_GRACE_S:
            return False  # being made right now
        shutil.rmtree(folder, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # its process is alive
        shutil.rmtree(folder, ignore_errors=True)  # holding the lock: no one can take it meanwhile
        return True
    finally:
        os.close(fd)


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
