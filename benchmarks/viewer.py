"""The viewer's speed: slide opening and field of view, in headless Chromium, locally and over a
slow link; lamina's viewer as it is, as it was shipped, and dicom-microscopy-viewer.

One synthetic Aperio slide of real JPEG tiles (``_svs.py``'s tiles, 240 x 240; by default
24,000 x 20,000 pixels at 0.25 µm per pixel, so 40x is its full resolution) is ingested into an
embedded archive (SQLite and a folder) and served by lamina's application with the uvicorn
settings of ``lamina serve`` (``lamina.cli.serve.server_config``), sign-in on; beside the
archive's routes, two static folders for the peer's libraries (dicom-microscopy-viewer and
dicomweb-client from node_modules), so that every viewer reads the archive from its own origin.
Each condition is a link (``local``: straight to the server; ``slow``: through ``_relay.py``,
75 ms each way and 10 Mbit/s shared, an overseas lab) and a window size. For each, each client
opens the slide in a fresh browser profile (nothing cached) and jumps to the same random places
at 40x, and ``viewer.mjs`` times the opening and every field of view until it is fully drawn.

Clients:

- ``lamina``: the viewer as it is in the working tree;
- ``lamina-shipped``: the same page with ``slideview.js`` as of :data:`SHIPPED` (before this
  work: OpenSeadragon's default drawer, WebGL, with a 0.1 s blend and every level loaded on the
  way to the one needed), to show what changed;
- ``dmv``: dicom-microscopy-viewer's VolumeImageViewer (the library Slim is built on), frames by
  WADO-RS through dicomweb-client, drawn by OpenLayers' WebGL tile layers; its time is until the
  map's ``rendercomplete``.

Run from the repository root::

    .venv/bin/python benchmarks/viewer.py                       # 20 views, both sizes, both links
    .venv/bin/python benchmarks/viewer.py --views 5 --only lamina --sizes 1280x800
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, machine, median
from _relay import Relay, measure
from _signin import PATHOLOGIST, sign_in

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
DRIVER = Path(__file__).with_name("viewer.mjs")
#: The commit whose slideview.js is "lamina-shipped": the viewer before its speed work.
SHIPPED = "bdbe8aa"
CLIENTS = ("lamina", "lamina-shipped", "dmv")
MPP = 0.25
MAGNIFICATION = 40
#: Goals (issue 14): field of view p50 / p90 and opening, locally; over the slow link.
GOALS = {"local": (100.0, 250.0, 1000.0), "slow": (1000.0, None, 3000.0)}
SLOW = {"delay_s": 0.075, "mbit_s": 10.0}

SERVER = textwrap.dedent('''
    """lamina's application as ``lamina serve`` runs it, with the peer's libraries beside it."""
    import os, sys
    import uvicorn
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles
    from lamina.api.app import create_app
    from lamina.cli.serve import server_config
    from lamina.config import Settings

    settings = Settings.load(os.environ["LAMINA_HOME"], env=os.environ)
    app = create_app(settings)
    modules = sys.argv[2]
    app.starlette.router.routes[:0] = [
        Mount("/_bench/dmv", StaticFiles(directory=f"{modules}/dicom-microscopy-viewer/dist")),
        Mount("/_bench/dicomweb-client", StaticFiles(directory=f"{modules}/dicomweb-client/build")),
    ]
    uvicorn.Server(server_config(app, settings, "127.0.0.1", int(sys.argv[1]))).run()
''')


@dataclass(frozen=True)
class Run:
    link: str
    size: str
    client: str
    open_ms: float
    views_ms: list[float]
    drawer: str
    requests: int
    megabytes: float
    errors: list[str]

    def p(self, share: float) -> float:
        ordered = sorted(self.views_ms)
        return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


# -- the slide ---------------------------------------------------------------------------------
def ensure_slide(work: Path, width: int, height: int) -> Path:
    """The synthetic Aperio SVS of that size (``_svs.py``'s builder, at a given size), kept."""
    import tifffile

    from _svs import (
        DOWNSAMPLES,
        GENERATOR_VERSION,
        base_level,
        read_source,
        reduced_level,
        thumbnail,
        write_level,
        write_strips,
    )

    path = work / f"viewer-{width}x{height}-v{GENERATOR_VERSION}.svs"
    if path.is_file():
        return path
    work.mkdir(parents=True, exist_ok=True)
    print(f"building {path} ...", file=sys.stderr, flush=True)
    source = read_source(REPO.parent / "shared" / "testdata" / "aperio" / "CMU-1-Small-Region.svs")
    base = base_level(source, width, height)
    partial = path.with_name(path.name + ".partial")
    with tifffile.TiffWriter(partial) as tif:
        write_level(tif, base)
        write_strips(tif, thumbnail(source, base), subfiletype=0)
        for factor in DOWNSAMPLES:
            write_level(tif, reduced_level(source, base, factor))
        write_strips(tif, source.label, subfiletype=1)
        write_strips(tif, source.macro, subfiletype=9)
    partial.replace(path)
    return path


def ingest(home: Path, slide: Path) -> tuple[str, str]:
    """The slide ingested into the embedded archive at ``home`` (once); its study and series."""
    env = {**os.environ, "LAMINA_HOME": str(home)}
    if not (home / "catalog.sqlite").exists():
        subprocess.run(
            [str(VENV_BIN / "lamina"), "ingest", str(slide), "--mpp", str(MPP)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    sys.path.insert(0, str(REPO / "src"))
    from lamina.archive.catalog import Catalog
    from lamina.config import Settings

    catalog = Catalog.open(Settings.load(home, env=env).database_url)
    try:
        (slide_row,) = catalog.slides()
        return slide_row.study_instance_uid, slide_row.series_instance_uid
    finally:
        catalog.close()


def start_server(home: Path, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = work / "viewer_server.py"
    script.write_text(SERVER)
    log = (work / "viewer-server.log").open("wb")
    process = subprocess.Popen(
        [str(VENV_BIN / "python"), str(script), str(port), str(REPO / "node_modules")],
        env={**os.environ, "LAMINA_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not start: see {work / 'viewer-server.log'}")


# -- the runs ----------------------------------------------------------------------------------
def views(count: int, width: int, height: int, seed: int) -> list[list[float]]:
    """``count`` random centres (image pixels), away from the slide's edges."""
    rng = random.Random(seed)
    return [
        [round(rng.uniform(0.1, 0.9) * width), round(rng.uniform(0.1, 0.9) * height)] for _ in range(count)
    ]


def shipped_slideview(work: Path) -> Path:
    path = work / f"slideview-{SHIPPED}.js"
    text = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{SHIPPED}:src/lamina/viewer/static/slideview.js"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path.write_text(text)
    return path


def drive(config: dict[str, Any], timeout_s: float = 900) -> dict[str, Any]:
    chromium = os.environ.get("LAMINA_CHROMIUM") or shutil.which("chromium") or "chromium"
    with tempfile.TemporaryDirectory(prefix="lamina-viewer-profile-") as profile:
        run = subprocess.run(
            ["node", str(DRIVER)],
            input=json.dumps({"chromium": chromium, "profile": profile, **config}),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=REPO,
        )
    if run.returncode != 0:
        kept = Path(tempfile.gettempdir()) / "lamina-viewer-failure.json"
        kept.write_text(run.stdout)
        raise RuntimeError(
            f"viewer.mjs failed (its output: {kept}): {run.stderr[-3000:]}{run.stdout[-2000:]}"
        )
    seen: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return seen


def one_run(base: dict[str, Any], link: str, size: str, client: str, url: str, work: Path) -> Run:
    width, height = (int(n) for n in size.split("x"))
    config = {**base, "url": url, "width": width, "height": height}
    if client == "dmv":
        config["client"] = "dmv"
        config["dmv"] = {
            "bundle": f"{url}/_bench/dmv/dicomMicroscopyViewer.bundle.min.js",
            "lib": f"{url}/_bench/dmv/dynamic-import/",
            "client": f"{url}/_bench/dicomweb-client/dicomweb-client.js",
        }
    else:
        config["client"] = "lamina"
        if client == "lamina-shipped":
            config["shipped"] = str(shipped_slideview(work))
    seen = drive(config)
    return Run(
        link,
        size,
        client,
        float(seen["open_ms"]),
        [float(v) for v in seen["views_ms"]],
        str(seen.get("drawer")),
        int(seen["requests"]),
        seen["bytes"] / 1e6,
        list(seen["errors"]),
    )


# -- the report --------------------------------------------------------------------------------
def report(runs: Sequence[Run], views_count: int, link_check: dict[str, tuple[float, float]]) -> str:
    lines = []
    info = machine()
    lines.append(
        f"machine: {info['cpu']}, {info['nproc']} CPUs, {info['memory']}, {info['platform']}; "
        f"Python {info['python']}; {chromium_version()}; node {node_version()}"
    )
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    lines.append(
        f"load average at the end (1, 5, 15 min): {load} (the machine is shared: figures move with it)"
    )
    for link, (rtt, mbit) in link_check.items():
        lines.append(
            f"link {link}: round trip {rtt * 1000:.0f} ms, {mbit:.1f} Mbit/s (measured through the relay)"
        )
    lines.append(
        f"{views_count} random fields of view at {MAGNIFICATION}x per run; times in ms (medians of the views)"
    )
    lines.append("")
    headers = [
        "link",
        "window",
        "client",
        "drawer",
        "open",
        "view p50",
        "view p90",
        "requests",
        "MB",
        "errors",
    ]
    rows = [
        [
            r.link,
            r.size,
            r.client,
            r.drawer,
            f"{r.open_ms:.0f}",
            f"{median(r.views_ms):.0f}",
            f"{r.p(0.9):.0f}",
            str(r.requests),
            f"{r.megabytes:.1f}",
            str(len(r.errors)),
        ]
        for r in runs
    ]
    lines.append(format_table(headers, rows))
    lines.append("")
    # ratios: the others' view p50 over lamina's, per condition
    by = {(r.link, r.size, r.client): r for r in runs}
    ratio_rows = []
    for (link, size, client), run in by.items():
        if client == "lamina":
            continue
        ours = by.get((link, size, "lamina"))
        if ours is None:
            continue
        ratio_rows.append(
            [
                link,
                size,
                f"{client} / lamina",
                f"{run.open_ms / ours.open_ms:.1f}x",
                f"{median(run.views_ms) / median(ours.views_ms):.1f}x",
            ]
        )
    if ratio_rows:
        lines.append(format_table(["link", "window", "ratio", "open", "view p50"], ratio_rows))
        lines.append("")
    goal_rows = []
    for run in runs:
        if run.client != "lamina":
            continue
        p50_goal, p90_goal, open_goal = GOALS[run.link]
        checks = [("view p50", p50_goal, median(run.views_ms)), ("open", open_goal, run.open_ms)]
        if p90_goal is not None:
            checks.insert(1, ("view p90", p90_goal, run.p(0.9)))
        for name, goal, value in checks:
            goal_rows.append(
                [
                    f"lamina {name}, {run.link}, {run.size}",
                    f"<= {goal:.0f} ms",
                    f"{value:.0f} ms",
                    "PASS" if value <= goal else "FAIL",
                ]
            )
    if goal_rows:
        lines.append(format_table(["goal", "target", "measured", "result"], goal_rows))
    errors = [f"{r.link} {r.size} {r.client}: {e}" for r in runs for e in r.errors[:3]]
    if errors:
        lines.append("")
        lines.append("errors seen in the page:")
        lines.extend(f"- {e}" for e in errors)
    return "\n".join(lines)


def chromium_version() -> str:
    chromium = os.environ.get("LAMINA_CHROMIUM") or shutil.which("chromium") or "chromium"
    try:
        return subprocess.run(
            [chromium, "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "chromium (version unknown)"


def node_version() -> str:
    try:
        return subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lamina-bench-viewer")
    parser.add_argument("--slide", default="24000x20000", help="WIDTHxHEIGHT of the slide, in pixels")
    parser.add_argument("--views", type=int, default=20)
    parser.add_argument("--sizes", default="1280x800,1920x1080")
    parser.add_argument("--links", default="local,slow")
    parser.add_argument("--only", default=",".join(CLIENTS))
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", action="store_true", help="also print every figure as JSON")
    args = parser.parse_args(argv)
    width, height = (int(n) for n in args.slide.split("x"))
    work: Path = args.work
    slide = ensure_slide(work, width, height)
    home = work / f"home-{width}x{height}"
    study, series = ingest(home, slide)
    token = sign_in(home, None, PATHOLOGIST, ["pathologist"])
    server, port = start_server(home, work)
    base = {
        "token": token,
        "person": PATHOLOGIST,
        "study": study,
        "series": series,
        "views": views(args.views, width, height, args.seed),
        "mpp": MPP,
        "magnification": MAGNIFICATION,
    }
    runs: list[Run] = []
    link_check: dict[str, tuple[float, float]] = {}
    try:
        for link in args.links.split(","):
            relay = Relay(port, SLOW["delay_s"], SLOW["mbit_s"]).start() if link == "slow" else None
            if relay is not None:
                link_check[link] = measure(relay)
            url = relay.url if relay is not None else f"http://127.0.0.1:{port}"
            try:
                for size in args.sizes.split(","):
                    for client in args.only.split(","):
                        run = one_run(base, link, size, client, url, work)
                        print(
                            f"{link} {size} {client}: open {run.open_ms:.0f} ms, views p50 "
                            f"{median(run.views_ms):.0f} ms p90 {run.p(0.9):.0f} ms ({run.drawer})",
                            file=sys.stderr,
                            flush=True,
                        )
                        runs.append(run)
            finally:
                if relay is not None:
                    relay.stop()
    finally:
        server.terminate()
        server.wait(30)
    print(report(runs, args.views, link_check))
    if args.json:
        print(json.dumps([run.__dict__ for run in runs]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
