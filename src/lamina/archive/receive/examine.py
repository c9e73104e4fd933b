"""The checks every received instance passes before it is kept, whatever brought it.

An instance is kept when it is a DICOM data set of a SOP class this archive stores (VL Whole
Slide Microscopy Image, or one of :data:`lamina.archive.objects.STORABLE`), with valid Study,
Series and SOP Instance UIDs, of the study it was sent to (STOW-RS to ``/studies/{study}``), and
agreeing with its request (a C-STORE names the SOP class and instance it carries).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, VLWholeSlideMicroscopyImageStorage

from lamina.archive.objects import STORABLE
from lamina.archive.receive.outcome import FailureReason, Outcome
from lamina.errors import SourceError
from lamina.formats.dicom import check_uid

#: Every SOP class kept: slides, and the objects stored beside them.
KEPT: frozenset[str] = frozenset({VLWholeSlideMicroscopyImageStorage, *STORABLE})
_IDENTIFYING = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_TAGS = ["SOPClassUID", *_IDENTIFYING]


def read_header(source: Path | bytes) -> Dataset:
    """The identifying attributes of a Part-10 file, or of its bytes (pixels never read)."""
    stream: Any = source if isinstance(source, Path) else io.BytesIO(source)
    return pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=_TAGS)


def sop_class_name(uid: str) -> str:
    """``1.2.840.10008.5.1.4.1.1.2 (CT Image Storage)``: the UID, with its name when known."""
    name = UID(uid).name if uid else ""
    return f"{uid} ({name})" if name and name != uid else uid or "(none)"


def examine(
    source: Path | bytes,
    study: str | None = None,
    *,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Outcome:
    """Read one instance's header and check it: an :class:`Outcome` that is either still to be
    stored (``ok``) or failed with its reason.

    Parameters
    ----------
    source
        The instance as a Part-10 file, or its bytes.
    study
        The Study Instance UID it must belong to, when the request names one.
    sop_class_uid, sop_instance_uid
        What the request says it carries (C-STORE's Affected SOP Class and Instance UIDs).
    """
    if sop_class_uid is not None and sop_class_uid not in KEPT:
        outcome = Outcome(sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid or "")
        outcome.fail(
            FailureReason.SOP_CLASS_NOT_SUPPORTED,
            f"SOP class {sop_class_name(sop_class_uid)} is not stored by this archive",
        )
        return outcome
    try:
        header = read_header(source)
    except InvalidDicomError:
        return Outcome.refused(FailureReason.CANNOT_UNDERSTAND, "not a DICOM file (no DICM prefix)")
    except (EOFError, OSError) as exc:
        return Outcome.refused(FailureReason.CANNOT_UNDERSTAND, f"the data set cannot be read ({exc})")
    except Exception as exc:  # pydicom's own error on a damaged header
        return Outcome.refused(
            FailureReason.CANNOT_UNDERSTAND, f"the data set cannot be parsed ({type(exc).__name__})"
        )
    sop_class, study_uid, series, sop = (str(header.get(k, "") or "") for k in ("SOPClassUID", *_IDENTIFYING))
    outcome = Outcome(sop_class, sop, study_uid, series)
    if sop_class_uid is not None and outcome.sop_class_uid != sop_class_uid:
        outcome.fail(
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "SOPClassUID differs from the request's"
        )
    elif sop_instance_uid is not None and outcome.sop_instance_uid != sop_instance_uid:
        outcome.fail(
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "SOPInstanceUID differs from the request's"
        )
    elif outcome.sop_class_uid not in KEPT:
        outcome.fail(
            FailureReason.SOP_CLASS_NOT_SUPPORTED,
            f"SOP class {sop_class_name(outcome.sop_class_uid)} is not stored by this archive",
        )
    elif problem := _uid_problem(header):
        outcome.fail(FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, problem)
    elif study and outcome.study_instance_uid != study:
        outcome.fail(FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"StudyInstanceUID is not {study}")
    return outcome


def _uid_problem(header: Dataset) -> str | None:
    for keyword in _IDENTIFYING:
        try:
            check_uid(Path(keyword), keyword, header.get(keyword))
        except SourceError as exc:
            return exc.reason
    return None
