"""Study Root C-MOVE and C-GET (PS3.4 C.4.2 and C.4.3): the instances an identifier names, each
sent by a C-STORE sub-operation as stored (:mod:`lamina.dimse.storescu`).

A C-MOVE sends them to the move destination, an AE title that ``lamina ae add`` made known; a
C-GET sends them back on the requester's own association, over the storage contexts it proposed
in the SCP role. After each sub-operation a Pending response carries the counts (remaining,
completed, failed, warning); a C-CANCEL stops before the next one. The final status is Success,
Warning 0xB000 (some failed; their SOP Instance UIDs in FailedSOPInstanceUIDList), 0xA702 when
every one failed, or one of the refusals before any: 0xA801 unknown destination, 0xA900 an
identifier that does not fit the model, 0xA701 too many instances, 0xC000 unable to process.
Each retrieve is audited, one ``send`` entry per slide, with the destination.

What a calling AE may not read does not exist for it: the instances are those its principal
(:func:`lamina.dimse.access.principal`) may search, in the query itself
(:func:`~lamina.governance.decide.visible_series`), and each is kept only if
:func:`~lamina.governance.decide.decide` allows ``read`` on its slide; another lab's study is
answered as no match (Success, no sub-operation).

The identifier is matched on its unique keys only (PS3.4 C.4.2.2.1): StudyInstanceUID at STUDY
level (a list allowed), with SeriesInstanceUID at SERIES level, with SOPInstanceUID at IMAGE
level; the keys above the level must be single values.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext
from sqlalchemy import Engine, select

from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.archive.catalog import tables as t
from lamina.dimse import status
from lamina.dimse.access import principal
from lamina.dimse.send import associate
from lamina.dimse.storescu import (
    COMPLETED,
    FAILED,
    WARNING,
    InstanceSender,
    Sent,
    audit_sent,
    storage_contexts,
)
from lamina.errors import LaminaError
from lamina.governance.decide import Action, Principal, Resource, decide, visible_series
from lamina.peers import ApplicationEntity, CallingEntity, Operation, PeerDirectory

log = logging.getLogger("lamina.dimse")

LEVELS = ("STUDY", "SERIES", "IMAGE")
_UNIQUE = (("STUDY", "StudyInstanceUID"), ("SERIES", "SeriesInstanceUID"), ("IMAGE", "SOPInstanceUID"))
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: UIDs one key may list (a bound on the work one request causes).
MAX_UIDS = 1000
#: The counts of sub-operations are US values (PS3.7): at most this many instances a retrieve.
MAX_INSTANCES = 65535


class RetrieveError(Exception):
    """A request refused before any sub-operation; ``code`` is the status to answer."""

    def __init__(self, code: int, comment: str) -> None:
        self.code = code
        self.comment = comment
        super().__init__(comment)


def _uids(identifier: Dataset, keyword: str, many: bool) -> list[str]:
    value = identifier.get(keyword)
    values = [] if value is None or value == "" else list(value) if isinstance(value, MultiValue) else [value]
    uids = [str(item).strip().rstrip("\x00") for item in values if str(item).strip()]
    if not uids:
        raise RetrieveError(status.DOES_NOT_MATCH_SOP_CLASS, f"{keyword} is required at this level")
    if len(uids) > 1 and not many:
        raise RetrieveError(status.DOES_NOT_MATCH_SOP_CLASS, f"{keyword} must be one UID above the level")
    if len(uids) > MAX_UIDS:
        raise RetrieveError(status.UNABLE_TO_CALCULATE_MATCHES, f"more than {MAX_UIDS} UIDs in {keyword}")
    bad = next((uid for uid in uids if len(uid) > 64 or not _UID.match(uid)), None)
    if bad is not None:
        raise RetrieveError(status.DOES_NOT_MATCH_SOP_CLASS, f"{keyword} {bad[:30]!r} is not a UID")
    return uids


def select_instances(
    engine: Engine, identifier: Dataset, principal: Principal | None = None
) -> list[InstanceRow]:
    """The instances ``identifier`` names, in study, series and instance-number order; with a
    ``principal``, only those it may read (the others are as if absent).

    Raises :class:`RetrieveError` for an identifier that does not fit the Study Root model or
    that names more than :data:`MAX_INSTANCES` instances.
    """
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise RetrieveError(
            status.DOES_NOT_MATCH_SOP_CLASS, f"QueryRetrieveLevel {level[:12]!r} not STUDY/SERIES/IMAGE"
        )
    depth = LEVELS.index(level)
    columns = {
        "StudyInstanceUID": t.instances.c.study_instance_uid,
        "SeriesInstanceUID": t.instances.c.series_instance_uid,
        "SOPInstanceUID": t.instances.c.sop_instance_uid,
    }
    owner = t.studies.c.tenant.label("owner_tenant")
    source = t.instances.outerjoin(
        t.studies, t.studies.c.study_instance_uid == t.instances.c.study_instance_uid
    )
    query = select(t.instances, owner).select_from(source)
    if principal is not None:
        visible = select(t.series.c.series_instance_uid).where(visible_series(principal))
        query = query.where(t.instances.c.series_instance_uid.in_(visible))
    for index, (_, keyword) in enumerate(_UNIQUE[: depth + 1]):
        query = query.where(columns[keyword].in_(_uids(identifier, keyword, many=index == depth)))
    query = query.order_by(
        t.instances.c.study_instance_uid, t.instances.c.series_instance_uid, t.instances.c.instance_number
    ).limit(MAX_INSTANCES + 1)
    names = [f.name for f in fields(InstanceRow)]
    with engine.connect() as conn:
        found = [
            (InstanceRow(**{name: row[name] for name in names}), str(row["owner_tenant"] or ""))
            for row in conn.execute(query).mappings()
        ]
    rows = [row for row, tenant in found if principal is None or _readable(principal, row, tenant)]
    if len(rows) > MAX_INSTANCES:
        raise RetrieveError(
            status.UNABLE_TO_CALCULATE_MATCHES, f"over {MAX_INSTANCES} instances; retrieve fewer at once"
        )
    return rows


def _readable(principal: Principal, row: InstanceRow, tenant: str) -> bool:
    resource = Resource("slide", tenant, row.slide_id, row.study_instance_uid)
    return decide(principal, Action.READ, resource).allowed


@dataclass
class _Counts:
    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0

    def add(self, sent: Sent) -> None:
        self.remaining -= 1
        if sent.outcome == COMPLETED:
            self.completed += 1
        elif sent.outcome == WARNING:
            self.warning += 1
        else:
            self.failed += 1


class RetrieveService:
    """Serves Study Root C-MOVE and C-GET requests on an archive (an
    :data:`~lamina.dimse.acceptor.Retriever`).

    Parameters
    ----------
    archive
        The archive the instances come from; its catalog also holds the move destinations.
    ae_title
        lamina's AE title: the calling AE title of the associations to move destinations.
    network_timeout_s
        How long to wait to associate with a move destination.
    max_transcode_bytes
        The largest decoded size transcoded for a peer that takes only uncompressed data (the
        archive's ``LAMINA_MAX_TRANSCODE_BYTES``).
    """

    def __init__(
        self, archive: Archive, ae_title: str, network_timeout_s: float, max_transcode_bytes: int
    ) -> None:
        self.archive = archive
        self.ae_title = ae_title
        self.network_timeout_s = network_timeout_s
        self.max_transcode_bytes = max_transcode_bytes

    def __call__(self, assoc: Association, request: C_GET | C_MOVE, context: PresentationContext) -> None:
        calling = str(assoc.requestor.ae_title or "").strip()
        moving = isinstance(request, C_MOVE)
        service = "C-MOVE" if moving else "C-GET"
        answer = _Answer(assoc, request, context)
        caller = getattr(assoc, "caller", None)
        operation = Operation.MOVE if moving else Operation.GET
        if not isinstance(caller, CallingEntity) or not caller.may(operation):
            log.info("%s from %r refused: not allowed (lamina ae add --allow)", service, calling)
            answer.final(status.NOT_AUTHORIZED, f"{operation.value} is not allowed for {calling[:16]}")
            return
        try:
            rows = select_instances(self.archive.catalog.engine, answer.identifier(), principal(caller))
            if isinstance(request, C_MOVE):
                destination = self._destination(str(request.MoveDestination or "").strip())
                contexts = storage_contexts(rows, self.max_transcode_bytes)
        except RetrieveError as exc:
            log.info("%s from %r refused: %s", service, calling, exc.comment)
            answer.final(exc.code, exc.comment)
            return
        except Exception as exc:  # the catalog failed: one line, and no identifier values
            log.error("%s from %r failed: %s", service, calling, type(exc).__name__)
            answer.final(status.CANNOT_UNDERSTAND, "the archive could not process the request")
            return
        if not rows:
            answer.final(status.SUCCESS, counts=_Counts(0))
            return
        store_assoc = assoc
        where = f"{calling}@{assoc.requestor.address}"
        if moving:
            where = destination.address
            try:
                store_assoc = associate(destination, self.ae_title, contexts, self.network_timeout_s)
            except LaminaError as exc:
                log.warning("C-MOVE from %r: %s", calling, exc)
                answer.final(
                    status.UNABLE_TO_PERFORM_SUBOPERATIONS, f"cannot associate with {destination.address}"
                )
                return
        try:
            sent = self._sub_operations(answer, store_assoc, rows, calling, moving)
        finally:
            if moving and store_assoc.is_established:
                store_assoc.release()
        if sent:
            audit_sent(self.archive, f"dimse:{calling}", where, service, sent)
        log.info(
            "%s from %r to %s: %d instance(s), %d failed",
            service,
            calling,
            where,
            len(rows),
            sum(item.outcome == FAILED for item in sent),
        )

    def _destination(self, title: str) -> ApplicationEntity:
        try:
            found = PeerDirectory(self.archive.catalog).get(title)
        except LaminaError:  # not even a valid AE title
            found = None
        if found is None:
            raise RetrieveError(
                status.MOVE_DESTINATION_UNKNOWN, f"move destination {title[:16]!r} unknown: lamina ae add"
            )
        return found

    def _sub_operations(
        self, answer: _Answer, store_assoc: Association, rows: list[InstanceRow], calling: str, moving: bool
    ) -> list[Sent]:
        sender = InstanceSender(self.archive, f"dimse:{calling}", self.max_transcode_bytes)
        counts = _Counts(len(rows))
        sent: list[Sent] = []
        request = answer.request
        message = int(request.MessageID or 0)
        for number, row in enumerate(rows, start=1):
            if not answer.assoc.is_established:  # the requester went away: nobody to report to
                log.info(
                    "%s of %r: the requester's association ended; %d not sent",
                    request.msg_type,
                    calling,
                    counts.remaining,
                )
                return sent
            if answer.cancelled():
                answer.final(
                    status.CANCEL,
                    counts=counts,
                    failed=[item.row.sop_instance_uid for item in sent if item.outcome == FAILED],
                )
                return sent
            item = sender.send(
                store_assoc,
                row,
                msg_id=(message + number - 1) % 65535 + 1,
                originator=calling if moving else None,
                originator_id=message if moving else None,
            )
            if item.reason:
                log.info("sub-operation for %s: %s", row.sop_instance_uid, item.reason)
            sent.append(item)
            counts.add(item)
            if counts.remaining:
                answer.pending(counts)
        failed = [item.row.sop_instance_uid for item in sent if item.outcome == FAILED]
        if counts.failed == len(rows):
            code = status.UNABLE_TO_PERFORM_SUBOPERATIONS
        elif counts.failed or counts.warning:
            code = status.SUBOPERATIONS_WARNING
        else:
            code = status.SUCCESS
        reasons = sorted({item.reason for item in sent if item.reason})
        answer.final(code, reasons[0] if reasons else "", counts, failed)
        return sent


class _Answer:
    """The responses to one C-GET or C-MOVE request."""

    def __init__(self, assoc: Association, request: C_GET | C_MOVE, context: PresentationContext) -> None:
        self.assoc = assoc
        self.request = request
        self.context = context
        self.syntax = context.transfer_syntax[0]

    def identifier(self) -> Dataset:
        try:
            return decode(
                self.request.Identifier,  # type: ignore[arg-type]
                self.syntax.is_implicit_VR,
                self.syntax.is_little_endian,
                self.syntax.is_deflated,
            )
        except Exception as exc:
            raise RetrieveError(status.CANNOT_UNDERSTAND, "the identifier cannot be decoded") from exc

    def cancelled(self) -> bool:
        return self.assoc.dimse.cancel_req.pop(int(self.request.MessageID or 0), None) is not None

    def _response(self, code: int, counts: _Counts | None) -> C_GET | C_MOVE:
        response = C_MOVE() if isinstance(self.request, C_MOVE) else C_GET()
        response.MessageIDBeingRespondedTo = self.request.MessageID
        response.AffectedSOPClassUID = self.request.AffectedSOPClassUID
        response.Status = code
        if counts is not None:
            if code in (status.PENDING, status.CANCEL):
                response.NumberOfRemainingSuboperations = counts.remaining
            response.NumberOfCompletedSuboperations = counts.completed
            response.NumberOfFailedSuboperations = counts.failed
            response.NumberOfWarningSuboperations = counts.warning
        return response

    def pending(self, counts: _Counts) -> None:
        self._send(self._response(status.PENDING, counts))

    def final(
        self, code: int, comment: str = "", counts: _Counts | None = None, failed: list[str] | None = None
    ) -> None:
        response = self._response(code, counts)
        if comment and code not in (status.SUCCESS, status.CANCEL):
            response.ErrorComment = comment[:64]  # type: ignore[assignment]  # typed None upstream
        if failed is not None and code != status.SUCCESS:
            identifier = Dataset()
            identifier.FailedSOPInstanceUIDList = failed
            encoded = encode(
                identifier, self.syntax.is_implicit_VR, self.syntax.is_little_endian, self.syntax.is_deflated
            )
            response.Identifier = BytesIO(encoded or b"")
        self._send(response)

    def _send(self, response: C_GET | C_MOVE) -> None:
        if self.assoc.is_established:
            self.assoc.dimse.send_msg(response, int(self.context.context_id or 0))
