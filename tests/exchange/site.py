"""A site's catalog for the exchange's tests: two labs, slides of known patients written as rows
(the consent and pseudonym code reads the catalog only; ingesting real slides would cost seconds),
and one person per role the tests need. Embedded backend (SQLite and a folder)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import insert, select

from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.config import Settings
from lamina.governance.registry import Registry
from lamina.governance.roles import Role

LAB_A = "690781810"
LAB_B = "130786049"
#: a PatientID with a slide in lab A (and none in lab B)
PATIENT = "IPP-4431-7781"
#: person: (lab, role)
PEOPLE = {
    "admin-a": (LAB_A, Role.LAB_ADMIN),
    "patho-a": (LAB_A, Role.PATHOLOGIST),
    "lis-a": (LAB_A, Role.TECHNICIAN),
    "admin-b": (LAB_B, Role.LAB_ADMIN),
    "searcher-a": (LAB_A, Role.RESEARCHER),
}
_NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def add_slide(archive: Archive, slide_id: str, tenant: str, patient_id: str) -> str:
    """A slide row of ``patient_id`` in ``tenant`` (its patient, case and series rows too)."""
    number = int.from_bytes(slide_id.encode(), "big")
    study, series = f"2.25.{number}1", f"2.25.{number}2"
    with archive.catalog.begin() as conn:
        pk = conn.execute(select(t.patients.c.pk).where(t.patients.c.patient_id == patient_id)).scalar()
        if pk is None:
            pk = conn.execute(
                insert(t.patients).values(patient_id=patient_id, issuer="")
            ).inserted_primary_key[0]  # type: ignore[index]
        conn.execute(
            insert(t.studies).values(
                study_instance_uid=study,
                patient_pk=pk,
                accession_number=f"A{slide_id}",
                created_at=_NOW,
                tenant=tenant,
            )
        )
        conn.execute(
            insert(t.series).values(
                series_instance_uid=series, study_instance_uid=study, modality="SM", created_at=_NOW
            )
        )
        conn.execute(
            insert(t.slides).values(
                id=slide_id,
                series_instance_uid=series,
                study_instance_uid=study,
                container_id=f"C{slide_id}",
                format="aperio_svs",
                source_path=f"/scans/{slide_id}.svs",
                source_blake3=f"b3-{slide_id}",
                source_head="head",
                source_bytes=1,
                levels=1,
                instances=1,
                bytes=1,
                identified=True,
                lossy=True,
                width=1,
                height=1,
                created_at=_NOW,
                tenant=tenant,
            )
        )
    return slide_id


def open_site(root: Path) -> Archive:
    """The site: labs A and B, :data:`PEOPLE`, two slides of :data:`PATIENT` in lab A and one of
    another patient in lab B."""
    archive = Archive.open(Settings.load(root / "lamina-data", env={}))
    registry = Registry(archive.catalog)
    registry.add_tenant(LAB_A, "Anatomie pathologique, HCL", "tests")
    registry.add_tenant(LAB_B, "Anatomie pathologique, AP-HM", "tests")
    for person, (lab, role) in PEOPLE.items():
        registry.add_person(person, lab, [role], "", "tests")
    add_slide(archive, "SA1", LAB_A, PATIENT)
    add_slide(archive, "SA2", LAB_A, PATIENT)
    add_slide(archive, "SB1", LAB_B, "IPP-OTHER")
    return archive
