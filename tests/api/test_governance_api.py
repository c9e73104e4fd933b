"""The labs' administration over HTTP (``/api``, lamina.api.governance) on a real server, on both
backends: a lab admin manages its own lab's people and grants (audited, with the admin as actor)
and sees nothing of another lab's; a pathologist may not; a platform admin adds labs; a grant
revoked stops giving access at once in this process; bodies bounded and checked field by field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import httpx
import pytest

from lamina.api.app import create_app
from lamina.api.governance import MAX_BODY_BYTES
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions, Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.governance.issuer import LocalIssuer
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.sample import write_samples
from tests.backends import Backend
from tests.support import serving

LAB_A = "690781810"  # Lyon
LAB_B = "130786049"  # Marseille
PEOPLE = {
    "admin-a": (LAB_A, Role.LAB_ADMIN),
    "admin-b": (LAB_B, Role.LAB_ADMIN),
    "patho-a": (LAB_A, Role.PATHOLOGIST),
    "root": (LAB_A, Role.PLATFORM_ADMIN),
    "guest": (LAB_B, Role.RESEARCHER),  # nothing from the role: what it reads is granted
}


class Slide(NamedTuple):
    id: str
    study: str
    series: str


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


def _slide(archive: Archive, slide_id: str) -> Slide:
    row = next(r for r in archive.catalog.instances(slide_id) if r.level == 0)
    return Slide(slide_id, row.study_instance_uid, row.series_instance_uid)


@pytest.fixture(scope="module")
def node(module_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A server with two labs, a slide in each, and the people of :data:`PEOPLE`."""
    root = tmp_path_factory.mktemp("governance-api")
    settings = Settings.load(root / "lamina-data", env=module_backend.env("governance-api"))
    archive = Archive.open(settings)
    registry = Registry(archive.catalog)
    registry.add_tenant(LAB_A, "Anatomie pathologique, HCL", "tests")
    registry.add_tenant(LAB_B, "Anatomie pathologique, AP-HM", "tests")
    for person, (lab, role) in PEOPLE.items():
        registry.add_person(person, lab, [role], "", "tests")
    samples = write_samples(root / "samples", ["aperio_svs", "tiled_tiff"], size=(512, 384))
    manifest = load_manifest(root / "samples" / "manifest.csv")
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
    ids = []
    for sample, lab in zip(samples, (LAB_A, LAB_B), strict=True):
        (candidate,) = discover([sample.path])
        result = ingestor.ingest(candidate, manifest, IngestOptions(tenant=lab))
        assert result.status == "ingested", result.reason
        ids.append(result.slide_id or "")
    issuer = LocalIssuer.open(settings.home)
    tokens = {person: issuer.issue(person, 3600) for person in PEOPLE}
    app = create_app(settings, archive)
    try:
        with serving(app) as port:
            yield Node(
                f"http://127.0.0.1:{port}", archive, tokens, _slide(archive, ids[0]), _slide(archive, ids[1])
            )
    finally:
        archive.close()


def _actions(archive: Archive, actor: str, entity: str) -> list[str]:
    with archive.catalog.engine.connect() as conn:
        return [entry.action for entry in audit.entries(conn, actor=actor) if entry.entity == entity]


