"""Fuzzing every reader with damaged copies of the corpus (``tests/fuzz/corpus``).

Every mutant must be read through, or refused with a :class:`SourceError` whose reason is one
line in lamina's words: it names no Python exception (``ValueError: ...``), which would tell the
user nothing. The default suite runs a fixed sample of a few dozen mutants and the recorded
regressions; ``scripts/test --slow`` runs the hypothesis campaign over every reader, and the
campaign through ingest on both backends (nothing half-written, nothing escaping).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.errors import SourceError
from lamina.formats.registry import available_formats
from tests.fuzz.campaign import (
    INTERNAL,
    TIME_LIMIT_S,
    Seed,
    campaign,
    corpus_seeds,
    mutants,
    read_through,
    summary,
    write_mutant,
)
from tests.fuzz.corpus import CORPUS, SEEDS
from tests.fuzz.mutate import KINDS, Mutant, apply
from tests.support import partial_writes

CORPUS_SEEDS = corpus_seeds(SEEDS)
QUICK_PER_SEED = 5
#: Examples of the slow hypothesis campaign (LAMINA_FUZZ_EXAMPLES for a longer run).
EXAMPLES = int(os.environ.get("LAMINA_FUZZ_EXAMPLES", "1000"))


def _outcome(seed: Seed, member: int, mutant: Mutant, folder: Path) -> str | None:
    """None when the mutant is read through; the reason when it is refused in lamina's words.
    Fails the test on anything else."""
    candidate = write_mutant(seed, member, mutant, folder)
    where = f"{seed.name}, {seed.files[member].name}, {mutant.describe()} {mutant.edits[:4]}"
    previous = signal.signal(signal.SIGALRM, _no_answer)
    signal.alarm(TIME_LIMIT_S)
    try:
        read_through(candidate)
    except SourceError as exc:
        assert "\n" not in str(exc), f"{where}: a reason of several lines: {exc!r}"
        assert not INTERNAL.search(exc.reason), f"{where}: the reason names an internal error: {exc.reason}"
        return exc.reason
    except _NoAnswer:
        pytest.fail(f"{where}: no answer after {TIME_LIMIT_S} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return None


class _NoAnswer(BaseException):
    pass


def _no_answer(signum: int, frame: object) -> None:
    raise _NoAnswer


#: Readers lamina has no writer for, so no generated seed: the real file is a seed of the slow
#: campaign (``REAL``), or none exists at all.
WITHOUT_GENERATED_SEED = {
    "olympus_vsi": "olympus-vsi",
    "perkinelmer_qptiff": "perkinelmer-qptiff/small_vectra.qptiff",
    "philips_isyntax": None,  # no valid iSyntax can be written here, none small is public
}


def test_the_corpus_has_a_seed_for_every_reader() -> None:
    # Arrange: which reader claims each seed
    from lamina.formats.registry import detect_format
    from tests.fuzz.campaign import REAL

    # Act
    claimed = {detect_format(seed.files[0]).format_name for seed in CORPUS_SEEDS}
    # Assert
    readers = {reader.format_name for reader in available_formats()}
    assert claimed == readers - set(WITHOUT_GENERATED_SEED)
    assert {real for real in WITHOUT_GENERATED_SEED.values() if real} <= set(REAL)


def test_a_fixed_sample_of_mutants_is_refused_in_lamina_words(tmp_path: Path) -> None:
    # Arrange: the same mutants on every run
    started = time.perf_counter()
    refused = read = 0
    # Act / Assert (each mutant)
    for seed in CORPUS_SEEDS:
        rng = random.Random(f"quick:{seed.name}")
        for member, mutant in mutants(seed, rng, QUICK_PER_SEED):
            if _outcome(seed, member, mutant, tmp_path / "mutant") is None:
                read += 1
            else:
                refused += 1
    # Assert: the sample is worth running, and quick
    assert refused + read == QUICK_PER_SEED * len(CORPUS_SEEDS)
    assert refused >= len(CORPUS_SEEDS), "too few mutants refused to test the reasons"
    assert time.perf_counter() - started < 60


REGRESSIONS = json.loads((CORPUS / "regressions.json").read_text("utf-8"))


@pytest.mark.parametrize("case", REGRESSIONS, ids=lambda case: f"{case['seed']}-{case['mutation']}")
def test_mutants_that_escaped_once_are_refused_with_their_reason(
    case: dict[str, object], tmp_path: Path
) -> None:
    # Arrange: the recorded edits, made again on the committed seed
    seed = next(seed for seed in CORPUS_SEEDS if seed.name == case["seed"])
    member = next(i for i, path in enumerate(seed.files) if path.name == case["member"])
    edits = tuple(
        (int(at), int(removed), bytes.fromhex(str(inserted))) for at, removed, inserted in case["edits"]
    )  # type: ignore[attr-defined]
    data = apply(seed.files[member].read_bytes(), edits)
    mutant = Mutant("recorded", edits[0][0], "", edits, data)
    # Act
    reason = _outcome(seed, member, mutant, tmp_path / "mutant")
    # Assert: refused, where and why in lamina's words (before: an exception's name)
    assert reason is not None, f"read through; it was refused before with: {case['before']}"
    assert str(case["words"]) in reason


@st.composite
def _mutation(draw: st.DrawFn) -> tuple[Seed, int, Mutant]:
    """A seed of the corpus and one mutation of one of its files, shrinkable by hypothesis."""
    seed = draw(st.sampled_from(CORPUS_SEEDS))
    member = draw(st.integers(0, len(seed.files) - 1))
    data = seed.files[member].read_bytes()
    size = len(data)
    kind = draw(st.sampled_from(KINDS))
    # the structure (headers, directories) is near the start and the end of a slide file
    at = draw(
        st.one_of(
            st.integers(0, min(size, 16 << 10) - 1),
            st.integers(max(0, size - (16 << 10)), size - 1),
            st.integers(0, size - 1),
        )
    )
    if kind == "flip":
        edits = ((at, 1, bytes([data[at] ^ draw(st.integers(1, 255))])),)
    elif kind == "overwrite":
        value = draw(st.binary(min_size=1, max_size=8))[: size - at]
        edits = ((at, len(value), value),)
    elif kind == "delete":
        edits = ((at, draw(st.integers(1, 256)), b""),)
    else:
        edits = ((at, size - at, b""),)
    return seed, member, Mutant(kind, at, "", edits, apply(data, edits))


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=_mutation())
def test_hypothesis_campaign_over_every_reader(case: tuple[Seed, int, Mutant], tmp_path: Path) -> None:
    seed, member, mutant = case
    _outcome(seed, member, mutant, tmp_path / "mutant")


@pytest.mark.slow
def test_campaign_through_ingest_leaves_nothing_half_written(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Act: 25 mutants of each seed, ingested into the test's archive
    outcomes = campaign(CORPUS_SEEDS, 25, 9, tmp_path, ingestor, lambda: partial_writes(archive.store))
    report = summary(outcomes)
    # Assert
    statuses = report["statuses"]
    assert isinstance(statuses, dict)
    assert set(statuses) <= {"ingested", "duplicate", "failed"}, report
    assert report["internal"] == 0, report["internal_reasons"]
