"""Mutation fuzzing of ingest: damaged copies of slide files, each ingested into a real archive.

Each mutant must end as ``ingested``, ``duplicate`` or ``failed`` with a one-line reason in
lamina's words; nothing may escape the ingest, hang, or stay half-written in the blob store.
A reason that names a Python exception (``ValueError: ...``) is an *internal* refusal: the user
learns nothing from it. The campaign counts them.

Run it from the repository root (the numbers of issue 9 come from the default run)::

    .venv/bin/python -m tests.fuzz.campaign                      # samples + ../shared/testdata
    .venv/bin/python -m tests.fuzz.campaign --per-file 20 --no-real --json out.json

Seeds are the sample slides of every format (``lamina.sample``, small) and the real files of
``../shared/testdata`` (read there, never copied into the repository).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from lamina.archive.archive import Archive
from lamina.archive.discover import Candidate, discover
from lamina.archive.ingest import IngestOptions, Ingestor
from lamina.config import Settings
from lamina.formats.dicomize import plan_slide, series_context, write_instance
from lamina.formats.registry import detect_format
from lamina.formats.source import Buffer, SourceOptions
from lamina.model.geometry import SizeMm
from lamina.model.ids import new_uid
from tests.fuzz.mutate import Mutant, mutate

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO.parent / "shared" / "testdata"
#: A reason that names a Python exception type, or a bare ``struct.error``.
INTERNAL = re.compile(r"\b[A-Z][A-Za-z0-9]*(?:Error|Exception|Warning)\b|\(error: |Traceback")
#: The real files mutated (relative to ../shared/testdata); a folder is one multi-file slide.
REAL = (
    "aperio/CMU-1-Small-Region.svs",
    "aperio/tcga-cr-7395-01a-01-ts1.svs",
    "aperio-synthetic/small.svs",
    "aperio-synthetic/boxes.tiff",
    "dicom-openslide-python",
    "dicom-highdicom/sm_image.dcm",
    "dicom-highdicom/sm_image_jpegls.dcm",
    "dicom-wsi2dcm/jpeg.dicom",
    "dicom-wsi2dcm/jpeg2000.dicom",
    "dicom-pathml/small_dicom.dcm",
    "perkinelmer-qptiff/small_vectra.qptiff",
    "ome-tiff-nonwsi/multi-channel-z-series.ome.tif",
    "hamamatsu-ndpi/test3-DAPI-2-(387).ndpi",
    "olympus-vsi",
)
#: Options every seed is ingested with: a spacing, so that files without one get past it.
MPP = 0.25
TIME_LIMIT_S = 60


@dataclass(frozen=True)
class Seed:
    """A slide to mutate: its name in reports and its files (one, a DICOM series, or a slide file
    with its data folder: an MRXS, a VSI); ``root`` is where their relative paths start."""

    name: str
    files: tuple[Path, ...]
    root: Path | None = None

    def relative(self, index: int) -> Path:
        """Where file ``index`` goes in a copy of the slide."""
        path = self.files[index]
        return path.relative_to(self.root) if self.root is not None else Path(path.name)


@dataclass
class Outcome:
    seed: str
    mutant: str
    status: str  # ingested, duplicate, failed, crash, hang
    reason: str = ""
    seconds: float = 0.0

    @property
    def internal(self) -> bool:
        return self.status == "failed" and bool(INTERNAL.search(self.reason))


def sample_seeds(folder: Path, size: tuple[int, int] = (256, 192), seed: int = 1) -> list[Seed]:
    """One sample slide of every format that ``lamina sample`` writes."""
    from lamina.sample import write_samples

    return [_seed(f"sample:{s.format}", s.path) for s in write_samples(folder, size=size, seed=seed)]


def _seed(name: str, path: Path) -> Seed:
    """A file, a folder of files (a DICOM series, a VSI with its folder) or a slide file with its
    data folder beside it, as ``discover`` groups them."""
    if path.is_dir():
        return Seed(name, tuple(sorted(p for p in path.rglob("*") if p.is_file())), path)
    for folder in _data_folders(path):
        if folder.is_dir():
            data = sorted(p for p in folder.rglob("*") if p.is_file())
            return Seed(name, (path, *data), path.parent)
    return Seed(name, (path,))


def _data_folders(path: Path) -> tuple[Path, ...]:
    """Where a slide file's data folder would be: ``NAME/`` for MRXS, ``_NAME_/`` for VSI."""
    return (path.with_suffix(""), path.with_name(f"_{path.stem}_"))


def _owned(path: Path) -> bool:
    """Whether ``path`` is the data folder of a slide file beside it."""
    siblings = [*path.parent.glob(f"{path.name}.*"), *path.parent.glob(f"{path.name[1:-1]}.*")]
    return path.is_dir() and any(p.is_file() and path in _data_folders(p) for p in siblings)


def real_seeds(root: Path = TESTDATA) -> list[Seed]:
    return [_seed(relative, root / relative) for relative in REAL if (root / relative).exists()]


def corpus_seeds(folder: Path) -> list[Seed]:
    """The committed corpus (``tests/fuzz/corpus/seeds``): files, folders of a DICOM series, and
    slide files with their data folders."""
    return [
        _seed(path.name, path)
        for path in sorted(folder.iterdir())
        if path.suffix != ".md" and not _owned(path)
    ]


def mutants(seed: Seed, rng: random.Random, count: int) -> Iterator[tuple[int, Mutant]]:
    """``count`` mutants of the seed: each mutates one of its files (its index is given)."""
    contents = [path.read_bytes() for path in seed.files]
    for _ in range(count):
        member = rng.randrange(len(contents))
        yield member, mutate(contents[member], rng)


