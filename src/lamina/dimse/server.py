"""The DIMSE server: C-ECHO, C-STORE from scanners and PACS, C-FIND, C-MOVE and C-GET.

Handlers are plain methods bound to pynetdicom events. C-STORE only translates: each instance
passes the archive's receive checks (:func:`lamina.archive.receive.examine`) and is spooled
durably for its association (:mod:`lamina.archive.receive.association`); when the peer releases
the association, the archive receives its instances whole on a thread of its own, so a scanner
pushing a slide as one instance per level sees the whole slide appear at once, or not at all.
An aborted or dropped association leaves nothing behind.

Only the calling AEs configured with ``lamina ae add AE_TITLE --tenant FINESS --allow ...`` may
associate (:mod:`lamina.dimse.access`); each request is checked against the operations its AE
may ask, C-FIND and C-GET / C-MOVE see only what a technician of its lab may, and what it stores
goes into its lab. With ``LAMINA_DIMSE_TLS_CERT`` and ``LAMINA_DIMSE_TLS_KEY``, associations
come over TLS only (:mod:`lamina.dimse.tls`).

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
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
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
from lamina.archive.receive import FailureReason, Receipt, Receiver, examine
from lamina.archive.receive.association import AssociationIngest, AssociationSpool, AssociationSpools
from lamina.config import Settings
from lamina.dimse import status
from lamina.dimse.acceptor import RetrievingAssociation, start_server
from lamina.dimse.access import CACHE_S, Callers, principal
from lamina.dimse.contexts import application_entity
from lamina.dimse.find import FindError, combined_date_time, extended_negotiation, find
from lamina.dimse.retrieve import RetrieveService
from lamina.dimse.store import IngestListener, drop_partial, received_object
from lamina.dimse.tls import server_context
from lamina.errors import ConfigurationError, InsufficientStorageError, RequestError, StorageError
from lamina.peers import CallingEntity, Operation, PeerDirectory

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
        When given, only these calling AE titles may associate, and only if they are calling
        AEs of the catalog too (``lamina ae add --tenant --allow``): a narrower list for a
        server, e.g. one lab's scanners only.
    network_timeout_s
        An association silent this long is aborted, and what it sent is discarded.
    max_transcode_bytes
        C-MOVE and C-GET transcode an instance for a peer that takes only uncompressed data up to
        this size decoded (``LAMINA_MAX_TRANSCODE_BYTES``, default 1 GiB).
    tls_cert, tls_key, tls_ca
        PEM files: with the certificate and its key, TLS associations only; with the CAs too,
        client certificates required and verified (:func:`lamina.dimse.tls.server_context`).
    calling_cache_s
        How long a calling AE looked up is kept (:data:`lamina.dimse.access.CACHE_S`): a change
        by ``lamina ae add|remove`` holds for the associations that start after it, at most that
        long after.
    """

    max_dataset_bytes: int = 4 << 30
    max_find_matches: int = 10_000
    calling_ae_titles: tuple[str, ...] = ()
    network_timeout_s: float = 60.0
    max_transcode_bytes: int = 1 << 30
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    calling_cache_s: float = CACHE_S

    @classmethod
    def from_settings(cls, settings: Settings) -> DimseOptions:
        """The options of ``settings`` (``LAMINA_DIMSE_*``, ``dimse_*`` in lamina.toml)."""
        return cls(
            max_dataset_bytes=settings.dimse_max_dataset_bytes,
            max_find_matches=settings.dimse_max_find_matches,
            calling_ae_titles=settings.dimse_calling_ae_titles,
            network_timeout_s=settings.dimse_network_timeout_s,
            max_transcode_bytes=settings.max_transcode_bytes,
            tls_cert=settings.dimse_tls_cert,
            tls_key=settings.dimse_tls_key,
            tls_ca=settings.dimse_tls_ca,
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
        #: the calling AEs, looked up per association
        self.callers = Callers(archive.catalog, self.options.calling_cache_s)
        self._port = port
        self._listener = listener
        receiver = CallerReceiver(archive)
        self._worker = AssociationIngest(receiver, self._on_received, archive.settings.background_nice)
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
        tls = server_context(self.options.tls_cert, self.options.tls_key, self.options.tls_ca)
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
            (evt.EVT_REQUESTED, self._on_requested),
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
            self._server = start_server(ae, (self.host, self._port), handlers, retriever, tls)
        except OSError as exc:
            self._worker.stop()
            self.spools.release()
            raise ConfigurationError(
                f"cannot listen for DICOM on {self.host}:{self._port} ({exc.strerror}); "
                "choose another port or stop the program using it"
            ) from exc
        log.info(
            "DIMSE server %s listening on %s:%d%s",
            self.ae_title,
            self.host,
            self.port,
            " (TLS only)" if tls is not None else "",
        )
        if not _is_loopback(self.host) and (tls is None or tls.verify_mode != ssl.CERT_REQUIRED):
            log.warning(
                "DIMSE on %s without client certificates: calling AE titles are not secret, and who "
                "can reach this port can claim a configured one (lamina ae list) and act for its lab; "
                "restrict the network, or set LAMINA_DIMSE_TLS_CERT, LAMINA_DIMSE_TLS_KEY and "
                "LAMINA_DIMSE_TLS_CA (dimse_tls_* in lamina.toml) to require them",
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
    def _on_requested(self, event: Event) -> None:
        """An A-ASSOCIATE-RQ: refuse a calling AE title that is not a configured calling AE; keep
        the calling AE on the association for its requests."""
        assoc = event.assoc
        title = str(getattr(assoc.requestor.primitive, "calling_ae_title", "") or "").strip()
        try:
            caller = self.callers.get(title)
        except Exception as exc:  # the catalog failed: refuse for now, the peer may try again
            log.error("association from %r refused: the catalog failed (%s)", title, type(exc).__name__)
            _reject(assoc, 0x02, 0x01, 0x01)  # rejected-transient, service user, no reason given
            return
        if caller is None:
            log.warning(
                "association from %r at %s refused: calling AE title not recognized (lamina ae add "
                "AE_TITLE --tenant FINESS --allow ...)",
                title,
                assoc.requestor.address,
            )
            _reject(assoc, 0x01, 0x01, 0x03)  # rejected-permanent, calling AE title not recognized
            return
        if isinstance(assoc, RetrievingAssociation):
            assoc.caller = caller

    def _on_accepted(self, event: Event) -> None:
        spool = self.spools.new(_calling(event.assoc))
        with self._lock:
            self._associations[event.assoc] = _Association(spool)

    def _on_echo(self, event: Event) -> int | Dataset:
        refused = _refused(event, Operation.ECHO)
        return status.SUCCESS if refused is None else refused

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
        refused = _refused(event, Operation.STORE)
        if refused is not None:
            return refused
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
        refused = _refused(event, Operation.FIND)
        caller = _caller(event.assoc)
        if refused is not None or caller is None:
            yield refused or status.failure(status.NOT_AUTHORIZED, "not a calling AE"), None
            return
        try:
            found = find(
                self.archive.catalog.engine,
                event.identifier,
                self.options.max_find_matches,
                combined_date_time=combined_date_time(event),
                principal=principal(caller),
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


def _caller(association: Association) -> CallingEntity | None:
    """The calling AE the association was accepted as."""
    caller = getattr(association, "caller", None)
    return caller if isinstance(caller, CallingEntity) else None


def _refused(event: Event, operation: Operation) -> Dataset | None:
    """Answer "Refused: Not Authorized" (0x0124, a general status of PS3.7 C.5) when the association's
    calling AE may not ask ``operation``; None when it may."""
    caller = _caller(event.assoc)
    if caller is not None and caller.may(operation):
        return None
    title = _calling(event.assoc)
    log.info("%s from %r refused: not allowed (lamina ae add --allow)", operation.value, title)
    return status.failure(status.NOT_AUTHORIZED, f"{operation.value} is not allowed for {title[:16]}")


def _reject(association: Association, result: int, source: int, diagnostic: int) -> None:
    """A-ASSOCIATE-RJ from an ``EVT_REQUESTED`` handler, then end the association, as pynetdicom
    does for the rejections it makes itself (acse.py, ``_negotiate_as_acceptor``)."""
    association.acse.send_reject(result, source, diagnostic)
    evt.trigger(association, evt.EVT_REJECTED, {})
    association.kill()


class CallerReceiver(Receiver):
    """The archive's receiver, storing a released association's slides into the lab of its
    calling AE (``actor`` ``dimse:<AE title>``, as :class:`AssociationIngest` names it). The AE is
    looked up when its spool is received: one removed meanwhile leaves the spool sealed, for the
    next start."""

    def __init__(self, archive: Archive) -> None:
        super().__init__(
            archive.catalog,
            archive.store,
            work_dir=archive.settings.home,
            lossless=archive.settings.lossless_codec,
        )
        self.directory = PeerDirectory(archive.catalog)

    def receive(
        self,
        files: Sequence[Path],
        *,
        study: str | None = None,
        actor: str = "lamina",
        final: bool = True,
        tenant: str = "",
    ) -> Receipt:
        if not tenant and actor.startswith("dimse:"):
            title = actor.removeprefix("dimse:")
            caller = self.directory.calling(title)
            if caller is None:
                raise RequestError(
                    "calling AE title",
                    f"{title!r} is no longer a calling AE (lamina ae list); its objects are kept "
                    "until it is added again (lamina ae add --tenant --allow) and lamina restarts",
                )
            tenant = caller.tenant
        return super().receive(files, study=study, actor=actor, final=final, tenant=tenant)
