"""The blob cache's block size: how long a pathologist waits for a viewport never seen before.

Usage::

    .venv/bin/python benchmarks/cache.py [--size-gb 0.3] [--blocks 64KiB,256KiB,1MiB,4MiB]
        [--viewports 40] [--quick] [--work DIR] [--postgres URL]

The slide of ``tiles.py`` is ingested into the scaled deployment (``_scaled.py``: PostgreSQL and
SeaweedFS on loopback). For each block size, ``lamina serve`` starts with an empty cache
(``LAMINA_BLOB_CACHE_BYTES=1GiB``, ``LAMINA_BLOB_CACHE_BLOCK_BYTES``) and a viewer's reading is
replayed: ``--viewports`` screens of 8 x 5 tiles of level 0 (1,920 x 1,200 pixels of 240-pixel
tiles) at random places, then panned one column to the right, each screen's 40 frames asked at
once on 8 connections (a browser's), one screen after the other. For each it prints the time to
the last tile of a screen (median and 95th percentile) for new places (cold), for the panned
screens (half new), and for the same places again (warm), and the bytes the cache fetched from
SeaweedFS for the new places (the blocks they touch).

A block is the unit the cache fetches: a larger one brings more of a row's neighbours with the
first tile (a level is stored row by row), a smaller one fetches less that is never shown. A
separate prefetch of the next block is not offered: the tiles of a screen are asked for at once,
so their blocks are fetched in parallel already (see ``docs/storage.md``).
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import format_table, machine
from _scaled import DEFAULT_POSTGRES, scaled_deployment
from _scaled import missing as scaled_missing
from _svs import ensure_svs
from tiles import (
    ACCEPT,
    DEFAULT_WORK,
    Frame,
    frame_urls,
    free_port,
    ingest,
    lamina_frames,
    start_lamina,
    stop,
)

ACROSS, DOWN, CONNECTIONS = 8, 5, 8
UNITS = {"KiB": 1 << 10, "MiB": 1 << 20}


def parse_size(text: str) -> int:
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


class Viewer:
    """Asks for a screen's frames at once on ``CONNECTIONS`` keep-alive connections."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.pool = ThreadPoolExecutor(CONNECTIONS)
        self.connections: dict[int, http.client.HTTPConnection] = {}

    def _get(self, url: str) -> int:
        import threading

        key = threading.get_ident()
        conn = self.connections.get(key)
        if conn is None:
            conn = self.connections[key] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", url, headers={"Accept": ACCEPT})
        answer = conn.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{url}: HTTP {answer.status}")
        return len(body)

    def screen(self, urls: Sequence[str]) -> float:
        started = time.perf_counter()
        list(self.pool.map(self._get, urls))
        return time.perf_counter() - started

    def close(self) -> None:
        self.pool.shutdown()
        for conn in self.connections.values():
            conn.close()


def screens(level: list[Frame], across: int, places: int, seed: int) -> list[list[int]]:
    """Frame indexes (0-based, in ``level``) of random screens and of each panned by a column."""
    rows = len(level) // across
    rng = random.Random(seed)
    chosen = []
    for _ in range(places):
        x, y = rng.randrange(across - ACROSS - 1), rng.randrange(rows - DOWN)
        chosen.append([(y + j) * across + x + i for j in range(DOWN) for i in range(ACROSS)])
    return chosen


def blocks_touched(level: list[Frame], indexes: Sequence[int], block: int) -> set[int]:
    touched = set()
    for index in indexes:
        frame = level[index]
        touched.update(range(frame.offset // block, (frame.offset + frame.length - 1) // block + 1))
    return touched


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=0.3)
    parser.add_argument("--blocks", default="64KiB,256KiB,1MiB,4MiB")
    parser.add_argument("--viewports", type=int, default=40)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--quick", action="store_true", help="12 viewports, 256KiB and 1MiB blocks")
    args = parser.parse_args(argv)
    if args.quick:
        args.viewports, args.blocks = 12, "256KiB,1MiB"
    why = scaled_missing(args.postgres)
    if why is not None:
        print(f"the scaled deployment cannot run here: {why}", file=sys.stderr)
        return 2
    work = args.work / "cache"
    work.mkdir(parents=True, exist_ok=True)
    slide = ensure_svs(args.work, args.size_gb)
    rows: list[list[str]] = []
    with scaled_deployment(work, args.postgres) as deployment:
        deployment.prepare("cache")
        try:
            env = deployment.env("cache")
            home = work / "lamina"
            shutil.rmtree(home, ignore_errors=True)
            ingest(home, slide, env)
            frames = lamina_frames(home, {**os.environ, **env})
            sop = max({f.sop for f in frames}, key=lambda s: sum(1 for f in frames if f.sop == s))
            level = [f for f in frames if f.sop == sop]
            across = _across(home, env, sop)
            places = screens(level, across, args.viewports, seed=11)
            urls = frame_urls(level)
            for text in args.blocks.split(","):
                block = parse_size(text)
                extra = {"LAMINA_BLOB_CACHE_BYTES": "1GiB", "LAMINA_BLOB_CACHE_BLOCK_BYTES": str(block)}
                port = free_port()
                process = start_lamina(home, port, work / f"lamina-{text}.log", {**env, **extra})
                viewer = Viewer(port)
                try:
                    cold, panned, warm = [], [], []
                    fetched = set()
                    for place in places:
                        cold.append(viewer.screen([urls[i] for i in place]))
                        fetched |= blocks_touched(level, place, block)
                        panned.append(viewer.screen([urls[i + 1] for i in place]))
                    for place in places:
                        warm.append(viewer.screen([urls[i] for i in place]))
                finally:
                    viewer.close()
                    stop(process)
                rows.append(
                    [
                        text,
                        *(_ms(times) for times in (cold, panned, warm)),
                        f"{len(fetched) * block / 1e6:,.1f}",
                    ]
                )
                print(f"block {text}: cold {rows[-1][1]}", file=sys.stderr, flush=True)
        finally:
            deployment.cleanup("cache")
    print(f"{args.viewports} screens of {ACROSS} x {DOWN} tiles, {CONNECTIONS} connections")
    print(f"machine: {machine()}")
    headers = ["block", "new place ms p50/p95", "panned ms p50/p95", "seen again ms p50/p95", "MB fetched"]
    print(format_table(headers, rows))
    return 0


def _ms(times: Sequence[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{statistics.median(times) * 1000:.1f} / {p95 * 1000:.1f}"


def _across(home: Path, env: dict[str, str], sop: str) -> int:
    """Tiles per row of the level."""
    from lamina.archive.archive import Archive
    from lamina.config import Settings

    archive = Archive.open(Settings.load(home, env={**os.environ, **env}))
    try:
        row = archive.catalog.instance(sop)
        assert row is not None
        return -(-row.total_pixel_matrix_columns // row.columns)
    finally:
        archive.close()


if __name__ == "__main__":
    raise SystemExit(main())
