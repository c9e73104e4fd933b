"""QIDO-RS as signed-in people on ``catalog.py``'s catalog (issue 10).

Every HTTP route of lamina needs a bearer token. :func:`register_people` records the catalog's
200 labs (``tenants`` rows for the FINESS numbers its studies carry), then, with tokens from the
node's own issuer:

- a pathologist of one lab (``--lab``: the largest by default, the busiest worklist);
- the same pathologist's colleague who also holds a case grant and a grant on a collection of 10
  slides of another lab (at the study level, ``visible_study_branches`` gives two disjoint
  branches, ``tenant = lab`` and the cases granted outside it, which a search pages through as a
  union; at the series level ``visible_series`` is their OR);
- a platform admin (``platform_admin``, held in one lab, searches metadata everywhere: no filter).

:func:`sample_lab_keys` draws the search keys among the lab's own slides (a pathologist looks for
the lab's patients and cases), and :func:`measure_signed` runs the viewer's searches over HTTP,
round by round, as each of them in turn.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from _catalog_measure import Keys, Search, Timings
from lamina.archive.archive import Archive
from lamina.errors import RequestError
from lamina.governance.collections import Collections
from lamina.governance.issuer import LocalIssuer
from lamina.governance.model import GranteeKind, Permission, ResourceKind
from lamina.governance.registry import Registry
from lamina.governance.roles import Role

PATHOLOGIST = "bench-pathologist"
GRANTED = "bench-pathologist-granted"
ADMIN = "bench-platform-admin"
TOKEN_SECONDS = 6 * 3600


@dataclass(frozen=True)
class Person:
    """Who searches: a label for the report, the token, and what they may see."""

    label: str
    token: str
    sees: str


@dataclass(frozen=True)
class People:
    lab: str
    lab_studies: int
    lab_slides: int
    tenants: int
    people: tuple[Person, ...]


def _lab(engine: Engine, choice: str) -> tuple[str, int]:
    """The lab of ``choice`` (``largest``, ``median``, ``smallest`` or a FINESS number) and its
    number of studies."""
    with engine.connect() as conn:
        sizes = [
            (str(row[0]), int(row[1]))
            for row in conn.execute(
                text("SELECT tenant, count(*) FROM studies GROUP BY tenant ORDER BY count(*) DESC, tenant")
            )
        ]
    if not sizes:
        raise RuntimeError("the catalog has no studies")
    by_choice = {"largest": sizes[0], "median": sizes[len(sizes) // 2], "smallest": sizes[-1]}
    if choice in by_choice:
        return by_choice[choice]
    found = dict(sizes)
    if choice not in found:
        raise RuntimeError(
            f"--lab {choice}: no study of that lab; give largest, median, smallest or a FINESS"
        )
    return choice, found[choice]


def register_people(archive: Archive, lab_choice: str, labs: Iterable[str] = ()) -> People:
    """The catalog's labs as tenants (those its studies carry, and ``labs``: the generator's,
    some without a study yet), the people of the module's documentation, their tokens."""
    engine = archive.catalog.engine
    registry = Registry(archive.catalog)
    with engine.connect() as conn:
        codes = {str(row[0]) for row in conn.execute(text("SELECT DISTINCT tenant FROM studies"))}
    codes |= set(labs)
    known = {tenant.finess for tenant in registry.tenants()}
    for code in sorted(codes - known):
        with contextlib.suppress(RequestError):
            registry.add_tenant(code, f"Anatomie pathologique {code}", "benchmarks")
    lab, studies = _lab(engine, lab_choice)
    other, _ = _lab(engine, "median" if lab != _lab(engine, "median")[0] else "smallest")
    with engine.connect() as conn:
        slides = int(
            conn.execute(text("SELECT count(*) FROM slides WHERE tenant = :t"), {"t": lab}).scalar_one()
        )
        case = str(
            conn.execute(
                text("SELECT study_instance_uid FROM studies WHERE tenant = :t LIMIT 1"), {"t": other}
            ).scalar_one()
        )
    # one person per lab (a kept catalog measured again with another --lab keeps the earlier ones)
    pathologist, granted, admin = (f"{PATHOLOGIST}-{lab}", f"{GRANTED}-{lab}", f"{ADMIN}-{lab}")
    registry.add_person(pathologist, lab, [Role.PATHOLOGIST], "Benchmark pathologist", "benchmarks")
    registry.add_person(granted, lab, [Role.PATHOLOGIST], "Benchmark pathologist with a grant", "benchmarks")
    held = registry.grants_reaching(granted, {lab})
    if held:  # a kept catalog: the grants of an earlier run
        other = held[0].tenant
    else:
        registry.add_grant(other, GranteeKind.PERSON, granted, ResourceKind.CASE, case, Permission.READ)
    if not any(g.resource_kind is ResourceKind.COLLECTION for g in held):
        with engine.connect() as conn:
            chosen = [
                str(row[0])
                for row in conn.execute(
                    text("SELECT id FROM slides WHERE tenant = :t ORDER BY id LIMIT 10"), {"t": other}
                )
            ]
        shared = Collections(archive.catalog).add(other, f"Second opinions for {lab}", chosen, "benchmarks")
        registry.add_grant(
            other, GranteeKind.PERSON, granted, ResourceKind.COLLECTION, shared.id, Permission.READ
        )
    registry.add_person(admin, lab, [Role.PLATFORM_ADMIN], "Benchmark platform admin", "benchmarks")
    issuer = LocalIssuer.open(archive.settings.home)
    people = (
        Person("pathologist", issuer.issue(pathologist, TOKEN_SECONDS), f"lab {lab}: tenant IN (lab)"),
        Person(
            "pathologist + grants",
            issuer.issue(granted, TOKEN_SECONDS),
            f"lab {lab}, one case and a collection of 10 slides of lab {other}: studies through the union "
            "of (tenant = lab) and (the cases granted, outside the lab); series: their OR",
        ),
        Person("platform admin", issuer.issue(admin, TOKEN_SECONDS), "every lab: no condition"),
    )
    return People(lab, studies, slides, len(registry.tenants()), people)


