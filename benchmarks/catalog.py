"""Catalog benchmark: QIDO, lifecycle selection and ingest on a national-scale PostgreSQL catalog.

Usage::

    .venv/bin/python benchmarks/catalog.py [--scale 1.0] [--server URL] [--database NAME]
        [--reuse] [--keep] [--queries 200] [--ingests 21] [--deep-offset 10000]
        [--full-metadata] [--proposed] [--lab largest] [--signin-only] [--seed 1] [--work DIR]
        [--output FILE] [--json]

A dedicated database (``--database``, default ``lamina_bench_catalog``) gets lamina's own schema
(``Catalog.open``) and is filled in three stages of 10^3, 10^5 and 10^6 slides (times ``--scale``)
with generated rows, ten instances a slide (see ``_catalog_data.py``): 10 million instances at
the last stage. After the first stage it is copied into a reference catalog that stays at 10^3
slides. At each stage (see ``_catalog_measure.py``):

- the ingest of one more slide (a lamina sample slide, Aperio SVS with a manifest) through
  ``Ingestor`` into a folder blob store with this catalog, ``--ingests`` times after one warm-up,
  each time beside one into the reference catalog;
- QIDO-RS searches the viewers make, each ``--queries`` times with random keys: through
  ``lamina.archive.catalog.search`` (the functions ``qido.py`` calls) and through lamina's ASGI
  application in process (``GET /dicomweb/...``, the JSON answer included);
- the lifecycle selection of the slides expiring this week (``lifecycle.expiring``): the first
  batch, a later batch, and the whole week.

Every HTTP request carries a bearer token (issue 10; ``_catalog_signin.py``): the catalog's 200
labs are recorded as tenants, and a pathologist of one lab (``--lab``), the same with a case grant
of another lab, and a platform admin get tokens from the node's issuer. The searches above go over
HTTP as the platform admin (who, like search.py, sees every lab); at the last stage the same
searches, with keys of the lab's own slides, go over HTTP as each of the three in turn.
``--signin-only`` measures only those (no ingests, no reference catalog, no search.py, no
lifecycle): with ``--reuse``, a kept catalog measured again in minutes.

With ``--proposed``, the searches run again at the last stage with the indexes of :data:`PROPOSED`
that the schema lacks.

Goals checked: QIDO p95 at most 100 ms at 10 million instances for every search, and at most
50 ms as the lab's pathologist and as the platform admin; ingest time at
10^5 and 10^6 slides within 10 % of the reference's, measured in the same rounds; the database
under 20 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from _catalog_data import CatalogGenerator, LoadTimes, Templates, audit_head, bulk_load, next_patient_pk
from _catalog_data import real_templates as make_templates
from _catalog_measure import (
    SAMPLE_SIZE,
    IngestRun,
    Timings,
    measure_ingest,
    measure_lifecycle,
    measure_searches,
    sample_keys,
    searches,
    served,
)
from _catalog_signin import People, measure_signed, register_people, sample_lab_keys
from _common import format_table, machine, median, package_version
from lamina.archive.archive import Archive
from lamina.archive.catalog import Catalog
from lamina.config import Settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_DATABASE = "lamina_bench_catalog"
DEFAULT_WORK = Path("/tmp/lamina-bench-catalog")
STAGES = (1_000, 100_000, 1_000_000)
QIDO_GOAL_MS = 100.0
#: QIDO p95 as a lab's pathologist and as a platform admin (issue 10)
SIGNIN_GOAL_MS = 50.0
INGEST_GROWTH_GOAL = 1.10
DISK_GOAL = 20 * 10**9
#: indexes considered for lamina's schema, tried with --proposed at the last stage: those the
#: catalog lacks are created, the searches measured again, and the indexes dropped. None is
#: proposed now: the last one, ``ix_series_study_modality``, is in the schema since migration 0006.
PROPOSED: dict[str, str] = {}


# --- the database ------------------------------------------------------------------------------


def database_url(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def libpq_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def prepare_database(server: str, name: str, reuse: bool) -> tuple[str, bool]:
    """Create the database (dropping an old one unless ``reuse``); return its URL and whether it
    was there already."""
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if exists and not reuse:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            if not exists or not reuse:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = database_url(server, name)
    Catalog.open(url).close()  # lamina's own schema, indexes and migrations
    return url, bool(exists and reuse)


def drop_database(server: str, name: str) -> None:
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass(frozen=True)
class Sizes:
    """Rows and bytes of the catalog."""

    patients: int
    studies: int
    slides: int
    instances: int
    audit: int
    database_bytes: int
    tables: dict[str, tuple[int, int, int]]  # table -> (heap + TOAST, indexes, total) bytes


def catalog_sizes(engine: Engine) -> Sizes:
    with engine.connect() as conn:
        counts = {
            table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("patients", "studies", "slides", "instances", "audit_log")
        }
        database = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
        tables = {
            str(row[0]): (int(row[1]), int(row[2]), int(row[3]))
            for row in conn.execute(
                text(
                    "SELECT relname, pg_table_size(oid), pg_indexes_size(oid), pg_total_relation_size(oid) "
                    "FROM pg_class WHERE relname IN "
                    "('patients', 'studies', 'series', 'slides', 'instances', 'audit_log')"
                )
            )
        }
    return Sizes(
        counts["patients"],
        counts["studies"],
        counts["slides"],
        counts["instances"],
        counts["audit_log"],
        database,
        tables,
    )


# --- one run -----------------------------------------------------------------------------------


@dataclass
class Stage:
    target: int
    sizes: Sizes | None = None
    load: LoadTimes | None = None
    catalog: list[Timings] = field(default_factory=list)
    http: list[Timings] = field(default_factory=list)
    lifecycle: list[Timings] = field(default_factory=list)
    week: int = 0
    ingests: list[IngestRun] = field(default_factory=list)
    #: the same number of ingests into the reference catalog (the first stage's), interleaved
    reference: list[IngestRun] = field(default_factory=list)
    #: the searches again with the PROPOSED indexes the schema lacks (last stage only)
    proposed: dict[str, str] = field(default_factory=dict)
    proposed_catalog: list[Timings] = field(default_factory=list)
    proposed_http: list[Timings] = field(default_factory=list)
    skipped: str | None = None
    #: the viewer's searches over HTTP as signed-in people (last stage): timings by person
    people: People | None = None
    signin: dict[str, list[Timings]] = field(default_factory=dict)

    @property
    def ingest_seconds(self) -> float:
        return median([run.seconds for run in self.ingests])

    @property
    def ingest_sql_ms(self) -> float:
        return median([run.sql_seconds * 1000 for run in self.ingests])

    @property
    def reference_seconds(self) -> float | None:
        return median([run.seconds for run in self.reference]) if self.reference else None

    @property
    def reference_sql_ms(self) -> float | None:
        return median([run.sql_seconds * 1000 for run in self.reference]) if self.reference else None

    @property
    def growth(self) -> float | None:
        """Ingest time here over the reference's: the median of the rounds' ratios, each of two
        ingests a second apart, so that a slow spell of the machine weighs on both sides."""
        if not self.reference or not self.ingests:
            return None
        pairs = zip(self.ingests, self.reference, strict=True)
        return median([mine.seconds / theirs.seconds for mine, theirs in pairs])


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def open_archive(home: Path, url: str, fresh: bool) -> Archive:
    """An archive on this catalog with a folder blob store in ``home`` (emptied when ``fresh``)."""
    if fresh:
        shutil.rmtree(home, ignore_errors=True)
    env = {"LAMINA_DATABASE_URL": url, "LAMINA_WORKERS": "0", "LAMINA_VERIFY_CRON": "off"}
    return Archive.open(Settings.load(home, env=env))


def vacuum(url: str) -> None:
    """``VACUUM ANALYZE`` the catalog's tables."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for table in ("patients", "studies", "series", "slides", "instances"):
                conn.execute(text(f'VACUUM ANALYZE "{table}"'))
    finally:
        engine.dispose()


