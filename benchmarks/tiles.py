"""Tile-serving benchmark: lamina's DICOMweb frames against Orthanc and a bare ASGI floor, on the
embedded deployment and on PostgreSQL + SeaweedFS.

Usage::

    .venv/bin/python benchmarks/tiles.py [--size-gb 0.3] [--seconds 10] [--connections 1,4,16]
        [--work DIR] [--json] [--only PEER,...] [--metadata-gb 1.5] [--quick]

One Aperio-like slide (real JPEG tiles, all levels; see ``_svs.py``) is ingested by lamina and
its DICOM export is uploaded to Orthanc (Debian ``orthanc`` with ``orthanc-dicomweb``), started
on loopback by this script. The same load generator (``wrk`` with a Lua script cycling over a
fixed list of random frames of every level, ``transfer-syntax=*``) then drives, at each
connection count, for a fixed time:

- ``lamina``: ``GET /dicomweb/studies/../frames/N`` (``lamina serve``);
- ``orthanc-dicomweb``: the same DICOMweb route of Orthanc's plug-in;
- ``orthanc-raw``: Orthanc's own REST route ``/instances/{id}/frames/{N-1}/raw``;
- ``bare-asgi``: a few lines of uvicorn answering each request with one ``pread`` of the frame:
  the floor of what Python serves here;
- on the scaled deployment (``_scaled.py``: ``weed mini`` and a PostgreSQL database of this run;
  the slide is ingested into it, and the same sample of frames, by position, is read):
  ``seaweedfs-ranges``, ``wrk`` straight against SeaweedFS's S3 port, one unsigned ranged GET
  per frame on the same objects (the object server's own rate, the ceiling of goal 1), and
  ``seaweedfs-ranges-signed``, the same with presigned URLs (SigV4 checked by the server at
  every request, as for lamina's own GETs);
  ``lamina-pg-s3``, ``lamina serve`` on that catalog and bucket; ``lamina-pg-s3-cache``, the same
  with the read-through block cache in memory (``LAMINA_BLOB_CACHE_BYTES``, ``--cache``),
  measured after one unmeasured pass over the frames (its figures appear as
  ``lamina-pg-s3-cache-first``): a slide being read.

It prints frames/s, p50/p99 latency and the server's peak RSS for each, the ratios, and the time
to fetch the metadata of a level of about 100,000 frames (``--metadata-gb``).

``--quick`` (for development: 3 s per measure, 4 and 16 connections, no Orthanc, no metadata
measure) checks that every peer runs and gives rough figures.

Orthanc before 1.13 keeps parsed DICOM files in a cache hard-coded to 128 MB: when an instance is
larger (level 0 of a 0.3 GB slide is), every frame request parses the whole file again. Run with
``--size-gb 0.1`` for a slide whose every level fits in that cache, Orthanc's best case.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from _common import format_table, machine, median
from _scaled import BUCKET, DEFAULT_POSTGRES, ScaledDeployment, scaled_deployment
from _scaled import missing as scaled_missing
from _signin import PATHOLOGIST, bearer, sign_in, start_without_token
from _svs import ensure_svs

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
DEFAULT_WORK = Path("/tmp/lamina-bench")
ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
SAMPLE_FRAMES = 5000
RSS_GOAL = 300_000_000
SCALED = ("seaweedfs-ranges", "seaweedfs-ranges-signed", "lamina-pg-s3", "lamina-pg-s3-cache")
ALL_PEERS = ("lamina", "orthanc-dicomweb", "orthanc-raw", "bare-asgi", *SCALED)


@dataclass(frozen=True)
class Frame:
    study: str
    series: str
    sop: str
    number: int  # 1-based
    path: str
    offset: int
    length: int
    sha256: str = ""


@dataclass
class Load:
    peer: str
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: CPU time per request (user + system, milliseconds) of the server measured and, on the
    #: scaled deployment, of SeaweedFS behind it: what each adds, whatever the cores
    cpu_ms: float = 0.0
    store_cpu_ms: float = 0.0


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its descendants so far (0 without one)."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


class RssSampler(threading.Thread):
    """Peak RSS of a process tree, sampled every 20 ms until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            try:
                processes = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in processes))
            except psutil.NoSuchProcess:
                return


