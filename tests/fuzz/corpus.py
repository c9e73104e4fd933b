"""The committed fuzzing corpus: small sample slides of every format lamina reads.

``tests/fuzz/corpus/seeds/`` holds one slide per reader, written by :mod:`lamina.sample` at
300x200 pixels with small label and macro photos (about 270 kB in all, several levels each), and
a Deflate tiled TIFF for the decode-and-re-encode path. They are generated, never copied from
../shared/testdata. ``tests/fuzz/corpus/regressions/`` holds mutants that once made a reader
fail with a Python exception, each listed in ``regressions.json`` with the words its refusal
must contain. Regenerate the seeds with::

    .venv/bin/python -m tests.fuzz.corpus
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
SEEDS = CORPUS / "seeds"
REGRESSIONS = CORPUS / "regressions"
SIZE = (300, 200)


def write_seeds(folder: Path = SEEDS) -> list[Path]:
    """Write the seeds into ``folder`` (replaced) and return them."""
    from lamina.sample import write_samples
    from lamina.sample.content import make_slide
    from lamina.sample.identity import make_identity
    from lamina.sample.tiff import write_tiled_tiff

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written = write_samples(folder, size=SIZE, seed=1, label_size=(96, 115), overview_size=(320, 108))
    (folder / "manifest.csv").unlink()
    slide = make_slide(make_identity(1, 0), SIZE, 1)
    deflate = write_tiled_tiff(folder / "tiled_tiff_deflate.tiff", slide, compression="deflate")
    return [sample.path for sample in written] + [deflate]


if __name__ == "__main__":
    for path in write_seeds():
        print(path.relative_to(CORPUS))
    sys.exit(0)