def copy_database(server: str, source: str, name: str, attempts: int = 10) -> None:
    """``CREATE DATABASE name TEMPLATE source`` (no session may be connected to ``source``)."""
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for attempt in range(attempts):
                try:
                    conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
                    return
                except Exception:  # a session that has not quite gone yet
                    if attempt == attempts - 1:
                        raise
                    time.sleep(1)
    finally:
        admin.dispose()


def database_exists(server: str, name: str) -> bool:
    admin = create_engine(server)
    try:
        with admin.connect() as conn:
            return (
                conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
                is not None
            )
    finally:
        admin.dispose()


def lacking(engine: Engine, indexes: dict[str, str]) -> dict[str, str]:
    """The indexes of ``indexes`` that the catalog does not have."""
    with engine.connect() as conn:
        present = {
            str(row[0])
            for row in conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
            )
        }
    return {name: ddl for name, ddl in indexes.items() if name not in present}


def with_indexes(engine: Engine, indexes: dict[str, str]) -> None:
    with engine.begin() as conn:
        for ddl in indexes.values():
            conn.execute(text(ddl))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) studies"))  # the visibility map, for index-only scans
        conn.execute(text("VACUUM (ANALYZE) series"))


def without_indexes(engine: Engine, indexes: dict[str, str]) -> None:
    with engine.begin() as conn:
        for name in indexes:
            conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
        conn.execute(text("ANALYZE studies"))
        conn.execute(text("ANALYZE series"))