def ingest(home: Path, slide: Path, extra_env: dict[str, str] | None = None) -> None:
    """Ingest ``slide`` into the archive at ``home`` (once: an embedded archive is kept)."""
    env = {**os.environ, "LAMINA_HOME": str(home), **(extra_env or {})}
    if extra_env or not (home / "catalog.sqlite").exists():
        subprocess.run(
            [str(VENV_BIN / "lamina"), "ingest", str(slide)], env=env, check=True, stdout=subprocess.DEVNULL
        )


def lamina_frames(home: Path, env: dict[str, str] | None = None) -> list[Frame]:
    sys.path.insert(0, str(REPO / "src"))
    import numpy as np

    from lamina.archive.archive import Archive
    from lamina.config import Settings

    archive = Archive.open(Settings.load(home, env=env or {}))
    frames = []
    for slide in archive.catalog.slides():
        for row in archive.catalog.instances(slide.id):
            if row.level is None:
                continue
            path = archive.store.local_path(row.blob_sha256) or ""
            offsets = np.frombuffer(row.frame_offsets, "<u8")
            lengths = np.frombuffer(row.frame_lengths, "<u4")
            for index in range(row.number_of_frames):
                frames.append(
                    Frame(
                        row.study_instance_uid,
                        row.series_instance_uid,
                        row.sop_instance_uid,
                        index + 1,
                        path,
                        int(offsets[index]),
                        int(lengths[index]),
                        row.blob_sha256,
                    )
                )
    archive.close()
    return frames


def export(home: Path, dest: Path) -> list[Path]:
    if not dest.exists():
        env = {**os.environ, "LAMINA_HOME": str(home)}
        subprocess.run(
            [str(VENV_BIN / "lamina"), "export", str(dest)], env=env, check=True, stdout=subprocess.DEVNULL
        )
    return sorted(dest.rglob("*.dcm"))


# --- servers ------------------------------------------------------------------------------------


