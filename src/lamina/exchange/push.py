"""The push of slides of interest from a site to the archive node (``lamina push``, the job).

A slide of interest (:mod:`lamina.lifecycle.marks`) of a patient who has not opposed is
**queued** (a ``transfers`` row). Pushing it, in one attempt:

1. the new header of each instance that leaves is made (:func:`~lamina.exchange.deid.is_sent`:
   never the label; the overview only blanked, with ``keep_overview``;
   :func:`~lamina.exchange.deid.prepare_instance`), reading only the headers; any doubt
   **quarantines** the slide for a person to review, before a byte is sent;
2. the pseudonyms sent are remembered at the site (:mod:`lamina.exchange.pseudonyms`);
3. the slide is **announced** to the archive (``POST /api/exchange/slides``: its lab, its
   de-identified UIDs, the patient's pseudonym, the category and reason, its instances and their
   frame counts). An archive that already verified it answers so, and nothing is sent again (a
   slide is never stored twice: its UIDs are keyed, the same at every push);
4. its instances go in one STOW-RS request (``multipart/related``), at most ``limit_mb_per_s``,
   each de-identified as it is sent: its header, then its frames copied from the store byte for
   byte, never decoded, hashed on the way (:func:`~lamina.exchange.deid.write_prepared`, on a
   thread feeding the request through a bounded queue: no copy on disk, memory bounded); the
   slide is **sent**;
5. the archive **verifies** it (``POST /api/exchange/slides/{series}/verify`` with the SHA-256 of
   each instance's frames): every announced instance stored, the SHA-256 of its frames equal, no
   identity left. Its acknowledgement is kept: **verified**.

An archive that cannot be reached, or answers 5xx, 408, 429 or "incomplete", leaves the slide
queued for a later attempt, after a back-off that doubles from 30 s to 6 h (the reason kept
beside it, so the operator and the viewer see it); an archive that refuses it (4xx) makes it
**refused**, with the archive's reason. A patient's opposition recorded after the push is told
to the archive (``POST /api/exchange/withdrawals``, by pseudonym): **withdrawn**.

Each attempt starts from the catalog's state and the stored instances, so a push killed at any
point runs again from its start without loss or duplicate (the archive answers "duplicate" for
instances it has). The bearer token is sent to the archive only, never logged nor put in an error.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import Connection, insert, or_, select, update

from lamina.archive import audit
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.times import utc_or_none
from lamina.errors import ConfigurationError, NotFoundError
from lamina.exchange import consent, pseudonyms
from lamina.exchange.deid import DeidOptions, PreparedInstance, is_sent, prepare_instance, write_prepared
from lamina.exchange.keys import ExchangeKeys

if TYPE_CHECKING:
    from lamina.archive.archive import Archive
    from lamina.archive.catalog.catalog import InstanceRow, SlideRow

__all__ = ["STATUSES", "PushResult", "Pusher", "backoff_s"]

#: A transfer's states (``transfers.status``).
STATUSES = ("queued", "sent", "verified", "refused", "quarantined", "withdrawn")
#: The first and the longest wait between two attempts.
FIRST_BACKOFF_S = 30.0
MAX_BACKOFF_S = 6 * 3600.0
_CHUNK = 1 << 20
_RETRIED = frozenset({408, 425, 429})


def backoff_s(attempts: int) -> float:
    """The wait after ``attempts`` failed attempts: 30 s, 60 s, 120 s, ... at most 6 h."""
    return float(min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2.0 ** max(0, attempts - 1)))


@dataclass
class PushResult:
    """One slide's attempt: its status after it, and why."""

    slide_id: str
    status: str
    reason: str | None = None
    instances: int = 0
    bytes: int = 0
    seconds: float = 0.0
    deid_seconds: float = 0.0
    acknowledgement: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        return {
            "slide_id": self.slide_id,
            "status": self.status,
            "reason": self.reason,
            "instances": self.instances,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "deid_seconds": round(self.deid_seconds, 3),
            "acknowledgement": self.acknowledgement,
        }