def checkpoint(engine: Engine) -> None:
    """Write out what a load left in memory, so that the measures do not wait on it."""
    with engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))


def run(arguments: argparse.Namespace) -> tuple[dict[str, Any], list[Stage], Templates]:
    work: Path = arguments.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    targets = sorted({max(10, round(stage * arguments.scale)) for stage in STAGES})
    say(f"database {arguments.database}: stages of {', '.join(f'{n:,}' for n in targets)} slides")
    url, reused = prepare_database(arguments.server, arguments.database, arguments.reuse)
    reference_name = f"{arguments.database}_ref"
    reference_url = database_url(arguments.server, reference_name)
    dsn = libpq_dsn(url)
    shutil.rmtree(work / "template", ignore_errors=True)
    templates = make_templates(work, full=arguments.full_metadata)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    archive = open_archive(work / "home", url, fresh=not reused)
    reference: Archive | None = None
    if reused and database_exists(arguments.server, reference_name):
        reference = open_archive(work / "home-ref", reference_url, fresh=False)
    if reused:
        # opening may have migrated a kept catalog (rows rewritten): vacuum as autovacuum soon
        # would, so that index-only scans are measured as they run in steady state
        vacuum(url)
    engine = archive.catalog.engine
    seed = arguments.seed + secrets.randbelow(1 << 30)  # new sample slides on every run
    # a reused catalog that is loaded further gets other UIDs than those the seed gave it
    generator_seed = arguments.seed + (catalog_sizes(engine).slides * 7919 if reused else 0)
    generator = CatalogGenerator(templates, now, seed=generator_seed)
    stages: list[Stage] = []
    load_before = os.getloadavg()
    try:
        for number, target in enumerate(targets, start=1):
            stage = Stage(target)
            stages.append(stage)
            have = catalog_sizes(engine).slides
            if have > target * 1.05:
                stage.skipped = f"the reused catalog already holds {have:,} slides"
                say(f"stage {number}: skipped ({stage.skipped})")
                continue
            if target > have:
                say(f"stage {number}: loading {target - have:,} slides ...")
                generator.seq, generator.prev_hash = audit_head(dsn)
                generator.next_patient = next_patient_pk(dsn)
                stage.load = bulk_load(dsn, generator, target - have, progress=say)
                say(
                    f"  loaded in {stage.load.total:,.0f} s (copy {stage.load.copy:,.0f} s, "
                    f"indexes {stage.load.indexes:,.0f} s, vacuum {stage.load.vacuum:,.0f} s)"
                )
            checkpoint(engine)
            labs = [] if reused else [tenant.code for tenant in generator.tenants]
            people = register_people(archive, arguments.lab, labs)
            admin = next(person for person in people.people if person.label == "platform admin")
            if arguments.signin_only:
                stage.sizes = catalog_sizes(engine)
                if number == len(targets):
                    signed_searches(stage, archive, people, arguments, number)
                continue
            if reference is None:
                # the reference catalog: a copy of the first stage, ingested into alongside each stage
                engine.dispose()
                copy_database(arguments.server, arguments.database, reference_name)
                reference = open_archive(work / "home-ref", reference_url, fresh=True)
            stage.sizes = catalog_sizes(engine)
            say(f"stage {number}: {stage.sizes.slides:,} slides, {stage.sizes.instances:,} instances")
            say(
                f"stage {number}: ingest of one more slide, {arguments.ingests} + 1 times"
                " (and into the reference)"
            )
            stage.ingests, stage.reference = measure_ingest(
                [archive, reference], work / "samples", arguments.ingests, seed + 10_000 * number
            )
            say(
                f"  median {stage.ingest_seconds:.3f} s (SQL {stage.ingest_sql_ms:.1f} ms); "
                f"reference {stage.reference_seconds:.3f} s"
            )
            say(f"stage {number}: searching")
            keys = sample_keys(engine, arguments.queries, arguments.seed + number)
            kinds = searches(keys, arguments.queries, arguments.deep_offset, arguments.seed + number)
            with served(archive.settings, archive) as client:
                stage.catalog, stage.http = measure_searches(
                    engine, client, kinds, arguments.queries, admin.token
                )
            if number == len(targets):
                signed_searches(stage, archive, people, arguments, number)
            say(f"stage {number}: lifecycle selection")
            stage.lifecycle, stage.week = measure_lifecycle(engine, now, arguments.queries, arguments.seed)
            if arguments.proposed and number == len(targets) and (added := lacking(engine, PROPOSED)):
                say(f"stage {number}: searching again with {', '.join(added)}")
                stage.proposed = added
                with_indexes(engine, added)
                try:
                    with served(archive.settings, archive) as client:
                        stage.proposed_catalog, stage.proposed_http = measure_searches(
                            engine, client, kinds, arguments.queries, admin.token
                        )
                finally:
                    without_indexes(engine, added)
        final_sizes = catalog_sizes(engine)
    finally:
        archive.close()
        if reference is not None:
            reference.close()
        if not (arguments.keep or arguments.reuse):
            say(f"dropping the databases {arguments.database} and {reference_name} (--keep keeps them)")
            drop_database(arguments.server, arguments.database)
            drop_database(arguments.server, reference_name)
    report = {
        "machine": machine(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "postgresql": postgres_settings(arguments.server),
        "lamina": package_version("lamina"),
        "database": arguments.database,
        "reused": reused,
        "scale": arguments.scale,
        "seed": arguments.seed,
        "queries": arguments.queries,
        "ingests": arguments.ingests,
        "full_metadata": arguments.full_metadata,
        "now": now.isoformat(),
        "final_slides": final_sizes.slides,
        "final_instances": final_sizes.instances,
    }
    return report, stages, templates


def signed_searches(
    stage: Stage, archive: Archive, people: People, arguments: argparse.Namespace, number: int
) -> None:
    """The viewer's searches over HTTP as the lab's pathologist, the same with a case grant of
    another lab, and a platform admin, with keys of the lab's own slides."""
    say(
        f"stage {number}: searching as signed-in people (lab {people.lab}: {people.lab_studies:,} studies, "
        f"{people.lab_slides:,} slides)"
    )
    keys = sample_lab_keys(archive.catalog.engine, people.lab, arguments.queries, arguments.seed + number)
    kinds = searches(keys, arguments.queries, arguments.deep_offset, arguments.seed + number)
    with served(archive.settings, archive) as client:
        stage.signin = measure_signed(client, kinds, arguments.queries, people.people)
    stage.people = people


def postgres_settings(server: str) -> dict[str, str]:
    engine = create_engine(server)
    try:
        with engine.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar_one())
            found = {"version": version}
            for name in ("shared_buffers", "work_mem", "effective_cache_size", "random_page_cost", "jit"):
                found[name] = str(conn.execute(text(f"SHOW {name}")).scalar_one())
    finally:
        engine.dispose()
    return found


