"""Memory stays bounded by the width of a level, never by the size of the slide.

The slide here has a single, very wide level (108,000 px), the worst case: every lower level is
generated from it, and a reader that held rows of tiles would need hundreds of MB for one row.
(The 1.5 GB figure is measured by benchmarks/ingest.py.) On both backends: S3 holds a part of
each object in memory while it uploads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.support import shared_file, tiled_svs_from

LIMIT_MB = 500


def _peak_rss_mb(command: list[str], env: dict[str, str]) -> tuple[int, float]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    return process.wait(), peak / 1e6


def test_ingest_of_a_very_wide_single_level_slide_stays_under_500_mb(
    tmp_path: Path, backend_env: dict[str, str]
) -> None:
    slide = tiled_svs_from(shared_file("aperio/CMU-1-Small-Region.svs"), tmp_path / "wide.svs", (45, 1))
    env = {**os.environ, "LAMINA_HOME": str(tmp_path / "home"), **backend_env}
    code, peak = _peak_rss_mb([sys.executable, "-m", "lamina", "ingest", str(slide)], env)
    assert code == 0
    assert peak < LIMIT_MB, f"peak RSS {peak:.0f} MB"