def write_mutant(seed: Seed, member: int, mutant: Mutant, folder: Path) -> Candidate:
    """The mutant written under its seed's file names, as a candidate like ``discover`` makes."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written = []
    for index, path in enumerate(seed.files):
        target = folder / seed.relative(index)
        target.parent.mkdir(parents=True, exist_ok=True)
        if index == member:
            target.write_bytes(mutant.data)
        else:
            shutil.copyfile(path, target)
        written.append(target)
    if len(written) == 1:
        return Candidate(written[0], (written[0],))
    found = discover([folder])
    # a mutant whose series UID no longer matches is two candidates: ingest the first (the
    # mutated file's own group), as a folder of mixed series would be
    mutated = folder / seed.relative(member)
    return next((c for c in found if mutated in c.members), found[0])


class _Timeout(BaseException):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


def run_one(ingestor: Ingestor, candidate: Candidate, seed: str, name: str) -> Outcome:
    """Ingest one mutant; a reader that escapes the ingest or runs past the limit is recorded."""
    started = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        result = ingestor.ingest(candidate, options=IngestOptions(pixel_spacing=SizeMm.from_mpp(MPP)))
        outcome = Outcome(seed, name, result.status, result.reason or "")
    except _Timeout:
        outcome = Outcome(seed, name, "hang", f"over {TIME_LIMIT_S} s")
    except BaseException as exc:  # the campaign records what escapes
        outcome = Outcome(seed, name, "crash", f"{type(exc).__name__}: {exc}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    outcome.seconds = time.perf_counter() - started
    return outcome


def leftovers(archive: Archive) -> list[str]:
    """What an unfinished write left in the archive's blob store (``tmp/``)."""
    tmp = archive.settings.home / "blobs" / "tmp"
    return sorted(str(p) for p in tmp.iterdir()) if tmp.is_dir() else []


def campaign(
    seeds: Sequence[Seed],
    per_file: int,
    rng_seed: int,
    work: Path,
    ingestor: Ingestor,
    left: Callable[[], list[str]],
    verbose: bool = False,
) -> list[Outcome]:
    """Every seed's mutants ingested by ``ingestor``; ``left`` lists what a write left half-done."""
    outcomes = []
    for seed in seeds:
        rng = random.Random(f"{rng_seed}:{seed.name}")
        for index, (member, mutant) in enumerate(mutants(seed, rng, per_file)):
            candidate = write_mutant(seed, member, mutant, work / "mutant")
            name = f"{index}:{seed.files[member].name}:{mutant.describe()}"
            outcome = run_one(ingestor, candidate, seed.name, name)
            if "\n" in outcome.reason:
                outcome.status, outcome.reason = "multi-line", outcome.reason.replace("\n", "\\n")
            partial = left()
            if partial:
                outcome.status, outcome.reason = "half-written", f"{outcome.reason}; left {partial}"
            outcomes.append(outcome)
            if verbose:
                print(f"{outcome.status:10} {outcome.seconds:5.2f}s {seed.name} {name}: {outcome.reason}")
    return outcomes


def read_through(candidate: Candidate) -> None:
    """What ingest does with a file up to the blob store: detect, open, plan, write every
    instance (to nowhere). Raises what the readers raise, for the tests to look at."""
    options = SourceOptions(SizeMm.from_mpp(MPP), candidate.members)
    with detect_format(candidate.path)(candidate.path, options) as source:
        ctx = series_context(source, None, new_uid, "", dt.datetime.now(dt.UTC))
        for plan in plan_slide(source, new_uid):
            write_instance(plan, ctx, _Nowhere())


class _Nowhere:
    def write_parts(self, parts: list[Buffer], size: int) -> None:
        pass


def summary(outcomes: Sequence[Outcome]) -> dict[str, object]:
    statuses = Counter(o.status for o in outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    internal = [o for o in outcomes if o.internal]
    return {
        "mutants": len(outcomes),
        "statuses": dict(statuses),
        "refusals": len(failed),
        "internal": len(internal),
        "internal_share": round(len(internal) / len(outcomes), 4) if outcomes else 0.0,
        "slowest_s": round(max((o.seconds for o in outcomes), default=0.0), 2),
        "internal_reasons": Counter(_shape(o.reason) for o in internal).most_common(),
    }


def _shape(reason: str) -> str:
    """A reason with its numbers blanked, to group refusals of the same path."""
    return re.sub(r"\d+", "N", reason)[:160]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--per-file", type=int, default=72, help="mutants per seed (default 72)")
    parser.add_argument("--seed", type=int, default=9, help="random seed (default 9)")
    parser.add_argument("--no-samples", action="store_true", help="leave out the sample slides")
    parser.add_argument("--no-real", action="store_true", help="leave out ../shared/testdata")
    parser.add_argument("--corpus", type=Path, help="mutate this folder's files instead")
    parser.add_argument("--json", type=Path, help="write every outcome and the summary here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every outcome")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lamina-fuzz-") as tmp:
        work = Path(tmp)
        seeds: list[Seed] = []
        if args.corpus:
            seeds += corpus_seeds(args.corpus)
        else:
            if not args.no_samples:
                seeds += sample_seeds(work / "samples")
            if not args.no_real:
                seeds += real_seeds()
        archive = Archive.open(Settings.load(work / "archive", env={}))
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
        started = time.perf_counter()
        try:
            outcomes = campaign(
                seeds, args.per_file, args.seed, work, ingestor, lambda: leftovers(archive), args.verbose
            )
        finally:
            archive.close()
        report = summary(outcomes) | {"seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(
            json.dumps({"summary": report, "outcomes": [asdict(o) for o in outcomes]}, indent=1), "utf-8"
        )
    bad = [o for o in outcomes if o.status in ("crash", "hang", "multi-line", "half-written")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