def start_lamina(
    home: Path, port: int, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LAMINA_HOME": str(home), **(extra_env or {})}
    process = subprocess.Popen(
        [str(VENV_BIN / "lamina"), "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return process


BARE_APP = textwrap.dedent("""
    import json, os, sys
    import uvicorn
    frames = json.load(open(sys.argv[1]))
    fds = {}
    spans = []
    for path, offset, length in frames:
        if path not in fds:
            fds[path] = os.open(path, os.O_RDONLY)
        spans.append((fds[path], offset, length))

    async def app(scope, receive, send):
        index = int(scope["path"].rsplit("/", 1)[1])
        fd, offset, length = spans[index]
        body = os.pread(fd, length, offset)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
""")


def start_bare(work: Path, frames: Sequence[Frame], port: int, log: Path) -> subprocess.Popen[bytes]:
    script, table = work / "bare_asgi.py", work / "bare-frames.json"
    script.write_text(BARE_APP)
    table.write_text(json.dumps([[f.path, f.offset, f.length] for f in frames]))
    process = subprocess.Popen(
        [str(VENV_BIN / "python"), str(script), str(table), str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{port}/f/0")
    return process


def start_orthanc(work: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    storage = work / "orthanc-db"
    config = {
        "Name": "bench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": port,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpThreadsCount": 50,
        "StorageCompression": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    path = work / "orthanc.json"
    path.write_text(json.dumps(config))
    process = subprocess.Popen([str(ORTHANC), str(path)], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/system")
    return process


def upload_to_orthanc(port: int, files: Sequence[Path]) -> dict[str, str]:
    """SOP Instance UID -> Orthanc instance id."""
    ids = {}
    with httpx.Client(timeout=600) as client:
        for file in files:
            answer = client.post(f"http://127.0.0.1:{port}/instances", content=file.read_bytes())
            answer.raise_for_status()
            orthanc_id = answer.json()["ID"]
            tags = client.get(f"http://127.0.0.1:{port}/instances/{orthanc_id}/simplified-tags").json()
            ids[tags["SOPInstanceUID"]] = orthanc_id
    return ids


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- load ---------------------------------------------------------------------------------------


LUA = textwrap.dedent("""
    local urls = {}
    for line in io.lines("%s") do urls[#urls + 1] = line end
    local headers = {["Accept"] = '%s'%s}
    local i = 0
    request = function()
      i = i + 1
      return wrk.format("GET", urls[(i %% #urls) + 1], headers)
    end
""")


def frames_lua(listing: Path, token: str | None) -> str:
    """The Lua script of ``wrk`` reading the frame paths of ``listing``, with ``token`` sent as
    ``Authorization: Bearer ...`` on every request (no header without one)."""
    extra = f", [\"Authorization\"] = 'Bearer {token}'" if token else ""
    return LUA % (listing, ACCEPT, extra)


def _milliseconds(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


#: one ranged GET per line ``PATH RANGE`` of the listing, unsigned (the bucket is readable so)
LUA_RANGES = textwrap.dedent("""
    local paths, ranges = {}, {}
    for line in io.lines("%s") do
      local path, range = line:match("^(%%S+) (%%S+)$")
      paths[#paths + 1] = path
      ranges[#ranges + 1] = range
    end
    local i = 0
    request = function()
      i = i + 1
      local n = (i %% #paths) + 1
      return wrk.format("GET", paths[n], {["Range"] = "bytes=" .. ranges[n]})
    end
""")


def run_wrk(
    peer: str,
    base: str,
    urls: Sequence[str],
    connections: int,
    seconds: int,
    work: Path,
    lua: str = LUA,
    token: str | None = None,
) -> Load:
    listing = work / f"urls-{peer}.txt"
    listing.write_text("\n".join(urls) + "\n")
    script = work / f"load-{peer}.lua"
    script.touch(mode=0o600)  # it holds the token
    script.write_text(frames_lua(listing, token) if lua == LUA else lua % listing)
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_wrk(peer, connections, done.stdout)


def parse_wrk(peer: str, connections: int, out: str) -> Load:
    """The figures of ``wrk --latency``'s report."""
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _milliseconds(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _milliseconds(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*?timeout (\d+)", out)
    errors = int(errors_match.group(1)) if errors_match else 0
    errors += int(socket_errors.group(1)) if socket_errors else 0
    return Load(peer, connections, rate, p50, p99, errors)


def metadata_seconds(home: Path, port: int, token: str, repeats: int = 5) -> tuple[int, float]:
    """(frames of the largest level, median seconds to fetch its instance metadata)."""
    frames = lamina_frames(home)
    largest = max(
        {(f.study, f.series, f.sop) for f in frames},
        key=lambda key: sum(1 for f in frames if f.sop == key[2]),
    )
    count = sum(1 for f in frames if f.sop == largest[2])
    url = (
        f"http://127.0.0.1:{port}/dicomweb/studies/{largest[0]}/series/{largest[1]}"
        f"/instances/{largest[2]}/metadata"
    )
    times = []
    with httpx.Client(timeout=60, headers=bearer(token)) as client:
        for _ in range(repeats):
            started = time.perf_counter()
            client.get(url).raise_for_status()
            times.append(time.perf_counter() - started)
    return count, median(times)


# --- with and without a token -------------------------------------------------------------------


@dataclass
class SignInRun:
    """One measure of the pair: the server with sign-in (``token``) or the one without."""

    run: int
    load: Load
    token: bool


def no_token(peer: str) -> str:
    return f"{peer}-no-token"


def check_sign_in(with_port: int, without_port: int, url: str, token: str) -> str:
    """What each server answers for one frame with and without the token (a note for the report):
    the server with sign-in must refuse the request without it, and both must serve the frame."""
    headers = {"Accept": ACCEPT}
    asked = {
        "with sign-in, token": (with_port, {**headers, **bearer(token)}),
        "with sign-in, no token": (with_port, headers),
        "sign-in removed, no token": (without_port, headers),
    }
    answers = {}
    with httpx.Client(timeout=30) as client:
        for name, (port, sent) in asked.items():
            answers[name] = client.get(f"http://127.0.0.1:{port}{url}", headers=sent).status_code
    if answers != {
        "with sign-in, token": 200,
        "with sign-in, no token": 401,
        "sign-in removed, no token": 200,
    }:
        raise RuntimeError(f"unexpected answers to one frame: {answers}")
    return "one frame: " + ", ".join(f"{name} {status}" for name, status in answers.items())


def with_and_without_token(
    peer: str,
    home: Path,
    env: dict[str, str],
    urls: list[str],
    args: argparse.Namespace,
    work: Path,
    connections: Sequence[int],
    store_pid: int | None = None,
) -> tuple[list[SignInRun], dict[str, int], str]:
    """lamina's application (sign-in on, the pathologist's token sent with every request, served
    by ``_signin.NO_TOKEN_APP --with-sign-in`` with ``lamina serve``'s uvicorn settings) and the same
    archive served without the sign-in layer (``_signin.NO_TOKEN_APP``, no token sent), both up at
    once, measured in turn at each connection count, ``--signin-runs`` times, the order swapped
    every run; the runs, the servers' peak RSS and the note of :func:`check_sign_in`."""
    token = sign_in(home, env, PATHOLOGIST, ["pathologist"])
    with_port, without_port = free_port(), free_port()
    servers = {
        # the same script for both, the whole application for this one: they differ by the
        # sign-in layer alone (lamina serve adds nothing per request, but is started otherwise)
        True: start_without_token(
            work, home, with_port, token, work / f"{peer}.log", {**env, "LAMINA_HOME": str(home)}, True
        ),
        False: start_without_token(
            work, home, without_port, token, work / f"{no_token(peer)}.log", {**env, "LAMINA_HOME": str(home)}
        ),
    }
    samplers = {signed: RssSampler(process.pid) for signed, process in servers.items()}
    runs: list[SignInRun] = []
    try:
        wait_http(f"http://127.0.0.1:{without_port}/healthz")
        for sampler in samplers.values():
            sampler.start()
        note = check_sign_in(with_port, without_port, urls[0], token)
        for signed, port in ((True, with_port), (False, without_port)):  # warm: index, cache, code paths
            sent = token if signed else None
            run_wrk(f"{peer}-warm", f"http://127.0.0.1:{port}", urls, max(connections), 2, work, token=sent)
        for run in range(args.signin_runs):
            for count in connections:
                order = [True, False] if run % 2 == 0 else [False, True]
                for signed in order:
                    process = servers[signed]
                    name = peer if signed else no_token(peer)
                    port = with_port if signed else without_port
                    cpu, store_cpu = cpu_seconds(process.pid), cpu_seconds(store_pid)
                    load = run_wrk(
                        name, f"http://127.0.0.1:{port}", urls, count, args.seconds, work,
                        token=token if signed else None,
                    )  # fmt: skip
                    requests = max(load.requests_per_s * args.seconds, 1.0)
                    load.cpu_ms = (cpu_seconds(process.pid) - cpu) / requests * 1000
                    if store_pid is not None:
                        load.store_cpu_ms = (cpu_seconds(store_pid) - store_cpu) / requests * 1000
                    runs.append(SignInRun(run, load, signed))
                    print(
                        f"{name} run {run + 1} c={count}: {load.requests_per_s:.0f}/s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for process in servers.values():
            stop(process)
        for sampler in samplers.values():
            sampler.stopped.set()
    rss = {(peer if signed else no_token(peer)): sampler.peak for signed, sampler in samplers.items()}
    return runs, rss, note


def medians(runs: Sequence[SignInRun]) -> list[Load]:
    """One Load per (peer, connections): the medians of the runs' figures."""
    grouped: dict[tuple[str, int], list[Load]] = {}
    for item in runs:
        grouped.setdefault((item.load.peer, item.load.connections), []).append(item.load)
    return [
        Load(
            peer,
            count,
            median([load.requests_per_s for load in loads]),
            median([load.p50_ms for load in loads]),
            median([load.p99_ms for load in loads]),
            sum(load.errors for load in loads),
            median([load.cpu_ms for load in loads]),
            median([load.store_cpu_ms for load in loads]),
        )
        for (peer, count), loads in grouped.items()
    ]


# --- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=0.3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", default="1,4,16")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--only", default=",".join(ALL_PEERS))
    parser.add_argument("--metadata-gb", type=float, default=1.5)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server for the scaled deployment")
    parser.add_argument("--cache", default="1GiB", help="LAMINA_BLOB_CACHE_BYTES of lamina-pg-s3-cache")
    parser.add_argument("--block", default="1MiB", help="LAMINA_BLOB_CACHE_BLOCK_BYTES of the cache")
    parser.add_argument(
        "--signin-runs",
        type=int,
        default=3,
        help="runs of lamina with a token and without (sign-in layer removed), alternated",
    )
    parser.add_argument("--quick", action="store_true", help="3 s a measure, 4 and 16 connections")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.connections, args.metadata_gb = 3, "4,16", 0
        if args.only == ",".join(ALL_PEERS):
            args.only = ",".join(("lamina", "bare-asgi", *SCALED))
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    peers = args.only.split(",")
    unknown = set(peers) - set(ALL_PEERS)
    if unknown:
        print(f"unknown peers {sorted(unknown)}; expected some of {','.join(ALL_PEERS)}", file=sys.stderr)
        return 2
    connections = [int(c) for c in args.connections.split(",")]
    work = args.work / "tiles"
    work.mkdir(parents=True, exist_ok=True)
    slide = ensure_svs(args.work, args.size_gb)
    home = work / f"lamina-{args.size_gb:g}gb"
    ingest(home, slide)
    frames = lamina_frames(home)
    positions = random.Random(7).sample(range(len(frames)), min(SAMPLE_FRAMES, len(frames)))
    sample = [frames[i] for i in positions]
    results: list[Load] = []
    rss: dict[str, int] = {}
    notes: list[str] = []
    signin: list[SignInRun] = []

    def drive(
        peer: str,
        process: subprocess.Popen[bytes] | None,
        base: str,
        urls: list[str],
        lua: str = LUA,
        store_pid: int | None = None,
        token: str | None = None,
    ) -> None:
        sampler = RssSampler(process.pid) if process is not None else None
        if sampler is not None:
            sampler.start()
        server_pid = process.pid if process is not None else store_pid
        for count in connections:
            cpu, store_cpu = cpu_seconds(server_pid), cpu_seconds(store_pid)
            load = run_wrk(peer, base, urls, count, args.seconds, work, lua, token)
            requests = max(load.requests_per_s * args.seconds, 1.0)
            load.cpu_ms = (cpu_seconds(server_pid) - cpu) / requests * 1000
            if process is not None and store_pid is not None:
                load.store_cpu_ms = (cpu_seconds(store_pid) - store_cpu) / requests * 1000
            results.append(load)
            print(f"{peer} c={count}: {load.requests_per_s:.0f}/s", file=sys.stderr, flush=True)
        if sampler is not None:
            sampler.stopped.set()
            sampler.join()
            rss[peer] = sampler.peak

    def pair(
        peer: str, home: Path, env: dict[str, str], urls: list[str], store_pid: int | None = None
    ) -> None:
        """``peer`` with a token and without (sign-in removed): the medians go to the results."""
        runs, peaks, note = with_and_without_token(peer, home, env, urls, args, work, connections, store_pid)
        signin.extend(runs)
        results.extend(medians(runs))
        rss.update(peaks)
        notes.append(f"{peer}: {note}")

    if "lamina" in peers:
        pair("lamina", home, {}, frame_urls(sample))
    if "bare-asgi" in peers:
        port = free_port()
        process = start_bare(work, sample, port, work / "bare.log")
        try:
            drive("bare-asgi", process, f"http://127.0.0.1:{port}", [f"/f/{i}" for i in range(len(sample))])
        finally:
            stop(process)
    if {"orthanc-dicomweb", "orthanc-raw"} & set(peers):
        shutil.rmtree(work / "orthanc-db", ignore_errors=True)
        port = free_port()
        process = start_orthanc(work, port, work / "orthanc.log")
        try:
            ids = upload_to_orthanc(port, export(home, work / f"export-{args.size_gb:g}gb"))
            if "orthanc-raw" in peers:
                urls = [f"/instances/{ids[f.sop]}/frames/{f.number - 1}/raw" for f in sample]
                drive("orthanc-raw", process, f"http://127.0.0.1:{port}", urls)
            if "orthanc-dicomweb" in peers:
                urls = [
                    f"/dicom-web/studies/{f.study}/series/{f.series}/instances/{f.sop}/frames/{f.number}"
                    for f in sample
                ]
                drive("orthanc-dicomweb", process, f"http://127.0.0.1:{port}", urls)
        finally:
            stop(process)
    if set(SCALED) & set(peers):
        why = scaled_missing(args.postgres)
        if why is not None:
            notes.append(f"scaled deployment not run: {why}")
        else:
            with scaled_deployment(work, args.postgres) as deployment:
                scaled_peers(args, peers, deployment, slide, positions, work, drive, pair, results, notes)
    metadata: tuple[int, float] | None = None
    if "lamina" in peers and args.metadata_gb:
        big_home = work / f"lamina-{args.metadata_gb:g}gb"
        ingest(big_home, ensure_svs(args.work, args.metadata_gb))
        token = sign_in(big_home, {}, PATHOLOGIST, ["pathologist"])
        port = free_port()
        process = start_lamina(big_home, port, work / "lamina-metadata.log")
        try:
            metadata = metadata_seconds(big_home, port, token)
        finally:
            stop(process)
    report(results, rss, metadata, len(frames), connections, notes)
    if signin:
        print()
        print(signin_report(signin, connections))
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine(),
                    "loads": [vars(r) for r in results],
                    "signin_runs": [{"run": r.run, "token": r.token, **vars(r.load)} for r in signin],
                    "peak_rss": rss,
                    "metadata": metadata,
                    "notes": notes,
                },
                indent=2,
            )
        )
    return 0


def frame_urls(frames: Sequence[Frame]) -> list[str]:
    return [
        f"/dicomweb/studies/{f.study}/series/{f.series}/instances/{f.sop}/frames/{f.number}" for f in frames
    ]


def scaled_peers(
    args: argparse.Namespace,
    peers: Sequence[str],
    deployment: ScaledDeployment,
    slide: Path,
    positions: Sequence[int],
    work: Path,
    drive: Callable[..., None],
    pair: Callable[..., None],
    results: list[Load],
    notes: list[str],
) -> None:
    """The scaled deployment's peers: the slide ingested into PostgreSQL + SeaweedFS, then the
    object server's own ranged GETs and lamina without and with its cache, on the same frames
    (lamina without its cache also without a token, sign-in removed: ``pair``)."""
    run = "tiles"
    deployment.prepare(run)
    try:
        env = deployment.env(run)
        home = work / "lamina-pg-s3"
        shutil.rmtree(home, ignore_errors=True)
        started = time.perf_counter()
        ingest(home, slide, env)
        notes.append(f"ingest into PostgreSQL + SeaweedFS: {time.perf_counter() - started:.1f} s")
        frames = lamina_frames(home, {**os.environ, **env})
        sample = [frames[i] for i in positions]
        prefix = deployment.prefix(run)
        counts = Counter(f.sha256 for f in frames)
        largest = max(counts, key=counts.__getitem__)
        chunks = deployment.chunks(f"{prefix}/sha256/{largest}")
        gzipped = sum(1 for chunk in chunks if chunk.get("is_compressed"))
        notes.append(f"largest object: {len(chunks)} SeaweedFS chunks, {gzipped} stored gzipped")
        if "seaweedfs-ranges" in peers:
            lines = [
                f"/{BUCKET}/{prefix}/sha256/{f.sha256} {f.offset}-{f.offset + f.length - 1}" for f in sample
            ]
            drive("seaweedfs-ranges", None, deployment.endpoint, lines, LUA_RANGES, deployment.process.pid)
        if "seaweedfs-ranges-signed" in peers:  # SigV4 in the query (presigned): checked per request
            client = deployment.client()
            signed = {
                digest: client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": BUCKET, "Key": f"{prefix}/sha256/{digest}"},
                    ExpiresIn=3600,
                ).removeprefix(deployment.endpoint)
                for digest in {f.sha256 for f in sample}
            }
            lines = [f"{signed[f.sha256]} {f.offset}-{f.offset + f.length - 1}" for f in sample]
            pid = deployment.process.pid
            drive("seaweedfs-ranges-signed", None, deployment.endpoint, lines, LUA_RANGES, pid)
        urls = frame_urls(sample)
        if "lamina-pg-s3" in peers:
            pair("lamina-pg-s3", home, env, urls, deployment.process.pid)
        if "lamina-pg-s3-cache" in peers:
            peer = "lamina-pg-s3-cache"
            extra = {"LAMINA_BLOB_CACHE_BYTES": args.cache, "LAMINA_BLOB_CACHE_BLOCK_BYTES": args.block}
            token = sign_in(home, env, PATHOLOGIST, ["pathologist"])
            port = free_port()
            process = start_lamina(home, port, work / f"{peer}.log", {**env, **extra})
            try:
                # a slide being read: one pass first, measured apart
                sampler = RssSampler(process.pid)
                sampler.start()
                base = f"http://127.0.0.1:{port}"
                first = run_wrk(peer, base, urls, 16, max(args.seconds, 5), work, token=token)
                sampler.stopped.set()
                sampler.join()
                first.peer = f"{peer}-first"
                results.append(first)
                drive(peer, process, base, urls, LUA, deployment.process.pid, token)
            finally:
                stop(process)
    finally:
        deployment.cleanup(run)


SIGNIN_GOAL = 0.9


def signin_report(runs: Sequence[SignInRun], connections: Sequence[int]) -> str:
    """Frames/s with a token over frames/s without (sign-in removed), per peer and connection
    count: the medians of the runs, each run's ratio, and the goal (>= 0.9x) at the most."""
    lines = [
        "frames with a bearer token vs without, same run (issue 10); 'without' = the same archive served"
        " by the same application and uvicorn settings with lamina.api.auth.Authenticate taken off:"
        " the pathologist's principal (Principals.resolve of the same token, once at start-up) put in"
        " every request's scope, then the frames fast path and every rule and decision as with a token;"
        " left out: the Authorization header read, the token hashed (SHA-256) and looked up in the"
        " principals' cache. The two servers are up at once and measured in turn, the order swapped"
        " every run."
    ]
    rows = []
    goals = []
    for peer in dict.fromkeys(item.load.peer for item in runs if item.token):
        for count in connections:
            signed = [
                item
                for item in runs
                if item.token and item.load.peer == peer and item.load.connections == count
            ]
            plain = [
                item for item in runs
                if not item.token and item.load.peer == no_token(peer) and item.load.connections == count
            ]  # fmt: skip
            if not signed or not plain:
                continue
            by_run = {item.run: item.load for item in plain}
            ratios = [item.load.requests_per_s / by_run[item.run].requests_per_s for item in signed]
            with_rate = median([item.load.requests_per_s for item in signed])
            without_rate = median([item.load.requests_per_s for item in plain])
            ratio = with_rate / without_rate
            cpu_with = median([item.load.cpu_ms for item in signed])
            cpu_without = median([item.load.cpu_ms for item in plain])
            rows.append(
                [
                    peer,
                    str(count),
                    f"{with_rate:,.0f}",
                    f"{without_rate:,.0f}",
                    f"{ratio:.3f}",
                    ", ".join(f"{r:.3f}" for r in ratios),
                    _both(signed, plain, "p99_ms", 2),
                    _both(signed, plain, "cpu_ms", 3),
                    f"{cpu_without / cpu_with:.3f}" if cpu_with else "-",
                    str(sum(i.load.errors for i in signed + plain)),
                ]
            )
            if count == max(connections):
                verdict = "PASS" if ratio >= SIGNIN_GOAL else "FAIL"
                goals.append(
                    [
                        f"{peer}: with a token / without at {count}",
                        f">= {SIGNIN_GOAL}x",
                        f"{ratio:.3f}x",
                        verdict,
                    ]
                )
    headers = [
        "peer",
        "conns",
        "with token/s",
        "without/s",
        "ratio",
        "ratio by run",
        "p99 ms w/wo",
        "CPU ms w/wo",
        "CPU ratio",
        "errors",
    ]
    lines.append(format_table(headers, rows))
    lines.append(
        f"(medians of {max((item.run for item in runs), default=0) + 1} runs; ratio = median with /"
        " median without; ratio by run = each run's with / the same run's without; CPU ms = the"
        " server process's user + system CPU per frame; CPU ratio = CPU without / CPU with, the frames/s"
        " ratio of a server whose own CPU is the bottleneck, less sensitive than frames/s to what else"
        " the machine runs)"
    )
    lines.append("")
    lines.append(format_table(["goal", "target", "measured", "result"], goals))
    return "\n".join(lines)


def _both(signed: Sequence[SignInRun], plain: Sequence[SignInRun], figure: str, digits: int) -> str:
    """The median of ``figure`` with a token / without, as text."""
    values = [median([getattr(item.load, figure) for item in side]) for side in (signed, plain)]
    return " / ".join(f"{value:.{digits}f}" for value in values)


def _rate(results: Sequence[Load], peer: str, connections: int) -> Load | None:
    return next((r for r in results if r.peer == peer and r.connections == connections), None)


def report(
    results: Sequence[Load],
    rss: dict[str, int],
    metadata: tuple[int, float] | None,
    frames: int,
    connections: Sequence[int],
    notes: Sequence[str] = (),
) -> None:
    rows = [
        [
            r.peer,
            str(r.connections),
            f"{r.requests_per_s:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            str(r.errors),
            f"{rss.get(r.peer, 0) / 1e6:,.0f}",
            f"{r.cpu_ms:.3f}" if r.cpu_ms else "-",
            f"{r.store_cpu_ms:.3f}" if r.store_cpu_ms else "-",
        ]
        for r in results
    ]
    print(f"slide: {frames} frames over all levels; machine: {machine()}")
    headers = ["peer", "conns", "frames/s", "p50 ms", "p99 ms", "errors", "peak RSS MB", "CPU ms/frame"]
    print(format_table([*headers, "SeaweedFS CPU ms/frame"], rows))
    top = max(connections)
    lamina, raw, bare = (
        _rate(results, "lamina", top),
        _rate(results, "orthanc-raw", top),
        _rate(results, "bare-asgi", top),
    )
    dicomweb = _rate(results, "orthanc-dicomweb", top)
    goals: list[list[str]] = []

    def goal(name: str, target: str, value: float | None, shown: str, ok: bool) -> None:
        goals.append(
            [
                name,
                target,
                shown if value is not None else "n/a",
                ("PASS" if ok else "FAIL") if value is not None else "n/a",
            ]
        )

    if lamina and raw:
        ratio = lamina.requests_per_s / raw.requests_per_s
        goal(f"lamina / Orthanc raw REST at {top}", ">= 1.5x", ratio, f"{ratio:.2f}x", ratio >= 1.5)
    if lamina and dicomweb:
        ratio = lamina.requests_per_s / max(dicomweb.requests_per_s, 0.01)
        goal(f"lamina / Orthanc DICOMweb at {top}", "(info)", ratio, f"{ratio:,.0f}x", True)
    if lamina and bare:
        share = lamina.requests_per_s / bare.requests_per_s
        goal(f"lamina / bare ASGI at {top}", ">= 60 %", share, f"{share:.0%}", share >= 0.6)
    if lamina:
        goal(
            f"lamina p99 at {top}", "<= 10 ms", lamina.p99_ms, f"{lamina.p99_ms:.2f} ms", lamina.p99_ms <= 10
        )
    if "lamina" in rss:
        goal(
            "lamina server peak RSS",
            "< 300 MB",
            rss["lamina"],
            f"{rss['lamina'] / 1e6:.0f} MB",
            rss["lamina"] < RSS_GOAL,
        )
    ranges, pg_s3 = _rate(results, "seaweedfs-ranges", top), _rate(results, "lamina-pg-s3", top)
    cached = _rate(results, "lamina-pg-s3-cache", top)
    signed = _rate(results, "seaweedfs-ranges-signed", top)
    for ceiling, how in ((ranges, "unsigned"), (signed, "signed")):
        if pg_s3 and ceiling:
            ratio = pg_s3.requests_per_s / ceiling.requests_per_s
            name = f"lamina-pg-s3 / SeaweedFS ranged GETs ({how}) at {top}"
            goal(name, ">= 0.7x", ratio, f"{ratio:.2f}x", ratio >= 0.7)
    if cached and lamina:
        ratio = cached.requests_per_s / lamina.requests_per_s
        goal(f"lamina-pg-s3-cache / lamina at {top}", ">= 0.5x", ratio, f"{ratio:.2f}x", ratio >= 0.5)
    if cached:
        goal(
            f"lamina-pg-s3-cache p99 at {top}",
            "<= 25 ms",
            cached.p99_ms,
            f"{cached.p99_ms:.2f} ms",
            cached.p99_ms <= 25,
        )
    if metadata:
        goal(
            f"metadata of a {metadata[0]:,}-frame level",
            "< 1 s",
            metadata[1],
            f"{metadata[1] * 1000:.0f} ms",
            metadata[1] < 1,
        )
    print()
    print(format_table(["goal", "target", "measured", "result"], goals))
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    raise SystemExit(main())
