"""What ``catalog.py`` measures: QIDO-RS searches, the lifecycle selection, ingests.

- :func:`searches` builds the searches the viewers make, each with random keys drawn from the
  catalog (:func:`sample_keys`), as a call of ``lamina.archive.catalog.search`` and as a
  ``GET /dicomweb/...``; :func:`measure_searches` runs them round by round, both ways;
- :func:`measure_lifecycle` times ``lifecycle.expiring`` on this week;
- :func:`measure_ingest` ingests new sample slides into several archives, round by round, and
  times each ingest and the catalog statements within it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text

from _common import median
from lamina.archive.archive import Archive
from lamina.archive.catalog import lifecycle, search
from lamina.archive.catalog.search import Criterion, Range, Single
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.sample import write_samples

PAGE = 50  # the viewer's worklist page
SAMPLE_SIZE = (1024, 768)  # the slide ingested at each stage


# --- the searches ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """Search keys drawn at random from the catalog."""

    patient_ids: list[str]
    accessions: list[str]
    barcodes: list[str]
    series: list[tuple[str, str]]  # (study, series)
    first_date: dt.date
    last_date: dt.date
    studies: int


def sample_keys(engine: Engine, count: int, seed: int) -> Keys:
    """``count`` random slides, with their case and patient, and the span of study dates."""
    with engine.connect() as conn:
        slides = int(conn.execute(text("SELECT count(*) FROM slides")).scalar_one())
        share = min(100.0, 100.0 * 3 * count / max(slides, 1))
        rows = conn.execute(
            text(
                f"SELECT s.container_id, s.study_instance_uid, s.series_instance_uid, st.accession_number, "
                f"p.patient_id FROM slides s TABLESAMPLE BERNOULLI ({share}) REPEATABLE ({seed}) "
                "JOIN studies st ON st.study_instance_uid = s.study_instance_uid "
                "LEFT JOIN patients p ON p.pk = st.patient_pk"
            )
        ).all()
        first, last = conn.execute(text("SELECT min(study_date), max(study_date) FROM studies")).one()
        studies = int(conn.execute(text("SELECT count(*) FROM studies")).scalar_one())
    rng = random.Random(seed)
    rows = rng.sample(rows, min(count, len(rows)))
    return Keys(
        patient_ids=[row[4] for row in rows if row[4]],
        accessions=[row[3] for row in rows if row[3]],
        barcodes=[row[0] for row in rows],
        series=[(row[1], row[2]) for row in rows],
        first_date=dt.datetime.strptime(first, "%Y%m%d").date(),
        last_date=dt.datetime.strptime(last, "%Y%m%d").date(),
        studies=studies,
    )


@dataclass(frozen=True)
class Search:
    """One kind of QIDO-RS search, as the catalog function and as the HTTP request."""

    name: str
    run: Callable[[Engine, int], int]  # (engine, round) -> hits
    path: Callable[[int], str]  # round -> path and query string under /dicomweb


def searches(keys: Keys, rounds: int, deep_offset: int, seed: int) -> list[Search]:
    """The searches the viewers make, each with one key per round."""
    rng = random.Random(seed)

    def pick(values: Sequence[Any]) -> list[Any]:
        return [values[index % len(values)] for index in range(rounds)] if values else []

    patients, accessions, barcodes, series = (
        pick(keys.patient_ids),
        pick(keys.accessions),
        pick(keys.barcodes),
        pick(keys.series),
    )
    span = max((keys.last_date - keys.first_date).days - 6, 1)
    weeks = []
    for _ in range(rounds):
        low = keys.first_date + dt.timedelta(days=rng.randrange(span))
        weeks.append((f"{low:%Y%m%d}", f"{low + dt.timedelta(days=6):%Y%m%d}"))
    offset = min(deep_offset, keys.studies // 2)
    fields = "includefield=all"

    def studies(
        criteria: Callable[[int], list[Criterion]], limit: int, skip: int
    ) -> Callable[[Engine, int], int]:
        return lambda engine, i: len(search.find_studies(engine, criteria(i), limit, skip).hits)

    def series_of(criteria: Callable[[int], list[Criterion]], limit: int) -> Callable[[Engine, int], int]:
        return lambda engine, i: len(search.find_series(engine, criteria(i), limit, 0).hits)

    def instances_of(criteria: Callable[[int], list[Criterion]]) -> Callable[[Engine, int], int]:
        return lambda engine, i: len(search.find_instances(engine, criteria(i), 1000, 0).hits)

    return [
        Search(
            "studies by PatientID",
            studies(lambda i: [Criterion("PatientID", Single(patients[i]))], PAGE, 0),
            lambda i: f"/studies?PatientID={patients[i]}&{fields}&limit={PAGE}",
        ),
        Search(
            "studies by AccessionNumber",
            studies(lambda i: [Criterion("AccessionNumber", Single(accessions[i]))], PAGE, 0),
            lambda i: f"/studies?AccessionNumber={accessions[i]}&{fields}&limit={PAGE}",
        ),
        Search(
            "series by ContainerIdentifier (barcode)",
            series_of(lambda i: [Criterion("ContainerIdentifier", Single(barcodes[i]))], PAGE),
            lambda i: f"/series?ContainerIdentifier={barcodes[i]}&{fields}&limit={PAGE}",
        ),
        Search(
            "studies by StudyDate (a week)",
            studies(lambda i: [Criterion("StudyDate", Range(*weeks[i]))], PAGE, 0),
            lambda i: f"/studies?StudyDate={weeks[i][0]}-{weeks[i][1]}&{fields}&limit={PAGE}",
        ),
        Search(
            "studies ModalitiesInStudy=SM, offset 0",
            studies(lambda i: [Criterion("ModalitiesInStudy", Single("SM"))], PAGE, 0),
            lambda i: f"/studies?ModalitiesInStudy=SM&{fields}&limit={PAGE}&offset=0",
        ),
        Search(
            f"studies ModalitiesInStudy=SM, offset {offset:,}",
            studies(lambda i: [Criterion("ModalitiesInStudy", Single("SM"))], PAGE, offset),
            lambda i: f"/studies?ModalitiesInStudy=SM&{fields}&limit={PAGE}&offset={offset}",
        ),
        Search(
            "series of a study",
            series_of(lambda i: [Criterion("StudyInstanceUID", Single(series[i][0]))], 1000),
            lambda i: f"/studies/{series[i][0]}/series?{fields}",
        ),
        Search(
            "instances of a series",
            instances_of(
                lambda i: [
                    Criterion("StudyInstanceUID", Single(series[i][0])),
                    Criterion("SeriesInstanceUID", Single(series[i][1])),
                ]
            ),
            lambda i: f"/studies/{series[i][0]}/series/{series[i][1]}/instances",
        ),
    ]


@dataclass
class Timings:
    """Milliseconds of each run of one measured operation, and what it found."""

    name: str
    ms: list[float] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)

    def percentile(self, share: float) -> float:
        if len(self.ms) == 1:
            return self.ms[0]
        return statistics.quantiles(self.ms, n=100, method="inclusive")[round(share * 100) - 1]

    @property
    def p50(self) -> float:
        return median(self.ms)

    @property
    def p95(self) -> float:
        return self.percentile(0.95)

    @property
    def worst(self) -> float:
        return max(self.ms)

    def summary(self) -> dict[str, float]:
        return {
            "p50_ms": self.p50,
            "p95_ms": self.p95,
            "max_ms": self.worst,
            "runs": len(self.ms),
            "mean_hits": statistics.fmean(self.hits) if self.hits else 0.0,
        }


def measure_searches(
    engine: Engine, client: Any, kinds: Sequence[Search], rounds: int, token: str
) -> tuple[list[Timings], list[Timings]]:
    """Each search ``rounds`` times through search.py and through HTTP (``token`` sent: a platform
    admin's, who searches everywhere as search.py does), interleaved round by round (a slow spell
    of the machine falls on every kind alike), after one unmeasured round."""
    catalog = [Timings(kind.name) for kind in kinds]
    http = [Timings(kind.name) for kind in kinds]
    for kind in kinds:  # warm-up: connections, code paths
        kind.run(engine, 0)
        _get(client, kind.path(0), token)
    for index in range(rounds):
        for kind, by_catalog, by_http in zip(kinds, catalog, http, strict=True):
            started = time.perf_counter()
            hits = kind.run(engine, index)
            by_catalog.ms.append((time.perf_counter() - started) * 1000)
            by_catalog.hits.append(hits)
            started = time.perf_counter()
            answer = _get(client, kind.path(index), token)
            by_http.ms.append((time.perf_counter() - started) * 1000)
            by_http.hits.append(len(answer))
    return catalog, http


def _get(client: Any, path: str, token: str) -> list[Any]:
    headers = {"Accept": "application/dicom+json", "Authorization": f"Bearer {token}"}
    response = client.get("/dicomweb" + path, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"GET /dicomweb{path}: {response.status_code} {response.text[:300]}")
    answer: list[Any] = response.json()
    return answer


# --- lifecycle ---------------------------------------------------------------------------------


def measure_lifecycle(engine: Engine, now: dt.datetime, rounds: int, seed: int) -> tuple[list[Timings], int]:
    """This week's selection: the first batch, later batches (keyset), the whole week."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + dt.timedelta(days=7)
    whole = Timings("the whole week (every slide, no limit)")
    first = Timings("this week, first batch of 1,000")
    later = Timings("this week, a later batch of 1,000 (after=)")
    lifecycle.expiring(engine, start, end, limit=1000)  # warm-up
    week: list[lifecycle.ExpiringSlide] = []
    for _ in range(max(3, rounds // 40)):
        started = time.perf_counter()
        week = lifecycle.expiring(engine, start, end, limit=None)
        whole.ms.append((time.perf_counter() - started) * 1000)
        whole.hits.append(len(week))
    rng = random.Random(seed)
    for _ in range(rounds):
        started = time.perf_counter()
        batch = lifecycle.expiring(engine, start, end, limit=1000)
        first.ms.append((time.perf_counter() - started) * 1000)
        first.hits.append(len(batch))
        after = week[rng.randrange(len(week))] if week else None
        started = time.perf_counter()
        batch = lifecycle.expiring(engine, start, end, limit=1000, after=after)
        later.ms.append((time.perf_counter() - started) * 1000)
        later.hits.append(len(batch))
    return [first, later, whole], len(week)


# --- ingest ------------------------------------------------------------------------------------


@dataclass
class IngestRun:
    seconds: float
    sql_seconds: float
    statements: int


class _SqlClock:
    """Time spent in the statements of one engine (cursor executions), while attached."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seconds = 0.0
        self.statements = 0
        self._begun: list[float] = []

    def _before(self, *_: Any) -> None:
        self._begun.append(time.perf_counter())

    def _after(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._begun.pop()
        self.statements += 1

    def __enter__(self) -> _SqlClock:
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


def ingest_once(archive: Archive, folder: Path, seed: int) -> IngestRun:
    """Write a new sample slide (and its manifest) into ``folder`` and ingest it into ``archive``."""
    shutil.rmtree(folder, ignore_errors=True)
    sample = write_samples(folder, ["aperio_svs"], size=SAMPLE_SIZE, seed=seed)[0]
    candidate = discover([sample.path])[0]
    manifest = load_manifest(folder / "manifest.csv")
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
    with _SqlClock(archive.catalog.engine) as clock:
        started = time.perf_counter()
        result = ingestor.ingest(candidate, manifest)
        seconds = time.perf_counter() - started
    if result.status != "ingested":
        raise RuntimeError(f"ingest of {sample.path}: {result.status} ({result.reason})")
    shutil.rmtree(folder, ignore_errors=True)
    return IngestRun(seconds, clock.seconds, clock.statements)


def measure_ingest(archives: Sequence[Archive], samples: Path, runs: int, seed: int) -> list[list[IngestRun]]:
    """Ingest ``runs`` + 1 new slides into each archive, round by round, the order alternating
    from one round to the next so that neither archive always goes first; the first round warms
    up and is not counted."""
    measured: list[list[IngestRun]] = [[] for _ in archives]
    for index in range(runs + 1):
        order = list(enumerate(archives))
        if index % 2:
            order.reverse()
        for position, archive in order:
            done = ingest_once(archive, samples / f"slide-{position}-{index}", seed + 100 * position + index)
            if index > 0:
                measured[position].append(done)
    return measured


@contextlib.contextmanager
def served(settings: Settings, archive: Archive) -> Iterator[Any]:
    """lamina's ASGI application on this archive, called in process (no network)."""
    from lamina.api.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's notice about httpx in its test client
        from starlette.testclient import TestClient

        with TestClient(create_app(settings, archive), base_url="http://127.0.0.1:8000") as client:
            yield client
