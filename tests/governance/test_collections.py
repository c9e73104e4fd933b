"""Collections of a lab's slides (both backends): a lab collects only its own slides, a grant on
a collection reaches the slides it holds (one added later too, one removed no longer, within the
principals' bound), deleting a collection revokes its grants, a deleted slide leaves its
collections, and every change is audited."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.delete import delete_slide
from lamina.errors import NotFoundError, RequestError
from lamina.governance import collections as collections_module
from lamina.governance.collections import Collections
from lamina.governance.decide import Action, Resource, decide, visible_series, visible_studies
from lamina.governance.issuer import LocalIssuer
from lamina.governance.model import GranteeKind, Permission, ResourceKind
from lamina.governance.principals import PRINCIPAL_TTL_S, Principals, TrustedIssuer
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.sample import write_samples
from tests.support import ingest_path

LYON, NICE = "690781810", "060785011"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def labs(archive: Archive, tmp_path: Path) -> dict[str, list[str]]:
    """Two slides of Nice (two cases) and one of Lyon, by lab."""
    registry = Registry(archive.catalog)
    registry.add_tenant(LYON, "HCL")
    registry.add_tenant(NICE, "CHU de Nice")
    found: dict[str, list[str]] = {LYON: [], NICE: []}
    for seed, lab in enumerate((NICE, NICE, LYON), start=7):
        (sample,) = write_samples(tmp_path / f"samples-{seed}", ["aperio_svs"], size=(512, 384), seed=seed)
        result = ingest_path(archive.receiver().ingestor, sample.path, tenant=lab)
        assert result.ok and result.slide_id, result.reason
        found[lab].append(result.slide_id)
    return found


def _series(archive: Archive, slide_id: str) -> tuple[str, str]:
    row = archive.catalog.slide(slide_id)
    assert row is not None
    return row.study_instance_uid, row.series_instance_uid


def _audit(archive: Archive) -> list[str]:
    with archive.catalog.engine.connect() as conn:
        rows = conn.execute(select(t.audit_log.c.action).order_by(t.audit_log.c.seq))
        return [str(row[0]) for row in rows]


def test_a_lab_collects_its_own_slides_only_and_names_them_once(
    archive: Archive, labs: dict[str, list[str]]
) -> None:
    collections = Collections(archive.catalog)
    nice_a, nice_b = labs[NICE]
    (lyon,) = labs[LYON]
    # Act
    made = collections.add(NICE, "  Teaching:   sarcomas ", [nice_a], "operator:test")
    # Assert
    assert (made.tenant, made.name, made.slides, made.created_by) == (
        NICE,
        "Teaching: sarcomas",
        (nice_a,),
        "operator:test",
    )
    with pytest.raises(RequestError, match="already has a collection named 'Teaching: sarcomas'"):
        collections.add(NICE, "Teaching: sarcomas")
    # another lab's slide is answered like an absent one, and nothing is half-written
    with pytest.raises(NotFoundError, match=f"no slide {lyon} in lab {NICE}"):
        collections.add_slides(made.id, [nice_b, lyon])
    assert collections.get(made.id).slides == (nice_a,)
    with pytest.raises(NotFoundError, match=f"no slide nope in lab {NICE}"):
        collections.add(NICE, "Cohort", ["nope"])
    assert [c.name for c in collections.find(NICE)] == ["Teaching: sarcomas"]
    # a lab's collection is not found in another lab
    with pytest.raises(NotFoundError, match="no collection"):
        collections.get(made.id, LYON)
    assert collections.add_slides(made.id, [nice_b, nice_a]).slides == (nice_a, nice_b)
    assert collections.remove_slides(made.id, [nice_a]).slides == (nice_b,)
    with pytest.raises(NotFoundError, match="is in collection"):
        collections.remove_slides(made.id, [nice_a])
    for bad in ("", "\n" * 3, "x" * 256):
        with pytest.raises(RequestError, match="NAME"):
            collections.add(NICE, bad)
    assert _audit(archive)[-3:] == ["collection-add", "collection-slides-add", "collection-slides-remove"]


def test_a_collection_holds_a_bounded_number_of_slides(
    archive: Archive, labs: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collections_module, "MAX_COLLECTION_SLIDES", 1)
    collections = Collections(archive.catalog)
    made = collections.add(NICE, "Small", labs[NICE][:1])
    with pytest.raises(RequestError, match="at most 1 slides"):
        collections.add_slides(made.id, labs[NICE][1:])
    assert collections.get(made.id).slides == tuple(labs[NICE][:1])


def test_a_grant_on_a_collection_reaches_the_slides_it_holds_within_the_bound(
    archive: Archive, labs: dict[str, list[str]]
) -> None:
    # Arrange: Lyon's pathologist is granted Nice's collection holding one slide of two
    registry, collections = Registry(archive.catalog), Collections(archive.catalog)
    nice_a, nice_b = labs[NICE]
    registry.add_person("dr-lyon", LYON, [Role.PATHOLOGIST])
    made = collections.add(NICE, "Second opinions", [nice_a])
    grant = registry.add_grant(
        NICE, GranteeKind.PERSON, "dr-lyon", ResourceKind.COLLECTION, made.id, Permission.READ
    )
    issuer = LocalIssuer.open(archive.settings.home)
    clock = Clock()
    principals = Principals(archive.catalog, [TrustedIssuer(issuer.validator())], clock=clock)
    token = issuer.issue("dr-lyon")

    def reads(slide_id: str) -> bool:
        study, _ = _series(archive, slide_id)
        resource = Resource("slide", NICE, slide_id, study)
        return decide(principals.resolve(token), Action.READ, resource).allowed

    def searched() -> tuple[set[str], set[str]]:
        who = principals.resolve(token)
        with archive.catalog.engine.connect() as conn:
            studies = conn.execute(select(t.studies.c.study_instance_uid).where(visible_studies(who)))
            series = conn.execute(select(t.series.c.series_instance_uid).where(visible_series(who)))
            return {str(r[0]) for r in studies}, {str(r[0]) for r in series}

    lyon_study, lyon_series = _series(archive, labs[LYON][0])
    # Act and Assert: the slide it holds, not the other
    assert reads(nice_a) and not reads(nice_b)
    assert searched() == (
        {lyon_study, _series(archive, nice_a)[0]},
        {lyon_series, _series(archive, nice_a)[1]},
    )
    # a slide added is reached once the principal is read again (within the bound)
    collections.add_slides(made.id, [nice_b])
    assert not reads(nice_b)
    clock.now += PRINCIPAL_TTL_S + 1
    assert reads(nice_b)
    # deleting the collection revokes its grant: nothing is reached any more
    collections.delete(made.id, NICE, "operator:test")
    (ended,) = registry.grants(NICE, include_ended=True)
    assert ended.id == grant.id and ended.revoked_by == "operator:test"
    clock.now += PRINCIPAL_TTL_S + 1
    assert not reads(nice_a) and not reads(nice_b)
    assert searched() == ({lyon_study}, {lyon_series})
    assert "collection-delete" in _audit(archive)


def test_a_deleted_slide_leaves_its_collections(archive: Archive, labs: dict[str, list[str]]) -> None:
    collections = Collections(archive.catalog)
    nice_a, nice_b = labs[NICE]
    made = collections.add(NICE, "Cohort", [nice_a, nice_b])
    delete_slide(archive.catalog, archive.store, nice_a, actor="operator:test", reason="test")
    assert collections.get(made.id).slides == (nice_b,)
    assert collections.find()[0].slides == (nice_b,)
    assert dt.datetime.now(dt.UTC) - made.created_at < dt.timedelta(minutes=5)
