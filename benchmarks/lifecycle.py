"""The care lifecycle at scale: ``lamina lifecycle plan`` over a million slides, and the rate of
``lamina lifecycle run`` expiring slides on a folder and on S3 (issue 11).

- **plan, PostgreSQL**: the catalog of ``catalog.py --keep`` (1,000,002 slides, 10 M instances,
  200 labs), to which this script adds what the lifecycle reads, server-side and once: a final
  report for 85 % of the cases (validated 2 to 20 days after the case; one in twenty amended ten
  days later), a flag of interest on 5 % of the slides and a legal hold on 0.2 %. Then ``lamina
  lifecycle plan --json --now NOW`` runs as a subprocess against it: wall time and peak RSS of
  the process, the number of slides with something due. Goal: <= 30 s, memory flat.
- **plan, SQLite**: the same slides, cases, patients, reports, flags and holds copied into a new
  embedded catalog (a ``catalog.sqlite`` made by lamina itself), and the same command.
- **run**: ``--run-slides`` small sample slides ingested into a lab, their cases reported final,
  then ``lamina lifecycle run --now`` (40 days later) expires them all: slides expired per second,
  thumbnails traced, on the embedded default (a folder) and on the scaled deployment
  (PostgreSQL + SeaweedFS's S3 on loopback).
- **restore**: a synthetic Aperio SVS of ``--restore-gb`` GB (``_svs.py``, as ``ingest.py``
  makes it; cached in ``--svs-work``) ingested into the scaled deployment (the hot tier: one S3
  prefix), moved to the cold tier (another prefix of the bucket, in ``STANDARD_IA``) by
  :class:`~lamina.lifecycle.tiers.TierMover`, then brought back by ``lamina lifecycle restore
  SLIDE --json`` (what a read's restore job does: copy cold → hot, verify each object's SHA-256,
  switch the catalog). Timed: the command's wall time, from its start to its exit (the process's
  start-up included), median of ``--runs``; the restore's own time (from the command's JSON) is
  shown beside it. Between runs the slide returns to cold (a switch and a removal from the hot
  store: the cold copy is kept), so every run copies the whole slide. Goal: <= 60 s for 2 GB,
  the report's acceptable wait for a cold slide.

    .venv/bin/python benchmarks/lifecycle.py                       # everything (after catalog.py --keep)
    .venv/bin/python benchmarks/lifecycle.py --only run --run-slides 30
    .venv/bin/python benchmarks/lifecycle.py --only restore --restore-gb 2
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from _common import format_table, machine, median, run_measured
from _scaled import BUCKET, missing, scaled_deployment
from _svs import ensure_svs
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.config import Settings

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LAMINA = Path(sys.executable).with_name("lamina")
NOW = "2027-06-01T00:00:00+00:00"
PLAN_GOAL_S = 30.0
RESTORE_GOAL_S = 60.0
MPP = "0.499"  # as ingest.py: the synthetic SVS has no MPP of its own
LAB = "750712184"
#: the run's cases are reported a day ago; the run acts 40 days later (simulated time)
REPORTED = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat(timespec="seconds")
EXPIRY = (dt.datetime.now(dt.UTC) + dt.timedelta(days=40)).isoformat(timespec="seconds")

_SEED_SQL = (
    # a final report for 85 % of the cases, 2 to 20 days after the case was made
    """INSERT INTO case_reports
         (id, tenant, accession_number, status, issued_at, received_at, source, actor)
       SELECT md5('r' || study_instance_uid), tenant, accession_number, 'final',
              created_at + (2 + (abs(hashtext(study_instance_uid)) % 19)) * interval '1 day',
              now(), 'bench', 'bench'
       FROM studies
       WHERE accession_number IS NOT NULL AND abs(hashtext(study_instance_uid || 'f')) % 100 < 85""",
    # one in twenty of them amended ten days later (the clock restarts)
    """INSERT INTO case_reports
         (id, tenant, accession_number, status, issued_at, received_at, source, actor)
       SELECT md5('a' || id), tenant, accession_number, 'amended', issued_at + interval '10 days',
              now(), 'bench', 'bench'
       FROM case_reports WHERE status = 'final' AND abs(hashtext(id)) % 20 = 0""",
    """INSERT INTO slide_interest (slide_id, category, reason, flagged_at, flagged_by)
       SELECT id, 'research', 'benchmark', now(), 'bench' FROM slides
       WHERE abs(hashtext(id || 'i')) % 100 < 5""",
    """INSERT INTO holds (id, slide_id, reason, held_at, held_by)
       SELECT md5('h' || id), id, 'benchmark', now(), 'bench' FROM slides
       WHERE abs(hashtext(id || 'h')) % 1000 < 2""",
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _env(home: Path, database_url: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LAMINA_", "AWS_"))}
    env["LAMINA_HOME"] = str(home)
    if database_url:
        env["LAMINA_DATABASE_URL"] = database_url
    return {**env, **(extra or {})}


def _plan(home: Path, env: dict[str, str], log: Path, runs: int) -> dict[str, Any]:
    seconds, peaks, due = [], [], 0
    for number in range(runs):
        measured = run_measured([str(LAMINA), "lifecycle", "plan", "--json", "--now", NOW], log, env=env)
        if measured.returncode != 0:
            raise RuntimeError(f"lamina lifecycle plan failed: see {log}")
        lines = log.read_text(encoding="utf-8").splitlines()
        totals = json.loads(lines[-1])["totals"]
        due = len(lines) - 1
        seconds.append(measured.seconds)
        peaks.append(measured.peak_rss)
        say(
            f"  run {number + 1}: {measured.seconds:.1f} s, "
            f"peak RSS {measured.peak_rss / 2**20:.0f} MiB, {due:,} due"
        )
    return {"seconds": median(seconds), "peak_rss": max(peaks), "due": due, "totals": totals, "runs": seconds}


# -- plan on PostgreSQL ---------------------------------------------------------------------------


def seed_postgres(url: str) -> dict[str, int]:
    """Add reports, flags and holds once (a database seeded before is left as it is)."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT count(*) FROM case_reports").fetchone()[0] == 0:  # type: ignore[index]
            for statement in _SEED_SQL:
                started = time.perf_counter()
                conn.execute(statement)
                say(f"  seeded in {time.perf_counter() - started:.0f} s: {statement.split('(')[0].strip()}")
            conn.execute("ANALYZE case_reports; ANALYZE slide_interest; ANALYZE holds")
        counts = {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in ("slides", "studies", "case_reports", "slide_interest", "holds")
        }
    return counts


