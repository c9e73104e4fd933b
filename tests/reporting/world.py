"""A small archive for the storage report's tests: two labs, four slides, one expired, one of
interest, one moved cold, on dates set by SQL so that months and rates are known exactly.

Lab A (:data:`LAB_A`, the tests' lab of ``tests.signin``) holds ``care`` (ingested 2026-01-10,
expired 2026-03-01), ``interest`` (2026-02-05, flagged for teaching) and ``cold`` (2025-12-20, on
the cold tier); lab B (:data:`LAB_B`) holds ``other`` (2025-03-01, outside the last 365 days of
:data:`NOW`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import update

from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.governance.registry import Registry
from lamina.lifecycle.expire import expire_slide
from lamina.lifecycle.marks import Interest, Marks, Target
from tests.signin import TEST_LAB
from tests.support import ingest_case

LAB_A = TEST_LAB  # Paris
LAB_B = "690781810"  # Lyon
NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)
CREATED = {
    "care": dt.datetime(2026, 1, 10, 9, 0, tzinfo=dt.UTC),
    "interest": dt.datetime(2026, 2, 5, 9, 0, tzinfo=dt.UTC),
    "cold": dt.datetime(2025, 12, 20, 9, 0, tzinfo=dt.UTC),
    "other": dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC),
}
EXPIRED_AT = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class World:
    ids: dict[str, str]  # name -> slide id
    bytes: dict[str, int]  # name -> the slide's stored bytes
    freed: int  # the bytes the expiry of "care" freed


def _ingest(archive: Archive, root: Path, name: str, tenant: str, seed: int) -> str:
    return ingest_case(
        archive.receiver().ingestor, root / name, seed=seed, tenant=tenant, size=(768, 512),
        patient_id=f"P{seed}", accession_number=f"R26-{seed}", specimen_id=f"R26-{seed}-A1",
    )  # fmt: skip


def build_world(archive: Archive, root: Path) -> World:
    registry = Registry(archive.catalog)
    registry.add_tenant(LAB_A, "Anatomie pathologique (Paris)", "tests")
    registry.add_tenant(LAB_B, "Anatomie pathologique (Lyon)", "tests")
    tenants = {"care": LAB_A, "interest": LAB_A, "cold": LAB_A, "other": LAB_B}
    ids = {
        name: _ingest(archive, root, name, tenant, seed)
        for seed, (name, tenant) in enumerate(tenants.items(), 1)
    }
    sizes = {name: archive.catalog.slide(slide_id).bytes for name, slide_id in ids.items()}  # type: ignore[union-attr]
    Marks(archive.catalog).flag(Target(slide=ids["interest"]), Interest.TEACHING, "a fine sarcoma", "dr-a")
    expired = expire_slide(
        archive.catalog,
        archive.store,
        ids["care"],
        rule="default",
        rule_digest="0" * 64,
        report_at=None,
        thumbnail_side=None,
        actor="operator:test",
    )
    assert expired.status == "expired", expired
    with archive.catalog.begin() as conn:
        for name, when in CREATED.items():
            conn.execute(update(t.slides).where(t.slides.c.id == ids[name]).values(created_at=when))
        conn.execute(update(t.slides).where(t.slides.c.id == ids["care"]).values(expired_at=EXPIRED_AT))
        conn.execute(
            update(t.slide_traces)
            .where(t.slide_traces.c.slide_id == ids["care"])
            .values(expired_at=EXPIRED_AT)
        )
        conn.execute(update(t.slides).where(t.slides.c.id == ids["cold"]).values(tier="cold"))
    return World(ids, sizes, expired.bytes_freed)
