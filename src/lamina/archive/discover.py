"""Turn the paths a user gives into slide candidates: one per file, one per DICOM series."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom

from lamina.formats.dicom import is_dicom

#: Files a scanner or an OS leaves beside slides that are never slides.
_IGNORED = {".DS_Store", "Thumbs.db", "desktop.ini"}
_IGNORED_SUFFIXES = {".csv", ".json", ".txt", ".md", ".xml", ".log", ".reason.txt", ".part"}


@dataclass(frozen=True)
class Candidate:
    """What one ingest will read: ``path`` (the file named in reports) and all its ``members``."""

    path: Path
    members: tuple[Path, ...]

    @property
    def name(self) -> str:
        """What a person calls it: the file's name, or the folder of a multi-file slide."""
        if len(self.members) > 1 and len({member.parent for member in self.members}) == 1:
            return f"{self.members[0].parent.name}/"
        return self.path.name


def _mrxs_folder(path: Path) -> Path | None:
    """An MRXS slide is ``NAME.mrxs`` and the folder ``NAME`` beside it."""
    folder = path.with_suffix("")
    return folder if path.suffix.lower() == ".mrxs" and folder.is_dir() else None


def _walk(path: Path) -> Iterable[Path]:
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            # an MRXS slide's data folder belongs to its .mrxs file, not to the walk
            dirs[:] = sorted(
                d
                for d in dirs
                if not (Path(root) / f"{d}.mrxs").exists() and not (Path(root) / f"{d}.MRXS").exists()
            )
            for name in sorted(files):
                if name in _IGNORED or name.startswith("."):
                    continue
                candidate = Path(root) / name
                if candidate.suffix.lower() in _IGNORED_SUFFIXES:
                    continue
                yield candidate
    else:
        yield path


def discover(paths: Iterable[Path]) -> list[Candidate]:
    """Files and folders (recursively) to candidates; DICOM files grouped by SeriesInstanceUID.

    A path that does not exist becomes a candidate too, so that it is reported as failed.
    """
    singles: list[Candidate] = []
    series: dict[str, list[Path]] = defaultdict(list)
    for given in paths:
        for file in _walk(given):
            folder = _mrxs_folder(file)
            if folder is not None:
                data = sorted(p for p in folder.rglob("*") if p.is_file())
                singles.append(Candidate(file, (file, *data)))
            elif file.is_file() and is_dicom(file):
                try:
                    header = pydicom.dcmread(
                        file, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]
                    )
                    uid = str(header.get("SeriesInstanceUID", "")) or f"file:{file}"
                except Exception:
                    uid = f"file:{file}"  # reported as failed when read
                series[uid].append(file)
            else:
                singles.append(Candidate(file, (file,)))
    grouped = [Candidate(sorted(files)[0], tuple(sorted(files))) for files in series.values()]
    return sorted([*singles, *grouped], key=lambda c: str(c.path))
