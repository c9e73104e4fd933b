"""A served node for the care lifecycle's HTTP tests (tests/api/test_fhir.py,
tests/api/test_lifecycle_api.py): two labs, a slide in each (its case's accession number known),
and one person per role that the tests need, with their tokens. Embedded backend (SQLite and a
folder): what these routes do to the catalog is tested on both backends in tests/lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from sqlalchemy import select

from lamina.api.app import create_app
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions, Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.governance.issuer import LocalIssuer
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.sample import write_samples
from tests.support import serving

LAB_A = "690781810"  # Lyon
LAB_B = "130786049"  # Marseille
#: person: (lab, roles)
PEOPLE: dict[str, tuple[str, tuple[Role, ...]]] = {
    "admin-a": (LAB_A, (Role.LAB_ADMIN,)),
    "admin-b": (LAB_B, (Role.LAB_ADMIN,)),
    "patho-a": (LAB_A, (Role.PATHOLOGIST,)),
    "patho-b": (LAB_B, (Role.PATHOLOGIST,)),
    "lis-a": (LAB_A, (Role.TECHNICIAN,)),
    "lis-b": (LAB_B, (Role.TECHNICIAN,)),
}


class Slide(NamedTuple):
    id: str
    tenant: str
    accession: str


class Node(NamedTuple):
    url: str  # http://127.0.0.1:PORT
    archive: Archive
    tokens: dict[str, str]
    slide_a: Slide
    slide_b: Slide

    def call(self, who: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def audited(self, actor: str, entity: str) -> list[str]:
        """The actions audited with ``actor`` on ``entity``, oldest first."""
        with self.archive.catalog.engine.connect() as conn:
            return [e.action for e in audit.entries(conn, actor=actor) if e.entity == entity]


def _accession(archive: Archive, slide_id: str) -> str:
    query = (
        select(t.studies.c.accession_number)
        .select_from(
            t.slides.join(t.studies, t.slides.c.study_instance_uid == t.studies.c.study_instance_uid)
        )
        .where(t.slides.c.id == slide_id)
    )
    with archive.catalog.engine.connect() as conn:
        return str(conn.execute(query).scalar_one())


def serve_node(root: Path, extra: dict[str, tuple[tuple[str, Role], ...]] | None = None) -> Iterator[Node]:
    """Build the node under ``root`` and serve it; ``extra``: more people, with (lab, role) pairs."""
    settings = Settings.load(root / "lamina-data", env={})
    archive = Archive.open(settings)
    try:
        registry = Registry(archive.catalog)
        registry.add_tenant(LAB_A, "Anatomie pathologique, HCL", "tests")
        registry.add_tenant(LAB_B, "Anatomie pathologique, AP-HM", "tests")
        people = {person: ((lab, roles),) for person, (lab, roles) in PEOPLE.items()}
        for person, held in (extra or {}).items():
            people[person] = tuple((lab, (role,)) for lab, role in held)
        for person, pairs in people.items():
            for lab, roles in pairs:
                registry.add_person(person, lab, list(roles), "", "tests")
        samples = write_samples(root / "samples", ["aperio_svs", "tiled_tiff"], size=(512, 384))
        manifest = load_manifest(root / "samples" / "manifest.csv")
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
        slides = []
        for sample, lab in zip(samples, (LAB_A, LAB_B), strict=True):
            (candidate,) = discover([sample.path])
            result = ingestor.ingest(candidate, manifest, IngestOptions(tenant=lab))
            assert result.status == "ingested", result.reason
            slide_id = result.slide_id or ""
            slides.append(Slide(slide_id, lab, _accession(archive, slide_id)))
        issuer = LocalIssuer.open(settings.home)
        tokens = {person: issuer.issue(person, 3600) for person in people}
        app = create_app(settings, archive)
        with serving(app) as port:
            yield Node(f"http://127.0.0.1:{port}", archive, tokens, slides[0], slides[1])
    finally:
        archive.close()
