"""Move destinations and calling AEs kept in the catalog, on both backends: added, listed, found,
removed, each change audited; a title known twice, unknown, or of an unknown lab is refused with
the fix."""

from __future__ import annotations

import pytest

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.errors import NotFoundError, RequestError
from lamina.governance.registry import Registry
from lamina.peers import ApplicationEntity, CallingEntity, Operation, PeerDirectory
from lamina.peers.entity import parse_operations


def test_destinations_are_added_listed_and_removed_with_audit(archive: Archive) -> None:
    # Arrange
    peers = PeerDirectory(archive.catalog)
    pacs = ApplicationEntity("PACS", "10.0.0.5", 104, "the hospital PACS")
    ims = ApplicationEntity("IMS", "ims.lab.example", 11112)
    # Act
    peers.add(pacs, actor="alice")
    peers.add(ims)
    # Assert
    assert peers.destinations() == [ims, pacs]  # by AE title
    assert peers.get("PACS") == pacs
    assert peers.get("pacs") is None  # AE titles are case-sensitive
    assert peers.remove("IMS").destination == ims
    assert peers.destinations() == [pacs]
    with archive.catalog.engine.connect() as conn:
        entries = [(e.actor, e.action, e.entity) for e in audit.entries(conn)]
        assert audit.verify(conn).ok
    assert entries == [
        ("alice", "ae-add", "ae/PACS"),
        ("lamina", "ae-add", "ae/IMS"),
        ("lamina", "ae-remove", "ae/IMS"),
    ]


def test_a_title_already_known_is_refused_and_the_first_kept(archive: Archive) -> None:
    peers = PeerDirectory(archive.catalog)
    peers.add(ApplicationEntity("PACS", "10.0.0.5", 104))
    with pytest.raises(RequestError, match=r"already known \(PACS@10.0.0.5:104\).*lamina ae remove PACS"):
        peers.add(ApplicationEntity("PACS", "10.0.0.6", 104))
    assert peers.get("PACS") == ApplicationEntity("PACS", "10.0.0.5", 104)


def test_removing_an_unknown_title_says_how_to_list_them(archive: Archive) -> None:
    with pytest.raises(NotFoundError, match="lamina ae list"):
        PeerDirectory(archive.catalog).remove("NOBODY")


# -- calling AEs ---------------------------------------------------------------------------------
LAB = "750712184"


def test_a_calling_ae_of_a_lab_is_added_found_and_audited(archive: Archive) -> None:
    # Arrange
    Registry(archive.catalog).add_tenant(LAB, "Anatomie pathologique")
    peers = PeerDirectory(archive.catalog)
    scanner = CallingEntity("SCANNER1", LAB, frozenset({Operation.ECHO, Operation.STORE}))
    pacs = CallingEntity("PACS", LAB, frozenset(Operation))
    # Act: a scanner that only calls; a PACS that calls and is sent to
    peers.add_calling(scanner, actor="alice")
    peers.add_calling(pacs, destination=ApplicationEntity("PACS", "10.0.0.5", 104), description="PACS")
    # Assert
    assert peers.calling("SCANNER1") == scanner
    assert peers.calling("PACS") == pacs
    assert peers.calling("NOBODY") is None
    assert peers.calling("scanner1") is None  # case-sensitive
    assert peers.get("SCANNER1") is None  # no move destination
    assert peers.get("PACS") == ApplicationEntity("PACS", "10.0.0.5", 104, "PACS")
    listed = peers.peers()
    assert [(p.ae_title, p.tenant, p.calling is not None, p.destination is not None) for p in listed] == [
        ("PACS", LAB, True, True),
        ("SCANNER1", LAB, True, False),
    ]
    with archive.catalog.engine.connect() as conn:
        [entry] = [e for e in audit.entries(conn) if e.entity == "ae/SCANNER1"]
        assert audit.verify(conn).ok
    assert (entry.actor, entry.action) == ("alice", "ae-add")
    assert entry.detail["tenant"] == LAB and entry.detail["allowed"] == "echo,store"
    # removed: no longer a calling AE
    assert peers.remove("SCANNER1").calling == scanner
    assert peers.calling("SCANNER1") is None


def test_a_calling_ae_of_an_unknown_lab_is_refused_with_the_fix(archive: Archive) -> None:
    with pytest.raises(NotFoundError, match=f"lamina tenants add {LAB}"):
        PeerDirectory(archive.catalog).add_calling(
            CallingEntity("SCANNER1", LAB, frozenset({Operation.ECHO}))
        )
    assert PeerDirectory(archive.catalog).peers() == []


def test_operations_are_checked_naming_the_valid_ones() -> None:
    assert parse_operations("echo, STORE,find") == {Operation.ECHO, Operation.STORE, Operation.FIND}
    with pytest.raises(
        RequestError, match=r"--allow: 'delete' is not an operation; give some of echo,store,find,get,move"
    ):
        parse_operations("echo,delete")
    with pytest.raises(RequestError, match="at least one"):
        parse_operations(" , ")
