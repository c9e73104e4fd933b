"""DICOM peers: the application entities lamina knows.

- :mod:`~lamina.peers.entity`: :class:`ApplicationEntity` (AE title, host, port), validated, and
  ``AE@HOST:PORT`` addresses; :class:`CallingEntity` (AE title, lab, allowed
  :class:`Operation` s), a peer that may call lamina's DIMSE server.
- :mod:`~lamina.peers.directory`: :class:`PeerDirectory`, the move destinations and calling AEs
  kept in the catalog (``lamina ae add|list|remove``), each a :class:`Peer`.
"""

from lamina.peers.directory import Peer, PeerDirectory
from lamina.peers.entity import ApplicationEntity, CallingEntity, Operation, PeerError, parse_address

__all__ = [
    "ApplicationEntity",
    "CallingEntity",
    "Operation",
    "Peer",
    "PeerDirectory",
    "PeerError",
    "parse_address",
]