# --- reporting ---------------------------------------------------------------------------------


def _gb(size: float) -> str:
    return f"{size / 1e9:,.2f}"


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def report_text(report: dict[str, Any], stages: Sequence[Stage], templates: Templates) -> str:
    lines = [
        "machine: " + ", ".join(f"{key} {value}" for key, value in report["machine"].items()),
        "load average (1, 5, 15 min): before "
        + ", ".join(f"{value:.2f}" for value in report["load_average"]["before"])
        + "; after "
        + ", ".join(f"{value:.2f}" for value in report["load_average"]["after"])
        + " (the machine is shared: other work ran at the same time)",
        "postgresql: " + ", ".join(f"{key} {value}" for key, value in report["postgresql"].items()),
        f"lamina {report['lamina']}; scale {report['scale']}; {report['queries']} random keys per search;"
        f" {report['ingests']} ingests per stage (+1 warm-up); seed {report['seed']}",
        "stored DICOM JSON per instance (packed): "
        + ", ".join(
            f"{kind} {real:,} B real / {used:,} B here" for kind, (real, used) in templates.sizes.items()
        )
        + ("" if report["full_metadata"] else " (trimmed: --full-metadata keeps every attribute)"),
        "",
    ]
    rows = []
    for stage in stages:
        if stage.sizes is None:
            rows.append([f"{stage.target:,}", "-", "-", "-", "-", "-", "-", "-", stage.skipped or ""])
            continue
        sizes, load = stage.sizes, stage.load
        instances_table = sizes.tables.get("instances", (0, 0, 0))
        rows.append(
            [
                f"{stage.target:,}",
                f"{sizes.slides:,}",
                f"{sizes.instances:,}",
                f"{sizes.studies:,}",
                f"{sizes.patients:,}",
                _gb(sizes.database_bytes),
                f"{_gb(instances_table[0])} + {_gb(instances_table[1])}",
                "-" if load is None else f"{load.total:,.0f}",
                ""
                if load is None
                else f"copy {load.copy:,.0f} s, indexes {load.indexes:,.0f} s, "
                f"vacuum {load.vacuum:,.0f} s, {load.instances / max(load.copy, 1e-9):,.0f} instances/s",
            ]
        )
    lines.append(
        format_table(
            [
                "stage",
                "slides",
                "instances",
                "studies",
                "patients",
                "DB GB",
                "instances GB",
                "load s",
                "load",
            ],
            rows,
        )
    )
    lines.append("(instances GB = table with TOAST + its indexes; 1 GB = 10^9 bytes)")
    lines.append("")
    measured = [stage for stage in stages if stage.sizes is not None]
    last = measured[-1] if measured else None
    if last is not None and last.sizes is not None and last.http:
        lines.append(f"QIDO-RS at {last.sizes.instances:,} instances ({last.sizes.slides:,} slides), ms:")
        search_rows = []
        for by_catalog, by_http in zip(last.catalog, last.http, strict=True):
            search_rows.append(
                [
                    by_catalog.name,
                    f"{statistics.fmean(by_http.hits):.1f}",
                    f"{by_catalog.p50:.1f}",
                    f"{by_catalog.p95:.1f}",
                    f"{by_catalog.worst:.1f}",
                    f"{by_http.p50:.1f}",
                    f"{by_http.p95:.1f}",
                    f"{by_http.worst:.1f}",
                    _verdict(by_http.p95 <= QIDO_GOAL_MS),
                ]
            )
        headers = ["search", "hits", "search.py p50", "p95", "max", "HTTP p50", "p95", "max", "p95<=100"]
        lines.append(format_table(headers, search_rows))
        lines.append(
            "(search.py: the catalog function qido.py calls; HTTP: GET /dicomweb/... through lamina's ASGI"
            " application in process, answer rendered as DICOM JSON, includefield=all as the viewer asks)"
        )
        lines.append("")
        if last.proposed_http:
            lines.append("the same searches with the proposed index(es) lamina's schema lacks, ms:")
            lines.extend(f"  {ddl}" for ddl in last.proposed.values())
            proposed_rows = [
                [
                    by_catalog.name,
                    f"{by_catalog.p50:.1f}",
                    f"{by_catalog.p95:.1f}",
                    f"{by_http.p50:.1f}",
                    f"{by_http.p95:.1f}",
                    f"{by_http.worst:.1f}",
                    _verdict(by_http.p95 <= QIDO_GOAL_MS),
                ]
                for by_catalog, by_http in zip(last.proposed_catalog, last.proposed_http, strict=True)
            ]
            headers = ["search", "search.py p50", "p95", "HTTP p50", "p95", "max", "p95<=100"]
            lines.append(format_table(headers, proposed_rows))
            lines.append("")
        if len(measured) > 1:
            scaling = []
            for index, timings in enumerate(last.http):
                scaling.append([timings.name, *(f"{stage.http[index].p95:.1f}" for stage in measured)])
            lines.append("QIDO-RS HTTP p95 (ms) by catalog size:")
            headers = ["search", *(f"{stage.sizes.instances:,} inst." for stage in measured if stage.sizes)]
            lines.append(format_table(headers, scaling))
            lines.append("")
    if last is not None and last.sizes is not None and last.people is not None and last.signin:
        lines.extend(signin_text(last))
        lines.append("")
    if last is not None and last.sizes is not None and last.lifecycle:
        lines.append(f"lifecycle selection (lifecycle.expiring), {last.week:,} slides due this week, ms:")
        life_rows = [
            [
                timings.name,
                f"{statistics.fmean(timings.hits):,.0f}",
                f"{timings.p50:.1f}",
                f"{timings.p95:.1f}",
                f"{timings.worst:.1f}",
                str(len(timings.ms)),
            ]
            for timings in last.lifecycle
        ]
        lines.append(format_table(["selection", "slides", "p50", "p95", "max", "runs"], life_rows))
        lines.append("")
    ingest_rows = []
    base = next((stage for stage in measured if stage.ingests), None)
    for stage in measured:
        if not stage.ingests or stage.sizes is None or base is None:
            continue
        ingest_rows.append(
            [
                f"{stage.sizes.slides:,}",
                f"{stage.sizes.instances:,}",
                f"{stage.ingest_seconds:.3f}",
                "(" + ", ".join(f"{run.seconds:.2f}" for run in stage.ingests) + ")",
                f"{stage.ingest_sql_ms:.1f}",
                f"{stage.reference_seconds or 0:.3f}",
                f"{stage.reference_sql_ms or 0:.1f}",
                "-" if stage.growth is None else f"{stage.growth:.3f}",
                f"{stage.ingest_seconds / base.ingest_seconds:.3f}",
            ]
        )
    lines.append(
        f"ingest of one more slide (lamina sample Aperio SVS {SAMPLE_SIZE[0]}x{SAMPLE_SIZE[1]} with a"
        " manifest, folder blob store, this catalog):"
    )
    headers = [
        "slides",
        "instances",
        "ingest s",
        "runs s",
        "SQL ms",
        "ref. s",
        "ref. SQL ms",
        "ratio",
        "vs stage 1",
    ]
    lines.append(format_table(headers, ingest_rows))
    lines.append(
        "(medians; ref. = the same number of ingests into a copy of the first stage's catalog, interleaved"
        " round by round with these; ratio = median over the rounds of ingest / ref. ingest, the goal;"
        " vs stage 1 = ingest s / the first stage's; SQL = time in catalog statements)"
    )
    lines.append("")
    goal_rows = [[goal.name, goal.target, goal.value, _verdict(goal.passed)] for goal in goals(stages)]
    lines.append(format_table(["goal", "target", "measured", "result"], goal_rows))
    return "\n".join(lines)


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    value: str
    passed: bool | None