def plan_postgres(arguments: argparse.Namespace, work: Path) -> dict[str, Any]:
    url = make_url(arguments.server).set(database=arguments.database).render_as_string(hide_password=False)
    home = work / "pg-home"
    home.mkdir(parents=True, exist_ok=True)
    say(f"plan on PostgreSQL: {arguments.database}")
    archive = Archive.open(Settings.load(home, env={"LAMINA_DATABASE_URL": url}))  # migrated to HEAD
    archive.close()
    counts = seed_postgres(url)
    found = _plan(home, _env(home, url), work / "plan-pg.log", arguments.runs)
    return {**found, "counts": counts}


# -- plan on SQLite -------------------------------------------------------------------------------

_COPIED = {
    "tenants": ("finess", "name", "created_at"),
    "patients": ("pk", "patient_id", "issuer", "patient_name", "birth_date", "sex"),
    "studies": (
        "study_instance_uid",
        "patient_pk",
        "accession_number",
        "study_date",
        "study_time",
        "created_at",
        "tenant",
        "modalities",
    ),
    "slides": tuple(column.name for column in t.slides.columns),
    "case_reports": tuple(column.name for column in t.case_reports.columns),
    "slide_interest": tuple(column.name for column in t.slide_interest.columns),
    "holds": tuple(column.name for column in t.holds.columns),
}


def _rows(dsn: str, table: str, columns: Sequence[str]) -> Iterator[list[dict[str, Any]]]:
    with psycopg.connect(dsn) as conn, conn.cursor(name=f"copy_{table}") as cursor:
        cursor.itersize = 20_000
        cursor.execute(f"SELECT {', '.join(columns)} FROM {table}")
        while batch := cursor.fetchmany(20_000):
            yield [dict(zip(columns, row, strict=True)) for row in batch]