def _problem(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    detail: str = answer.json()["detail"]
    return detail


# -- a lab admin in its own lab ---------------------------------------------------------------------


def test_a_lab_admin_adds_a_person_and_a_grant_lists_and_revokes_it(node: Node) -> None:
    # Act: a person
    added = node.call(
        "admin-a",
        "POST",
        f"/api/tenants/{LAB_A}/people",
        json={"person": "tech-1", "roles": ["technician"], "name": "T. One"},
    )
    people = node.call("admin-a", "GET", f"/api/tenants/{LAB_A}/people")

    # Assert
    assert added.status_code == 200, added.text
    assert added.json() == {
        "id": "tech-1",
        "display_name": "T. One",
        "roles": [{"tenant": LAB_A, "role": "technician"}],
    }
    assert people.status_code == 200
    listed = {person["id"]: person for person in people.json()}
    assert {"admin-a", "patho-a", "root", "tech-1"} <= set(listed) and "admin-b" not in listed
    assert listed["root"]["roles"] == [{"tenant": LAB_A, "role": "platform_admin"}]
    assert _actions(node.archive, "admin-a", "person/tech-1") == ["role-add"]

    # Act: a grant, listed, revoked
    given = node.call(
        "admin-a",
        "POST",
        f"/api/tenants/{LAB_A}/grants",
        json={"to": "person:guest", "on": f"slide:{node.slide_a.id}", "expires": "2099-12-31"},
    )
    assert given.status_code == 201, given.text
    grant = given.json()
    in_force = node.call("admin-a", "GET", f"/api/tenants/{LAB_A}/grants").json()
    revoked = node.call("admin-a", "DELETE", f"/api/tenants/{LAB_A}/grants/{grant['id']}")
    after = node.call("admin-a", "GET", f"/api/tenants/{LAB_A}/grants").json()
    every = node.call("admin-a", "GET", f"/api/tenants/{LAB_A}/grants?all=true").json()
    again = node.call("admin-a", "DELETE", f"/api/tenants/{LAB_A}/grants/{grant['id']}")

    # Assert
    assert grant["tenant"] == LAB_A and grant["active"] is True
    assert grant["to"] == {"kind": "person", "id": "guest"}
    assert grant["on"] == {"kind": "slide", "id": node.slide_a.id}
    assert grant["permission"] == "read" and grant["created_by"] == "admin-a"
    assert grant["expires_at"] == "2099-12-31T00:00:00+00:00"
    assert grant["id"] in {g["id"] for g in in_force}
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["active"] is False and revoked.json()["revoked_at"]
    assert grant["id"] not in {g["id"] for g in after}
    assert grant["id"] in {g["id"] for g in every}
    _problem(again, 404)
    assert _actions(node.archive, "admin-a", f"grant/{grant['id']}") == ["grant-add", "grant-revoke"]


def test_a_lab_admin_sees_nothing_of_another_lab(node: Node) -> None:
    # Arrange: a grant of lab B, given by its own admin
    theirs = node.call(
        "admin-b",
        "POST",
        f"/api/tenants/{LAB_B}/grants",
        json={"to": f"tenant:{LAB_A}", "on": f"case:{node.slide_b.study}", "permission": "read+annotate"},
    )
    assert theirs.status_code == 201, theirs.text
    grant_id = theirs.json()["id"]

    # Act
    people = node.call("admin-a", "GET", f"/api/tenants/{LAB_B}/people")
    grants = node.call("admin-a", "GET", f"/api/tenants/{LAB_B}/grants")
    add_there = node.call(
        "admin-a", "POST", f"/api/tenants/{LAB_B}/people", json={"person": "mole", "roles": ["pathologist"]}
    )
    their_slide = node.call(
        "admin-a",
        "POST",
        f"/api/tenants/{LAB_A}/grants",
        json={"to": "person:guest", "on": f"slide:{node.slide_b.id}"},
    )
    revoke_there = node.call("admin-a", "DELETE", f"/api/tenants/{LAB_B}/grants/{grant_id}")
    revoke_here = node.call("admin-a", "DELETE", f"/api/tenants/{LAB_A}/grants/{grant_id}")
    labs = node.call("admin-a", "GET", "/api/tenants")
    absent = node.call(
        "admin-a",
        "POST",
        f"/api/tenants/{LAB_A}/grants",
        json={"to": "person:guest", "on": f"slide:{'0' * 12}"},
    )

    # Assert: 404, as for what does not exist; lab B's grant is still in force
    for answer in (people, grants, add_there, their_slide, revoke_there, revoke_here, absent):
        _problem(answer, 404)
    # another lab's slide is answered as one that does not exist
    assert their_slide.json()["detail"] == absent.json()["detail"].replace("0" * 12, node.slide_b.id)
    assert grant_id in {g["id"] for g in node.call("admin-b", "GET", f"/api/tenants/{LAB_B}/grants").json()}
    assert Registry(node.archive.catalog).known_person("mole") is None
    assert labs.status_code == 200 and labs.json() == [
        {"finess": LAB_A, "name": "Anatomie pathologique, HCL"}
    ]


def test_a_pathologist_may_not_administer_its_lab(node: Node) -> None:
    grants = node.call("patho-a", "GET", f"/api/tenants/{LAB_A}/grants")
    people = node.call(
        "patho-a", "POST", f"/api/tenants/{LAB_A}/people", json={"person": "friend", "roles": ["lab_admin"]}
    )
    lab = node.call("patho-a", "POST", "/api/tenants", json={"finess": "330781196", "name": "Bordeaux"})

    for answer in (grants, people, lab):
        _problem(answer, 403)
    assert Registry(node.archive.catalog).known_person("friend") is None


def test_only_a_platform_admin_gives_the_platform_admin_role(node: Node) -> None:
    body = {"person": "climber", "roles": ["pathologist", "platform_admin"]}

    refused = node.call("admin-a", "POST", f"/api/tenants/{LAB_A}/people", json=body)
    given = node.call("root", "POST", f"/api/tenants/{LAB_A}/people", json=body)

    assert "platform_admin" in _problem(refused, 403)
    assert given.status_code == 200, given.text
    assert {item["role"] for item in given.json()["roles"]} == {"pathologist", "platform_admin"}


def test_a_platform_admin_adds_a_lab_and_sees_every_lab(node: Node) -> None:
    # Act
    added = node.call("root", "POST", "/api/tenants", json={"finess": "2A0000154", "name": "CH Ajaccio"})
    labs = node.call("root", "GET", "/api/tenants")
    people = node.call("root", "GET", f"/api/tenants/{LAB_B}/people")
    absent = node.call("root", "GET", "/api/tenants/590000000/grants")
    twice = node.call("root", "POST", "/api/tenants", json={"finess": "2A0000154", "name": "CH Ajaccio"})

    # Assert
    assert added.status_code == 201, added.text
    assert added.json() == {"finess": "2A0000154", "name": "CH Ajaccio", "adopted": {}}
    assert {LAB_A, LAB_B, "2A0000154"} <= {lab["finess"] for lab in labs.json()}
    assert people.status_code == 200 and {p["id"] for p in people.json()} == {"admin-b", "guest"}
    assert "590000000" in _problem(absent, 404)
    assert _problem(twice, 400).startswith("finess: 2A0000154 is already a tenant")
    assert _actions(node.archive, "root", "tenant/2A0000154") == ["tenant-add"]


def test_a_revoked_grant_stops_giving_access_at_once(node: Node) -> None:
    metadata = f"/dicomweb/studies/{node.slide_a.study}/series/{node.slide_a.series}/metadata"
    before = node.call("guest", "GET", metadata)  # kept in the principals' cache from now on
    given = node.call(
        "admin-a",
        "POST",
        f"/api/tenants/{LAB_A}/grants",
        json={"to": "person:guest", "on": f"slide:{node.slide_a.id}", "expires": None},
    )
    granted = node.call("guest", "GET", metadata)
    node.call("admin-a", "DELETE", f"/api/tenants/{LAB_A}/grants/{given.json()['id']}")
    after = node.call("guest", "GET", metadata)

    assert before.status_code == 404
    assert given.status_code == 201 and given.json()["expires_at"] is None
    assert granted.status_code == 200, granted.text
    assert after.status_code == 404


def test_a_lab_admin_collects_slides_and_grants_the_collection(node: Node) -> None:
    # Arrange: the guest (Marseille's researcher) reads nothing of Lyon's yet
    metadata = f"/dicomweb/studies/{node.slide_a.study}/series/{node.slide_a.series}/metadata"
    base = f"/api/tenants/{LAB_A}/collections"
    before = node.call("guest", "GET", metadata)
    # Act: an empty collection, the slide put in it, the collection granted to the guest
    made = node.call("admin-a", "POST", base, json={"name": "Teaching: lymphomas"})
    ident = made.json()["id"]
    filled = node.call("admin-a", "POST", f"{base}/{ident}/slides", json={"slides": [node.slide_a.id]})
    given = node.call(
        "admin-a",
        "POST",
        f"/api/tenants/{LAB_A}/grants",
        json={"to": "person:guest", "on": f"collection:{ident}"},
    )
    granted = node.call("guest", "GET", metadata)
    listed = node.call("admin-a", "GET", base)
    # another lab's admin sees no such collection; a slide of another lab cannot be put in it
    foreign = node.call("admin-b", "GET", f"/api/tenants/{LAB_B}/collections/{ident}")
    smuggled = node.call("admin-a", "POST", f"{base}/{ident}/slides", json={"slides": [node.slide_b.id]})
    # the slide taken out, then the collection deleted: the guest reads nothing again
    taken = node.call("admin-a", "DELETE", f"{base}/{ident}/slides/{node.slide_a.id}")
    emptied = node.call("guest", "GET", metadata)
    deleted = node.call("admin-a", "DELETE", f"{base}/{ident}")
    gone = node.call("admin-a", "GET", f"{base}/{ident}")
    grants = node.call("admin-a", "GET", f"/api/tenants/{LAB_A}/grants?all=true").json()
    # Assert
    assert before.status_code == 404
    assert made.status_code == 201 and made.json()["slides"] == [], made.text
    assert filled.json()["slides"] == [node.slide_a.id]
    assert given.status_code == 201 and given.json()["on"] == {"kind": "collection", "id": ident}
    assert granted.status_code == 200, granted.text
    assert [(c["id"], c["slide_count"]) for c in listed.json()] == [(ident, 1)]
    assert "slides" not in listed.json()[0]
    assert foreign.status_code == 404
    assert _problem(smuggled, 404).startswith(f"no slide {node.slide_b.id} in lab {LAB_A}")
    assert taken.status_code == 200 and taken.json()["slides"] == []
    assert emptied.status_code == 404
    assert deleted.status_code == 200 and gone.status_code == 404
    (revoked,) = [g for g in grants if g["on"]["id"] == ident]
    assert revoked["revoked_at"] is not None and not revoked["active"]
    with node.archive.catalog.engine.connect() as conn:
        actions = [e.action for e in audit.entries(conn, actor="admin-a")]
    assert {
        "collection-add",
        "collection-slides-add",
        "collection-slides-remove",
        "collection-delete",
    } <= set(actions)


# -- what is refused before anything is done ------------------------------------------------------------


def test_no_token_is_401(node: Node) -> None:
    answer = node.call(None, "GET", "/api/tenants")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_body_over_the_limit_is_413(node: Node) -> None:
    big = json.dumps({"person": "x" * MAX_BODY_BYTES, "roles": ["pathologist"]}).encode()
    path = f"/api/tenants/{LAB_A}/people"
    headers = {"Content-Type": "application/json"}

    declared = node.call("admin-a", "POST", path, content=big, headers=headers)
    streamed = node.call("admin-a", "POST", path, content=iter([big[:40_000], big[40_000:]]), headers=headers)

    assert "65536" in _problem(declared, 413)
    assert "65536" in _problem(streamed, 413)


@pytest.mark.parametrize(
    ("path", "body", "starts"),
    [
        (
            "people",
            {"person": "p1", "roles": ["pathologist"], "rôle": "x", "admin": 1},
            "admin, rôle: unknown",
        ),
        ("people", {"person": "p1"}, "roles: missing"),
        ("people", {"person": "p 1", "roles": ["pathologist"]}, "person: 'p 1' cannot name a person"),
        ("people", {"person": "p1", "roles": ["surgeon"]}, "roles: 'surgeon': not a role"),
        ("people", {"person": "p1", "roles": []}, "roles: a non-empty list"),
        ("people", {"person": "p1", "roles": ["pathologist"], "name": 7}, "name: a string is expected"),
        (
            "people",
            {"person": "p1", "roles": ["pathologist"], "name": "a\nb\x00"},
            "name: at most 255 printable",
        ),
        ("people", [1, 2], "body: send a JSON object"),
        ("grants", {"to": "guest", "on": "slide:x"}, "to: 'guest': write KIND:ID"),
        ("grants", {"to": "person:guest", "on": "study:1.2"}, "on: 'study:1.2': write KIND:ID"),
        ("grants", {"to": "person:guest", "on": "slide:x", "permission": "write"}, "permission: 'write'"),
        (
            "grants",
            {"to": "person:guest", "on": "slide:x", "expires": "soon"},
            "expires: 'soon': an ISO 8601",
        ),
        ("grants", {"to": "person:guest", "on": "slide:x", "expires": "2001-01-01"}, "expires: 2001-01-01"),
        ("grants", {"to": "tenant:123", "on": "slide:x"}, "to: '123' is not a FINESS number"),
        ("grants", {"to": "tenant:590000000", "on": "slide:x"}, "to: no lab 590000000"),
        ("collections", {}, "name: missing"),
        ("collections", {"name": "x", "slides": "abc"}, "slides: a list of slide ids"),
        ("collections", {"name": " "}, "name: name the collection"),
    ],
)
def test_a_bad_body_is_400_naming_the_field(node: Node, path: str, body: object, starts: str) -> None:
    answer = node.call("admin-a", "POST", f"/api/tenants/{LAB_A}/{path}", json=body)

    assert _problem(answer, 400).startswith(starts)


def test_a_body_that_is_not_json_is_400(node: Node) -> None:
    path = f"/api/tenants/{LAB_A}/grants"
    garbled = node.call(
        "admin-a", "POST", path, content=b"{to: guest", headers={"Content-Type": "application/json"}
    )
    form = node.call("admin-a", "POST", path, data={"to": "person:guest"})
    flag = node.call("admin-a", "GET", f"{path}?all=maybe")

    assert _problem(garbled, 400).startswith("body: not JSON")
    assert _problem(form, 400).startswith("Content-Type: send the body as application/json")
    assert _problem(flag, 400).startswith("all: 'maybe'")


def test_the_routes_are_described(node: Node) -> None:
    spec = node.call("admin-a", "GET", "/openapi.json").json()
    grants = spec["paths"]["/api/tenants/{finess}/grants"]
    assert set(grants) == {"get", "post"}
    assert grants["post"]["responses"]["201"] and "413" in grants["post"]["responses"]
    assert "delete" in spec["paths"]["/api/tenants/{finess}/grants/{grant}"]