def goals(stages: Sequence[Stage]) -> list[Goal]:
    measured = [stage for stage in stages if stage.sizes is not None]
    found: list[Goal] = []
    if not measured:
        return found
    last = measured[-1]
    assert last.sizes is not None
    if last.http:
        worst = max(last.http, key=lambda timings: timings.p95)
        found.append(
            Goal(
                f"QIDO p95 over HTTP at {last.sizes.instances:,} instances (slowest search)",
                f"<= {QIDO_GOAL_MS:.0f} ms",
                f"{worst.p95:.1f} ms ({worst.name})",
                worst.p95 <= QIDO_GOAL_MS if last.target == STAGES[-1] else None,
            )
        )
    for label, timings in last.signin.items():
        worst = max(timings, key=lambda each: each.p95)
        found.append(
            Goal(
                f"QIDO p95 over HTTP as {label} at {last.sizes.instances:,} instances (slowest search)",
                f"<= {SIGNIN_GOAL_MS:.0f} ms",
                f"{worst.p95:.1f} ms ({worst.name})",
                worst.p95 <= SIGNIN_GOAL_MS if last.target == STAGES[-1] else None,
            )
        )
    if last.proposed_http:
        worst = max(last.proposed_http, key=lambda timings: timings.p95)
        found.append(
            Goal(
                f"the same with {', '.join(last.proposed)} (not in lamina's schema)",
                f"<= {QIDO_GOAL_MS:.0f} ms",
                f"{worst.p95:.1f} ms ({worst.name})",
                worst.p95 <= QIDO_GOAL_MS if last.target == STAGES[-1] else None,
            )
        )
    first = measured[0].sizes
    for stage in measured[1:]:
        if stage.growth is None or stage.sizes is None or first is None:
            continue
        found.append(
            Goal(
                f"ingest time at {stage.sizes.slides:,} / at {first.slides:,} slides",
                f"<= {INGEST_GROWTH_GOAL:.2f}",
                f"{stage.growth:.3f}",
                stage.growth <= INGEST_GROWTH_GOAL,
            )
        )
    assert last.sizes is not None
    found.append(
        Goal(
            "database size",
            f"< {DISK_GOAL / 1e9:.0f} GB",
            f"{_gb(last.sizes.database_bytes)} GB",
            last.sizes.database_bytes < DISK_GOAL,
        )
    )
    return found