def plan_sqlite(arguments: argparse.Namespace, work: Path) -> dict[str, Any]:
    url = make_url(arguments.server).set(database=arguments.database)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    home = work / "sqlite-home"
    database = home / "catalog.sqlite"
    say(f"plan on SQLite: {database}")
    if not database.exists() or arguments.rebuild_sqlite:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        archive = Archive.open(Settings.load(home, env={}))
        archive.close()
        engine = create_engine(f"sqlite:///{database}")
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("PRAGMA foreign_keys=OFF"))
            for table, columns in _COPIED.items():
                for batch in _rows(dsn, table, columns):
                    conn.execute(insert(t.metadata.tables[table]), batch)
                say(f"  copied {table}")
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
        engine.dispose()
        say(f"  built in {time.perf_counter() - started:.0f} s, {database.stat().st_size / 1e9:.2f} GB")
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        counts = {
            table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("slides", "studies", "case_reports", "slide_interest", "holds")
        }
    engine.dispose()
    found = _plan(home, _env(home), work / "plan-sqlite.log", arguments.runs)
    return {**found, "bytes": database.stat().st_size, "counts": counts}


# -- run: expiring slides -------------------------------------------------------------------------


def _ingest_slides(home: Path, env: dict[str, str], count: int, work: Path) -> None:
    import subprocess

    samples = work / "samples"
    shutil.rmtree(samples, ignore_errors=True)
    from lamina.sample import write_samples

    rows = []
    for number in range(count):
        (sample,) = write_samples(samples / f"s{number}", ["aperio_svs"], size=(2048, 1536), seed=number)
        with (samples / f"s{number}" / "manifest.csv").open(newline="", encoding="utf-8") as fh:
            (row,) = list(csv.DictReader(fh))
        unique = samples / f"s{number}{sample.path.suffix}"
        sample.path.rename(unique)
        shutil.rmtree(samples / f"s{number}")
        row.update(patient_id=f"P{number}", accession_number=f"B27-{number:05d}", file=unique.name)
        rows.append(row)
    manifest = samples / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    lamina = [str(LAMINA)]
    subprocess.run([*lamina, "tenants", "add", LAB, "Bench lab"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*lamina, "ingest", str(samples), "--manifest", str(manifest), "--tenant", LAB],
        env=env,
        check=True,
        capture_output=True,
    )
    for number in range(count):
        subprocess.run(
            [*lamina, "case", "final", f"B27-{number:05d}", "--at", REPORTED],
            env=env,
            check=True,
            capture_output=True,
        )


def _run_rate(name: str, home: Path, env: dict[str, str], count: int, work: Path) -> dict[str, Any]:
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    say(f"run on {name}: ingesting {count} slides")
    _ingest_slides(home, env, count, work)
    log = work / f"run-{name}.log"
    measured = run_measured([str(LAMINA), "lifecycle", "run", "--json", "--now", EXPIRY], log, env=env)
    if measured.returncode != 0:
        raise RuntimeError(f"lamina lifecycle run failed on {name}: see {log}")
    report = json.loads(log.read_text(encoding="utf-8"))
    expired = int(report["done"]["actions"].get("expire", 0))
    say(f"  {expired} expired in {measured.seconds:.1f} s")
    return {
        "expired": expired,
        "seconds": measured.seconds,
        "per_second": expired / measured.seconds,
        "peak_rss": measured.peak_rss,
    }


def run_rates(arguments: argparse.Namespace, work: Path) -> dict[str, Any]:
    found = {
        "folder": _run_rate(
            "folder", work / "run-folder", _env(work / "run-folder"), arguments.run_slides, work
        )
    }
    problem = missing(arguments.server)
    if problem:
        found["s3"] = {"skipped": problem}
        return found
    with scaled_deployment(work / "scaled", arguments.server) as deployment:
        deployment.prepare("lifecycle")
        try:
            env = _env(work / "run-s3", extra=deployment.env("lifecycle"))
            found["s3"] = _run_rate("s3", work / "run-s3", env, arguments.run_slides, work)
        finally:
            deployment.cleanup("lifecycle")
    return found


# -- restore: a slide back from the cold tier ------------------------------------------------------


