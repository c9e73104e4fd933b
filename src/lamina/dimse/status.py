"""The DIMSE status values lamina answers with, named as in PS3.4 and PS3.7.

A failure goes out as a status dataset with an ``ErrorComment`` (at most 64 characters) that
says why, so that the peer's log names the cause.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from lamina.archive.receive.outcome import FailureReason

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
# The codes C-STORE shares with STOW-RS's Failure Reason are named once, in FailureReason.
#: PS3.7 C.5.20: a storage SOP class lamina does not keep.
SOP_CLASS_NOT_SUPPORTED = int(FailureReason.SOP_CLASS_NOT_SUPPORTED)
#: PS3.4 B.2.3 / C.4.1.1.4: disk full, spool unwritable, a dataset or an answer over a limit.
OUT_OF_RESOURCES = int(FailureReason.OUT_OF_RESOURCES)
#: PS3.4 B.2.3: the data set is not what its SOP class says (C-STORE); for C-FIND: the
#: identifier does not match the information model.
DOES_NOT_MATCH_SOP_CLASS = int(FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS)
#: PS3.4 B.2.3: the data set cannot be parsed; for C-MOVE and C-GET: unable to process.
CANNOT_UNDERSTAND = int(FailureReason.CANNOT_UNDERSTAND)
#: PS3.7 C.5 (a general status, valid for every DIMSE service): the calling AE may not ask this
#: operation (``lamina ae add --allow``).
NOT_AUTHORIZED = 0x0124
#: PS3.4 C.4.2.1.5 / C.4.3.1.4: C-MOVE and C-GET refusals and their final warning.
UNABLE_TO_CALCULATE_MATCHES = 0xA701
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702
MOVE_DESTINATION_UNKNOWN = 0xA801
SUBOPERATIONS_WARNING = 0xB000

_COMMENT_LENGTH = 64


def failure(code: int, comment: str) -> Dataset:
    """A status dataset: ``Status`` and an ``ErrorComment`` cut to the 64 characters LO allows."""
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:_COMMENT_LENGTH]
    return status
