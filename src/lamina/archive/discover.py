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


def _data_folder(path: Path) -> Path | None:
    """The folder of a slide whose pixels lie beside its file: an MRXS slide is ``NAME.mrxs`` and
    the folder ``NAME``; a VSI slide is ``NAME.vsi`` and the folder ``_NAME_`` (its ETS files)."""
    suffix = path.suffix.lower()
    if suffix == ".mrxs":
        folder = path.with_suffix("")
    elif suffix == ".vsi":
        folder = path.with_name(f"_{path.stem}_")
    else:
        return None
    return folder if folder.is_dir() else None


def _owned(root: Path, folder: str) -> bool:
    """Whether ``folder`` in ``root`` is the data folder of a slide file beside it."""
    if any((root / f"{folder}{suffix}").exists() for suffix in (".mrxs", ".MRXS")):
        return True
    stem = folder[1:-1] if folder.startswith("_") and folder.endswith("_") and len(folder) > 2 else None
    return stem is not None and any((root / f"{stem}{suffix}").exists() for suffix in (".vsi", ".VSI"))


def _walk(path: Path) -> Iterable[Path]:
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            # a slide's data folder belongs to its .mrxs or .vsi file, not to the walk
            dirs[:] = sorted(d for d in dirs if not _owned(Path(root), d))
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
            folder = _data_folder(file)
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
