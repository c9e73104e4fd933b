"""Tile serving under load: frame latency while a slide is stored by STOW-RS and verified.

Usage::

    .venv/bin/python benchmarks/serving.py [--size-gb 0.3] [--seconds 10] [--connections 4]
        [--deployments embedded,scaled] [--work DIR] [--postgres URL] [--json] [--quick]

A pathologist reads slide A while the lab sends slide B and the fixity check runs; both sign in
as on a real node (``_signin.py``: the benchmarks' lab, a pathologist whose token ``wrk`` sends
with every frame request, a technician whose token sends the STOW-RS). For each
deployment (``embedded``: SQLite and a folder; ``scaled``: PostgreSQL and SeaweedFS, with the
blob cache in memory as ``docs/storage.md`` recommends, ``LAMINA_BLOB_CACHE_BYTES=1GiB``),
``lamina serve`` serves an archive holding slide A (the synthetic SVS of ``tiles.py``, ingested)
and ``wrk`` asks for random frames of A at ``--connections`` (a viewer) with the stored bytes
(``transfer-syntax=*``):

- **alone**: for ``--seconds``, after as long again unmeasured (the instance index and the
  cache warm);
- **under load**: from the moment slide B (the same SVS ingested into a scratch archive and
  exported: other UIDs, other bytes, so that it is really stored) starts to be sent by STOW-RS
  (one ``multipart/related`` request of its ~0.3 GB, streamed from the files) and ``lamina
  verify`` (its defaults: 2 workers, no rate limit) starts on the same archive, until both have
  ended (the STOW-RS answer has come and verify has exited). ``wrk`` is stopped (SIGINT) then,
  so that the whole window is load.

It prints p50 and p99 of the frames alone and under load, the ratio, the STOW-RS and verify
times and outcomes, with the goals (p99 under load <= 4x alone and <= 50 ms; slide B stored
within the window: 200, not 202).
``--quick`` (development): 3 s alone, the embedded deployment only. ``--worker-process`` runs
the scaled deployment's jobs (the STOW-RS ingest) in a ``lamina worker`` process beside the server
(``LAMINA_WORKERS=0``), as a deployment that keeps long work off the API hosts would; it is
measured as a third deployment, ``scaled-worker``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from _common import format_table, machine
from _scaled import DEFAULT_POSTGRES, ScaledDeployment, scaled_deployment
from _scaled import missing as scaled_missing
from _signin import PATHOLOGIST, TECHNICIAN, bearer, sign_in
from _svs import ensure_svs
from tiles import (
    DEFAULT_WORK,
    VENV_BIN,
    Load,
    export,
    frame_urls,
    frames_lua,
    free_port,
    ingest,
    lamina_frames,
    parse_wrk,
    run_wrk,
    start_lamina,
    stop,
)

SAMPLE_FRAMES = 5000
BOUNDARY = "lamina-bench-stow-boundary-7f3a"


@dataclass
class Outcome:
    deployment: str
    alone: Load
    loaded: Load
    stow_s: float
    stow_status: int
    verify_s: float
    verify_status: int


def stow_body(files: Sequence[Path]) -> Iterator[bytes]:
    """A STOW-RS body of ``files``, read in 1 MiB pieces (never whole in memory)."""
    for path in files:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with path.open("rb") as source:
            while piece := source.read(1 << 20):
                yield piece
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def stow(base: str, files: Sequence[Path], token: str) -> tuple[int, float]:
    """POST ``files`` to ``/dicomweb/studies`` as the holder of ``token``: (HTTP status, seconds)."""
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept": "application/dicom+json",
        **bearer(token),
    }
    started = time.perf_counter()
    with httpx.Client(timeout=1200) as client:
        answer = client.post(f"{base}/dicomweb/studies", content=stow_body(files), headers=headers)
    return answer.status_code, time.perf_counter() - started


def verify(env: dict[str, str], log: Path) -> tuple[int, float]:
    """``lamina verify`` on the archive: (exit status, seconds)."""
    started = time.perf_counter()
    with log.open("ab") as out:
        done = subprocess.run(
            [str(VENV_BIN / "lamina"), "verify"], env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    return done.returncode, time.perf_counter() - started


def wrk_until(
    base: str,
    urls: Sequence[str],
    connections: int,
    work: Path,
    done: threading.Event,
    name: str,
    token: str,
) -> Load:
    """``wrk`` until ``done`` is set (then SIGINT: it prints its report and exits)."""
    listing = work / f"urls-{name}.txt"
    listing.write_text("\n".join(urls) + "\n")
    script = work / f"load-{name}.lua"
    script.touch(mode=0o600)  # it holds the token
    script.write_text(frames_lua(listing, token))
    command = ["wrk", "-t1", f"-c{connections}", "-d3600s", "--timeout", "30s", "--latency", "-s"]
    process = subprocess.Popen(
        [*command, str(script), base], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    done.wait()
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    return parse_wrk(name, connections, out)


def measure(
    name: str,
    home: Path,
    env: dict[str, str],
    urls: Sequence[str],
    stow_files: Sequence[Path],
    args: argparse.Namespace,
    work: Path,
) -> Outcome:
    # a pathologist reads slide A; a technician of the same lab sends slide B
    reader = sign_in(home, env, PATHOLOGIST, ["pathologist"])
    sender = sign_in(home, env, TECHNICIAN, ["technician"])
    port = free_port()
    full_env = {**os.environ, "LAMINA_HOME": str(home), **env}
    process = start_lamina(home, port, work / f"lamina-{name}.log", env)
    base = f"http://127.0.0.1:{port}"
    try:
        run_wrk(f"{name}-warm", base, urls, args.connections, args.seconds, work, token=reader)
        alone = run_wrk(f"{name}-alone", base, urls, args.connections, args.seconds, work, token=reader)
        print(f"{name} alone: p99 {alone.p99_ms:.2f} ms", file=sys.stderr, flush=True)
        done = threading.Event()
        answer: dict[str, tuple[int, float]] = {}

        def send() -> None:
            answer["stow"] = stow(base, stow_files, sender)

        def check() -> None:
            answer["verify"] = verify(full_env, work / f"verify-{name}.log")

        loads = [threading.Thread(target=work_, daemon=True) for work_ in (send, check)]

        def watch() -> None:
            for thread in loads:
                thread.join()
            done.set()

        for thread in loads:
            thread.start()
        threading.Thread(target=watch, daemon=True).start()
        loaded = wrk_until(base, urls, args.connections, work, done, f"{name}-loaded", reader)
        print(f"{name} under load: p99 {loaded.p99_ms:.2f} ms", file=sys.stderr, flush=True)
    finally:
        stop(process)
    stow_status, stow_s = answer.get("stow", (0, 0.0))
    verify_status, verify_s = answer.get("verify", (-1, 0.0))
    return Outcome(name, alone, loaded, stow_s, stow_status, verify_s, verify_status)


def second_slide(work: Path, slide: Path) -> list[Path]:
    """Slide B: ``slide`` ingested into a scratch archive (new UIDs) and exported, kept."""
    source = work / "slide-b-archive"
    ingest(source, slide)
    return export(source, work / "slide-b")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=0.3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--deployments", default="embedded,scaled")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--cache", default="1GiB", help="LAMINA_BLOB_CACHE_BYTES on the scaled deployment")
    parser.add_argument("--quick", action="store_true", help="3 s alone, embedded only")
    parser.add_argument("--worker-process", action="store_true", help="also scaled, jobs in lamina worker")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.deployments = 3, "embedded"
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    work = args.work / "serving"
    work.mkdir(parents=True, exist_ok=True)
    slide = ensure_svs(args.work, args.size_gb)
    stow_files = second_slide(work, slide)
    outcomes: list[Outcome] = []
    notes: list[str] = []
    deployments = args.deployments.split(",")
    if "embedded" in deployments:
        template = work / "slide-a-archive"
        ingest(template, slide)
        home = work / "embedded"
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(template, home)  # a fresh archive holding slide A, without B
        urls = _sample(home, {})
        outcomes.append(measure("embedded", home, {}, urls, stow_files, args, work))
    if "scaled" in deployments:
        why = scaled_missing(args.postgres)
        if why is not None:
            notes.append(f"scaled deployment not run: {why}")
        else:
            with scaled_deployment(work, args.postgres) as deployment:
                outcomes.append(scaled(deployment, slide, stow_files, args, work))
                if args.worker_process:
                    outcomes.append(scaled(deployment, slide, stow_files, args, work, worker=True))
    report(outcomes, notes)
    if args.json:
        print(json.dumps({"machine": machine(), "outcomes": [asdict(o) for o in outcomes]}, indent=2))
    return 0


def scaled(
    deployment: ScaledDeployment,
    slide: Path,
    stow_files: Sequence[Path],
    args: argparse.Namespace,
    work: Path,
    worker: bool = False,
) -> Outcome:
    deployment.prepare("serving")
    process: subprocess.Popen[bytes] | None = None
    try:
        env = {**deployment.env("serving"), "LAMINA_BLOB_CACHE_BYTES": args.cache}
        home = work / "scaled"
        shutil.rmtree(home, ignore_errors=True)
        ingest(home, slide, env)
        urls = _sample(home, env)
        if not worker:
            return measure("scaled", home, env, urls, stow_files, args, work)
        env["LAMINA_WORKERS"] = "0"
        process = subprocess.Popen(
            [str(VENV_BIN / "lamina"), "worker"],
            env={**os.environ, "LAMINA_HOME": str(home), **env},
            stdout=(work / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        return measure("scaled-worker", home, env, urls, stow_files, args, work)
    finally:
        if process is not None:
            stop(process)
        with contextlib.suppress(Exception):
            deployment.cleanup("serving")


def _sample(home: Path, env: dict[str, str]) -> list[str]:
    frames = lamina_frames(home, {**os.environ, **env} if env else None)
    return frame_urls(random.Random(7).sample(frames, min(SAMPLE_FRAMES, len(frames))))


def report(outcomes: Sequence[Outcome], notes: Sequence[str]) -> None:
    print(f"machine: {machine()}")
    rows = []
    goals = []
    for o in outcomes:
        ratio = o.loaded.p99_ms / max(o.alone.p99_ms, 0.001)
        rows.append(
            [
                o.deployment,
                f"{o.alone.requests_per_s:,.0f}",
                f"{o.alone.p50_ms:.2f}",
                f"{o.alone.p99_ms:.2f}",
                f"{o.loaded.requests_per_s:,.0f}",
                f"{o.loaded.p50_ms:.2f}",
                f"{o.loaded.p99_ms:.2f}",
                f"{ratio:.2f}",
                f"{o.stow_s:.1f} ({o.stow_status})",
                f"{o.verify_s:.1f} (exit {o.verify_status})",
                str(o.alone.errors + o.loaded.errors),
            ]
        )
        name, p99, stowed, verified = o.deployment, o.loaded.p99_ms, o.stow_status, o.verify_status
        goals += [
            [f"{name}: p99 under load / alone", "<= 4x", f"{ratio:.2f}x", _verdict(ratio <= 4)],
            [f"{name}: p99 under load", "<= 50 ms", f"{p99:.2f} ms", _verdict(p99 <= 50)],
            [f"{name}: slide B stored in the window", "200", str(stowed), _verdict(stowed == 200)],
            [f"{name}: verify finds all whole", "exit 0", str(verified), _verdict(verified == 0)],
        ]
    headers = ["deployment", "alone/s", "p50 ms", "p99 ms", "loaded/s", "p50 ms", "p99 ms", "p99 ratio"]
    print(format_table([*headers, "STOW-RS s (status)", "verify s (exit)", "errors"], rows))
    print()
    print(format_table(["goal", "target", "measured", "result"], goals))
    for note in notes:
        print(f"- {note}")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


if __name__ == "__main__":
    raise SystemExit(main())
