"""The one way DICOM instances and slide files enter the archive.

:meth:`Receiver.receive` takes the instances of one request (a STOW-RS body, a released DIMSE
association): each is examined (:func:`~lamina.archive.receive.examine.examine`), the good ones
are grouped by series, each VL Whole Slide Microscopy series is ingested as one slide by
:class:`~lamina.archive.ingest.Ingestor` (validated, converted where needed, written, made
visible in one transaction), and every other object kept is stored as it is
(:func:`~lamina.archive.objects.store_object`). The answer is one :class:`Outcome` per instance.

:meth:`Receiver.ingest` takes one unit found in a folder (``lamina ingest``, a watched folder):
a vendor file or a DICOM series becomes a slide, a series of other DICOM objects is stored as
they are; the answer is one :class:`~lamina.archive.ingest.IngestResult`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import VLWholeSlideMicroscopyImageStorage

from lamina.archive.blobstore import BlobStore
from lamina.archive.catalog import Catalog
from lamina.archive.discover import Candidate
from lamina.archive.ingest import IngestOptions, Ingestor, IngestResult, IngestStatus, IngestStep, Progress
from lamina.archive.manifest import Manifest
from lamina.archive.objects import STORABLE, store_object
from lamina.archive.receive.examine import examine, read_header
from lamina.archive.receive.outcome import FailureReason, Outcome, StoreStatus
from lamina.errors import InsufficientStorageError, LaminaError, UnavailableError
from lamina.formats.codec import DEFAULT_LOSSLESS
from lamina.formats.dicom import is_dicom


@dataclass
class Receipt:
    """What became of one request's instances: an outcome per instance (in the order given),
    and the result of each slide ingested (one per VL WSI series)."""

    outcomes: list[Outcome] = field(default_factory=list)
    slides: list[IngestResult] = field(default_factory=list)

    @property
    def may_pass_later(self) -> bool:
        """Some instance failed for a reason that may pass (a service down, a disk full)."""
        return any(item.failure_reason is FailureReason.OUT_OF_RESOURCES for item in self.outcomes) or any(
            result.retryable for result in self.slides
        )


class Receiver:
    """Receives into one archive (its catalog and blob store).

    Parameters
    ----------
    catalog, store
        The archive written into.
    work_dir
        Where conversions keep their temporary files (the data folder).
    on_step
        Told each :class:`~lamina.archive.ingest.IngestStep` of every slide's ingest.
    admit
        Asked of every VL WSI instance before it is stored (its file and the lab it goes into):
        why it must be refused, or None (an archive node's exchange check,
        :func:`lamina.exchange.receiving.arrival_problem`). One instance refused refuses its
        whole series, so that no slide is stored in part.
    """

    def __init__(
        self,
        catalog: Catalog,
        store: BlobStore,
        work_dir: Path | None = None,
        on_step: Callable[[IngestStep], None] | None = None,
        admit: Callable[[Path, str], str | None] | None = None,
        lossless: str = DEFAULT_LOSSLESS,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.on_step = on_step
        self.admit = admit
        self.ingestor = Ingestor(catalog, store, spool_dir=work_dir, on_step=on_step, lossless=lossless)

    # -- instances ------------------------------------------------------------------------------

    def receive(
        self,
        files: Sequence[Path],
        *,
        study: str | None = None,
        actor: str = "lamina",
        final: bool = True,
        tenant: str = "",
    ) -> Receipt:
        """Examine, group by series and store the instances in ``files`` (Part-10 files).

        Parameters
        ----------
        study
            The Study Instance UID every instance must have (STOW-RS to ``/studies/{study}``).
        actor
            Who sent them, for the audit log (``dicomweb``, ``dimse:<calling AE title>``).
        final
            With False, a failure of a service that may come back raises
            :class:`~lamina.errors.UnavailableError` (a job is retried; what was stored is found
            again as duplicates) instead of being reported.
        tenant
            The lab (FINESS number) the slides and objects are stored into (the principal's, a
            calling AE's); "" on a node without tenants.
        """
        receipt = Receipt()
        series: dict[str, list[tuple[Outcome, Path]]] = defaultdict(list)
        for path in files:
            outcome = examine(path, study)
            receipt.outcomes.append(outcome)
            if outcome.ok:
                series[outcome.series_instance_uid].append((outcome, path))
        for members in series.values():
            slide = [(o, p) for o, p in members if o.sop_class_uid == VLWholeSlideMicroscopyImageStorage]
            for outcome, path in members:
                if outcome.sop_class_uid != VLWholeSlideMicroscopyImageStorage:
                    self._store_object(outcome, path, actor, final, tenant)
            if slide and self.admit is not None:
                slide = self._admitted(slide, tenant)
            if slide:
                receipt.slides.append(self._ingest_series(slide, actor, final, tenant))
        return receipt

    def _admitted(self, members: list[tuple[Outcome, Path]], tenant: str) -> list[tuple[Outcome, Path]]:
        """``members`` when :attr:`admit` refuses none of them, else none (each refused member
        with its reason, the others with the first refusal's)."""
        assert self.admit is not None
        refusals = [(outcome, self.admit(path, tenant)) for outcome, path in members]
        first = next((why for _, why in refusals if why), None)
        if first is None:
            return members
        for outcome, why in refusals:
            outcome.fail(
                FailureReason.NOT_AUTHORIZED, why or f"another instance of its series was refused: {first}"
            )
        return []

    def _store_object(self, outcome: Outcome, path: Path, actor: str, final: bool, tenant: str = "") -> None:
        try:
            stored = store_object(self.catalog, self.store, path, actor, self.on_step, tenant=tenant)
        except UnavailableError as exc:
            if not final:
                raise
            outcome.fail(FailureReason.PROCESSING_FAILURE, f"{exc}; send again later")
        except InsufficientStorageError as exc:
            outcome.fail(FailureReason.OUT_OF_RESOURCES, str(exc))
        except LaminaError as exc:
            outcome.fail(FailureReason.PROCESSING_FAILURE, str(exc))
        except OSError as exc:  # the received file itself cannot be read back
            full = exc.errno in InsufficientStorageError.ERRNOS
            why = FailureReason.OUT_OF_RESOURCES if full else FailureReason.PROCESSING_FAILURE
            outcome.fail(why, f"{path.name}: {exc.strerror}")
        else:
            outcome.status = StoreStatus.DUPLICATE if stored.duplicate else StoreStatus.STORED

    def _ingest_series(
        self, members: list[tuple[Outcome, Path]], actor: str, final: bool, tenant: str = ""
    ) -> IngestResult:
        files = tuple(sorted(path for _, path in members))
        options = IngestOptions(actor=actor, tenant=tenant)
        result = self.ingestor.ingest(Candidate(files[0], files), options=options)
        if result.retryable and not final:
            raise UnavailableError(result.reason or "a storage service is unavailable")
        for outcome, _ in members:
            if result.status is IngestStatus.DUPLICATE:
                outcome.status = StoreStatus.DUPLICATE
            elif not result.ok:
                why = FailureReason.OUT_OF_RESOURCES if result.no_space else FailureReason.PROCESSING_FAILURE
                outcome.fail(why, result.reason or "not stored")
        return result

    # -- units from a folder --------------------------------------------------------------------

    def ingest(
        self,
        candidate: Candidate,
        manifest: Manifest | None = None,
        options: IngestOptions | None = None,
        progress: Progress | None = None,
    ) -> IngestResult:
        """One unit of a folder: a slide (a vendor file, a VL WSI series), or DICOM objects kept
        as they are (a series of annotations, reports...)."""
        if _stored_as_is(candidate):
            return self._store_objects(candidate, options or IngestOptions())
        return self.ingestor.ingest(candidate, manifest, options, progress)

    def _store_objects(self, candidate: Candidate, options: IngestOptions) -> IngestResult:
        result = IngestResult(candidate.path, IngestStatus.FAILED, candidate.name, format="dicom-objects")
        receipt = self.receive(candidate.members, actor=options.actor)
        pairs = list(zip(candidate.members, receipt.outcomes, strict=True))
        failed = [(path, item) for path, item in pairs if not item.ok]
        result.instances = len(pairs) - len(failed)
        result.bytes = sum(path.stat().st_size for path, item in pairs if item.ok)
        if failed:
            path, item = failed[0]
            where = "" if path == candidate.path else f"{path.name}: "
            result.reason = where + item.reason
            result.no_space = item.failure_reason is FailureReason.OUT_OF_RESOURCES
        elif all(item.status is StoreStatus.DUPLICATE for item in receipt.outcomes):
            result.status = IngestStatus.DUPLICATE
        else:
            result.status = IngestStatus.INGESTED
        return result


def _stored_as_is(candidate: Candidate) -> bool:
    """A unit of DICOM objects that are not slides (judged by its first file)."""
    if not is_dicom(candidate.path):
        return False
    try:
        return str(read_header(candidate.path).get("SOPClassUID", "")) in STORABLE
    except Exception:  # unreadable: the slide ingest names what is wrong
        return False
