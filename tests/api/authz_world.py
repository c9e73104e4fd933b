"""The world of the authorization matrix (tests/api/test_authorization.py): two labs on one node,
their slides and grants, one person per role in lab A, and the tokens a client may send.

Lab A (:data:`LAB_A`) holds one case (``own``). Lab B (:data:`LAB_B`) holds:

- ``other``: a case never granted to anyone;
- ``granted``: a slide granted (read) to lab A's pathologist (:data:`GRANTEE`) alone, and
  ``sibling``, another slide of the same case, not granted;
- ``expired``: a slide whose grant to the same pathologist has expired (added with an expiry two
  seconds ahead, through :meth:`Registry.add_grant`, then waited for: the registry refuses an
  expiry in the past);
- ``casegrant``: a case granted (read) to the whole of lab A (a tenant grant);
- ``collected``: a slide of lab B's collection "Second opinions", granted (read) to the same
  pathologist (a collection grant).

Every slide has its own patient, except ``sibling``, which shares ``granted``'s case. The strings
that identify each slide (patient, accession number, UIDs, lamina's slide id) are its
``markers``: what may never be in an answer to someone who may not see it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lamina.api.app import create_app
from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.governance.collections import Collections
from lamina.governance.issuer import LocalIssuer
from lamina.governance.model import GranteeKind, Permission, ResourceKind
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from tests.backends import Backend
from tests.support import ingest_case, serving

__all__ = ["BAD_TOKENS", "GRANTEE", "LAB_A", "LAB_B", "ROLES", "Slide", "World", "build_world"]

LAB_A = "750712184"  # Paris
LAB_B = "690781810"  # Lyon

#: One person per role in lab A, by role; the pathologist is also the grantee of lab B's slides.
ROLES: dict[str, Role] = {role.value: role for role in Role}
PEOPLE = {name: f"lab-a-{name.replace('_', '-')}" for name in ROLES}
GRANTEE = PEOPLE[Role.PATHOLOGIST.value]

#: The principals that are no one: what each sends (no header, or a token that must be refused).
BAD_TOKENS = ("no token", "malformed token", "expired token", "unknown person", "other issuer")

#: (name, tenant, identity): the slides; a case is found by its accession number in its lab, so
#: "sibling" joins "granted"'s case
_SLIDES = (
    ("own", LAB_A, ("AZPAT0001", "OWNLAB^Alice", "A26-00001", "A26-00001-A1")),
    ("other", LAB_B, ("BZPAT0001", "NEVERGRANTED^Bruno", "B26-00001", "B26-00001-A1")),
    ("granted", LAB_B, ("BZPAT0002", "SLIDEGRANT^Chloe", "B26-00002", "B26-00002-A1")),
    ("sibling", LAB_B, ("BZPAT0002", "SLIDEGRANT^Chloe", "B26-00002", "B26-00002-B1")),
    ("expired", LAB_B, ("BZPAT0003", "GRANTEXPIRED^Denis", "B26-00003", "B26-00003-A1")),
    ("casegrant", LAB_B, ("BZPAT0004", "CASEGRANT^Emma", "B26-00004", "B26-00004-A1")),
    ("collected", LAB_B, ("BZPAT0005", "COLLECTED^Fanny", "B26-00005", "B26-00005-A1")),
)


@dataclass(frozen=True)
class Slide:
    """One ingested slide: its ids, an instance with frames, and what identifies it."""

    name: str
    tenant: str
    slide_id: str
    study: str
    series: str
    instance: str
    #: the case's markers (patient, accession number, study UID): shared by a case's slides
    case_markers: frozenset[str]
    #: the slide's own markers (series and instance UIDs, slide id)
    slide_markers: frozenset[str]
    #: every SOP Instance UID of the slide
    instances: frozenset[str]


@dataclass(frozen=True)
class World:
    base: str  # http://127.0.0.1:PORT
    app: object
    archive: Archive
    slides: dict[str, Slide]
    #: the Authorization header each principal sends (None: none), by role value or BAD_TOKENS name
    headers: dict[str, str | None]


def _ingest_one(ingestor: Ingestor, folder: Path, seed: int, tenant: str, identity: tuple[str, ...]) -> str:
    """One small SVS with ``identity`` (patient id, name, accession, specimen) into ``tenant``."""
    patient_id, name, accession, specimen = identity
    return ingest_case(
        ingestor, folder, seed=seed, tenant=tenant, size=(512, 384),
        patient_id=patient_id, patient_name=name, accession_number=accession, specimen_id=specimen,
    )  # fmt: skip


def _slide(archive: Archive, name: str, tenant: str, slide_id: str, identity: tuple[str, ...]) -> Slide:
    row = archive.catalog.slide(slide_id)
    assert row is not None and row.tenant == tenant, (name, row)
    instances = archive.catalog.instances(slide_id)
    with_frames = sorted((i for i in instances if i.number_of_frames >= 1), key=lambda i: i.instance_number)
    assert with_frames, f"{name}: no instance with frames"
    patient_id, patient_name, accession, _ = identity
    return Slide(
        name,
        tenant,
        slide_id,
        row.study_instance_uid,
        row.series_instance_uid,
        with_frames[0].sop_instance_uid,
        frozenset({patient_id, patient_name.split("^")[0], accession, row.study_instance_uid}),
        frozenset({row.series_instance_uid, slide_id, *(i.sop_instance_uid for i in instances)}),
        frozenset(i.sop_instance_uid for i in instances),
    )


def build_world(backend: Backend, root: Path) -> Iterator[World]:
    """Build the world on ``backend`` under ``root`` and serve it (sign_in=False: no operator)."""
    settings = Settings.load(root / "lamina-data", env=backend.env("authz"))
    archive = Archive.open(settings)
    try:
        registry = Registry(archive.catalog)
        registry.add_tenant(LAB_A, "Anatomie pathologique A (tests)", "tests")
        registry.add_tenant(LAB_B, "Anatomie pathologique B (tests)", "tests")
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
        slides: dict[str, Slide] = {}
        for seed, (name, tenant, identity) in enumerate(_SLIDES, start=1):
            slide_id = _ingest_one(ingestor, root / "samples" / name, seed, tenant, identity)
            slides[name] = _slide(archive, name, tenant, slide_id, identity)
        assert slides["sibling"].study == slides["granted"].study
        cases = ("own", "other", "granted", "expired", "casegrant", "collected")
        assert len({slides[n].study for n in cases}) == len(cases)

        # the expired grant first: it is given two seconds ahead (add_grant refuses the past)
        ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
        person, slide, read = GranteeKind.PERSON, ResourceKind.SLIDE, Permission.READ
        registry.add_grant(LAB_B, person, GRANTEE, slide, slides["expired"].slide_id, read, ends, "tests")
        registry.add_grant(LAB_B, person, GRANTEE, slide, slides["granted"].slide_id, read, None, "tests")
        case = slides["casegrant"].study
        registry.add_grant(LAB_B, GranteeKind.TENANT, LAB_A, ResourceKind.CASE, case, read, None, "tests")
        shared = Collections(archive.catalog).add(
            LAB_B, "Second opinions", [slides["collected"].slide_id], "tests"
        )
        registry.add_grant(LAB_B, person, GRANTEE, ResourceKind.COLLECTION, shared.id, read, None, "tests")
        for name, role in ROLES.items():
            registry.add_person(PEOPLE[name], LAB_A, [role], f"Lab A {name}", "tests")

        issuer = LocalIssuer.open(settings.home)
        headers: dict[str, str | None] = {
            name: f"Bearer {issuer.issue(PEOPLE[name], 3600)}" for name in ROLES
        }
        stranger = LocalIssuer.open(root / "another-node")
        assert stranger.issuer != issuer.issuer
        headers |= {
            "no token": None,
            "malformed token": "Bearer eyJhbGciOiJFUzI1NiJ9.not-a-token.at-all",
            "expired token": f"Bearer {issuer.issue(GRANTEE, 600, now=time.time() - 3600)}",
            "unknown person": f"Bearer {issuer.issue('nobody-on-this-node', 3600)}",
            "other issuer": f"Bearer {stranger.issue(GRANTEE, 3600)}",
        }

        # the grant has expired, and the registry says so
        time.sleep(max(0.0, (ends - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
        active = {g.resource for g in registry.grants(LAB_B)}
        ended = {g.resource for g in registry.grants(LAB_B, include_ended=True)}
        assert slides["expired"].slide_id in ended - active, (active, ended)

        app = create_app(settings, archive)
        with serving(app, sign_in=False) as port:
            yield World(f"http://127.0.0.1:{port}", app, archive, slides, headers)
    finally:
        archive.close()
