"""The spool of one association: what a peer sent, kept durably until the association ends.

Layout: ``$LAMINA_HOME/incoming/<association id>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``,
so that a series is one folder and the slide's candidate reads straight from it. A C-STORE is
answered Success only once its file and folder entry are on disk (fsync). When the peer
releases the association, a ``RELEASED`` marker (holding the calling AE title) seals the spool
for ingest; an aborted association's spool is removed. After a crash, :func:`recover` hands
back the sealed spools and removes the others, whose peers never saw their association end.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import secrets
import shutil
from pathlib import Path

from lamina.errors import StorageError

#: The marker that seals a spool; its text is the calling AE title.
RELEASED = "RELEASED"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SUFFIX = ".dcm"
_PART = ".part"


def is_uid(text: str) -> bool:
    """A valid UID (PS3.5 9.1): digits and dots, no leading zeros, at most 64 characters.

    Spool paths are made of UIDs, so this check also keeps a peer's values out of other folders.
    """
    return 0 < len(text) <= 64 and _UID.match(text) is not None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """One association's received objects, grouped by series.

    Parameters
    ----------
    folder
        ``$LAMINA_HOME/incoming/<association id>``; created on the first object.
    calling_ae_title
        The peer's AE title, recorded in the audit log as the ingest's actor.
    """

    def __init__(self, folder: Path, calling_ae_title: str) -> None:
        self.folder = folder
        self.calling_ae_title = calling_ae_title
        self.objects = 0

    @classmethod
    def new(cls, incoming: Path, calling_ae_title: str) -> Spool:
        """A spool with a fresh association id: the UTC time, then random hex (sorts by arrival)."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        return cls(incoming / f"{stamp}-{secrets.token_hex(4)}", calling_ae_title)

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
                _fsync_dir(self.folder.parent)
            folder.mkdir()
            _fsync_dir(self.folder)
        return folder

    def put(self, received: Path | bytes, series_instance_uid: str, sop_instance_uid: str) -> Path:
        """Keep one object durably: moved (or copied) from ``received``, a Part-10 file or its bytes.

        Raises
        ------
        StorageError
            The spool cannot be written (disk full, permissions); the C-STORE must fail.
        """
        if not (is_uid(series_instance_uid) and is_uid(sop_instance_uid)):
            raise ValueError("spool paths are made of valid UIDs only")
        try:
            folder = self._series_folder(series_instance_uid)
            target = folder / f"{sop_instance_uid}{_SUFFIX}"
            part = folder / f"{sop_instance_uid}{_SUFFIX}{_PART}"
            if isinstance(received, bytes):
                with part.open("wb") as out:
                    out.write(received)
            else:
                _move(received, part)
            _fsync_file(part)
            part.replace(target)
            _fsync_dir(folder)
        except OSError as exc:
            raise StorageError(
                f"cannot write the DIMSE spool {self.folder} ({exc.strerror}); free disk space "
                "or fix the permissions of $LAMINA_HOME/incoming"
            ) from exc
        self.objects += 1
        return target

    def seal(self) -> None:
        """Mark the association as released: the spool is complete and may be ingested."""
        marker = self.folder / RELEASED
        marker.write_text(self.calling_ae_title, "utf-8")
        _fsync_file(marker)
        _fsync_dir(self.folder)

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

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _move(source: Path, target: Path) -> None:
    """A rename where the temporary file is on the same file system as the spool, else a copy."""
    try:
        source.replace(target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(source, target)


def recover(incoming: Path) -> tuple[list[Spool], int]:
    """After a restart: the sealed spools to ingest, and how many unsealed ones were removed."""
    sealed: list[Spool] = []
    removed = 0
    if not incoming.is_dir():
        return sealed, removed
    for folder in sorted(incoming.iterdir()):
        if not folder.is_dir():
            continue
        marker = folder / RELEASED
        if marker.is_file():
            sealed.append(Spool(folder, marker.read_text("utf-8", errors="replace").strip()))
        else:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return sealed, removed
