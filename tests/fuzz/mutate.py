"""Byte mutations of slide files, as a damaged disk, a cut transfer or a buggy writer makes them.

Four kinds, as in the campaign of issue 9: bytes flipped, bytes overwritten (with values that
stress parsers: 0, all ones, lengths and offsets just past the end), a run of bytes deleted, and
the file truncated. A slide file is mostly pixel data that a reader copies without looking at
it, so offsets are drawn near the structure more often than not: the first and last 16 KiB of
the file (TIFF headers and directories, the DICOM header, the Pixel Data items' headers).
Everything is drawn from the ``random.Random`` given, so a seed names a mutant.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

KINDS = ("flip", "overwrite", "delete", "truncate")
_EDGE = 16 << 10


#: One edit of a file: at ``offset``, ``removed`` bytes replaced by ``inserted``.
Edit = tuple[int, int, bytes]


@dataclass(frozen=True)
class Mutant:
    """A mutated copy of a file's bytes, how it was made (for the report) and its edits (to
    record it in the corpus as a few bytes, and make it again from its seed)."""

    kind: str
    offset: int
    detail: str
    edits: tuple[Edit, ...]
    data: bytes

    def describe(self) -> str:
        return f"{self.kind}@{self.offset}{self.detail}"


def apply(data: bytes, edits: tuple[Edit, ...]) -> bytes:
    """``data`` with ``edits`` made, in order."""
    out = bytearray(data)
    for offset, removed, inserted in edits:
        out[offset : offset + removed] = inserted
    return bytes(out)


def _offset(rng: random.Random, size: int) -> int:
    """Near the start (1/2), near the end (1/4) or anywhere (1/4)."""
    if size <= 1:
        return 0
    draw = rng.random()
    if draw < 0.5:
        return rng.randrange(min(size, _EDGE))
    if draw < 0.75:
        return rng.randrange(max(0, size - _EDGE), size)
    return rng.randrange(size)


def _interesting(rng: random.Random, size: int) -> bytes:
    """Bytes that stress a parser: extremes, and lengths or offsets at or past the file's end."""
    order = rng.choice("<>")
    choices = [
        bytes([0]),
        bytes([0xFF]),
        bytes([0x7F]),
        bytes([0x80]),
        struct.pack(order + "H", rng.choice([0, 1, 0xFFFF, 0x7FFF])),
        struct.pack(order + "I", rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, size, size + 1, size // 2])),
        bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))),
    ]
    return rng.choice(choices)


def mutate(data: bytes, rng: random.Random, kind: str | None = None) -> Mutant:
    """One mutant of ``data`` (``kind`` drawn from :data:`KINDS` unless given)."""
    kind = kind or rng.choice(KINDS)
    size = len(data)
    at = _offset(rng, size)
    edits: list[Edit] = []
    if kind == "flip":
        count = rng.randint(1, 4)
        out = bytearray(data)
        for i in range(count):
            where = at if i == 0 else _offset(rng, size)
            if where < size:
                out[where] ^= rng.randrange(1, 256)
                edits.append((where, 1, bytes([out[where]])))
        detail = f"x{count}"
    elif kind == "overwrite":
        value = _interesting(rng, size)[: max(0, size - at)]
        edits.append((at, len(value), value))
        detail = f"={value.hex()}"
    elif kind == "delete":
        length = rng.choice([1, 2, 4, 8, rng.randint(1, 256)])
        edits.append((at, length, b""))
        detail = f"-{length}"
    elif kind == "truncate":
        edits.append((at, size - at, b""))
        detail = ""
    else:
        raise ValueError(f"unknown mutation {kind!r}; one of {', '.join(KINDS)}")
    return Mutant(kind, at, detail, tuple(edits), apply(data, tuple(edits)))
