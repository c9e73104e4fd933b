"""DICOM objects that are not slides, stored as they come: annotations, structured reports,
segmentations, parametric maps, key object selections, presentation states.

They arrive by STOW-RS, C-STORE or a folder (:mod:`lamina.archive.receive`) beside the slides
they refer to. Each is kept byte for byte, content-addressed like everything else, with its DICOM
JSON and, when it has pixel data, its frame index; one catalog transaction per object makes it
visible, with an audit entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from lamina.archive import audit
from lamina.archive.blobstore import BlobRef, BlobStore
from lamina.archive.catalog import Catalog, InstanceRow, modalities
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.catalog import PatientRecord
from lamina.archive.ingest import IngestStep
from lamina.errors import CorruptSourceError, RequestError, StorageError
from lamina.formats.dicom import check_uid
from lamina.formats.dicom_frames import locate_frames
from lamina.mapping import dicom_json

#: SOP classes stored as they are (PS3.4 B.5), beside the slides.
STORABLE: frozenset[str] = frozenset(
    {
        uid.MicroscopyBulkSimpleAnnotationsStorage,
        uid.ComprehensiveSRStorage,
        uid.Comprehensive3DSRStorage,
        uid.EnhancedSRStorage,
        uid.SegmentationStorage,
        uid.ParametricMapStorage,
        uid.KeyObjectSelectionDocumentStorage,
        uid.GrayscaleSoftcopyPresentationStateStorage,
        uid.ColorSoftcopyPresentationStateStorage,
        uid.BlendingSoftcopyPresentationStateStorage,
        uid.AdvancedBlendingPresentationStateStorage,
    }
)
_NATIVE = {uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian}
_CHUNK = 4 << 20


@dataclass(frozen=True)
class StoredObject:
    sop_instance_uid: str
    duplicate: bool


def _frame_index(path: Path, ds: Dataset, tell: int, size: int) -> tuple[bytes, bytes, int]:
    """Offsets and lengths of the frames in the file (empty when there is no pixel data)."""
    if tell >= size:
        return b"", b"", 0
    ts = str(ds.file_meta.TransferSyntaxUID)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    frame_size = (
        int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
    )
    with path.open("rb") as fp:
        try:
            spans = locate_frames(
                fp, tell, frames, ts not in _NATIVE, ts != uid.ImplicitVRLittleEndian, frame_size, size
            )
        except ValueError as exc:
            raise CorruptSourceError(path, str(exc)) from exc
    if any(len(span.fragments) != 1 for span in spans) or (bits == 1 and ts in _NATIVE):
        return b"", b"", frames  # frames the index cannot point at with one range: whole object only
    offsets = np.array([span.fragments[0][0] for span in spans], "<u8")
    lengths = np.array([span.fragments[0][1] for span in spans], "<u4")
    return offsets.tobytes(), lengths.tobytes(), frames


def read_object(path: Path) -> tuple[Dataset, int, int]:
    """The object's header, the position of its Pixel Data, its size; a clear error otherwise."""
    try:
        with path.open("rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            tell, size = fp.tell(), path.stat().st_size
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise CorruptSourceError(path, f"not a readable DICOM file ({exc})") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in STORABLE:
        raise CorruptSourceError(path, f"SOP class {sop_class or '(none)'} is not stored by this archive")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        check_uid(path, keyword, ds.get(keyword))
    return ds, tell, size


def store_object(
    catalog: Catalog,
    store: BlobStore,
    path: Path,
    actor: str,
    on_step: Callable[[IngestStep], None] | None = None,
    tenant: str = "",
) -> StoredObject:
    """Store one object and make it visible; the same object again is a duplicate, also when
    another request stores it at the same moment. ``on_step`` is told
    :attr:`~lamina.archive.ingest.IngestStep.DUPLICATES_CHECKED`, as an ingest tells it. A new
    study goes into ``tenant`` (default: the node's only lab); an object of a study that belongs
    to another lab is refused, as a slide is."""
    tenant = tenant or catalog.default_tenant()
    ds, tell, size = read_object(path)
    sop = str(ds.SOPInstanceUID)
    offsets, lengths, frames = _frame_index(path, ds, tell, size)
    with store.writer() as writer, path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            writer.write(chunk)
        ref = writer.commit()
    known = catalog.instance(sop)
    if known is not None:
        return _stored_before(catalog, store, known, ref, path)
    if on_step is not None:
        on_step(IngestStep.DUPLICATES_CHECKED)
    try:
        try:
            _insert(catalog, ds, ref.sha256, ref.size, offsets, lengths, frames, actor, tenant)
        except SqlIntegrityError:
            # committed meanwhile by another request: this very instance, or its study or series
            known = catalog.instance(sop)
            if known is not None:
                return _stored_before(catalog, store, known, ref, path)
            _insert(catalog, ds, ref.sha256, ref.size, offsets, lengths, frames, actor, tenant)
    except BaseException as exc:
        _forget(catalog, store, ref)
        if isinstance(exc, SqlIntegrityError):
            raise StorageError(f"{path}: SOP instance {sop} conflicts with the catalog: {exc.orig}") from exc
        raise
    return StoredObject(sop, duplicate=False)


def _stored_before(
    catalog: Catalog, store: BlobStore, known: InstanceRow, ref: BlobRef, path: Path
) -> StoredObject:
    if known.blob_sha256 == ref.sha256:
        return StoredObject(known.sop_instance_uid, duplicate=True)
    _forget(catalog, store, ref)
    raise StorageError(f"{path}: SOP instance {known.sop_instance_uid} is already stored with other content")


def _forget(catalog: Catalog, store: BlobStore, ref: BlobRef) -> None:
    """Remove an object this call wrote, unless an instance committed meanwhile references it."""
    if ref.created and not catalog.blobs_in_use([ref.sha256]):
        store.delete(ref.sha256)


def _insert(
    catalog: Catalog,
    ds: Dataset,
    sha256: str,
    size: int,
    offsets: bytes,
    lengths: bytes,
    frames: int,
    actor: str,
    tenant: str = "",
) -> None:
    now = dt.datetime.now(dt.UTC)
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    metadata = dicom_json.pack(dicom_json.to_json(ds, with_pixel_data="PixelData" in ds or frames > 0))
    with catalog.begin() as conn:
        known = conn.execute(
            select(t.studies.c.tenant).where(t.studies.c.study_instance_uid == study)
        ).first()
        if known is not None and known[0] != tenant:
            raise RequestError(
                "tenant",
                f"study {study} belongs to another lab than {tenant or 'no lab'}: a case stays in one "
                "lab; store its objects into that lab",
            )
        if known is None:
            patient_id = str(ds.get("PatientID", "") or "")
            record = (
                PatientRecord(
                    patient_id,
                    str(ds.get("PatientName", "")) or None,
                    str(ds.get("PatientBirthDate", "")) or None,
                    str(ds.get("PatientSex", "")) or None,
                )
                if patient_id
                else None
            )
            patient_pk = catalog.upsert_patient(conn, record)
            conn.execute(
                insert(t.studies).values(
                    study_instance_uid=study,
                    patient_pk=patient_pk,
                    accession_number=str(ds.get("AccessionNumber", "")) or None,
                    study_date=str(ds.get("StudyDate", "")) or None,
                    study_time=str(ds.get("StudyTime", "")) or None,
                    created_at=now,
                    tenant=tenant,
                )
            )
        if (
            conn.execute(
                select(t.series.c.series_instance_uid).where(t.series.c.series_instance_uid == series)
            ).first()
            is None
        ):
            conn.execute(
                insert(t.series).values(
                    series_instance_uid=series,
                    study_instance_uid=study,
                    modality=str(ds.get("Modality", "OT") or "OT"),
                    series_number=int(ds.get("SeriesNumber", 0) or 0) or None,
                    created_at=now,
                )
            )
            modalities.refresh(conn, study)
        conn.execute(
            insert(t.instances).values(
                sop_instance_uid=str(ds.SOPInstanceUID),
                slide_id=None,
                series_instance_uid=series,
                study_instance_uid=study,
                sop_class_uid=str(ds.SOPClassUID),
                instance_number=int(ds.get("InstanceNumber", 1) or 1),
                flavor="",
                level=None,
                rows=int(ds.get("Rows", 0) or 0),
                columns=int(ds.get("Columns", 0) or 0),
                total_pixel_matrix_columns=int(ds.get("TotalPixelMatrixColumns", 0) or 0),
                total_pixel_matrix_rows=int(ds.get("TotalPixelMatrixRows", 0) or 0),
                number_of_frames=frames,
                samples_per_pixel=int(ds.get("SamplesPerPixel", 0) or 0),
                photometric_interpretation=str(ds.get("PhotometricInterpretation", "")),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                pixel_spacing_mm=None,
                lossy=str(ds.get("LossyImageCompression", "00")) == "01",
                blob_sha256=sha256,
                bytes=size,
                frame_offsets=offsets,
                frame_lengths=lengths,
                metadata=metadata,
            )
        )
        audit.append(
            conn,
            actor,
            "store",
            f"instance/{ds.SOPInstanceUID}",
            {"sop_class": str(ds.SOPClassUID), "series": series, "object": sha256},
        )
