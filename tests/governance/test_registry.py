"""Labs, people, roles and grants in the catalog, on both backends: the first lab adopts what was
stored before tenants existed, a grant is only given on the lab's own slides and cases, every
change is audited."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.ingest import Ingestor
from lamina.errors import NotFoundError, RequestError
from lamina.governance.model import GranteeKind, Permission, ResourceKind, RoleAssignment
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.sample import write_samples
from tests.support import ingest_path

LYON, NICE = "690781810", "060785011"


@pytest.fixture
def slide_id(ingestor: Ingestor, tmp_path: Path) -> str:
    (sample,) = write_samples(tmp_path / "samples", ["aperio_svs"], size=(1024, 768), seed=5)
    result = ingest_path(ingestor, sample.path)
    assert result.ok and result.slide_id
    return result.slide_id


def _audit(archive: Archive) -> list[tuple[str, str]]:
    with archive.catalog.engine.connect() as conn:
        rows = conn.execute(select(t.audit_log.c.action, t.audit_log.c.entity).order_by(t.audit_log.c.seq))
        return [(str(a), str(b)) for a, b in rows]


def test_the_first_lab_adopts_what_was_stored_before_and_the_second_nothing(
    archive: Archive, slide_id: str
) -> None:
    registry = Registry(archive.catalog)
    # Act
    lyon, adopted = registry.add_tenant(LYON, "Anatomie pathologique, HCL")
    nice, adopted_second = registry.add_tenant(NICE, "CHU de Nice")
    # Assert
    assert adopted == {"cases": 1, "slides": 1, "DICOM peers": 0}
    assert adopted_second == {}
    (slide,) = archive.catalog.slides()
    assert slide.tenant == LYON
    assert registry.tenants() == [nice, lyon]  # by FINESS number
    assert ("tenant-add", f"tenant/{LYON}") in _audit(archive)


def test_a_tenant_is_a_finess_number_known_once(archive: Archive) -> None:
    registry = Registry(archive.catalog)
    registry.add_tenant("2a0000154", "Ajaccio")
    assert registry.tenant("2A0000154").name == "Ajaccio"
    with pytest.raises(RequestError, match="already a tenant"):
        registry.add_tenant("2A0000154", "again")
    for wrong in ("75071218", "7507121845", "ZZ0712184", ""):
        with pytest.raises(RequestError, match="not a FINESS number"):
            registry.add_tenant(wrong, "x")
    with pytest.raises(NotFoundError, match="lamina tenants add 690781810"):
        registry.tenant(LYON)


def test_a_person_holds_roles_in_several_labs(archive: Archive) -> None:
    registry = Registry(archive.catalog)
    registry.add_tenant(LYON, "HCL")
    registry.add_tenant(NICE, "Nice")
    registry.add_person("810001234567", LYON, [Role.PATHOLOGIST], "Dr A. Martin")
    person = registry.add_person("810001234567", NICE, [Role.PATHOLOGIST, Role.LAB_ADMIN])
    again = registry.add_person("810001234567", NICE, [Role.PATHOLOGIST])  # held already: unchanged
    assert person == again
    assert person.display_name == "Dr A. Martin"
    assert person.roles == (  # by tenant, then role
        RoleAssignment(NICE, Role.LAB_ADMIN),
        RoleAssignment(NICE, Role.PATHOLOGIST),
        RoleAssignment(LYON, Role.PATHOLOGIST),
    )
    assert person.roles_in(NICE) == {Role.PATHOLOGIST, Role.LAB_ADMIN}
    assert person.roles_in(LYON) == {Role.PATHOLOGIST}
    assert [p.id for p in registry.people(LYON)] == ["810001234567"]
    with pytest.raises(NotFoundError, match="lamina tenants add"):
        registry.add_person("someone", "130786049", [Role.TECHNICIAN])
    with pytest.raises(RequestError, match="cannot name a person"):
        registry.add_person("a b", LYON, [Role.TECHNICIAN])
    with pytest.raises(RequestError, match="at least one role"):
        registry.add_person("someone", LYON, [])


def test_a_grant_is_given_on_the_labs_own_slides_expires_and_is_revoked(
    archive: Archive, slide_id: str
) -> None:
    # Arrange: the slide belongs to Lyon
    registry = Registry(archive.catalog)
    registry.add_tenant(LYON, "HCL")
    registry.add_tenant(NICE, "Nice")
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    # Act
    grant = registry.add_grant(
        LYON,
        GranteeKind.TENANT,
        NICE,
        ResourceKind.SLIDE,
        slide_id,
        Permission.READ_ANNOTATE,
        soon,
        "admin-lyon",
    )
    # Assert: listed while in force, gone from the active list when revoked, kept in the history
    assert registry.grants(LYON) == [grant]
    assert registry.grants(NICE) == []
    assert grant.active() and not grant.active(soon + dt.timedelta(seconds=1))
    assert registry.grants(LYON, now=soon + dt.timedelta(seconds=1)) == []
    revoked = registry.revoke_grant(grant.id, "admin-lyon")
    assert revoked.revoked_by == "admin-lyon" and not revoked.active()
    assert registry.grants(LYON) == []
    assert [g.id for g in registry.grants(LYON, include_ended=True)] == [grant.id]
    with pytest.raises(NotFoundError, match="in force"):
        registry.revoke_grant(grant.id)
    actions = [action for action, _ in _audit(archive)]
    assert actions.count("grant-add") == 1 and actions.count("grant-revoke") == 1


def test_no_grant_on_another_labs_slide_nor_on_a_guess_and_the_two_look_alike(
    archive: Archive, slide_id: str
) -> None:
    registry = Registry(archive.catalog)
    registry.add_tenant(LYON, "HCL")  # adopts the slide
    registry.add_tenant(NICE, "Nice")
    with pytest.raises(NotFoundError) as foreign:
        registry.add_grant(NICE, GranteeKind.PERSON, "someone", ResourceKind.SLIDE, slide_id)
    with pytest.raises(NotFoundError) as guessed:
        registry.add_grant(NICE, GranteeKind.PERSON, "someone", ResourceKind.SLIDE, "S0000000000000")
    assert str(foreign.value).replace(slide_id, "X") == str(guessed.value).replace("S0000000000000", "X")
    with pytest.raises(RequestError, match="already past"):
        registry.add_grant(
            LYON,
            GranteeKind.PERSON,
            "someone",
            ResourceKind.SLIDE,
            slide_id,
            expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
        )
    with pytest.raises(NotFoundError, match="no tenant 130786049"):
        registry.add_grant(LYON, GranteeKind.TENANT, "130786049", ResourceKind.SLIDE, slide_id)
