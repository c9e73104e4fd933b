"""Who may call the DIMSE server, and what each caller may see.

Every association is looked up by its calling AE title among the calling AEs of the catalog
(``lamina ae add AE_TITLE --tenant FINESS --allow echo,store,find,get,move``): an AE title that is
not one is refused at association (A-ASSOCIATE-RJ, permanent, "calling AE title not
recognized"). An accepted association keeps the :class:`~lamina.peers.CallingEntity` it was
accepted as; each request is then checked against its allowed operations ("Refused: Not
Authorized", 0x0124, otherwise), and what it reads is what a technician of its lab may
(:func:`principal`, :func:`lamina.governance.decide.decide`).

AE titles are not secret: on a network where anyone may connect, configure TLS with client
certificates (:mod:`lamina.dimse.tls`).
"""

from __future__ import annotations

import threading
import time

from lamina.archive.catalog import Catalog
from lamina.governance.decide import Principal
from lamina.governance.roles import Role
from lamina.peers import CallingEntity, PeerDirectory

#: Seconds a calling AE looked up is kept: ``lamina ae add`` and ``lamina ae remove`` reach the
#: associations that start at most this long afterwards (a running association keeps what it
#: was accepted as).
CACHE_S = 30.0


class Callers:
    """The calling AEs of an archive, by AE title, each looked up at most every ``ttl_s`` seconds
    (the answer "not a calling AE" included)."""

    def __init__(self, catalog: Catalog, ttl_s: float = CACHE_S) -> None:
        self.directory = PeerDirectory(catalog)
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[float, CallingEntity | None]] = {}
        self._lock = threading.Lock()

    def get(self, ae_title: str) -> CallingEntity | None:
        """The calling AE of ``ae_title``, or None: refuse the association."""
        title = ae_title.strip(" ")
        now = time.monotonic()
        with self._lock:
            cached = self._known.get(title)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        found = self.directory.calling(title)
        with self._lock:
            if len(self._known) > 4096:  # titles tried by a scanner of the network: forget them
                self._known.clear()
            self._known[title] = (now, found)
        return found

    def forget(self) -> None:
        """Look every AE up again at its next association."""
        with self._lock:
            self._known.clear()


def principal(caller: CallingEntity) -> Principal:
    """The principal a calling AE acts as: a technician of its lab (read, search, store there)."""
    return Principal(id=f"ae:{caller.ae_title}", roles={caller.tenant: frozenset({Role.TECHNICIAN})})
