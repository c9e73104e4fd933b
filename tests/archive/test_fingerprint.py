"""The source fingerprint: the same BLAKE3 whatever reads the conversion offered, in any order."""

from __future__ import annotations

import os
import random
from pathlib import Path

import blake3
import pytest

from lamina.archive.fingerprint import SourceFingerprint, full_digest, source_head


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "slide.bin"
    path.write_bytes(os.urandom(3 * (1 << 20) + 12345))
    return path


def _expected(path: Path) -> str:
    return blake3.blake3(path.read_bytes()).hexdigest()


def test_full_digest_is_the_files_blake3(source: Path) -> None:
    assert full_digest([source]) == _expected(source)


@pytest.mark.parametrize("pattern", ["in order", "gaps", "overlaps", "shuffled", "none", "past the end"])
def test_offered_reads_give_the_same_digest(source: Path, pattern: str) -> None:
    data = source.read_bytes()
    rng = random.Random(pattern)
    chunks = [(offset, data[offset : offset + 65536]) for offset in range(4096, len(data), 65536)]
    if pattern == "gaps":
        chunks = chunks[::3]
    elif pattern == "overlaps":
        chunks = [(offset - 100, data[offset - 100 : offset + 70000]) for offset, _ in chunks]
    elif pattern == "shuffled":
        rng.shuffle(chunks)
    elif pattern == "none":
        chunks = []
    elif pattern == "past the end":
        chunks.append((len(data) + 10, b"not in the file"))
    fingerprint = SourceFingerprint([source])
    for offset, chunk in chunks:
        fingerprint.offer(source, offset, chunk)
    assert fingerprint.finish() == _expected(source)


def test_several_files_combine_in_a_stable_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    a.write_bytes(b"first" * 1000)
    b.write_bytes(b"second" * 1000)
    fingerprint = SourceFingerprint([b, a])
    assert fingerprint.finish() == full_digest([a, b])
    assert source_head([a, b]) == source_head([b, a])


def test_head_differs_when_the_size_differs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 100)
    b.write_bytes(b"x" * 101)
    assert source_head([a]) != source_head([b])
