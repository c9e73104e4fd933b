"""Move destinations kept in the catalog, on both backends: added, listed, found, removed, each
change audited; a title known twice or unknown is refused with the fix."""

from __future__ import annotations

import pytest

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.errors import NotFoundError, RequestError
from lamina.peers import ApplicationEntity, PeerDirectory


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
    assert peers.remove("IMS") == ims
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
