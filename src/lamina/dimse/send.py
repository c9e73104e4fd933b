"""``lamina send``: every instance of some slides, C-STOREd to a DICOM peer in one association.

Each instance is proposed in its stored transfer syntax (and in Explicit VR Little Endian where
lamina can transcode it, :func:`~lamina.dimse.storescu.storage_contexts`); the outcome of each
is reported as it comes (``on_sent``), a slide that is not in the archive is reported and the
others still go, and each slide's sending is audited once its last instance is done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.dimse.contexts import MAXIMUM_PDU_SIZE
from lamina.dimse.storescu import (
    COMPLETED,
    FAILED,
    InstanceSender,
    Sent,
    audit_sent,
    storage_contexts,
)
from lamina.errors import PeerError
from lamina.peers.entity import ApplicationEntity, check_ae_title


@dataclass
class SlideSent:
    """What became of one slide: its instances' outcomes, or why it was not sent at all."""

    slide_id: str
    sent: list[Sent] = field(default_factory=list)
    reason: str = ""

    @property
    def completed(self) -> int:
        return sum(item.outcome == COMPLETED for item in self.sent)

    @property
    def failed(self) -> int:
        return sum(item.outcome == FAILED for item in self.sent)

    @property
    def ok(self) -> bool:
        return not self.reason and self.failed == 0


def associate(
    peer: ApplicationEntity,
    calling_ae_title: str,
    contexts: list[PresentationContext],
    timeout_s: float = 60.0,
) -> Association:
    """An association with ``peer`` proposing ``contexts``; :class:`PeerError` when it fails."""
    ae = AE(ae_title=check_ae_title(calling_ae_title, "--ae-title"))
    ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
    ae.acse_timeout = ae.network_timeout = timeout_s
    # the peer may take a while to write a level of several gigabytes before it answers
    ae.dimse_timeout = max(timeout_s, 600.0)
    assoc = ae.associate(peer.host, peer.port, contexts=contexts, ae_title=peer.ae_title)
    if assoc.is_established:
        return assoc
    if assoc.is_rejected and assoc.acceptor.primitive is not None:
        answer = assoc.acceptor.primitive
        raise PeerError(
            peer.address,
            f"the association was rejected ({answer.reason_str}); check that the peer knows "
            f"the calling AE title {calling_ae_title!r} and that {peer.ae_title!r} is its AE title",
        )
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        proposed = sorted(
            {
                f"{UID(cx.abstract_syntax or '').name} in {UID(ts).name}"
                for cx in contexts
                for ts in cx.transfer_syntax
            }
        )
        raise PeerError(
            peer.address,
            f"the peer accepted none of the presentation contexts proposed ({'; '.join(proposed)}); "
            "it does not take this SOP class, or these transfer syntaxes (lamina transcodes to "
            "Explicit VR Little Endian only up to its limit)",
        )
    raise PeerError(
        peer.address,
        "no DICOM association could be made (connection refused, unreachable, or no answer in "
        f"{timeout_s:g} s); check the host, the port and that the peer is running",
    )


def send_slides(
    archive: Archive,
    slide_ids: Sequence[str],
    peer: ApplicationEntity,
    calling_ae_title: str = "LAMINA",
    actor: str = "lamina",
    on_sent: Callable[[Sent], None] | None = None,
    *,
    max_transcode_bytes: int,
) -> list[SlideSent]:
    """C-STORE every instance of each slide to ``peer``; return one :class:`SlideSent` per slide.
    An instance the peer takes only uncompressed is transcoded up to ``max_transcode_bytes``
    decoded (the archive's ``LAMINA_MAX_TRANSCODE_BYTES``).

    Raises :class:`PeerError` only when no association can be made (then nothing was sent).
    """
    slides: list[SlideSent] = []
    rows: dict[str, list[InstanceRow]] = {}
    for slide_id in dict.fromkeys(slide_ids):
        report = SlideSent(slide_id)
        slides.append(report)
        if archive.catalog.slide(slide_id) is None:
            report.reason = f"no slide {slide_id!r} in this archive; 'lamina slides' lists them"
            continue
        rows[slide_id] = archive.catalog.instances(slide_id)
    wanted = [row for found in rows.values() for row in found]
    if not wanted:
        return slides
    assoc = associate(peer, calling_ae_title, storage_contexts(wanted, max_transcode_bytes))
    sender = InstanceSender(archive, actor, max_transcode_bytes)
    message = 0
    try:
        for report in slides:
            for row in rows.get(report.slide_id, []):
                message = message % 65535 + 1
                outcome = sender.send(assoc, row, msg_id=message)
                report.sent.append(outcome)
                if on_sent is not None:
                    on_sent(outcome)
            if report.sent:
                audit_sent(archive, actor, peer.address, "C-STORE", report.sent)
    finally:
        if assoc.is_established:
            assoc.release()
    return slides