def sample_lab_keys(engine: Engine, tenant: str, count: int, seed: int) -> Keys:
    """``count`` random slides of ``tenant``, with their case and patient; the span of the lab's
    study dates."""
    with engine.connect() as conn:
        conn.execute(text("SELECT setseed(:s)"), {"s": (seed % 1000) / 1000})
        rows = conn.execute(
            text(
                "SELECT s.container_id, s.study_instance_uid, s.series_instance_uid, st.accession_number, "
                "p.patient_id FROM slides s "
                "JOIN studies st ON st.study_instance_uid = s.study_instance_uid "
                "LEFT JOIN patients p ON p.pk = st.patient_pk "
                "WHERE s.tenant = :t ORDER BY random() LIMIT :n"
            ),
            {"t": tenant, "n": count},
        ).all()
        first, last, studies = conn.execute(
            text("SELECT min(study_date), max(study_date), count(*) FROM studies WHERE tenant = :t"),
            {"t": tenant},
        ).one()
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return Keys(
        patient_ids=[row[4] for row in rows if row[4]],
        accessions=[row[3] for row in rows if row[3]],
        barcodes=[row[0] for row in rows],
        series=[(row[1], row[2]) for row in rows],
        first_date=dt.datetime.strptime(first, "%Y%m%d").date(),
        last_date=dt.datetime.strptime(last, "%Y%m%d").date(),
        studies=int(studies),
    )


def measure_signed(
    client: Any, kinds: Sequence[Search], rounds: int, people: Sequence[Person]
) -> dict[str, list[Timings]]:
    """Each search ``rounds`` times over HTTP as each person (their token sent), round by round,
    the people in turn within a round, after one unmeasured round; timings by person."""
    found = {person.label: [Timings(kind.name) for kind in kinds] for person in people}
    for person in people:  # warm-up: the principal resolved and kept, code paths, pages
        for kind in kinds:
            signed_get(client, kind.path(0), person.token)
    for index in range(rounds):
        for number, kind in enumerate(kinds):
            order = list(people) if index % 2 == 0 else list(reversed(people))
            for person in order:
                started = time.perf_counter()
                answer = signed_get(client, kind.path(index), person.token)
                timings = found[person.label][number]
                timings.ms.append((time.perf_counter() - started) * 1000)
                timings.hits.append(len(answer))
    return found


def signed_get(client: Any, path: str, token: str) -> list[Any]:
    """``GET /dicomweb{path}`` with ``token``; the DICOM JSON answer (RuntimeError unless 200)."""
    headers = {"Accept": "application/dicom+json", "Authorization": f"Bearer {token}"}
    response = client.get("/dicomweb" + path, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"GET /dicomweb{path}: {response.status_code} {response.text[:300]}")
    answer: list[Any] = response.json()
    return answer
