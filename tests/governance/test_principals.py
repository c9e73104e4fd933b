"""From tokens to principals (both backends): the roles and grants the registry gives, kept at most
30 s, so that a role taken away or a grant revoked takes effect within that bound."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.errors import AuthenticationError, NotFoundError
from lamina.governance.decide import Action
from lamina.governance.issuer import LocalIssuer
from lamina.governance.model import GranteeKind, Permission, ResourceKind
from lamina.governance.principals import PRINCIPAL_TTL_S, Principals, TrustedIssuer
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from tests.support import ingest_path, shared_file

LYON, NICE = "690781810", "060785011"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(archive: Archive, tmp_path: Path) -> tuple[Registry, LocalIssuer, Principals, Clock]:
    registry = Registry(archive.catalog)
    registry.add_tenant(LYON, "HCL")
    registry.add_tenant(NICE, "Nice")
    issuer = LocalIssuer.open(archive.settings.home)
    clock = Clock()
    principals = Principals(archive.catalog, [TrustedIssuer(issuer.validator())], clock=clock)
    return registry, issuer, principals, clock


def test_a_role_taken_away_takes_effect_within_the_bound(
    setup: tuple[Registry, LocalIssuer, Principals, Clock], archive: Archive
) -> None:
    registry, issuer, principals, clock = setup
    registry.add_person("dr-a", LYON, [Role.PATHOLOGIST, Role.LAB_ADMIN])
    token = issuer.issue("dr-a")
    assert principals.resolve(token).allowed_in(LYON) >= {Action.READ, Action.ADMINISTER}

    # Act
    left = registry.remove_roles("dr-a", LYON, [Role.PATHOLOGIST], actor="operator:test")

    # Assert: kept until the bound, then read again
    assert left.roles_in(LYON) == {Role.LAB_ADMIN}
    clock.now += PRINCIPAL_TTL_S - 1
    assert Action.READ in principals.resolve(token).allowed_in(LYON)
    clock.now += 2
    assert Action.READ not in principals.resolve(token).allowed_in(LYON)
    with archive.catalog.begin() as conn:
        (entry,) = audit.entries(conn, action="role-remove")
    assert (entry.actor, entry.detail) == ("operator:test", {"tenant": LYON, "roles": ["pathologist"]})


def test_every_role_in_a_lab_taken_away_and_mistakes_named(
    setup: tuple[Registry, LocalIssuer, Principals, Clock],
) -> None:
    registry, _, _, _ = setup
    registry.add_person("dr-b", LYON, [Role.PATHOLOGIST])
    registry.add_person("dr-b", NICE, [Role.TECHNICIAN])
    assert registry.remove_roles("dr-b", LYON).roles_in(LYON) == frozenset()
    assert registry.person("dr-b").roles_in(NICE) == {Role.TECHNICIAN}
    with pytest.raises(NotFoundError, match="holds no role in 690781810"):
        registry.remove_roles("dr-b", LYON)
    with pytest.raises(NotFoundError, match="none of lab_admin"):
        registry.remove_roles("dr-b", NICE, [Role.LAB_ADMIN])


def test_a_revoked_grant_takes_effect_within_the_bound(
    setup: tuple[Registry, LocalIssuer, Principals, Clock], archive: Archive
) -> None:
    registry, issuer, principals, clock = setup
    result = ingest_path(
        archive.receiver().ingestor, shared_file("aperio/CMU-1-Small-Region.svs"), tenant=NICE
    )
    assert result.ok, result.reason
    registry.add_person("dr-c", LYON, [Role.PATHOLOGIST])
    grant = registry.add_grant(
        NICE,
        GranteeKind.PERSON,
        "dr-c",
        ResourceKind.SLIDE,
        result.slide_id or "",
        Permission.READ,
        dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        "operator:test",
    )
    token = issuer.issue("dr-c")
    assert [g.id for g in principals.resolve(token).grants] == [grant.id]

    registry.revoke_grant(grant.id, "operator:test")

    assert principals.resolve(token).grants  # kept
    clock.now += PRINCIPAL_TTL_S + 1
    assert principals.resolve(token).grants == ()


def test_a_token_of_a_person_the_node_does_not_know_is_refused(
    setup: tuple[Registry, LocalIssuer, Principals, Clock],
) -> None:
    _, issuer, principals, _ = setup
    with pytest.raises(AuthenticationError):
        principals.resolve(issuer.issue("nobody-here"))
