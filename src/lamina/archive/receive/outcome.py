"""What became of each instance received: stored, already stored, or failed and why.

The failure reasons are the standard's: a STOW-RS answer carries them as Failure Reason
(0008,1197) (PS3.18 Table 10.5.3-2), a C-STORE answer as its Status (PS3.4 Table B.2-1 and
PS3.7 Annex C), so that both protocols say the same thing about the same instance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum, StrEnum
from typing import Any


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) of STOW-RS, Status of C-STORE: why an instance was not stored."""

    #: PS3.7 C.4.x "Processing failure": the archive could not store an instance it accepted
    PROCESSING_FAILURE = 0x0110
    #: "Refused: SOP Class not supported" (PS3.18: "Referenced SOP Class not supported")
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: "Refused: Not authorized": an archive node refuses an instance that shows identity, or
    #: that its lab did not announce (lamina.exchange.receiving)
    NOT_AUTHORIZED = 0x0124
    #: "Refused: Out of Resources": no space left (the spool, the blob store, the catalog) or a
    #: data set over a limit
    OUT_OF_RESOURCES = 0xA700
    #: "Error: Data Set does not match SOP Class": an identifying attribute is missing or wrong,
    #: or the instance is not of the study it was sent to
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: "Error: Cannot understand": not a DICOM data set
    CANNOT_UNDERSTAND = 0xC000


class StoreStatus(StrEnum):
    """What became of one instance."""

    STORED = "stored"
    #: the same instance (the same content) is stored already; nothing was written
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass
class Outcome:
    """One received instance, as far as it could be read, and what became of it.

    The UIDs are empty where the instance could not be read. ``reason`` says, in one line, why
    it failed (the DIMSE Error Comment, a log line, a report).
    """

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    status: StoreStatus = StoreStatus.STORED
    failure_reason: FailureReason | None = None
    reason: str = ""

    @classmethod
    def refused(cls, failure_reason: FailureReason, reason: str) -> Outcome:
        """An instance refused before it could be read (not DICOM, not of a media type kept)."""
        return cls(status=StoreStatus.FAILED, failure_reason=failure_reason, reason=reason)

    @property
    def ok(self) -> bool:
        """Stored now or before."""
        return self.status is not StoreStatus.FAILED

    def fail(self, failure_reason: FailureReason, reason: str) -> None:
        self.status, self.failure_reason, self.reason = StoreStatus.FAILED, failure_reason, reason

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (a job's report, read back by :meth:`from_dict`)."""
        data = asdict(self)
        data["status"] = self.status.value
        data["failure_reason"] = None if self.failure_reason is None else int(self.failure_reason)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        reason = data.get("failure_reason")
        return cls(
            sop_class_uid=str(data.get("sop_class_uid", "")),
            sop_instance_uid=str(data.get("sop_instance_uid", "")),
            study_instance_uid=str(data.get("study_instance_uid", "")),
            series_instance_uid=str(data.get("series_instance_uid", "")),
            status=StoreStatus(data.get("status", StoreStatus.FAILED)),
            failure_reason=None if reason is None else FailureReason(int(reason)),
            reason=str(data.get("reason", "")),
        )
