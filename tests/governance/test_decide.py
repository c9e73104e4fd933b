"""The one decision: every role × own tenant / other tenant / granted / expired or revoked grant,
and the search condition, run as SQL on a real catalog with two labs (both backends)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.ingest import Ingestor
from lamina.governance.decide import (
    GLOBAL_ROLES,
    ROLE_ACTIONS,
    Action,
    Principal,
    Resource,
    decide,
    principal_of,
    visible_series,
    visible_studies,
)
from lamina.governance.model import Grant, GranteeKind, Permission, ResourceKind
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.sample import write_samples
from tests.support import ingest_path

LYON, NICE = "690781810", "060785011"
NOW = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
SLIDE = Resource("slide", LYON, slide_id="S1", study="1.2.3")


def _grant(grantee_kind: GranteeKind, grantee: str, **changes: object) -> Grant:
    values: dict[str, object] = {
        "id": "g1",
        "tenant": LYON,
        "grantee_kind": grantee_kind,
        "grantee": grantee,
        "resource_kind": ResourceKind.SLIDE,
        "resource": "S1",
        "permission": Permission.READ,
        "expires_at": NOW + dt.timedelta(days=1),
        "created_at": NOW - dt.timedelta(days=1),
        "created_by": "admin",
    }
    values.update(changes)
    return Grant(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", list(Role))
def test_every_role_in_its_own_tenant_and_in_another(role: Role) -> None:
    own = principal_of("p", [(LYON, role)], [])
    other = principal_of("p", [(NICE, role)], [])
    for action in Action:
        assert decide(own, action, SLIDE, NOW).allowed is (action in ROLE_ACTIONS[role]), (role, action)
        elsewhere = decide(other, action, SLIDE, NOW)
        if role in GLOBAL_ROLES:  # a platform admin's role holds in every lab: no pixels anywhere
            assert elsewhere.allowed is (action in ROLE_ACTIONS[role]), (role, action)
            assert elsewhere.allowed or not elsewhere.hidden  # it searches everywhere: 403, not 404
            continue
        assert not elsewhere.allowed
        assert elsewhere.hidden  # another lab's slide does not exist for it: 404, as a guessed UID


def test_a_role_without_pixels_gets_403_on_what_it_can_see_and_404_otherwise() -> None:
    admin = principal_of("a", [(LYON, Role.LAB_ADMIN)], [])
    assert decide(admin, Action.SEARCH, SLIDE, NOW).allowed
    read = decide(admin, Action.READ, SLIDE, NOW)
    assert (read.allowed, read.hidden) == (False, False)  # sees the metadata: 403 on pixels
    archivist = principal_of("b", [(LYON, Role.ARCHIVIST)], [])
    assert decide(archivist, Action.OPERATE, SLIDE, NOW).allowed
    assert decide(archivist, Action.READ, SLIDE, NOW).hidden  # no pixels, no metadata: 404
    pathologist = principal_of("c", [(LYON, Role.PATHOLOGIST)], [])
    delete = decide(pathologist, Action.DELETE, SLIDE, NOW)
    assert (delete.allowed, delete.hidden) == (False, False)  # reads it, may not delete: 403


@pytest.mark.parametrize(
    ("grantee_kind", "grantee", "principal"),
    [
        (GranteeKind.PERSON, "p", Principal("p")),
        (GranteeKind.TENANT, NICE, Principal("p", {NICE: frozenset({Role.PATHOLOGIST})})),
        (GranteeKind.PROJECT, "proj-7", Principal("p", projects=frozenset({"proj-7"}))),
    ],
)
def test_a_grant_reaches_a_person_a_tenant_or_a_project_until_it_ends(
    grantee_kind: GranteeKind, grantee: str, principal: Principal
) -> None:
    def with_(*grants: Grant) -> Principal:
        return Principal(principal.id, principal.roles, principal.projects, grants)

    granted = with_(_grant(grantee_kind, grantee))
    assert decide(granted, Action.READ, SLIDE, NOW).allowed
    assert not decide(granted, Action.ANNOTATE, SLIDE, NOW).allowed
    annotate = with_(_grant(grantee_kind, grantee, permission=Permission.READ_ANNOTATE))
    assert decide(annotate, Action.ANNOTATE, SLIDE, NOW).allowed
    assert not decide(annotate, Action.DELETE, SLIDE, NOW).allowed
    assert not decide(
        granted, Action.READ, Resource("slide", LYON, slide_id="S2", study="1.2.3"), NOW
    ).allowed
    case = with_(_grant(grantee_kind, grantee, resource_kind=ResourceKind.CASE, resource="1.2.3"))
    assert decide(case, Action.READ, SLIDE, NOW).allowed
    for ended in (
        _grant(grantee_kind, grantee, expires_at=NOW - dt.timedelta(seconds=1)),
        _grant(grantee_kind, grantee, revoked_at=NOW - dt.timedelta(seconds=1), revoked_by="admin"),
    ):
        refused = decide(with_(ended), Action.READ, SLIDE, NOW)
        assert not refused.allowed and refused.hidden
    nobody = Principal("q", {NICE: frozenset()})
    assert not decide(
        Principal(nobody.id, nobody.roles, grants=(_grant(grantee_kind, grantee),)), Action.READ, SLIDE, NOW
    ).allowed


def _two_labs(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> tuple[str, str]:
    registry = Registry(archive.catalog)
    samples = write_samples(tmp_path / "s", ["aperio_svs", "tiled_tiff"], size=(1024, 768), seed=9)
    first = ingest_path(ingestor, samples[0].path)
    registry.add_tenant(LYON, "HCL")  # adopts the first slide
    second = ingest_path(ingestor, samples[1].path)
    registry.add_tenant(NICE, "Nice")
    with archive.catalog.begin() as conn:  # what `lamina ingest --tenant` will do
        conn.execute(t.slides.update().where(t.slides.c.id == second.slide_id).values(tenant=NICE))
        study = conn.execute(
            select(t.slides.c.study_instance_uid).where(t.slides.c.id == second.slide_id)
        ).scalar()
        conn.execute(t.studies.update().where(t.studies.c.study_instance_uid == study).values(tenant=NICE))
    assert first.slide_id and second.slide_id
    return first.slide_id, second.slide_id


def test_searches_are_filtered_in_sql_by_tenant_and_grant(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    lyon_slide, nice_slide = _two_labs(archive, ingestor, tmp_path)
    registry = Registry(archive.catalog)

    def studies(principal: Principal) -> set[str]:
        query = select(t.studies.c.tenant).where(visible_studies(principal))
        with archive.catalog.engine.connect() as conn:
            return {str(row[0]) for row in conn.execute(query)}

    def series(principal: Principal) -> set[str]:
        query = (
            select(t.slides.c.id)
            .join(t.series, t.series.c.series_instance_uid == t.slides.c.series_instance_uid)
            .where(visible_series(principal))
        )
        with archive.catalog.engine.connect() as conn:
            return {str(row[0]) for row in conn.execute(query)}

    lyon = principal_of("a", [(LYON, Role.PATHOLOGIST)], [])
    assert studies(lyon) == {LYON} and series(lyon) == {lyon_slide}
    both = principal_of("b", [(LYON, Role.PATHOLOGIST), (NICE, Role.TECHNICIAN)], [])
    assert studies(both) == {LYON, NICE} and series(both) == {lyon_slide, nice_slide}
    assert studies(principal_of("c", [(LYON, Role.ARCHIVIST)], [])) == set()
    assert studies(Principal("nobody")) == set()
    grant = registry.add_grant(LYON, GranteeKind.TENANT, NICE, ResourceKind.SLIDE, lyon_slide)
    nice = principal_of("d", [(NICE, Role.PATHOLOGIST)], registry.grants())
    assert studies(nice) == {NICE, LYON} and series(nice) == {nice_slide, lyon_slide}
    registry.revoke_grant(grant.id)
    nice = principal_of("d", [(NICE, Role.PATHOLOGIST)], registry.grants())
    assert studies(nice) == {NICE} and series(nice) == {nice_slide}