def _restored(home: Path, env: dict[str, str], slide: str, log: Path) -> dict[str, Any]:
    """``lamina lifecycle restore SLIDE --json`` once, timed; the slide checked hot."""
    measured = run_measured([str(LAMINA), "lifecycle", "restore", slide, "--json"], log, env=env)
    if measured.returncode != 0:
        raise RuntimeError(f"lamina lifecycle restore failed: see {log}")
    text_out = log.read_text(encoding="utf-8")
    (item,) = json.loads(text_out[text_out.index("{") :])["restored"]
    if item["status"] != "restored":
        raise RuntimeError(f"the slide was not restored: {item}")
    archive = Archive.open(Settings.load(home, env=env))
    try:
        found = archive.catalog.slide(slide)
        if found is None or found.tier != "hot":
            raise RuntimeError(f"slide {slide} is not hot after its restore")
    finally:
        archive.close()
    return {**item, "wall": measured.seconds, "peak_rss": measured.peak_rss}


def restore_time(arguments: argparse.Namespace, work: Path) -> dict[str, Any]:
    import subprocess

    from lamina.lifecycle.rules import Tier
    from lamina.lifecycle.tiers import TierMover

    problem = missing(arguments.server)
    if problem:
        return {"skipped": problem}
    source = ensure_svs(arguments.svs_work, arguments.restore_gb)
    with scaled_deployment(work / "scaled", arguments.server) as deployment:
        deployment.prepare("restore")
        deployment.cleanup("restore-cold")
        try:
            home = work / "restore-home"
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            env = _env(
                home,
                extra={
                    **deployment.env("restore"),
                    "LAMINA_COLD_URL": f"s3://{BUCKET}/{deployment.prefix('restore-cold')}",
                    "LAMINA_COLD_STORAGE_CLASS": "STANDARD_IA",
                },
            )
            say(f"restore: ingesting {source.name} ({source.stat().st_size / 1e9:.2f} GB), PostgreSQL + S3")
            lamina = [str(LAMINA)]
            subprocess.run(
                [*lamina, "tenants", "add", LAB, "Bench lab"], env=env, check=True, capture_output=True
            )
            started = time.perf_counter()
            subprocess.run(
                [*lamina, "ingest", str(source), "--mpp", MPP, "--tenant", LAB],
                env=env,
                check=True,
                capture_output=True,
            )
            say(f"  ingested in {time.perf_counter() - started:.0f} s")
            archive = Archive.open(Settings.load(home, env=env))
            try:
                (slide,) = [row.id for row in archive.catalog.slides()]
                stored = sum(row.bytes for row in archive.catalog.instances(slide))
                mover = TierMover.for_archive(archive)
                assert mover is not None
                moved = mover.move_slide(slide, Tier.COLD, "bench")
                say(f"  to cold in {moved.seconds:.1f} s ({moved.copied} objects, {stored / 1e9:.2f} GB)")
            finally:
                archive.close()
            runs: list[dict[str, Any]] = []
            for number in range(arguments.runs):
                if number:  # back to cold: a switch and a removal from the hot store
                    archive = Archive.open(Settings.load(home, env=env))
                    try:
                        mover = TierMover.for_archive(archive)
                        assert mover is not None
                        again = mover.move_slide(slide, Tier.COLD, "bench")
                        assert again.copied == 0 and again.removed == len(again.objects), again
                    finally:
                        archive.close()
                found = _restored(home, env, slide, work / f"restore-{number + 1}.log")
                say(
                    f"  run {number + 1}: {found['wall']:.1f} s (restore {found['seconds']:.1f} s, "
                    f"{found['copied']} objects copied, {found['bytes_copied'] / 1e9:.2f} GB)"
                )
                runs.append(found)
        finally:
            deployment.cleanup("restore")
            deployment.cleanup("restore-cold")
    return {
        "slide_gb": stored / 1e9,
        "objects": len(moved.objects),
        "wall": median([item["wall"] for item in runs]),
        "restore": median([float(item["seconds"]) for item in runs]),
        "to_cold": moved.seconds,
        "peak_rss": max(item["peak_rss"] for item in runs),
        "runs": [item["wall"] for item in runs],
    }


# -- report ---------------------------------------------------------------------------------------


