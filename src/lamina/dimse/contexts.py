"""What the DIMSE server negotiates: its SOP classes, transfer syntaxes and limits.

Storage presentation contexts are accepted for every storage SOP class, not only for VL Whole
Slide Microscopy Image: a scanner or PACS that pushes a mixed study then gets, for each object
lamina does not keep, the C-STORE status "Refused: SOP Class not supported" (0x0122) in its log,
instead of an association whose contexts were silently rejected.

They accept SCP/SCU role selection (PS3.7 D.3.3.4): a C-GET requester proposes them in the SCP
role, and lamina then sends the instances back over them as the SCU.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom import uid
from pynetdicom import AE
from pynetdicom.presentation import AllStoragePresentationContexts

# pynetdicom generates its SOP class names at import, so a type checker cannot see them
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from lamina.errors import ConfigurationError

VL_WSI = uid.VLWholeSlideMicroscopyImageStorage
VERIFICATION: str = Verification
STUDY_ROOT_FIND: str = StudyRootQueryRetrieveInformationModelFind
STUDY_ROOT_MOVE: str = StudyRootQueryRetrieveInformationModelMove
STUDY_ROOT_GET: str = StudyRootQueryRetrieveInformationModelGet

_UNCOMPRESSED = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)
#: The transfer syntaxes the DICOM WSI reader takes (lamina.formats.dicom): compressed frames
#: copied as sent (JPEG baseline, JPEG 2000), lossless ones re-encoded (JPEG-LS, HTJ2K), native
#: frames compressed losslessly.
STORAGE_TRANSFER_SYNTAXES = (
    uid.JPEGBaseline8Bit,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.JPEGLSLossless,
    uid.HTJ2KLossless,
    *_UNCOMPRESSED,
)

#: PDUs of 1 MiB instead of pynetdicom's 16 KiB: a slide's gigabyte comes in fewer, larger pieces.
MAXIMUM_PDU_SIZE = 1 << 20


def application_entity(ae_title: str, calling_ae_titles: Sequence[str], network_timeout_s: float) -> AE:
    """The AE that accepts associations: Verification, Storage, Study Root C-FIND, C-MOVE, C-GET.

    Parameters
    ----------
    ae_title
        The called AE title peers must use (at most 16 characters).
    calling_ae_titles
        When not empty, only peers calling with one of these AE titles are accepted.
    network_timeout_s
        An association idle this long is aborted (its spooled objects are discarded).
    """
    try:
        ae = AE(ae_title=ae_title)
        ae.require_calling_aet = list(calling_ae_titles)
    except ValueError as exc:
        raise ConfigurationError(
            f"AE title {ae_title!r} or a calling AE title is not valid ({exc}); use at most 16 "
            "characters, letters, digits, spaces and _-. only"
        ) from exc
    ae.require_called_aet = True
    ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
    ae.network_timeout = network_timeout_s
    ae.add_supported_context(VERIFICATION)
    ae.add_supported_context(STUDY_ROOT_FIND, list(_UNCOMPRESSED))
    ae.add_supported_context(STUDY_ROOT_MOVE, list(_UNCOMPRESSED))
    ae.add_supported_context(STUDY_ROOT_GET, list(_UNCOMPRESSED))
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(
            context.abstract_syntax, list(STORAGE_TRANSFER_SYNTAXES), scu_role=True, scp_role=True
        )
    return ae