def signin_text(stage: Stage) -> list[str]:
    """The table of the searches as signed-in people (issue 10)."""
    people, sizes = stage.people, stage.sizes
    assert people is not None and sizes is not None
    lines = [
        f"QIDO-RS over HTTP as signed-in people at {sizes.instances:,} instances, {people.tenants} labs;"
        f" the lab: {people.lab} ({people.lab_studies:,} studies, {people.lab_slides:,} slides); keys drawn"
        " among the lab's own slides, the same for everyone; ms:"
    ]
    lines.extend(f"  {person.label}: sees {person.sees}" for person in people.people)
    labels = list(stage.signin)
    rows = []
    for index, name in enumerate(timings.name for timings in stage.signin[labels[0]]):
        row = [name]
        for label in labels:
            timings = stage.signin[label][index]
            row += [f"{statistics.fmean(timings.hits):.1f}", f"{timings.p50:.1f}", f"{timings.p95:.1f}"]
        worst = max(stage.signin[label][index].p95 for label in labels)
        row.append(_verdict(worst <= SIGNIN_GOAL_MS))
        rows.append(row)
    headers = ["search"]
    for label in labels:
        headers += [f"{label}: hits", "p50", "p95"]
    headers.append(f"all p95<={SIGNIN_GOAL_MS:.0f}")
    lines.append(format_table(headers, rows))
    lines.append(
        "(GET /dicomweb/... through lamina's ASGI application in process with each person's bearer token,"
        " sign-in included: Authenticate, the rule, visible_studies/visible_series in the SQL;"
        f" {len(stage.signin[labels[0]][0].ms)} keys per search, the people in turn within each round)"
    )
    return lines


