"""Searches page through the union of disjoint branches (one per lab, one for the cases granted)
exactly as through their OR, on both backends: the same studies in the same order, for every page
size and offset, with criteria, with undated and same-day studies, and nothing twice."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from sqlalchemy import insert

from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.search import Criterion, Single, find_studies
from lamina.governance.decide import principal_of, visible_studies, visible_study_branches
from lamina.governance.model import Grant, GranteeKind, Permission, ResourceKind
from lamina.governance.roles import Role

LYON, NICE, BREST = "690781810", "060785011", "290000017"


@pytest.fixture
def studies(archive: Archive) -> dict[str, list[str]]:
    """120 studies in three labs, some undated, several on the same day; by lab."""
    rng = random.Random(12)
    now = dt.datetime.now(dt.UTC)
    rows, by_lab = [], {LYON: [], NICE: [], BREST: []}  # type: ignore[var-annotated]
    for number in range(120):
        lab = rng.choice(list(by_lab))
        uid = f"2.25.{number + 1000}"
        undated = rng.random() < 0.1
        day = None if undated else f"2026{rng.randint(1, 3):02d}{rng.randint(1, 4):02d}"
        rows.append(
            {
                "study_instance_uid": uid,
                "accession_number": f"A{number % 7}",
                "study_date": day,
                "study_time": None if undated or rng.random() < 0.2 else f"{rng.randint(8, 9):02d}0000",
                "created_at": now,
                "tenant": lab,
                "modalities": "\\SM\\",
            }
        )
        by_lab[lab].append(uid)
    with archive.catalog.begin() as conn:
        conn.execute(insert(t.studies), rows)
    return by_lab


def _grant(tenant: str, kind: ResourceKind, resource: str) -> Grant:
    now = dt.datetime.now(dt.UTC)
    return Grant(
        resource, tenant, GranteeKind.PERSON, "dr-a", kind, resource, Permission.READ, None, now, "tests"
    )


@pytest.mark.parametrize("criteria", [[], [Criterion("AccessionNumber", Single("A3"))]], ids=["all", "A3"])
def test_the_union_of_branches_pages_like_their_or(
    archive: Archive, studies: dict[str, list[str]], criteria: list[Criterion]
) -> None:
    # Arrange: a pathologist of Lyon and Nice with two cases of Brest granted, and one of Lyon's
    # own (granted as well: it must not come twice)
    granted = [*studies[BREST][:2], studies[LYON][0]]
    grants = [_grant(BREST, ResourceKind.CASE, uid) for uid in granted[:2]]
    grants.append(_grant(LYON, ResourceKind.CASE, granted[2]))
    who = principal_of("dr-a", [(LYON, Role.PATHOLOGIST), (NICE, Role.PATHOLOGIST)], grants)
    branches = visible_study_branches(who)
    assert branches is not None and len(branches) == 3
    engine = archive.catalog.engine
    everything = find_studies(engine, criteria, 1000, 0, metadata=False, visible=visible_studies(who)).hits
    expected = [hit.study_instance_uid for hit in everything]
    assert len(expected) == len(set(expected)) > 0
    assert set(expected) <= {*studies[LYON], *studies[NICE], *granted}
    # Act and Assert: every page of every size, through the union
    for limit in (1, 7, 50):
        for offset in range(0, len(expected) + 2, max(1, limit // 2)):
            page = find_studies(engine, criteria, limit, offset, metadata=False, visible=branches)
            assert [h.study_instance_uid for h in page.hits] == expected[offset : offset + limit], (
                limit,
                offset,
            )
            assert page.more == (offset + limit < len(expected))


def test_branches_for_everyone_and_no_one(archive: Archive, studies: dict[str, list[str]]) -> None:
    admin = principal_of("root", [(LYON, Role.PLATFORM_ADMIN)], [])
    nobody = principal_of("guest", [(LYON, Role.RESEARCHER)], [])
    assert visible_study_branches(admin) is None
    assert visible_study_branches(nobody) == ()
    engine = archive.catalog.engine
    assert find_studies(engine, [], 10, 0, metadata=False, visible=()).hits == []
    assert len(find_studies(engine, [], 200, 0, metadata=False, visible=None).hits) == 120
