"""The archive's side of the exchange (lamina.exchange.receiving, lamina.api.exchange) on a real
server (SQLite and folders, a cold tier): slides converted by lamina and de-identified by the real
pipeline are announced, sent by STOW-RS and verified; what is not de-identified, not announced,
or not what was announced is refused with the reason; another lab can neither announce into nor
verify a lab's series; a withdrawal hides the slide from a grant holder at once, not from its lab;
a site node answers these routes with a clear refusal."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pydicom
import pytest
from pydicom.encaps import generate_frames
from sqlalchemy import func, select

from lamina.api.app import create_app
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.config import Settings
from lamina.exchange.deid import DeidOptions, deidentify_instance
from lamina.exchange.keys import ExchangeKeys
from lamina.governance.issuer import LocalIssuer
from lamina.governance.model import GranteeKind, Permission, ResourceKind
from lamina.governance.registry import Registry
from lamina.governance.roles import Role
from lamina.lifecycle.marks import Marks
from tests.exchange.deid_world import convert
from tests.support import serving

LAB_A = "690781810"
LAB_B = "130786049"
KEYS = ExchangeKeys(b"s" * 32, {}, where="test")
#: person: (lab, role)
PEOPLE = {
    "sender-a": (LAB_A, Role.TECHNICIAN),
    "sender-b": (LAB_B, Role.TECHNICIAN),
    "patho-a": (LAB_A, Role.PATHOLOGIST),
    "researcher": (LAB_B, Role.RESEARCHER),
    # the grant holder (its own person: a principal is cached 25 s with its grants)
    "reader": (LAB_B, Role.RESEARCHER),
}
_STOW = 'multipart/related; type="application/dicom"; boundary=xchg'
_REFUSED = 0x0124


class Node(NamedTuple):
    url: str
    archive: Archive
    tokens: dict[str, str]

    def post(self, who: str, path: str, body: object | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=60)

    def get(self, who: str, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", "Accept": "application/dicom+json"}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=60)

    def stow(self, who: str, files: list[bytes]) -> httpx.Response:
        body = b"".join(b"--xchg\r\nContent-Type: application/dicom\r\n\r\n" + f + b"\r\n" for f in files)
        headers = {"Authorization": f"Bearer {self.tokens[who]}", "Content-Type": _STOW}
        return httpx.post(
            f"{self.url}/dicomweb/studies", content=body + b"--xchg--\r\n", headers=headers, timeout=120
        )


def _serve(root: Path, env: dict[str, str]) -> Iterator[Node]:
    archive = Archive.open(Settings.load(root / "lamina-data", env=env))
    try:
        registry = Registry(archive.catalog)
        registry.add_tenant(LAB_A, "Anatomie pathologique, HCL", "tests")
        registry.add_tenant(LAB_B, "Anatomie pathologique, AP-HM", "tests")
        for person, (lab, role) in PEOPLE.items():
            registry.add_person(person, lab, [role], "", "tests")
        issuer = LocalIssuer.open(archive.settings.home)
        tokens = {person: issuer.issue(person, 3600) for person in PEOPLE}
        with serving(create_app(archive.settings, archive)) as port:
            yield Node(f"http://127.0.0.1:{port}", archive, tokens)
    finally:
        archive.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("archive")
    yield from _serve(root, {"LAMINA_ROLE": "archive", "LAMINA_COLD_URL": str(root / "cold")})


class Slide(NamedTuple):
    files: list[bytes]  # de-identified Part 10 instances (those sent)
    raw: list[bytes]  # as converted, with identity
    announcement: dict[str, Any]


def _frames_sha256(raw: bytes) -> tuple[int, str]:
    ds = pydicom.dcmread(io.BytesIO(raw))
    count = int(ds.NumberOfFrames)
    digest = hashlib.sha256(b"".join(generate_frames(ds.PixelData, number_of_frames=count)))
    return count, digest.hexdigest()


def _slide(folder: Path, seed: int) -> Slide:
    sent, raw = [], []
    for path in convert(folder, seed=seed):
        out = io.BytesIO()
        with path.open("rb") as fh:
            outcome = deidentify_instance(fh, out, KEYS, DeidOptions())
        if not outcome.quarantine:  # the label and the overview are not sent
            sent.append(out.getvalue())
            raw.append(path.read_bytes())
    first = pydicom.dcmread(io.BytesIO(sent[0]), stop_before_pixels=True)
    instances = []
    for data in sent:
        count, digest = _frames_sha256(data)
        uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        instances.append({"sop_instance_uid": uid, "number_of_frames": count, "frames_sha256": digest})
    announcement = {
        "site": "site-lyon",
        "study_instance_uid": str(first.StudyInstanceUID),
        "series_instance_uid": str(first.SeriesInstanceUID),
        "patient_pseudonym": str(first.PatientID),
        "category": "teaching",
        "reason": "a rare lymphoma",
        "instances": instances,
    }
    return Slide(sent, raw, announcement)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Slide]:
    root = tmp_path_factory.mktemp("slides")
    return {name: _slide(root / name, seed) for seed, name in enumerate(("good", "tampered", "foreign"), 1)}


def _failed(answer: httpx.Response) -> list[int]:
    failed = answer.json().get("00081198", {}).get("Value", [])
    return [item["00081197"]["Value"][0] for item in failed]


def _verify(node: Node, who: str, slide: Slide) -> httpx.Response:
    return node.post(who, f"/api/exchange/slides/{slide.announcement['series_instance_uid']}/verify")


def test_announced_sent_and_verified_slide_is_kept_of_interest_in_the_cold_tier(
    node: Node, slides: dict[str, Slide]
) -> None:
    good = slides["good"]
    series = good.announcement["series_instance_uid"]
    # Act
    announced = node.post("sender-a", "/api/exchange/slides", good.announcement)
    stored = node.stow("sender-a", good.files)
    verified = _verify(node, "sender-a", good)
    again = node.post("sender-a", "/api/exchange/slides", good.announcement)
    # Assert
    assert announced.status_code == 200 and announced.json()["status"] == "expected", announced.text
    assert stored.status_code == 200, stored.text
    assert verified.status_code == 200, verified.text
    body = verified.json()
    ack = body["acknowledgement"]
    assert body["status"] == "verified" and ack["series_instance_uid"] == series
    assert ack["instances"] == [i["sop_instance_uid"] for i in good.announcement["instances"]]
    assert ack["frames_sha256"] == [i["frames_sha256"] for i in good.announcement["instances"]]
    assert again.status_code == 200 and again.json() == body  # idempotent: nothing to send again
    row = node.archive.catalog.slide(ack["slide_id"])
    assert row is not None and row.tenant == LAB_A and row.tier == "cold"
    assert Marks(node.archive.catalog).interest_of(ack["slide_id"]) == ("teaching", "a rare lymphoma")
    with node.archive.catalog.engine.connect() as conn:
        received = conn.execute(
            select(t.archive_received).where(t.archive_received.c.series_instance_uid == series)
        ).one()
        entries = list(audit.entries(conn, action="exchange-receive"))
    assert (received.status, received.slide_id, received.category) == (
        "verified",
        ack["slide_id"],
        "teaching",
    )
    assert [e.entity for e in entries] == [f"slide/{ack['slide_id']}"] and entries[0].actor == "sender-a"


def test_another_lab_can_neither_announce_into_nor_verify_a_labs_series(
    node: Node, slides: dict[str, Slide]
) -> None:
    foreign = slides["foreign"]
    assert node.post("sender-a", "/api/exchange/slides", foreign.announcement).status_code == 200
    # Act
    taken = node.post("sender-b", "/api/exchange/slides", foreign.announcement)
    verified = _verify(node, "sender-b", foreign)
    smuggled = node.post("sender-b", "/api/exchange/slides", {**foreign.announcement, "tenant": LAB_A})
    researcher = node.post("researcher", "/api/exchange/slides", foreign.announcement)
    # Assert: a conflict that names no lab; a series not the lab's is not found; a lab not its own
    assert taken.status_code == 409 and taken.json()["status"] == "conflict"
    assert LAB_A not in taken.text and "another lab" in taken.text
    assert verified.status_code == 404 and LAB_A not in verified.text
    assert smuggled.status_code == 403
    assert researcher.status_code == 403
    # lab A's sender is told what is missing
    incomplete = _verify(node, "sender-a", foreign)
    assert incomplete.status_code == 409
    assert incomplete.json() == {
        "status": "incomplete",
        "missing": [i["sop_instance_uid"] for i in foreign.announcement["instances"]],
    }


def test_an_unannounced_or_identified_instance_is_refused_with_the_reason(
    node: Node, slides: dict[str, Slide]
) -> None:
    tampered = slides["tampered"]
    # Act
    unannounced = node.stow("sender-a", tampered.files)
    identified = node.stow("sender-a", slides["good"].raw[:1])
    # Assert
    assert unannounced.status_code == 409 and set(_failed(unannounced)) == {_REFUSED}
    assert "was not announced by lab" in unannounced.headers["warning"]
    assert identified.status_code == 409 and _failed(identified) == [_REFUSED]
    warning = identified.headers["warning"]
    assert "not de-identified" in warning and "PatientIdentityRemoved (0012,0062)" in warning
    assert "IPP-7734120" not in warning  # findings name attributes, never values
    assert node.archive.catalog.instance(tampered.announcement["instances"][0]["sop_instance_uid"]) is None


def test_a_digest_that_is_not_the_frames_stored_is_refused(node: Node, slides: dict[str, Slide]) -> None:
    tampered = slides["tampered"]
    announcement = dict(tampered.announcement)
    first = dict(announcement["instances"][0], frames_sha256="0" * 64)
    announcement["instances"] = [first, *announcement["instances"][1:]]
    assert node.post("sender-a", "/api/exchange/slides", announcement).status_code == 200
    assert node.stow("sender-a", tampered.files).status_code == 200
    # Act
    refused = _verify(node, "sender-a", tampered)
    # Assert
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["status"] == "refused"
    assert body["reasons"] == [
        f"{first['sop_instance_uid']}: the SHA-256 of the frames stored is not the one announced"
    ]


def test_a_withdrawal_hides_the_slide_from_a_grant_holder_at_once_but_not_from_its_lab(
    node: Node, slides: dict[str, Slide]
) -> None:
    good = slides["good"]
    if _verify(node, "sender-a", good).status_code != 200:  # run alone: announce, send, verify
        node.post("sender-a", "/api/exchange/slides", good.announcement)
        node.stow("sender-a", good.files)
    ack = _verify(node, "sender-a", good).json()["acknowledgement"]
    study, series = good.announcement["study_instance_uid"], good.announcement["series_instance_uid"]
    Registry(node.archive.catalog).add_grant(
        LAB_A, GranteeKind.PERSON, "reader", ResourceKind.SLIDE, ack["slide_id"], Permission.READ,
        None, "tests",
    )  # fmt: skip
    metadata = f"/dicomweb/studies/{study}/series/{series}/metadata"

    def seen(who: str) -> tuple[bool, bool]:
        """(found by QIDO, readable: its metadata 200, or 202 while the cold slide is restored)."""
        found = node.get(who, f"/dicomweb/studies?StudyInstanceUID={study}")
        assert found.status_code == 200, found.text
        read = node.get(who, metadata).status_code
        assert read in (200, 202, 404), read
        return bool(found.content and found.json()), read != 404

    assert seen("reader") == (True, True)
    # the slides of these tests are one patient's (the planted PatientID): those announced so far
    # (verified or still expected; how many depends on the tests run before, in this process)
    received = t.archive_received
    pseudonym = good.announcement["patient_pseudonym"]
    with node.archive.catalog.engine.connect() as conn:
        announced = conn.execute(
            select(func.count())
            .select_from(received)
            .where(received.c.patient_pseudonym == pseudonym, received.c.withdrawn_at.is_(None))
        ).scalar_one()
    assert announced >= 1
    # Act
    answer = node.post("sender-a", "/api/exchange/withdrawals", {"patient_pseudonym": pseudonym})
    # Assert: every one withdrawn, the verified one with the others
    assert answer.status_code == 200 and answer.json() == {"withdrawn": announced}
    assert seen("reader") == (False, False)
    assert seen("patho-a") == (True, True)
    again = node.post("sender-a", "/api/exchange/slides", good.announcement)
    assert again.json()["acknowledgement"]["withdrawn"] is True


def test_a_site_node_refuses_the_archive_routes_clearly(tmp_path: Path, slides: dict[str, Slide]) -> None:
    for site in _serve(tmp_path, {}):
        # Act
        answers = [
            site.post("sender-a", "/api/exchange/slides", slides["good"].announcement),
            _verify(site, "sender-a", slides["good"]),
            site.post("sender-a", "/api/exchange/withdrawals", {"patient_pseudonym": "a" * 64}),
        ]
        # Assert
        for answer in answers:
            assert answer.status_code == 404
            assert "archive only" in answer.json()["detail"]
