"""The DIMSE server: C-ECHO, C-STORE from scanners and PACS, C-FIND, C-MOVE and C-GET.

Handlers are plain methods bound to pynetdicom events. C-STORE only translates: each instance
passes the archive's receive checks (:func:`lamina.archive.receive.examine`) and is spooled
durably for its association (:mod:`lamina.archive.receive.association`); when the peer releases
the association, the archive receives its instances whole on a thread of its own, so a scanner
pushing a slide as one instance per level sees the whole slide appear at once, or not at all.
An aborted or dropped association leaves nothing behind.

Example
-------
>>> server = DimseServer(archive, ae_title="LAMINA", port=11112)  # doctest: +SKIP
>>> server.start()                                                 # doctest: +SKIP
>>> ...                                                            # doctest: +SKIP
>>> server.stop()                                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import VLWholeSlideMicroscopyImageStorage
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.transport import ThreadedAssociationServer

from lamina.archive.archive import Archive
from lamina.archive.ingest import IngestStatus
from lamina.archive.receive import FailureReason, Receipt, examine
from lamina.archive.receive.association import AssociationIngest, AssociationSpool, AssociationSpools
from lamina.config import Settings
from lamina.dimse import status
from lamina.dimse.acceptor import start_server
from lamina.dimse.contexts import application_entity
from lamina.dimse.find import FindError, combined_date_time, extended_negotiation, find
from lamina.dimse.retrieve import RetrieveService
from lamina.dimse.store import IngestListener, drop_partial, received_object
from lamina.errors import ConfigurationError, InsufficientStorageError, StorageError

log = logging.getLogger("lamina.dimse")


@dataclass(frozen=True)
class DimseOptions:
    """Limits and access of the DIMSE server.

    Parameters
    ----------
    max_dataset_bytes
        A C-STORE data set over this size is refused; one still arriving past it aborts the
        association, so that a peer cannot fill the disk (default 4 GiB).
    max_find_matches
        A C-FIND with more matches answers the first ones, then "Out of resources" (0xA700).
    calling_ae_titles
        When given, only these calling AE titles may associate (an allow-list, not a sign-in:
        AE titles are not secret).
    network_timeout_s
        An association silent this long is aborted, and what it sent is discarded.
    max_transcode_bytes
        C-MOVE and C-GET transcode an instance for a peer that takes only uncompressed data up to
        this size decoded (``LAMINA_MAX_TRANSCODE_BYTES``, default 1 GiB).
    """

    max_dataset_bytes: int = 4 << 30
    max_find_matches: int = 10_000
    calling_ae_titles: tuple[str, ...] = ()
    network_timeout_s: float = 60.0
    max_transcode_bytes: int = 1 << 30

    @classmethod
    def from_settings(cls, settings: Settings) -> DimseOptions:
        """The options of ``settings`` (``LAMINA_DIMSE_*``, ``dimse_*`` in lamina.toml)."""
        return cls(
            max_dataset_bytes=settings.dimse_max_dataset_bytes,
            max_find_matches=settings.dimse_max_find_matches,
            calling_ae_titles=settings.dimse_calling_ae_titles,
            network_timeout_s=settings.dimse_network_timeout_s,
            max_transcode_bytes=settings.max_transcode_bytes,
        )


@dataclass
class _Association:
    """What the server keeps for one association while it lasts."""

    spool: AssociationSpool
    receiving: int = 0  # bytes of the data set arriving now
    over_limit: bool = False


class DimseServer:
    """Serve an archive over DICOM DIMSE: Verification, Storage (VL WSI), Study Root C-FIND, C-MOVE, C-GET.

    Parameters
    ----------
    archive
        The archive stored into and searched (its catalog and blob store).
    ae_title
        The called AE title peers must use.
    host, port
        Where to listen; port 0 takes a free port (see :attr:`port`).
    options
        Limits and the calling AE allow-list.
    listener
        Called with each ingested series' :class:`~lamina.archive.ingest.IngestResult`.
    """

    def __init__(
        self,
        archive: Archive,
        ae_title: str = "LAMINA",
        host: str = "127.0.0.1",
        port: int = 11112,
        options: DimseOptions | None = None,
        listener: IngestListener | None = None,
    ) -> None:
        self.archive = archive
        self.ae_title = ae_title
        self.host = host
        self.options = options or DimseOptions()
        #: the associations' spools, ``$LAMINA_HOME/incoming/dimse``
        self.spools = AssociationSpools(archive.settings.home / "incoming")
        self._port = port
        self._listener = listener
        self._worker = AssociationIngest(
            archive.receiver(), self._on_received, archive.settings.background_nice
        )
        self._associations: dict[Association, _Association] = {}
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    # -- life cycle ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when 0 was asked)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    def start(self) -> None:
        """Listen (without blocking); first ingest what a previous run received but did not."""
        if self._server is not None:
            return
        ae = application_entity(self.ae_title, self.options.calling_ae_titles, self.options.network_timeout_s)
        self.spools.take()
        sealed, removed = self.spools.recover()
        if removed:
            log.warning("removed %d spool(s) of associations that never ended (a crash or a kill)", removed)
        self._worker.start()
        for spool in sealed:
            log.info("ingesting spool %s left by the previous run", spool.id)
            self._worker.submit(spool)
        # received data sets go to a temporary file, not to memory: a slide level can be gigabytes
        # (process-wide pynetdicom setting; lamina runs one DIMSE server per process)
        _config.STORE_RECV_CHUNKED_DATASET = True
        handlers: list[Any] = [
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_SOP_EXTENDED, extended_negotiation),
            (evt.EVT_PDU_RECV, self._on_pdu),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        try:
            # Study Root C-GET and C-MOVE are served by lamina's streamed retrieve (dimse/acceptor.py)
            retriever = RetrieveService(
                self.archive, self.ae_title, self.options.network_timeout_s, self.options.max_transcode_bytes
            )
            self._server = start_server(ae, (self.host, self._port), handlers, retriever)
        except OSError as exc:
            self._worker.stop()
            self.spools.release()
            raise ConfigurationError(
                f"cannot listen for DICOM on {self.host}:{self._port} ({exc.strerror}); "
                "choose another port or stop the program using it"
            ) from exc
        log.info("DIMSE server %s listening on %s:%d", self.ae_title, self.host, self.port)
        if not _is_loopback(self.host) and not self.options.calling_ae_titles:
            log.warning(
                "DIMSE on %s with no calling AE allow-list: anyone who can reach this port can search "
                "the catalog, store into it and retrieve from it (C-GET, C-MOVE to known destinations); "
                "restrict the network or set LAMINA_DIMSE_CALLING_AE_TITLES (dimse_calling_ae_titles in "
                "lamina.toml) to the AE titles of your peers",
                self.host,
            )

    def stop(self) -> None:
        """Stop listening, abort open associations, finish the ingest in hand.

        Released associations not yet ingested stay sealed in ``incoming/`` and are ingested at
        the next :meth:`start`.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        for association in server.active_associations:
            association.abort()
        with self._lock:
            left = list(self._associations.values())
            self._associations.clear()
        for state in left:
            state.spool.discard()
        self._worker.stop()
        self.spools.release()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no association holds received objects and every released one is ingested.

        Returns False if ``timeout`` (seconds) passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                receiving = any(state.spool.objects for state in self._associations.values())
            # read in this order: a released association is forgotten only once the worker has it
            if not receiving:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                return self._worker.wait_idle(left)
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def __enter__(self) -> DimseServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- association state -------------------------------------------------------------------
    def _state(self, association: Association) -> _Association | None:
        """The association's state; None once it has ended (its spool handed over or dropped)."""
        with self._lock:
            return self._associations.get(association)

    def _forget(self, association: Association) -> _Association | None:
        with self._lock:
            return self._associations.pop(association, None)

    # -- handlers ------------------------------------------------------------------------------
    def _on_accepted(self, event: Event) -> None:
        spool = self.spools.new(_calling(event.assoc))
        with self._lock:
            self._associations[event.assoc] = _Association(spool)

    def _on_echo(self, event: Event) -> int:
        return status.SUCCESS

    def _on_pdu(self, event: Event) -> None:
        """Count the data set as it arrives; abort once it is over the limit."""
        pdu = event.pdu
        if not isinstance(pdu, P_DATA_TF):
            return
        state = self._state(event.assoc)
        if state is None or state.over_limit:
            return
        for item in pdu.presentation_data_value_items:
            value = item.presentation_data_value
            if not value:
                continue
            if value[0] & 1:  # a command fragment: a new message begins
                state.receiving = 0
            else:
                state.receiving += len(value) - 1
        if state.receiving > self.options.max_dataset_bytes:
            state.over_limit = True
            log.warning(
                "association from %r aborted: a data set over the %d-byte limit",
                state.spool.calling_ae_title,
                self.options.max_dataset_bytes,
            )
            event.assoc.abort(block=False)

    def _on_store(self, event: Event) -> int | Dataset:
        """Spool one instance durably once it passes the archive's receive checks; Success only
        once it is on disk."""
        request = event.request
        received, size = received_object(event)
        if size > self.options.max_dataset_bytes:
            return status.failure(
                FailureReason.OUT_OF_RESOURCES, "data set over the size limit of this archive"
            )
        outcome = examine(
            received,
            sop_class_uid=str(getattr(request, "AffectedSOPClassUID", "") or ""),
            sop_instance_uid=str(getattr(request, "AffectedSOPInstanceUID", "") or ""),
        )
        if outcome.failure_reason is not None:
            log.info("C-STORE from %r refused: %s", _calling(event.assoc), outcome.reason)
            return status.failure(outcome.failure_reason, outcome.reason)
        state = self._state(event.assoc)
        if state is None:  # aborted meanwhile
            return status.failure(FailureReason.OUT_OF_RESOURCES, "the association is ending")
        try:
            state.spool.put(received, outcome.series_instance_uid, outcome.sop_instance_uid)
        except StorageError as exc:
            log.error("C-STORE from %r not kept: %s", state.spool.calling_ae_title, exc)
            full = isinstance(exc, InsufficientStorageError)
            comment = "the archive's disk is full" if full else "the archive cannot write the object now"
            return status.failure(FailureReason.OUT_OF_RESOURCES, comment)
        return status.SUCCESS

    def _on_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """Study Root C-FIND: Pending per match, then Success (or the failure that stopped it)."""
        matches = 0
        try:
            found = find(
                self.archive.catalog.engine,
                event.identifier,
                self.options.max_find_matches,
                combined_date_time=combined_date_time(event),
            )
            for answer in found:
                if event.is_cancelled:
                    yield status.CANCEL, None
                    return
                matches += 1
                yield status.PENDING, answer
        except FindError as exc:
            log.info("C-FIND from %r: %s", _calling(event.assoc), exc.comment)
            yield status.failure(exc.code, exc.comment), None
            return
        except Exception as exc:  # the catalog failed: one line, and no query values (they name patients)
            log.error("C-FIND from %r failed: %s", _calling(event.assoc), type(exc).__name__)
            yield status.failure(status.CANNOT_UNDERSTAND, "the query could not be processed"), None
            return
        log.info("C-FIND from %r: %d match(es)", _calling(event.assoc), matches)
        yield status.SUCCESS, None

    def _on_released(self, event: Event) -> None:
        """The peer released the association: what it sent is complete, hand it to ingest."""
        state = self._state(event.assoc)
        try:
            if state is not None and state.spool.objects:
                for series in state.spool.seal():
                    log.warning(
                        "series %s from %r not ingested: an instance of it could not be kept (the peer "
                        "was told); it must be sent again whole",
                        series,
                        state.spool.calling_ae_title,
                    )
                self._worker.submit(state.spool)
        except OSError as exc:
            log.error("spool %s not sealed (%s): discarded", state.spool.id if state else "?", exc.strerror)
            if state is not None:
                state.spool.discard()
        finally:
            # only now: until the worker holds the spool, wait_idle sees the association
            self._forget(event.assoc)

    def _on_received(self, spool: AssociationSpool, receipt: Receipt) -> None:
        """A released association received: one log line per slide and per object not stored."""
        files = {files[0]: (series, len(files)) for series, files in spool.series().items()}
        for result in receipt.slides:
            series, count = files.get(result.path, (result.path.parent.name, 0))
            where = f"series {series} from {spool.calling_ae_title!r} ({count} objects)"
            if result.status is IngestStatus.INGESTED:
                log.info(
                    "%s: ingested as slide %s, %d levels, %d instances",
                    where,
                    result.slide_id,
                    result.levels,
                    result.instances,
                )
            elif result.status is IngestStatus.DUPLICATE:
                log.info("%s: duplicate of slide %s, nothing stored", where, result.slide_id)
            else:
                log.warning("%s: not ingested: %s", where, result.reason)
            if self._listener is not None:
                self._listener(result)
        for outcome in receipt.outcomes:  # the objects kept as they are (a slide's are logged above)
            if not outcome.ok and outcome.sop_class_uid != VLWholeSlideMicroscopyImageStorage:
                log.warning(
                    "instance %s from %r: not stored: %s",
                    outcome.sop_instance_uid,
                    spool.calling_ae_title,
                    outcome.reason,
                )

    def _on_aborted(self, event: Event) -> None:
        state = self._forget(event.assoc)
        if state is not None and state.spool.objects:
            log.warning(
                "association from %r aborted: its %d object(s) discarded",
                state.spool.calling_ae_title,
                state.spool.objects,
            )
        if state is not None:
            state.spool.discard()

    def _on_closed(self, event: Event) -> None:
        """A connection that drops with neither release nor abort fires no other event: once the
        association's thread has ended, discard whatever it left."""
        watcher = threading.Thread(target=self._after, args=(event.assoc,), name="lamina-dimse-close")
        watcher.daemon = True
        watcher.start()

    def _after(self, association: Association) -> None:
        with contextlib.suppress(RuntimeError):  # never started: the association was refused
            association.join(timeout=self.options.network_timeout_s + 30)
        drop_partial(association)
        state = self._forget(association)
        if state is not None:
            if state.spool.objects:
                log.warning(
                    "connection from %r dropped: its %d object(s) discarded",
                    state.spool.calling_ae_title,
                    state.spool.objects,
                )
            state.spool.discard()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _calling(association: Association) -> str:
    return str(association.requestor.ae_title or "").strip()