def report_json(report: dict[str, Any], stages: Sequence[Stage], templates: Templates) -> dict[str, Any]:
    def stage_json(stage: Stage) -> dict[str, Any]:
        return {
            "target_slides": stage.target,
            "skipped": stage.skipped,
            "sizes": None if stage.sizes is None else stage.sizes.__dict__,
            "load": None if stage.load is None else {**stage.load.__dict__, "total": stage.load.total},
            "qido_search_py": {timings.name: timings.summary() for timings in stage.catalog},
            "qido_http": {timings.name: timings.summary() for timings in stage.http},
            "proposed_indexes": stage.proposed,
            "qido_search_py_proposed_index": {t.name: t.summary() for t in stage.proposed_catalog},
            "qido_http_proposed_index": {t.name: t.summary() for t in stage.proposed_http},
            "lifecycle": {timings.name: timings.summary() for timings in stage.lifecycle},
            "signin_lab": None if stage.people is None else stage.people.lab,
            "qido_http_signed_in": {
                label: {timings.name: timings.summary() for timings in found}
                for label, found in stage.signin.items()
            },
            "week_slides": stage.week,
            "ingests": [run.__dict__ for run in stage.ingests],
            "reference_ingests": [run.__dict__ for run in stage.reference],
        }

    return {
        **report,
        "metadata_sizes": templates.sizes,
        "stages": [stage_json(stage) for stage in stages],
        "goals": [goal.__dict__ for goal in goals(stages)],
    }


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="share of 10^3, 10^5, 10^6 slides")
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help="PostgreSQL URL where a database may be created"
    )
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="the benchmark's own database")
    parser.add_argument("--reuse", action="store_true", help="use the database of an earlier --keep run")
    parser.add_argument("--keep", action="store_true", help="keep the database after the run")
    parser.add_argument("--queries", type=int, default=200, help="random keys per search")
    parser.add_argument("--ingests", type=int, default=21, help="measured ingests per stage")
    parser.add_argument("--deep-offset", type=int, default=10_000, help="offset of the deep page")
    parser.add_argument("--full-metadata", action="store_true", help="store every attribute's JSON")
    parser.add_argument(
        "--proposed",
        action="store_true",
        help="at the last stage, search again with the PROPOSED indexes the catalog lacks",
    )
    parser.add_argument(
        "--lab",
        default="largest",
        help="the signed-in pathologist's lab: largest, median, smallest (by studies) or a FINESS number",
    )
    parser.add_argument(
        "--signin-only",
        action="store_true",
        help="measure only the searches as signed-in people (no ingests, search.py, lifecycle, reference)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated catalog")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch folder")
    parser.add_argument("--output", type=Path, default=None, help="where the table is written")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    arguments = parser.parse_args(argv)
    if not 0 < arguments.scale <= 1 or arguments.queries < 2 or arguments.ingests < 1:
        parser.error("--scale must be in (0, 1], --queries at least 2, --ingests at least 1")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    report, stages, templates = run(arguments)
    text_report = report_text(report, stages, templates)
    print(text_report)
    if arguments.json:
        print(json.dumps(report_json(report, stages, templates), indent=2, default=str))
    today = dt.date.today().isoformat()
    output = arguments.output or (
        REPO / "benchmarks" / "results" / f"catalog-{today}.txt"
        if arguments.scale == 1
        else arguments.work / f"catalog-{today}-scale-{arguments.scale:g}.txt"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text_report + "\n")
    say(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
