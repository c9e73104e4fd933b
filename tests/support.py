"""Test helpers: the real test slides in ../shared/testdata, tools used as oracles, ingest."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lamina.archive.discover import Candidate, discover
from lamina.archive.ingest import IngestOptions, Ingestor, IngestResult

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO.parent / "shared" / "testdata"
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, what: str) -> None:
    """Skip when something is missing on a user's machine; fail under CI, where it must be there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI=true requires it")
    pytest.skip(f"{what} is missing (run scripts/install, or clone shared/testdata beside the repo)")


def shared_file(relative: str) -> Path:
    path = TESTDATA / relative
    need(path.exists(), f"test slide ../shared/testdata/{relative}")
    return path


def tool(name: str) -> str:
    found = shutil.which(name)
    need(found is not None, f"the tool {name!r}")
    assert found is not None
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's Error lines for one file (warnings are not errors)."""
    run = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def ingest_path(ingestor: Ingestor, path: Path, **options: object) -> IngestResult:
    candidates = discover([path])
    assert len(candidates) == 1, candidates
    return ingestor.ingest(candidates[0], options=IngestOptions(**options))  # type: ignore[arg-type]


def single(path: Path) -> Candidate:
    return Candidate(path, (path,))


def tiled_svs_from(source: Path, dest: Path, repeat: tuple[int, int]) -> Path:
    """An Aperio-style SVS whose level 0 repeats ``source``'s level-0 JPEG tiles ``repeat`` times
    across and down (no decoding): a larger real-JPEG slide for crash and memory tests."""
    import numpy as np
    import tifffile

    with tifffile.TiffFile(source) as tiff:
        page = tiff.pages[0]
        handle = tiff.filehandle
        tiles = []
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            handle.seek(offset)
            tiles.append(handle.read(count))
        across = -(-page.imagewidth // page.tilewidth)
        down = -(-page.imagelength // page.tilelength)
        tables, tile = page.jpegtables, page.tilewidth
        description = page.description

    def ordered() -> Iterator[bytes]:
        for row in range(down * repeat[1]):
            for col in range(across * repeat[0]):
                yield tiles[(row % down) * across + (col % across)]

    width, height = across * repeat[0] * tile, down * repeat[1] * tile
    _, _, rest = description.partition("|")
    with tifffile.TiffWriter(dest) as out:
        out.write(
            ordered(),
            shape=(height, width, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            compression="jpeg",
            photometric="rgb",
            subsampling=(2, 2),
            jpegtables=tables,
            compressionargs={"outcolorspace": "RGB"},
            metadata=None,
            software=False,
            description=(
                f"Aperio Image Library v11.2.1 \r\n{width}x{height} ({tile}x{tile}) JPEG/RGB Q=30|{rest}"
            ),
        )
    return dest


@contextlib.contextmanager
def serving(app: Any) -> Iterator[int]:
    """Run an ASGI app under uvicorn in a thread on a free loopback port; yield the port."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    # uvicorn leaves signal handling alone outside the main thread
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
