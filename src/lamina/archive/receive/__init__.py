"""Receiving DICOM: one path for whatever arrives, whichever protocol brought it.

STOW-RS (``lamina.api.dicomweb.stow``), DIMSE C-STORE (``lamina.dimse.server``), watched folders
(:mod:`lamina.archive.watch`) and ``lamina ingest`` only translate their input (multipart parts,
C-STORE events, files) and their answer (a DICOM JSON response, a DIMSE status, a table); the
rest is here, as pynetdicom keeps the service apart from the handlers bound to its events:

- :mod:`.outcome`: :class:`Outcome` per instance, :class:`StoreStatus`, and the
  :class:`FailureReason` codes shared by STOW-RS and C-STORE, named as PS3.4 and PS3.18 name them.
- :mod:`.examine`: the checks an instance passes before it is kept (SOP class, UIDs, study).
- :mod:`.receiver`: :class:`Receiver`, the seam each protocol calls:
  :meth:`Receiver.receive` (the instances of one request) and :meth:`Receiver.ingest` (one unit
  of a folder).
- :mod:`.spool`: where a request's instances wait until it is complete and stored
  (``incoming/stow/``), owned by a live process and swept when it is gone.
- :mod:`.association`: a DIMSE association's instances, kept until it is released
  (``incoming/dimse/``), then received whole on a thread of their own; recovered at start.
"""

from lamina.archive.receive.examine import KEPT, examine
from lamina.archive.receive.outcome import FailureReason, Outcome, StoreStatus
from lamina.archive.receive.receiver import Receipt, Receiver
from lamina.archive.receive.spool import RequestSpools

__all__ = [
    "KEPT",
    "FailureReason",
    "Outcome",
    "Receipt",
    "Receiver",
    "RequestSpools",
    "StoreStatus",
    "examine",
]
