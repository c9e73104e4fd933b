"""Pushing slides of interest from a site to an archive on loopback (issue 12).

Three lamina nodes on the embedded default, each its own data folder: the **site** (one lab, a
synthetic Aperio SVS of ``--gb`` GB from ``_svs.py`` ingested with a patient's identity and
flagged of interest), the **archive** (``role = "archive"``, the lab and a sender account whose
token the site uses) and a **plain** node (an ordinary site, the same lab and account). Each
run:

- **push**: ``lamina push SLIDE --to ARCHIVE --token T --json`` as the operator runs it (wall
  time of the process: de-identification, announcement, STOW-RS, the archive's verification of
  every frame's digest); the archive's data folder is new at each run, so the whole slide goes;
- **plain STOW-RS**: the same de-identified instances (made once here by
  :func:`lamina.exchange.deid.deidentify_instance`, the files the push sends) in one STOW-RS
  request to the plain node, new at each run, timed from the request to the answer (the client
  is this process: httpx streaming the files, as the push does);
- **de-identification**: :func:`~lamina.exchange.deid.deidentify_instance` over every instance
  that leaves, timed alone (the push reports it too): it must not decode tissue frames, so its
  cost is a copy.

Throughput is the de-identified bytes sent over the wall time. Goal: push ≥ 0.8 × plain STOW-RS.

    .venv/bin/python benchmarks/exchange.py --gb 1 --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx

from _common import format_table, machine, median
from _svs import ensure_svs

LAMINA = [sys.executable, "-m", "lamina"]
LAB = "690781810"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMINA_", "AWS_"))}
    return env | {"LAMINA_HOME": str(home), "COLUMNS": "200", "LAMINA_PUSH_CRON": "off"}


def _lamina(home: Path, *args: str) -> str:
    done = subprocess.run([*LAMINA, *args], capture_output=True, text=True, env=_env(home), timeout=3600)
    if done.returncode not in (0,):
        raise RuntimeError(f"lamina {' '.join(args)}: {done.returncode}\n{done.stderr[-2000:]}")
    return done.stdout


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node(home: Path, role: str) -> str:
    """A fresh node in ``home``: the lab, a sender account; its token."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "lamina.toml").write_text(f'role = "{role}"\n')
    _lamina(home, "tenants", "add", LAB, "Anatomie pathologique")
    _lamina(home, "users", "add", "sender", "--tenant", LAB, "--role", "technician")
    return _lamina(home, "token", "sender", "--expires-in", "86400").strip()


@contextlib.contextmanager
def _serve(home: Path) -> Iterator[str]:
    port = _port()
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        [*LAMINA, "serve", "--port", str(port)], env=_env(home), stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lamina serve did not start: see {home / 'serve.log'}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _site(work: Path, svs: Path) -> tuple[Path, str]:
    home = work / "site"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    manifest = work / "manifest.csv"
    manifest.write_text(
        "file,patient_id,patient_name,birth_date,accession_number,specimen_id\n"
        f"{svs.name},IPP-BENCH-1,BENCH^PATIENT,19500101,B26-00001,B26-00001-A1\n"
    )
    _lamina(home, "tenants", "add", LAB, "Anatomie pathologique")
    ingested = json.loads(_lamina(home, "ingest", str(svs), "--manifest", str(manifest), "--json"))
    slide = str(ingested[0]["slide_id"])
    _lamina(home, "interest", slide, "--category", "research", "--reason", "benchmark")
    return home, slide


def _deidentified(site: Path, slide: str, out: Path) -> tuple[list[Path], float]:
    """The instances that leave, de-identified as the push does; the seconds it took."""
    from lamina.archive.archive import Archive
    from lamina.config import Settings
    from lamina.exchange.deid import deidentify_instance, is_sent
    from lamina.exchange.keys import ExchangeKeys

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    archive = Archive.open(Settings.load(site, env={}))
    files = []
    try:
        keys = ExchangeKeys.for_settings(archive.settings)
        started = time.perf_counter()
        for row in archive.catalog.instances(slide):
            if not is_sent(row.flavor, ()):
                continue
            local = archive.store.local_path(row.blob_sha256)
            assert local is not None
            target = out / f"{len(files):04d}.dcm"
            with Path(local).open("rb") as source, target.open("wb") as sink:
                outcome = deidentify_instance(source, sink, keys)
            if outcome.quarantine:
                raise RuntimeError(f"quarantined: {outcome.quarantine}")
            files.append(target)
        seconds = time.perf_counter() - started
    finally:
        archive.close()
    return files, seconds


