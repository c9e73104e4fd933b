"""DICOM peers: the application entities lamina knows.

- :mod:`~lamina.peers.entity`: :class:`ApplicationEntity` (AE title, host, port), validated, and
  ``AE@HOST:PORT`` addresses.
- :mod:`~lamina.peers.directory`: :class:`PeerDirectory`, the move destinations kept in the
  catalog (``lamina ae add|list|remove``).
"""

from lamina.peers.directory import PeerDirectory
from lamina.peers.entity import ApplicationEntity, PeerError, parse_address

__all__ = ["ApplicationEntity", "PeerDirectory", "PeerError", "parse_address"]
