"""The ingest transaction: source -> DICOM objects in the blob store -> one catalog transaction.

Order matters for crash safety: every object is written, fsynced and verified first; only then
does one catalog transaction make the slide visible (with its audit entry). A crash before the
transaction leaves unreferenced objects, which a sweep removes; never a visible slide with a
missing part.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from lamina.archive.blobstore import BlobRef, BlobStore, BlobWriter
from lamina.archive.catalog import Catalog, InstanceRow, SlideRow
from lamina.archive.catalog.catalog import NewSlide, PatientRecord
from lamina.archive.discover import Candidate
from lamina.archive.fingerprint import SourceFingerprint, full_digest, source_head
from lamina.archive.manifest import Manifest
from lamina.errors import (
    InsufficientStorageError,
    LaminaError,
    SourceError,
    StorageError,
    UnavailableError,
    quote_name,
)
from lamina.formats.codec import DEFAULT_LOSSLESS
from lamina.formats.dicom_modules import SeriesContext
from lamina.formats.dicomize import (
    PlannedInstance,
    WrittenInstance,
    plan_slide,
    series_context,
    write_instance,
)
from lamina.formats.pyramid import GeneratedLevel, WrittenLevel
from lamina.formats.quarters import QuarterSpool, can_spool
from lamina.formats.registry import detect_format
from lamina.formats.source import Buffer, SlideSource, SourceImage, SourceOptions
from lamina.mapping import dicom_json
from lamina.model.geometry import SizeMm
from lamina.model.ids import new_uid, slide_id
from lamina.model.slide import SlideIdentity

Progress = Callable[[int, int], None]  # (bytes done, bytes expected)


class IngestStatus(StrEnum):
    """What became of one ingested unit (a file, or a DICOM series)."""

    INGESTED = "ingested"
    #: the same source is stored already (an exact copy, by content): nothing new was written
    DUPLICATE = "duplicate"
    FAILED = "failed"


class IngestStep(StrEnum):
    """Points of an ingest that a collaborator passed as ``on_step`` is told about, in the
    ingesting thread: whatever it does (log, wait) happens between the two neighbouring steps."""

    #: the source is no stored slide's (by size, head and, when those match, its fingerprint);
    #: nothing is converted or written yet
    DUPLICATES_CHECKED = "duplicates checked"
    #: every object is written and verified; the catalog transaction comes next
    WRITTEN = "written"


@dataclass(frozen=True)
class IngestOptions:
    pixel_spacing: SizeMm | None = None
    actor: str = "lamina"
    #: the lab (FINESS number) the slide belongs to; "" on a node without tenants. A case stays in
    #: one lab: a slide whose case belongs to another is refused.
    tenant: str = ""
    #: ``--lossy QUALITY``: re-encoded 8-bit pixels as JPEG at this quality (1-100), not lossless
    lossy_quality: int | None = None
    #: ``--lossless``: the codec of pixel-exact frames (``jpeg-ls`` or ``jpeg2000``); None: the
    #: node's ``lossless_codec``
    lossless: str | None = None


@dataclass
class IngestResult:
    path: Path
    status: IngestStatus
    name: str = ""  # the file's name, or a multi-file slide's folder
    slide_id: str | None = None
    format: str | None = None
    levels: int = 0
    instances: int = 0
    bytes: int = 0
    seconds: float = 0.0
    identified: bool = False
    reason: str | None = None
    repairs: list[str] = field(default_factory=list)
    #: the failure came from a service that may come back (S3, the database): retry later
    retryable: bool = False
    #: the failure came from a full disk (the blob store, the catalog, the data folder): the
    #: reason says which; nothing was left half-written
    no_space: bool = False

    @property
    def ok(self) -> bool:
        return self.status in (IngestStatus.INGESTED, IngestStatus.DUPLICATE)


class _DuplicateError(Exception):
    def __init__(self, slide: SlideRow) -> None:
        self.slide = slide


@dataclass
class _SourceKey:
    """What identifies the source: its size, the BLAKE3 of its head, and its full fingerprint
    (known up front, or computed from the conversion's reads by ``fingerprint``)."""

    size: int
    head: str
    digest: str | None
    fingerprint: SourceFingerprint | None


class _ProgressSink:
    def __init__(
        self,
        writer: BlobWriter,
        progress: Progress | None,
        state: list[int],
        total: int,
    ) -> None:
        self._writer = writer
        self._progress = progress
        self._state = state
        self._total = total

    def write(self, data: bytes | bytearray) -> None:
        self.write_parts([data], len(data))

    def write_parts(self, parts: list[Buffer], size: int) -> None:
        self._writer.write_parts(parts, size)
        self._state[0] += size
        if self._progress is not None:
            self._progress(self._state[0], self._total)


class Ingestor:
    """Ingests candidates into one archive (catalog + blob store)."""

    def __init__(
        self,
        catalog: Catalog,
        store: BlobStore,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        spool_dir: Path | None = None,
        on_step: Callable[[IngestStep], None] | None = None,
        lossless: str = DEFAULT_LOSSLESS,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.clock = clock
        self.spool_dir = spool_dir
        self.on_step = on_step
        #: the node's codec of pixel-exact frames (``lossless_codec``), unless an ingest asks
        self.lossless = lossless

    def _step(self, step: IngestStep) -> None:
        if self.on_step is not None:
            self.on_step(step)

    def ingest(
        self,
        candidate: Candidate,
        manifest: Manifest | None = None,
        options: IngestOptions | None = None,
        progress: Progress | None = None,
    ) -> IngestResult:
        options = options or IngestOptions()
        if not options.tenant:  # a node with one lab stores into it (none: "", until one is added)
            options = replace(options, tenant=self.catalog.default_tenant())
        started = time.perf_counter()
        result = IngestResult(candidate.path, IngestStatus.FAILED, candidate.name)
        try:
            self._ingest(candidate, manifest, options, progress, result)
        except _DuplicateError as dup:
            result.status, result.slide_id = IngestStatus.DUPLICATE, dup.slide.id
            result.format, result.levels, result.instances = (
                dup.slide.format,
                dup.slide.levels,
                dup.slide.instances,
            )
            result.bytes, result.identified = dup.slide.bytes, dup.slide.identified
        except SourceError as exc:
            result.status = IngestStatus.FAILED
            # a multi-file slide names the member at fault
            where = "" if exc.path == candidate.path else f"{quote_name(exc.path.name)}: "
            result.reason = where + exc.reason
        except LaminaError as exc:
            result.status = IngestStatus.FAILED
            result.reason = str(exc)
            result.retryable = isinstance(exc, UnavailableError)
            result.no_space = isinstance(exc, InsufficientStorageError)
        except Exception as exc:  # a reader library's own error on a damaged file: the batch goes on
            result.status = IngestStatus.FAILED
            if isinstance(exc, OSError) and exc.errno in InsufficientStorageError.ERRNOS:
                result.no_space, result.reason = True, str(self._no_space(exc))
            else:
                detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                result.reason = f"unreadable ({type(exc).__name__}: {detail}); the file may be damaged"
        result.seconds = time.perf_counter() - started
        return result

    def _no_space(self, exc: OSError) -> InsufficientStorageError:
        """A write that found no space and was not the blob store's or the catalog's (those say
        so themselves): the conversion's temporary files, in the data folder."""
        where = str(self.spool_dir or Path(exc.filename or tempfile.gettempdir()).parent)
        return InsufficientStorageError(
            where,
            f"the folder {where} (temporary files of the conversion) is full ({exc.strerror}); "
            "free space there, then ingest again",
        )

    def _next_level_spool(self, plans: list[PlannedInstance], number: int) -> QuarterSpool | None:
        """A spool for the level below plan ``number`` when that plan re-encodes its tiles: the
        level is then made from them as they pass, not from the frames decoded again."""
        plan = plans[number]
        child = plans[number + 1].image if number + 1 < len(plans) else None
        if plan.copy or not isinstance(child, GeneratedLevel) or child.parent is not plan.image:
            return None
        return QuarterSpool(plan.image, child, self.spool_dir) if can_spool(plan.image, child) else None

    def _feed_next_level(self, plans: list[PlannedInstance], written: WrittenInstance, ref: BlobRef) -> None:
        """A generated level is computed from the frames just written for the level above."""
        for plan in plans:
            image = plan.image
            if isinstance(image, GeneratedLevel) and image.parent is written.plan.image:
                reader = _frame_reader(self.store, written, ref)
                image.parent = WrittenLevel(written.plan.image, written.plan.encoding, reader)

    def _ingest(
        self,
        candidate: Candidate,
        manifest: Manifest | None,
        options: IngestOptions,
        progress: Progress | None,
        result: IngestResult,
    ) -> None:
        for member in candidate.members:
            if not member.is_file():
                raise SourceError(member, "no such file (or not a regular file)")
        entry = manifest.lookup(candidate.path, None) if manifest else None
        spacing = options.pixel_spacing or (entry.pixel_spacing if entry else None)
        size = sum(member.stat().st_size for member in candidate.members)
        head = source_head(candidate.members)
        digest: str | None = None
        known = self.catalog.slides_by_head(size, head)
        if known:
            # the same size and first MiB as a stored slide: settle it before converting anything
            digest = full_digest(candidate.members)
            for slide in known:
                if slide.source_blake3 == digest:
                    raise _DuplicateError(slide)
        self._step(IngestStep.DUPLICATES_CHECKED)
        reader = detect_format(candidate.path)
        result.format = reader.format_name
        source = reader(candidate.path, SourceOptions(spacing, candidate.members))
        fingerprint = None
        try:
            if manifest and entry is None:
                entry = manifest.lookup(candidate.path, source.metadata.identity.container_id)
            if digest is None:
                fingerprint = SourceFingerprint(candidate.members)
                source.observe_reads(fingerprint.offer)
            self._convert(
                candidate,
                source,
                entry.identity if entry else None,
                options,
                progress,
                _SourceKey(size, head, digest, fingerprint),
                result,
            )
        except BaseException:
            if fingerprint is not None:
                fingerprint.abandon()
            raise
        finally:
            source.close()

    def _convert(
        self,
        candidate: Candidate,
        source: SlideSource,
        identity: SlideIdentity | None,
        options: IngestOptions,
        progress: Progress | None,
        key: _SourceKey,
        result: IngestResult,
    ) -> None:
        created = self.clock()
        ctx = series_context(source, identity, new_uid, "", created)
        if ctx.identity.accession_number:
            study = self.catalog.study_for_accession(
                ctx.identity.accession_number, ctx.identity.patient_id, options.tenant
            )
            if study and not source.metadata.study_instance_uid:
                ctx = replace(ctx, study_instance_uid=study)
        sid = slide_id(ctx.series_instance_uid)
        if not ctx.container_id:
            ctx = replace(ctx, container_id=sid)
        minted: set[str] = set()

        def mint() -> str:
            uid = new_uid()
            minted.add(uid)
            return uid

        lossless = options.lossless or self.lossless
        plans = plan_slide(source, mint, options.lossy_quality, lossless)
        # only the UIDs a DICOM source brings can be in the archive already (a new UID is random:
        # probing for it would cost a random read of the largest index, and the insert checks it)
        kept = [plan.sop_instance_uid for plan in plans if plan.sop_instance_uid not in minted]
        taken = self.catalog.sop_instance_exists(kept) if kept else []
        if taken:
            # another process may have stored this very source since the duplicate check above
            # (two requests bringing the same series at once): then this one is its duplicate
            found = self.catalog.slide_by_source(key.digest or full_digest(candidate.members))
            if found is not None:
                raise _DuplicateError(found)
            raise StorageError(
                f"SOP instance {taken[0]} is already in the archive with other content; "
                "the source system reused a UID"
            )
        total = sum(_expected_bytes(plan.image) for plan in plans)
        state = [0]
        refs: list[tuple[WrittenInstance, BlobRef]] = []
        spools: list[QuarterSpool] = []
        try:
            for number, plan in enumerate(plans):
                spool = self._next_level_spool(plans, number)
                if spool is not None:
                    spools.append(spool)
                with self.store.writer() as writer:
                    sink = _ProgressSink(writer, progress, state, total)
                    written = write_instance(plan, ctx, sink, self.spool_dir, spool)
                    ref = writer.commit()
                refs.append((written, ref))
                if spool is not None:
                    spool.finish()
                    child = plans[number + 1].image
                    assert isinstance(child, GeneratedLevel)
                    child.spool = spool
                else:
                    self._feed_next_level(plans, written, ref)
            if key.digest is not None:
                digest = key.digest
            else:
                assert key.fingerprint is not None
                digest = key.fingerprint.finish()
            self._step(IngestStep.WRITTEN)
            found = self.catalog.slide_by_source(digest)
            if found is not None:  # ingested meanwhile by another process
                raise _DuplicateError(found)
            record = _record(candidate, source, ctx, sid, refs, replace(key, digest=digest), created)
            record = replace(record, slide=replace(record.slide, tenant=options.tenant))
            for attempt in range(2):
                try:
                    self.catalog.add_slide(record, options.actor)
                    break
                except StorageError as exc:
                    if isinstance(exc, InsufficientStorageError):
                        raise
                    found = self.catalog.slide_by_source(digest)
                    if found is not None:  # the same source committed by another process just now
                        raise _DuplicateError(found) from None
                    # else the study or the patient was committed by another process since the
                    # transaction looked for it (PostgreSQL reads committed rows): once more
                    if attempt:
                        raise
        except BaseException:
            for spool in spools:
                spool.close()
            # objects this ingest created, unless a slide committed meanwhile uses them (the same
            # content written by a concurrent ingest of the same source)
            created_here = [ref.sha256 for _, ref in refs if ref.created]
            in_use = self.catalog.blobs_in_use(created_here) if created_here else set()
            for digest_ in created_here:
                if digest_ not in in_use:
                    self.store.delete(digest_)
            raise
        for spool in spools:
            spool.close()
        result.status, result.slide_id = IngestStatus.INGESTED, sid
        result.levels = sum(1 for plan in plans if plan.level is not None)
        result.instances = len(plans)
        result.bytes = sum(ref.size for _, ref in refs)
        result.identified = ctx.identity.identified
        result.repairs = sorted({name for written, _ in refs for name in written.repairs})


#: Bytes fetched per ranged read when a generated level reads back the frames of the level above
#: from a store without files (S3), and how many such windows are kept.
_READ_WINDOW = 4 << 20
_WINDOWS = 4


def _frame_reader(store: BlobStore, written: WrittenInstance, ref: BlobRef) -> Callable[[int], bytes]:
    """Reads frame ``index`` of a written instance back from the store.

    From a file, one ``pread`` per frame. From S3, one request per frame would cost a round trip
    per tile (thousands for a wide level), so whole windows of consecutive frames are fetched:
    a generated tile reads two rows of the level above, left to right, and each row is served
    from a window of its own."""
    offsets, lengths = written.frame_offsets, written.frame_lengths
    if store.local_path(ref.sha256) is not None:

        def read(index: int) -> bytes:
            return store.read_range(ref.sha256, int(offsets[index]), int(lengths[index]))

        return read
    windows: OrderedDict[int, bytes] = OrderedDict()  # start offset -> bytes, most recent last

    def read_windowed(index: int) -> bytes:
        start, length = int(offsets[index]), int(lengths[index])
        for begin, data in windows.items():
            if begin <= start and start + length <= begin + len(data):
                windows.move_to_end(begin)
                return data[start - begin : start - begin + length]
        data = store.read_range(ref.sha256, start, max(length, _READ_WINDOW))
        windows[start] = data
        if len(windows) > _WINDOWS:
            windows.popitem(last=False)
        return data[:length]

    return read_windowed


def _expected_bytes(image: SourceImage) -> int:
    """For the progress bar: exact when the frame lengths are known, else a tenth of the raw size."""
    lengths = image.frame_lengths()
    if lengths is not None:
        return int(sum(lengths))
    return image.frame_count * image.tile_size.area * image.samples_per_pixel // 10


def _record(
    candidate: Candidate,
    source: SlideSource,
    ctx: SeriesContext,
    sid: str,
    refs: list[tuple[WrittenInstance, BlobRef]],
    key: _SourceKey,
    created: dt.datetime,
) -> NewSlide:
    identity = ctx.identity
    rows = []
    for written, ref in refs:
        plan, image, ds = written.plan, written.plan.image, written.dataset
        rows.append(
            InstanceRow(
                sop_instance_uid=plan.sop_instance_uid,
                slide_id=sid,
                sop_class_uid=str(ds.SOPClassUID),
                instance_number=plan.instance_number,
                flavor=image.flavor.value,
                level=plan.level,
                rows=image.tile_size.height,
                columns=image.tile_size.width,
                total_pixel_matrix_columns=image.size.width,
                total_pixel_matrix_rows=image.size.height,
                number_of_frames=image.frame_count,
                samples_per_pixel=image.samples_per_pixel,
                photometric_interpretation=plan.encoding.photometric_interpretation,
                transfer_syntax_uid=plan.encoding.transfer_syntax.value,
                pixel_spacing_mm=image.pixel_spacing.width if image.pixel_spacing else None,
                lossy=written.lossy,
                blob_sha256=ref.sha256,
                bytes=ref.size,
                frame_offsets=written.frame_offsets.astype("<u8").tobytes(),
                frame_lengths=written.frame_lengths.astype("<u4").tobytes(),
                series_instance_uid=ctx.series_instance_uid,
                study_instance_uid=ctx.study_instance_uid,
                metadata=dicom_json.pack(dicom_json.to_json(written.dataset)),
            )
        )
    base = source.levels[0]
    first = refs[0][0].dataset
    slide = SlideRow(
        id=sid,
        series_instance_uid=ctx.series_instance_uid,
        study_instance_uid=ctx.study_instance_uid,
        container_id=ctx.container_id,
        specimen_id=identity.specimen_id,
        stain=identity.stain,
        organ=identity.organ,
        diagnosis_code=identity.diagnosis_code,
        specimen_type=identity.specimen_type,
        format=source.format_name,
        source_path=str(candidate.path.absolute()),
        source_blake3=key.digest or "",
        source_head=key.head,
        source_bytes=key.size,
        levels=sum(1 for row in rows if row.level is not None),
        instances=len(rows),
        bytes=sum(row.bytes for row in rows),
        identified=identity.identified,
        lossy=any(row.lossy for row in rows if row.level == 0),
        width=base.size.width,
        height=base.size.height,
        mpp=base.pixel_spacing.mpp if base.pixel_spacing else None,
        created_at=created,
        patient_id=identity.patient_id,
        patient_name=identity.patient_name,
        accession_number=identity.accession_number or None,
    )
    patient = (
        PatientRecord(identity.patient_id, identity.patient_name, identity.birth_date, identity.sex)
        if identity.patient_id
        else None
    )
    return NewSlide(
        slide, rows, patient, str(first.get("StudyDate", "")) or None, str(first.get("StudyTime", "")) or None
    )