def _stow(base: str, token: str, files: list[Path]) -> float:
    boundary = uuid.uuid4().hex
    heads = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() for _ in files]
    tail = f"--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        for head, path in zip(heads, files, strict=True):
            yield head
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    yield chunk
            yield b"\r\n"
        yield tail

    length = sum(len(h) + p.stat().st_size + 2 for h, p in zip(heads, files, strict=True)) + len(tail)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Content-Length": str(length),
    }
    started = time.perf_counter()
    answer = httpx.post(f"{base}/dicomweb/studies", content=body(), headers=headers, timeout=3600)
    seconds = time.perf_counter() - started
    if answer.status_code != 200:
        raise RuntimeError(f"plain STOW-RS answered {answer.status_code}: {answer.text[:500]}")
    return seconds


def _push(site: Path, slide: str, base: str, token: str) -> tuple[float, dict[str, object]]:
    with sqlite3.connect(site / "catalog.sqlite") as db:  # the site forgets the last run's push
        db.execute("DELETE FROM transfers")
    started = time.perf_counter()
    done = subprocess.run(
        [*LAMINA, "push", slide, "--to", base, "--token", token, "--json"],
        capture_output=True,
        text=True,
        env=_env(site),
        timeout=3600,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"lamina push: {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    (result,) = json.loads(done.stdout)["results"]
    if result["status"] != "verified":
        raise RuntimeError(f"not verified: {result}")
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the slide pushed (GB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--svs-work", type=Path, default=Path("/tmp/lamina-bench"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/lamina-bench-exchange"))
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    arguments = parser.parse_args()
    work: Path = arguments.work
    svs = ensure_svs(arguments.svs_work, arguments.gb)
    say(f"site: ingesting {svs.name} ({svs.stat().st_size / 1e9:.2f} GB)")
    site, slide = _site(work, svs)
    files, _ = _deidentified(site, slide, work / "deidentified")
    size = sum(path.stat().st_size for path in files)
    pushes, stows, deids = [], [], []
    for number in range(arguments.runs):
        _, seconds = _deidentified(site, slide, work / "deidentified")
        deids.append(seconds)
        token = _node(work / "plain", "site")
        with _serve(work / "plain") as base:
            stows.append(_stow(base, token, files))
        token = _node(work / "archive", "archive")
        with _serve(work / "archive") as base:
            took, result = _push(site, slide, base, token)
        pushes.append(took)
        say(
            f"  run {number + 1}: push {took:.1f} s (de-identification {result['deid_seconds']} s), "
            f"plain STOW-RS {stows[-1]:.1f} s, de-identification alone {seconds:.1f} s"
        )
    push_mb, stow_mb = size / 1e6 / median(pushes), size / 1e6 / median(stows)
    rows = [
        [
            "plain STOW-RS (same files)",
            f"{size / 1e9:.2f}",
            f"{median(stows):.1f}",
            f"{stow_mb:.0f}",
            "1",
            "",
        ],
        [
            "lamina push",
            f"{size / 1e9:.2f}",
            f"{median(pushes):.1f}",
            f"{push_mb:.0f}",
            f"{push_mb / stow_mb:.2f}",
            "PASS" if push_mb >= 0.8 * stow_mb else "FAIL",
        ],
    ]
    text = "\n".join(
        [
            f"machine: {', '.join(f'{k} {v}' for k, v in machine().items())}",
            f"load average: {os.getloadavg()}",
            "",
            format_table(["what", "GB", "median s", "MB/s", "× plain", "goal ≥ 0.8×"], rows),
            f"push runs (s): {', '.join(f'{s:.1f}' for s in pushes)}; "
            f"plain STOW-RS runs (s): {', '.join(f'{s:.1f}' for s in stows)}",
            f"de-identification of the slide's {len(files)} instances ({size / 1e9:.2f} GB, frames copied, "
            f"never decoded): median {median(deids):.2f} s ({size / 1e6 / median(deids):.0f} MB/s)",
        ]
    )
    print(text)
    if arguments.out is not None:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        with arguments.out.open("a") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
