"""C-STORE of stored instances to a DICOM peer (the Storage SCU): the sub-operations of C-MOVE
and C-GET (:mod:`lamina.dimse.retrieve`), and ``lamina send`` (:mod:`lamina.dimse.send`).

An instance goes as stored, in its stored transfer syntax, read from the blob store as a stream:
pynetdicom sends a data set from a file in PDU-sized chunks (``STORE_SEND_CHUNKED_DATASET``), so
a level of several gigabytes never sits in memory. The store's own file is sent where it has one;
an object on S3 is first spooled to a temporary file, and either way its SHA-256 is checked
before a byte leaves: a damaged object is reported (audited, repair queued), never sent.

When the peer accepted none of the instance's stored syntax for its SOP class but accepted an
uncompressed one, the instance is transcoded (:mod:`lamina.dimse.transcode`), up to a size
limit; otherwise it fails with a reason that names the syntaxes.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import _config, build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.dimse.transcode import TARGETS, TranscodeError, refusal, write_native
from lamina.errors import LaminaError, NotFoundError

log = logging.getLogger("lamina.dimse")

_CHUNK = 1 << 20
_PROC_FD = Path("/proc/self/fd")
#: pynetdicom's limit of presentation contexts in one association.
MAX_CONTEXTS = 128

COMPLETED, WARNING, FAILED = "completed", "warning", "failed"


@dataclass(frozen=True)
class Sent:
    """One C-STORE sub-operation: the instance, the peer's status and why it failed.

    ``status`` is None when nothing was sent (no context, a damaged object, no answer);
    ``transfer_syntax`` is the syntax sent, ``transcoded`` whether it differs from the stored one.
    """

    row: InstanceRow
    status: int | None
    transfer_syntax: str | None = None
    transcoded: bool = False
    reason: str = ""

    @property
    def outcome(self) -> str:
        """``completed``, ``warning`` (the peer kept it with a warning) or ``failed``."""
        if self.status is None:
            return FAILED
        category = code_to_category(self.status)
        return COMPLETED if category == "Success" else WARNING if category == "Warning" else FAILED


def storage_contexts(rows: Sequence[InstanceRow], max_transcode_bytes: int) -> list[PresentationContext]:
    """The contexts to propose for sending ``rows``: each SOP class with each of its stored
    transfer syntaxes (one context each, so the peer can take one and refuse another), plus
    Explicit VR Little Endian where lamina can transcode an instance of it."""
    wanted: dict[tuple[str, str], None] = {}
    for row in rows:
        wanted[(row.sop_class_uid, row.transfer_syntax_uid)] = None
        if refusal(row, max_transcode_bytes) is None:
            wanted[(row.sop_class_uid, ExplicitVRLittleEndian)] = None
    if len(wanted) > MAX_CONTEXTS:
        raise LaminaError(
            f"the instances need {len(wanted)} presentation contexts, over the {MAX_CONTEXTS} one "
            "association can carry; send fewer slides at once"
        )
    return [build_context(sop_class, [syntax]) for sop_class, syntax in wanted]


class InstanceSender:
    """Sends stored instances over an established association, one C-STORE each.

    Parameters
    ----------
    archive
        Where the instances are stored; a damaged object is reported to it.
    actor
        Who asked (recorded when a damaged object is audited).
    max_transcode_bytes
        The largest decoded size transcoded for a peer that refused the stored syntax (the
        archive's ``LAMINA_MAX_TRANSCODE_BYTES``, passed in by the caller).
    """

    def __init__(self, archive: Archive, actor: str, max_transcode_bytes: int) -> None:
        self.archive = archive
        self.actor = actor
        self.max_transcode_bytes = max_transcode_bytes
        # data sets are sent from their files in PDU-sized chunks (process-wide pynetdicom setting)
        _config.STORE_SEND_CHUNKED_DATASET = True

    def send(
        self,
        assoc: Association,
        row: InstanceRow,
        msg_id: int = 1,
        originator: str | None = None,
        originator_id: int | None = None,
    ) -> Sent:
        """C-STORE ``row`` to the peer of ``assoc``; never raises for a failed sub-operation."""
        accepted = [
            cx.transfer_syntax[0]
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == row.sop_class_uid and cx.as_scu
        ]
        if not accepted:
            return Sent(row, None, reason=f"the peer accepted no context for {UID(row.sop_class_uid).name}")
        stored = row.transfer_syntax_uid
        target = stored if stored in accepted else next((ts for ts in TARGETS if ts in accepted), None)
        if target is None:
            names = ", ".join(sorted({UID(ts).name for ts in accepted}))
            return Sent(row, None, reason=f"the peer accepts {names} only, not {UID(stored).name}")
        if target != stored:
            why = refusal(row, self.max_transcode_bytes)
            if why is not None:
                return Sent(row, None, reason=f"the peer does not accept {UID(stored).name}, and {why}")
        try:
            with self._stored_file(row) as (handle, path):
                if target == stored:
                    return self._store(assoc, row, path, stored, msg_id, originator, originator_id)
                with _spool(self.archive.settings.home) as (out, out_path):
                    write_native(handle, row, target, out, self.max_transcode_bytes)
                    out.flush()
                    return self._store(assoc, row, out_path, target, msg_id, originator, originator_id)
        except (LaminaError, TranscodeError, OSError) as exc:
            return Sent(row, None, reason=str(exc) or type(exc).__name__)

    def _store(
        self,
        assoc: Association,
        row: InstanceRow,
        path: Path,
        syntax: str,
        msg_id: int,
        originator: str | None,
        originator_id: int | None,
    ) -> Sent:
        transcoded = syntax != row.transfer_syntax_uid
        try:
            answer = assoc.send_c_store(
                path, msg_id=msg_id, originator_aet=originator, originator_id=originator_id
            )
        except (ValueError, RuntimeError, AttributeError) as exc:  # no context, or the association ended
            return Sent(row, None, syntax, transcoded, f"not sent: {exc}")
        status = answer.get("Status")
        if status is None:
            return Sent(
                row,
                None,
                syntax,
                transcoded,
                "no answer from the peer (timeout, or it ended the association)",
            )
        sent = Sent(row, int(status), syntax, transcoded)
        if sent.outcome != COMPLETED:
            comment = str(answer.get("ErrorComment", "") or "").strip()
            reason = f"the peer answered 0x{int(status):04X}" + (f" ({comment})" if comment else "")
            sent = Sent(row, int(status), syntax, transcoded, reason)
        return sent

    @contextmanager
    def _stored_file(self, row: InstanceRow) -> Iterator[tuple[IO[bytes], Path]]:
        """The stored object as an open file and a path to it, its SHA-256 checked."""
        sha256 = row.blob_sha256
        local = self.archive.store.local_path(sha256)
        digest = hashlib.sha256()
        if local is not None:
            if not Path(local).is_file():
                self._damaged(row, "missing")
            with Path(local).open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                self._check(row, digest.hexdigest())
                yield handle, Path(local)
            return
        with _spool(self.archive.settings.home) as (spooled, path):
            try:
                for chunk in self.archive.store.open(sha256):
                    digest.update(chunk)
                    spooled.write(chunk)
            except NotFoundError:
                self._damaged(row, "missing")
            spooled.flush()
            self._check(row, digest.hexdigest())
            yield spooled, path

    def _check(self, row: InstanceRow, found: str) -> None:
        if found != row.blob_sha256:
            self._damaged(row, f"reads as {found[:12]}...")

    def _damaged(self, row: InstanceRow, what: str) -> NoReturn:
        self.archive.damaged(row.blob_sha256, f"send of {row.sop_instance_uid}", self.actor)
        raise LaminaError(f"the stored object is damaged ({what}), not sent; its repair has been queued")


@contextmanager
def _spool(folder: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A temporary file in ``folder`` and a path pynetdicom can open. Where the system has
    ``/proc/self/fd`` the file has no name, so a crash leaves nothing behind."""
    if _PROC_FD.is_dir():
        with tempfile.TemporaryFile(dir=folder) as handle:
            yield handle, _PROC_FD / str(handle.fileno())
    else:
        with tempfile.NamedTemporaryFile(dir=folder, prefix="send-", suffix=".part") as named:
            yield named, Path(named.name)


def audit_sent(archive: Archive, actor: str, destination: str, service: str, sent: Sequence[Sent]) -> None:
    """One ``send`` audit entry per slide (per series for instances outside a slide): where its
    instances went, by which service, and how many arrived."""
    groups: dict[str, list[Sent]] = {}
    for item in sent:
        row = item.row
        entity = f"slide/{row.slide_id}" if row.slide_id else f"series/{row.series_instance_uid}"
        groups.setdefault(entity, []).append(item)
    if not groups:
        return
    with archive.catalog.begin() as conn:
        for entity, items in groups.items():
            outcomes = [item.outcome for item in items]
            detail = {
                "to": destination,
                "service": service,
                "instances": len(items),
                COMPLETED: outcomes.count(COMPLETED),
                WARNING: outcomes.count(WARNING),
                FAILED: outcomes.count(FAILED),
                "transcoded": sum(item.transcoded for item in items),
            }
            audit.append(conn, actor, "send", entity, detail)