class _RetryError(Exception):
    """An attempt to make again later (the archive unreachable, busy, or incomplete): the
    push's own flow, caught in this module and recorded as the transfer's reason."""


class _RefusedError(Exception):
    """The archive refused the slide: not sent again until a person acts."""


@dataclass
class _Outgoing:
    """A slide's instances that leave, prepared: (instance, its object, the object's size)."""

    instances: list[tuple[PreparedInstance, str, int]] = field(default_factory=list)
    announced: list[dict[str, Any]] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    study: str = ""
    series: str = ""
    quarantine: list[str] = field(default_factory=list)
    bytes: int = 0


class _QuarantinedError(Exception):
    """An instance found damaged while it was sent: the slide waits for a person."""


class _QueueWriter:
    """A file-like ``write`` that hands 1 MiB chunks to a bounded queue (the request's body);
    gives up once ``stop`` is set (the request ended)."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None], stop: threading.Event) -> None:
        self.chunks, self.stop = chunks, stop
        self.buffer = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.buffer += data
        if len(self.buffer) >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.put(bytes(self.buffer))
            self.buffer.clear()

    def put(self, item: bytes | BaseException | None) -> None:
        while not self.stop.is_set():
            try:
                self.chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _RetryError("the request ended before the instance was sent")


class _Throttle:
    """At most ``mb_per_s`` MB a second over the whole push (0: no limit)."""

    def __init__(self, mb_per_s: float) -> None:
        self.rate = mb_per_s * 1e6
        self.started = time.monotonic()
        self.sent = 0

    def take(self, size: int) -> None:
        if self.rate <= 0:
            return
        self.sent += size
        ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


class Pusher:
    """Pushes a site's slides of interest to its archive (the module's docstring).

    Parameters
    ----------
    archive
        The site.
    url, token
        The archive node's base URL (its ``/dicomweb`` and ``/api`` below it) and the bearer token
        it issued to this lab; by default ``[exchange] archive_url`` and ``archive_token_file``.
    limit_mb_per_s
        The bandwidth of the push (0: none); by default ``[exchange] limit_mb_per_s``.
    site
        The site's name, told to the archive (by default its public URL, else its host name).
    """

    def __init__(
        self,
        archive: Archive,
        *,
        url: str | None = None,
        token: str | None = None,
        limit_mb_per_s: float | None = None,
        site: str | None = None,
        keys: ExchangeKeys | None = None,
        options: DeidOptions | None = None,
        actor: str = "lamina",
        client: httpx.Client | None = None,
        on_result: Callable[[PushResult], None] | None = None,
    ) -> None:
        settings = archive.settings
        exchange = settings.exchange
        self.archive = archive
        self.url = (url or exchange.archive_url or "").rstrip("/")
        if not self.url:
            raise ConfigurationError(
                "no archive to push to: give --to URL, or set archive_url in [exchange] of lamina.toml "
                "(LAMINA_ARCHIVE_URL)"
            )
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(f"the archive URL {self.url!r} must start with https:// (or http://)")
        self.token = token if token is not None else _token_of(exchange.archive_token_file)
        self.limit = exchange.limit_mb_per_s if limit_mb_per_s is None else limit_mb_per_s
        self.site = site or settings.public_url or _hostname()
        self.keys = keys or ExchangeKeys.for_settings(settings)
        self.options = options or DeidOptions(warehouses=tuple(name for name, _ in exchange.warehouses))
        self.actor = actor
        self.on_result = on_result
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.warning = ""
        self.client = client or httpx.Client(
            timeout=httpx.Timeout(300.0, connect=10.0), follow_redirects=False, headers=headers
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Pusher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the queue --------------------------------------------------------------------------------

    def queue(self, tenant: str | None = None) -> int:
        """Queue every slide of interest not queued yet (of ``tenant``, else of every lab); a
        slide of a patient who opposes is recorded refused at once. The number queued."""
        catalog = self.archive.catalog
        now = dt.datetime.now(dt.UTC)
        query = (
            select(t.slides.c.id, t.slides.c.tenant, t.slides.c.study_instance_uid)
            .select_from(
                t.slide_interest.join(t.slides, t.slides.c.id == t.slide_interest.c.slide_id).outerjoin(
                    t.transfers, t.transfers.c.slide_id == t.slides.c.id
                )
            )
            .where(t.transfers.c.slide_id.is_(None), t.slides.c.expired_at.is_(None))
        )
        if tenant is not None:
            query = query.where(t.slides.c.tenant == tenant)
        queued = 0
        with catalog.begin() as conn:
            for slide_id, lab, _ in conn.execute(query).all():
                patient = _patient_of(conn, str(slide_id))
                refused = patient is not None and consent.opposed(conn, str(lab), patient)
                conn.execute(
                    insert(t.transfers).values(
                        slide_id=slide_id,
                        tenant=lab,
                        status="refused" if refused else "queued",
                        reason=_OPPOSED if refused else None,
                        attempts=0,
                        next_attempt_at=now,
                        queued_at=now,
                        archive_url=self.url,
                    )
                )
                queued += not refused
        return queued

    def due(self, now: dt.datetime | None = None, slides: Sequence[str] = ()) -> list[str]:
        """The queued or sent slides whose next attempt is due; ``slides``: these, due or not, and
        refused or quarantined ones too (a person names them once they acted)."""
        now = now or dt.datetime.now(dt.UTC)
        transfers = t.transfers
        query = select(transfers.c.slide_id)
        if slides:  # named by a person: also those refused or quarantined before
            retried = ("queued", "sent", "refused", "quarantined")
            query = query.where(transfers.c.status.in_(retried), transfers.c.slide_id.in_(list(slides)))
        else:
            query = query.where(
                transfers.c.status.in_(("queued", "sent")),
                or_(transfers.c.next_attempt_at.is_(None), transfers.c.next_attempt_at <= now),
            )
        with self.archive.catalog.engine.connect() as conn:
            return [str(row[0]) for row in conn.execute(query.order_by(transfers.c.queued_at)).all()]

    def run(self, slides: Sequence[str] = (), tenant: str | None = None) -> list[PushResult]:
        """Queue what is new, tell the archive of new oppositions, then push what is due."""
        self.queue(tenant)
        results = [*self.tell_withdrawals()]
        for slide_id in self.due(slides=slides):
            result = self.push_slide(slide_id)
            results.append(result)
            if self.on_result is not None:
                self.on_result(result)
        return results

    # -- one slide --------------------------------------------------------------------------------

    def push_slide(self, slide_id: str) -> PushResult:
        """One attempt at pushing ``slide_id`` (queued first if it is not)."""
        started = time.perf_counter()
        catalog = self.archive.catalog
        slide = catalog.slide(slide_id)
        if slide is None:
            raise NotFoundError(f"no slide {slide_id} on this node")
        interest = _interest(self.archive, slide_id)
        if interest is None:
            raise NotFoundError(
                f"slide {slide_id} is not a slide of interest: flag it first (lamina interest)"
            )
        with catalog.engine.connect() as conn:
            row = conn.execute(select(t.transfers).where(t.transfers.c.slide_id == slide_id)).first()
        if row is None:
            self.queue(slide.tenant)
        result = PushResult(slide_id, "queued")
        try:
            if slide.expired_at is not None:
                raise _RefusedError("the slide has expired: its pyramid is gone")
            with catalog.engine.connect() as conn:
                if slide.patient_id and consent.opposed(conn, slide.tenant, slide.patient_id):
                    raise _RefusedError(_OPPOSED)
            prepared = time.perf_counter()
            outgoing = self._prepare(slide)
            result.deid_seconds = time.perf_counter() - prepared
            result.instances, result.bytes = len(outgoing.instances), outgoing.bytes
            if outgoing.quarantine:
                self._finish(result, "quarantined", "; ".join(outgoing.quarantine)[:4000])
                return result
            self._remember(slide)
            announced = self._announce(slide, interest, outgoing)
            if announced.get("status") != "verified":
                self._stow(outgoing, slide.tenant)
                self._mark(slide_id, status="sent", sent_at=dt.datetime.now(dt.UTC), reason=None)
                announced = self._verify(outgoing)
            result.acknowledgement = announced.get("acknowledgement") or {}
            self._finish(result, "verified", None, outgoing)
        except _RefusedError as exc:
            self._finish(result, "refused", str(exc))
        except _QuarantinedError as exc:
            self._finish(result, "quarantined", str(exc))
        except _RetryError as exc:
            self._retry(result, str(exc))
        finally:
            result.seconds = time.perf_counter() - started
        return result

    def _prepare(self, slide: SlideRow) -> _Outgoing:
        """Each instance that leaves, its new header made (its frames read later, as they are
        sent); the quarantine's reasons, if any."""
        store = self.archive.store
        outgoing = _Outgoing()
        for row in sorted(self.archive.catalog.instances(slide.id), key=_order):
            if not is_sent(row.flavor, (), self.options.keep_overview):
                continue
            with _blob_file(store, row.blob_sha256, row.bytes) as source:
                prepared = prepare_instance(source, self.keys, self.options)
            outcome = prepared.outcome
            if outcome.quarantine:
                outgoing.quarantine.extend(
                    f"instance {row.sop_instance_uid}: {why}" for why in outcome.quarantine
                )
                continue
            outgoing.instances.append((prepared, row.blob_sha256, row.bytes))
            outgoing.bytes += prepared.size(row.bytes)
            outgoing.study, outgoing.series = outcome.study_instance_uid, outcome.series_instance_uid
            outgoing.announced.append(
                {"sop_instance_uid": outcome.sop_instance_uid, "number_of_frames": row.number_of_frames}
            )
        if not outgoing.instances and not outgoing.quarantine:
            outgoing.quarantine.append("no instance of the slide may leave (only a label or an overview)")
        return outgoing

    def _remember(self, slide: SlideRow) -> None:
        with self.archive.catalog.begin() as conn:
            accession = conn.execute(
                select(t.studies.c.accession_number).where(
                    t.studies.c.study_instance_uid == slide.study_instance_uid
                )
            ).scalar()
            values: list[tuple[str, str, Callable[[str, str | None], str]]] = []
            if slide.patient_id:
                values.append(("PatientID", slide.patient_id, self.keys.patient_pseudonym))
            if accession:
                values.append(("AccessionNumber", str(accession), self.keys.accession_pseudonym))
            for kind, value, derive in values:
                for warehouse in (None, *self.options.warehouses):
                    pseudonyms.remember(conn, slide.tenant, kind, value, derive(value, warehouse), warehouse)

    # -- the archive's protocol -------------------------------------------------------------------

    def _announce(self, slide: SlideRow, interest: tuple[str, str], outgoing: _Outgoing) -> dict[str, Any]:
        body = {
            "site": self.site,
            "tenant": slide.tenant,
            "study_instance_uid": outgoing.study,
            "series_instance_uid": outgoing.series,
            "patient_pseudonym": self.keys.patient_pseudonym(slide.patient_id or ""),
            "category": interest[0],
            "reason": interest[1],
            "instances": outgoing.announced,
        }
        return self._call("announcing the slide", "POST", "/api/exchange/slides", json_body=body)

    def _stow(self, outgoing: _Outgoing, tenant: str) -> None:
        """One STOW-RS request of the slide's instances, each de-identified as it is sent (its
        frames copied from the store into the request, hashed on the way)."""
        boundary = uuid.uuid4().hex
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        tail = f"--{boundary}--\r\n".encode()
        length = len(outgoing.instances) * (len(head) + 2) + outgoing.bytes + len(tail)
        throttle = _Throttle(self.limit)

        def body() -> Iterator[bytes]:
            for prepared, digest, size in outgoing.instances:
                yield head
                for chunk in self._instance_bytes(prepared, digest, size, outgoing):
                    throttle.take(len(chunk))
                    yield chunk
                yield b"\r\n"
            yield tail

        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Content-Length": str(length),
            "Accept": "application/dicom+json",
        }
        answer = self._call(
            "sending the instances (STOW-RS)",
            "POST",
            f"/dicomweb/studies?tenant={tenant}",
            content=body(),
            headers=headers,
        )
        failed = _failures(answer)
        if failed:
            words = f" ({self.warning})" if self.warning else ""
            raise _RefusedError(
                f"the archive refused {len(failed)} instance(s): {'; '.join(failed)}{words}"[:4000]
            )

    def _instance_bytes(
        self, prepared: PreparedInstance, digest: str, size: int, outgoing: _Outgoing
    ) -> Iterator[bytes]:
        """The de-identified instance's bytes, written by a thread (:func:`write_prepared`) into
        a bounded queue; its frames' digest kept in ``outgoing.digests``."""
        chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        stop = threading.Event()
        sink = _QueueWriter(chunks, stop)

        def produce() -> None:
            try:
                with _blob_file(self.archive.store, digest, size) as source:
                    outcome = write_prepared(prepared, source, sink)  # type: ignore[arg-type]
                sink.flush()
                if outcome.quarantine or outcome.frames_sha256 is None:
                    why = "; ".join(outcome.quarantine) or "frames in several fragments each"
                    raise _QuarantinedError(f"instance {outcome.sop_instance_uid}: {why}")
                outgoing.digests[outcome.sop_instance_uid] = outcome.frames_sha256
                sink.put(None)
            except BaseException as exc:  # handed to the request's thread
                sink.put(exc)

        thread = threading.Thread(target=produce, name="lamina-push", daemon=True)
        thread.start()
        try:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=30)

    def _verify(self, outgoing: _Outgoing) -> dict[str, Any]:
        digests = [
            {"sop_instance_uid": uid, "frames_sha256": sha256} for uid, sha256 in outgoing.digests.items()
        ]
        return self._call(
            "verifying the slide",
            "POST",
            f"/api/exchange/slides/{outgoing.series}/verify",
            json_body={"instances": digests},
        )

    def tell_withdrawals(self) -> list[PushResult]:
        """Tell the archive of each patient who opposed after their slides were sent: the slides
        become withdrawn (the archive hides them from research at once)."""
        transfers = t.transfers
        results: list[PushResult] = []
        with self.archive.catalog.engine.connect() as conn:
            rows = conn.execute(
                select(transfers.c.slide_id, transfers.c.tenant, t.patients.c.patient_id)
                .select_from(
                    transfers.join(t.slides, t.slides.c.id == transfers.c.slide_id)
                    .join(t.studies, t.studies.c.study_instance_uid == t.slides.c.study_instance_uid)
                    .join(t.patients, t.patients.c.pk == t.studies.c.patient_pk)
                )
                .where(transfers.c.status.in_(("sent", "verified")))
            ).all()
            opposed = [row for row in rows if consent.opposed(conn, str(row[1]), str(row[2]))]
        told: dict[tuple[str, str], int | None] = {}
        for slide_id, tenant, patient_id in opposed:
            pseudonym = self.keys.patient_pseudonym(str(patient_id))
            result = PushResult(str(slide_id), "withdrawn")
            try:
                if (tenant, pseudonym) not in told:
                    answer = self._call(
                        "telling the archive of an opposition",
                        "POST",
                        "/api/exchange/withdrawals",
                        json_body={"patient_pseudonym": pseudonym},
                    )
                    told[(tenant, pseudonym)] = int(answer.get("withdrawn", 0))
                self._finish(result, "withdrawn", _OPPOSED)
            except (_RetryError, _RefusedError) as exc:
                result.status, result.reason = "verified", f"the archive was not told yet: {exc}"
            results.append(result)
        return results

    def _call(
        self,
        what: str,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        content: Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        url = self.url + path
        try:
            response = self.client.request(method, url, json=json_body, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise _RetryError(
                f"{what}: the archive at {self.url} cannot be reached ({type(exc).__name__})"
            ) from None
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        code = response.status_code
        self.warning = response.headers.get("Warning", "")[:2000]  # a STOW-RS refusal's words
        if code < 300 or (code == 409 and answer.get("status") == "incomplete"):
            if code == 409:
                missing = answer.get("missing") or []
                raise _RetryError(f"{what}: the archive has not stored {len(missing)} instance(s) yet")
            return answer
        said = _said(answer) or response.reason_phrase
        if code >= 500 or code in _RETRIED:
            raise _RetryError(f"{what}: the archive answered {code} ({said})")
        if code == 409 and path.startswith("/dicomweb/studies"):  # every instance failed: the reasons
            words = f" ({self.warning})" if self.warning else ""
            raise _RefusedError(f"{what}: {'; '.join(_failures(answer)) or said}{words}"[:4000])
        raise _RefusedError(f"{what}: the archive answered {code} ({said})")

    # -- the catalog ------------------------------------------------------------------------------

    def _mark(self, slide_id: str, **values: Any) -> None:
        with self.archive.catalog.begin() as conn:
            conn.execute(update(t.transfers).where(t.transfers.c.slide_id == slide_id).values(**values))

    def _finish(
        self, result: PushResult, status: str, reason: str | None, outgoing: _Outgoing | None = None
    ) -> None:
        result.status, result.reason = status, reason
        now = dt.datetime.now(dt.UTC)
        values: dict[str, Any] = {"status": status, "reason": reason, "next_attempt_at": None}
        if status == "verified":
            values |= {
                "verified_at": now,
                "acknowledgement": json.dumps(result.acknowledgement or {}),
                "archive_url": self.url,
            }
            if outgoing is not None:
                values |= {
                    "study_instance_uid_out": outgoing.study,
                    "series_instance_uid_out": outgoing.series,
                }
        with self.archive.catalog.begin() as conn:
            row = conn.execute(
                select(t.transfers.c.tenant, t.transfers.c.attempts).where(
                    t.transfers.c.slide_id == result.slide_id
                )
            ).first()
            attempts = int(row[1]) + 1 if row is not None else 1
            conn.execute(
                update(t.transfers)
                .where(t.transfers.c.slide_id == result.slide_id)
                .values(attempts=attempts, **values)
            )
            audit.append(
                conn,
                self.actor,
                f"exchange-{status}",
                f"slide/{result.slide_id}",
                {
                    "tenant": row[0] if row is not None else "",
                    "archive": self.url,
                    "reason": reason,
                    "instances": result.instances,
                    "series_out": outgoing.series if outgoing is not None else None,
                },
            )

    def _retry(self, result: PushResult, reason: str) -> None:
        """Another attempt later, after the back-off; a slide sent stays sent (its verification
        is what is retried)."""
        with self.archive.catalog.begin() as conn:
            row = conn.execute(
                select(t.transfers.c.attempts, t.transfers.c.status).where(
                    t.transfers.c.slide_id == result.slide_id
                )
            ).first()
            attempts = (int(row[0]) if row is not None else 0) + 1
            status = "sent" if row is not None and row[1] == "sent" else "queued"
            conn.execute(
                update(t.transfers)
                .where(t.transfers.c.slide_id == result.slide_id)
                .values(
                    attempts=attempts,
                    reason=reason,
                    status=status,
                    next_attempt_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=backoff_s(attempts)),
                )
            )
        result.status, result.reason = status, reason


_OPPOSED = "the patient opposes research use of their slides (consent)"


def transfer_of(conn: Connection, slide_id: str) -> dict[str, Any] | None:
    """A slide's transfer as JSON (status, reason, attempts, times), for the API and the viewer;
    None when it was never queued."""
    row = conn.execute(select(t.transfers).where(t.transfers.c.slide_id == slide_id)).first()
    return None if row is None else _transfer_json(row)


def transfers_of(archive: Archive, tenant: str | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
    """Every transfer (of ``tenant``), oldest first, at most ``limit``."""
    query = select(t.transfers).order_by(t.transfers.c.queued_at).limit(limit)
    if tenant is not None:
        query = query.where(t.transfers.c.tenant == tenant)
    with archive.catalog.engine.connect() as conn:
        return [_transfer_json(row) for row in conn.execute(query).all()]


def _transfer_json(row: Any) -> dict[str, Any]:
    when = {
        name: (utc_or_none(getattr(row, name)) or None)
        for name in ("queued_at", "sent_at", "verified_at", "next_attempt_at")
    }
    return {
        "slide_id": row.slide_id,
        "tenant": row.tenant,
        "status": row.status,
        "reason": row.reason,
        "series_instance_uid_out": row.series_instance_uid_out,
        "attempts": row.attempts,
        **{name: value.isoformat() if value else None for name, value in when.items()},
    }


def _interest(archive: Archive, slide_id: str) -> tuple[str, str] | None:
    from lamina.lifecycle.marks import Marks

    return Marks(archive.catalog).interest_of(slide_id)


def _patient_of(conn: Any, slide_id: str) -> str | None:
    value = conn.execute(
        select(t.patients.c.patient_id)
        .select_from(
            t.slides.join(t.studies, t.studies.c.study_instance_uid == t.slides.c.study_instance_uid).join(
                t.patients, t.patients.c.pk == t.studies.c.patient_pk
            )
        )
        .where(t.slides.c.id == slide_id)
    ).scalar()
    return None if value is None else str(value)


def _order(row: InstanceRow) -> tuple[int, str]:
    return (row.level if row.level is not None else 1_000, row.sop_instance_uid)


class _BlobRaw(io.RawIOBase):
    """A stored object as a seekable raw file, read by ranges (a folder's or S3's)."""

    def __init__(self, store: Any, digest: str, size: int) -> None:
        self.store, self.digest, self.length, self.position = store, digest, size, 0
        self.name = f"object {digest}"  # what pydicom calls a file by

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self.length - self.position)
        if wanted <= 0:
            return 0
        data = self.store.read_range(self.digest, self.position, wanted)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def _blob_file(store: Any, digest: str, size: int) -> io.BufferedReader:
    """A stored object as a seekable, buffered file (8 MiB reads)."""
    return io.BufferedReader(_BlobRaw(store, digest, size), buffer_size=8 << 20)


def _failures(answer: dict[str, Any]) -> list[str]:
    """The failed instances of a STOW-RS answer: UID, reason code, and the archive's words."""
    failed = (answer.get("00081198") or {}).get("Value") or []
    found = []
    for item in failed[:100]:
        if not isinstance(item, dict):
            continue
        uid = ((item.get("00081155") or {}).get("Value") or ["?"])[0]
        code = ((item.get("00081197") or {}).get("Value") or ["?"])[0]
        words = ((item.get("00000902") or {}).get("Value") or [""])[0]
        found.append(f"{uid}: failure {code}" + (f" ({words})" if words else ""))
    return found


def _said(answer: dict[str, Any]) -> str:
    """The archive's own words in an error answer (problem+json, lamina's status bodies)."""
    for key in ("detail", "reasons", "title", "status"):
        value = answer.get(key)
        if isinstance(value, list):
            value = "; ".join(str(item) for item in value[:20])
        if value:
            return str(value)[:2000]
    return ""


def _token_of(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text("utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(
            f"archive_token_file {path}: cannot be read ({exc.strerror}); put the token the archive "
            "issued to this lab there"
        ) from None


def _hostname() -> str:
    import socket

    return socket.gethostname()