def report_text(results: dict[str, Any]) -> str:
    lines = [
        "machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()),
        f"load average: {os.getloadavg()}",
        "",
    ]
    rows = []
    for key, label in (("plan_pg", "PostgreSQL"), ("plan_sqlite", "SQLite")):
        found = results.get(key)
        if found:
            rows.append(
                [
                    f"lamina lifecycle plan, {label}",
                    f"{found['counts']['slides']:,}",
                    f"{found['due']:,}",
                    f"{found['seconds']:.1f}",
                    f"{found['peak_rss'] / 2**20:.0f}",
                    f"{found['seconds'] / PLAN_GOAL_S:.2f}",
                    "PASS" if found["seconds"] <= PLAN_GOAL_S else "FAIL",
                ]
            )
    if rows:
        lines.append(
            format_table(["what", "slides", "due", "median s", "peak RSS MiB", "/ goal 30 s", "result"], rows)
        )
        for key in ("plan_pg", "plan_sqlite"):
            if key in results:
                lines.append(f"{key} totals: {json.dumps(results[key]['totals'])}")
        lines.append("")
    if "run" in results:
        rows = []
        for name, found in results["run"].items():
            if "skipped" in found:
                rows.append([name, "-", "-", "-", found["skipped"]])
            else:
                rows.append(
                    [
                        name,
                        str(found["expired"]),
                        f"{found['seconds']:.1f}",
                        f"{found['per_second']:.1f}",
                        f"{found['peak_rss'] / 2**20:.0f} MiB",
                    ]
                )
        lines.append(format_table(["lamina lifecycle run", "expired", "s", "slides/s", "peak RSS"], rows))
    found = results.get("restore")
    if found:
        if lines[-1]:
            lines.append("")
        header = [
            "restore, cold S3 → hot S3",
            "GB",
            "objects",
            "median s (command)",
            "restore s",
            "MB/s",
            "/ goal 60 s",
            "result",
        ]
        if "skipped" in found:
            row = ["lamina lifecycle restore", "-", "-", "-", "-", "-", "-", found["skipped"]]
        else:
            row = [
                "lamina lifecycle restore",
                f"{found['slide_gb']:.2f}",
                str(found["objects"]),
                f"{found['wall']:.1f}",
                f"{found['restore']:.1f}",
                f"{found['slide_gb'] * 1e3 / found['restore']:.0f}",
                f"{found['wall'] / RESTORE_GOAL_S:.2f}",
                "PASS" if found["wall"] <= RESTORE_GOAL_S else "FAIL",
            ]
        lines.append(format_table(header, [row]))
        if "skipped" not in found:
            lines.append(
                f"restore runs (command wall s): {', '.join(f'{s:.1f}' for s in found['runs'])}; "
                f"to cold first: {found['to_cold']:.1f} s; peak RSS {found['peak_rss'] / 2**20:.0f} MiB"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default=DEFAULT_SERVER, help="the PostgreSQL server")
    parser.add_argument(
        "--database", default="lamina_bench_catalog", help="a catalog kept by catalog.py --keep"
    )
    parser.add_argument(
        "--only", default="plan-pg,plan-sqlite,run,restore", help="plan-pg, plan-sqlite, run, restore"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each plan and restore (median)")
    parser.add_argument("--run-slides", type=int, default=60, help="slides expired by the run")
    parser.add_argument("--restore-gb", type=float, default=2.0, help="size of the slide restored (GB)")
    parser.add_argument(
        "--svs-work", type=Path, default=Path("/tmp/lamina-bench"), help="where the synthetic SVS is cached"
    )
    parser.add_argument("--rebuild-sqlite", action="store_true", help="copy the SQLite catalog again")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lamina-bench-lifecycle"))
    parser.add_argument("--output", type=Path, default=None, help="where the table is written")
    arguments = parser.parse_args(argv)
    arguments.work.mkdir(parents=True, exist_ok=True)
    wanted = set(arguments.only.split(","))
    results: dict[str, Any] = {"date": dt.date.today().isoformat()}
    if "plan-pg" in wanted:
        results["plan_pg"] = plan_postgres(arguments, arguments.work)
    if "plan-sqlite" in wanted:
        results["plan_sqlite"] = plan_sqlite(arguments, arguments.work)
    if "run" in wanted:
        results["run"] = run_rates(arguments, arguments.work)
    if "restore" in wanted:
        results["restore"] = restore_time(arguments, arguments.work)
    table = report_text(results)
    print(table)
    output = arguments.output or arguments.work / f"lifecycle-{results['date']}.txt"
    output.write_text(table + "\n", encoding="utf-8")
    say(f"written to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
