"""The annotations of a slide in the archive: found, made ready to store, deleted.

- :meth:`Annotations.listing`: every Microscopy Bulk Simple Annotations instance of the slide's
  study that references the slide (made here or stored by another tool through STOW-RS), and the
  structured reports and segmentations that do (read-only), as shapes in level-0 pixels; who
  stored each comes from the audit log's ``store`` entry (its actor: the principal that sent it),
  its display name from the instance's Content Creator's Name. An object's shapes are kept
  (objects never change: :data:`CACHED` of them).
- :meth:`Annotations.prepare`: the shapes measured from the slide's pixel spacing, built into one
  annotation instance (:mod:`lamina.annotations.ann`) in the slide's series of annotations (one a
  slide, its UID derived from the slide's series), written as a Part-10 file for the archive's
  receive path (the caller stores it, as STOW-RS does).
- :meth:`Annotations.delete`: one annotation instance out of the catalog (its series with it when
  it was the last), audited, then its object out of the store when nothing else references it.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pydicom
from pydicom import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import delete, exists, select

from lamina.annotations import ann, foreign
from lamina.annotations.shapes import Shape, measure
from lamina.archive import audit
from lamina.archive.blobstore import BlobStore
from lamina.archive.catalog import Catalog, InstanceRow, availability, modalities
from lamina.archive.catalog import tables as t
from lamina.errors import LaminaError, NotFoundError
from lamina.mapping import dicom_json

__all__ = ["CACHED", "SOURCES", "Annotation", "Annotations"]

_SR = {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.22"}
_SEG = "1.2.840.10008.5.1.4.1.1.66.4"
_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: the source of each kind of object shown
SOURCES = {ann.ANN_CLASS: "ANN", _SEG: "SEG", **dict.fromkeys(_SR, "SR")}
CACHED = 256
#: objects larger than this are not read for a listing (bytes)
MAX_OBJECT = 256 << 20
_log = logging.getLogger(__name__)
_Loaded = tuple[list[Shape], str | None, str | None]
_NO_SLIDE = "no slide with this study and series here (the series must be a slide's)"


@dataclass
class Annotation:
    """One object's shapes on a slide, and who stored it."""

    id: str
    series: str
    source: str
    author: str | None
    author_id: str | None
    created: str | None
    shapes: list[Shape]

    def answer(self, principal: str) -> dict[str, Any]:
        from lamina.annotations.geojson import feature_collection

        return {
            "id": self.id,
            "series": self.series,
            "source": self.source,
            "author": self.author,
            "mine": self.author_id is not None and self.author_id == principal,
            "created": self.created,
            "features": feature_collection(self.shapes),
        }


class Annotations:
    """The annotations of the archive's slides (``catalog`` and ``store``)."""

    def __init__(self, catalog: Catalog, store: BlobStore) -> None:
        self.catalog, self.store = catalog, store
        self._cache: OrderedDict[tuple[str, str], _Loaded | None] = OrderedDict()
        self._lock = threading.Lock()

    # -- the slide ---------------------------------------------------------------------------------

    def level0(self, study: str, series: str) -> tuple[InstanceRow, list[InstanceRow]]:
        """(the level-0 instance, every instance) of the slide ``series``: NotFoundError if none."""
        rows = [row for row in self.catalog.instances_in(study, series) if row.sop_class_uid == _WSI]
        volumes = [row for row in rows if row.level == 0]
        if not volumes:
            raise NotFoundError(_NO_SLIDE)
        return max(volumes, key=lambda row: row.total_pixel_matrix_columns), rows

    @staticmethod
    def header(row: InstanceRow) -> Dataset:
        """The instance's attributes, from its catalog metadata (no pixel data)."""
        data = orjson.loads(dicom_json.unpack(row.metadata))
        return Dataset.from_json(data, bulk_data_uri_handler=lambda *_: b"")

    @staticmethod
    def spacing(row: InstanceRow, header: Dataset | None = None) -> tuple[float, float] | None:
        """The level-0 pixel's (column, row) spacing in mm, if known."""
        if header is not None:
            try:
                rows_mm, columns_mm = (
                    header.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
                )
                return float(columns_mm), float(rows_mm)
            except (AttributeError, IndexError, KeyError):
                pass
        return None if row.pixel_spacing_mm is None else (row.pixel_spacing_mm, row.pixel_spacing_mm)

    # -- making ------------------------------------------------------------------------------------

    def prepare(
        self, study: str, series: str, shapes: Sequence[Shape], author: ann.Author, folder: Path
    ) -> tuple[Path, str]:
        """(the Part-10 file of the new annotation instance in ``folder``, its SOP Instance UID)."""
        row, _ = self.level0(study, series)
        source = self.header(row)
        spacing = self.spacing(row, source)
        for shape in shapes:
            shape.measurement = measure(shape, spacing)
        annotations_series = generate_uid(entropy_srcs=["lamina annotations", series])
        number = 1 + sum(1 for _ in self.catalog.instances_in(study, annotations_series))
        made = ann.build(source, shapes, author, annotations_series, number)
        path = folder / f"{made.SOPInstanceUID}.dcm"
        made.save_as(path, enforce_file_format=True)
        return path, str(made.SOPInstanceUID)

    # -- reading -----------------------------------------------------------------------------------

    def listing(self, study: str, series: str, only: str | None = None) -> list[Annotation]:
        """The annotations of the slide ``series`` (see the module); ``only``: that object alone."""
        level0, slide_rows = self.level0(study, series)
        candidates = [
            row
            for row in self.catalog.instances_in(study)
            if row.sop_class_uid in SOURCES and (only is None or row.sop_instance_uid == only)
        ]
        stored = self.stored_by([row.sop_instance_uid for row in candidates])
        found = []
        for row in candidates:
            loaded = self._shapes(row, series, level0, slide_rows)
            if loaded is None:
                continue
            shapes, name, creator = loaded
            actor, at = stored.get(row.sop_instance_uid, (None, None))
            found.append(
                Annotation(
                    row.sop_instance_uid,
                    row.series_instance_uid,
                    SOURCES[row.sop_class_uid],
                    name,
                    actor if actor is not None else creator,
                    at,
                    shapes,
                )
            )
        return found

    def stored_by(self, sops: list[str]) -> dict[str, tuple[str, str]]:
        """(actor, ISO time) of each object's ``store`` audit entry."""
        found: dict[str, tuple[str, str]] = {}
        log = t.audit_log
        with self.catalog.engine.connect() as conn:
            for start in range(0, len(sops), 500):
                entities = [f"instance/{sop}" for sop in sops[start : start + 500]]
                query = (
                    select(log.c.entity, log.c.actor, log.c.at)
                    .where(log.c.entity.in_(entities), log.c.action == "store")
                    .order_by(log.c.seq)
                )
                for entity, actor, at in conn.execute(query):
                    sop = str(entity).removeprefix("instance/")
                    when = at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
                    found.setdefault(sop, (str(actor), when.isoformat().replace("+00:00", "Z")))
        return found

    def _shapes(
        self, row: InstanceRow, series: str, level0: InstanceRow, slide_rows: list[InstanceRow]
    ) -> _Loaded | None:
        """(shapes, author's name, author's lamina id) of an object on the slide, None when it
        does not reference the slide (kept, keyed by object and slide)."""
        key = (row.sop_instance_uid, series)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            result = self._load(row, series, level0, slide_rows)
        except LaminaError:  # the store unavailable, an object missing: said, not hidden
            raise
        except Exception as exc:  # another tool's object lamina cannot read: left out, said in the log
            _log.warning("annotation object %s left out of the listing: %s", row.sop_instance_uid, exc)
            result = None
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > CACHED:
                self._cache.popitem(last=False)
        return result

    def _load(
        self, row: InstanceRow, series: str, level0: InstanceRow, slide_rows: list[InstanceRow]
    ) -> _Loaded | None:
        if row.bytes > MAX_OBJECT:
            return None
        ds = pydicom.dcmread(io.BytesIO(b"".join(self.store.open(row.blob_sha256))))
        sops = {r.sop_instance_uid for r in slide_rows}
        if not _references(ds, series, sops):
            return None
        columns = level0.total_pixel_matrix_columns
        scales = {r.sop_instance_uid: columns / max(1, r.total_pixel_matrix_columns) for r in slide_rows}
        source = SOURCES[row.sop_class_uid]
        if source == "ANN":
            shapes = ann.read(ds)
            name, creator = ann.author_of(ds)
        elif source == "SR":
            shapes = foreign.read_sr(ds, scales, self.header(level0))
            name, creator = _observer(ds), None
        else:
            shapes = foreign.read_seg(ds, columns)
            name, creator = _person(ds.get("ContentCreatorName")), None
        spacing = self.spacing(level0)
        for shape in shapes:
            if not shape.measurement:
                shape.measurement = measure(shape, spacing)
        return shapes, name, creator

    # -- deleting ----------------------------------------------------------------------------------

    def delete(self, sop: str, actor: str) -> None:
        """Delete the annotation instance ``sop`` (see the module)."""
        with self.catalog.begin() as conn:
            row = conn.execute(
                select(
                    t.instances.c.series_instance_uid,
                    t.instances.c.study_instance_uid,
                    t.instances.c.blob_sha256,
                )
                .where(t.instances.c.sop_instance_uid == sop, t.instances.c.sop_class_uid == ann.ANN_CLASS)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFoundError(f"no annotation {sop} here")
            series, study, digest = str(row[0]), str(row[1]), str(row[2])
            conn.execute(delete(t.instances).where(t.instances.c.sop_instance_uid == sop))
            conn.execute(
                delete(t.series).where(
                    t.series.c.series_instance_uid == series,
                    ~exists().where(t.instances.c.series_instance_uid == series),
                )
            )
            modalities.refresh(conn, study)
            availability.refresh(conn, study)
            audit.append(
                conn, actor, "delete", f"instance/{sop}", {"study": study, "series": series, "object": digest}
            )
        with self.catalog.engine.connect() as conn:
            shared = conn.execute(
                select(t.instances.c.sop_instance_uid).where(t.instances.c.blob_sha256 == digest).limit(1)
            ).first()
        if shared is None:
            self.store.delete(digest)
        with self._lock:
            for key in [key for key in self._cache if key[0] == sop]:
                del self._cache[key]


def _references(ds: Dataset, series: str, sops: set[str]) -> bool:
    """Whether an object names the slide's series or one of its instances in its references."""
    for keyword in (
        "ReferencedSeriesSequence",
        "CurrentRequestedProcedureEvidenceSequence",
        "ReferencedImageSequence",
        "SourceImageSequence",
    ):
        for item in ds.get(keyword, []):
            if (
                str(item.get("SeriesInstanceUID", "")) == series
                or str(item.get("ReferencedSOPInstanceUID", "")) in sops
            ):
                return True
            for inner in item.get("ReferencedSeriesSequence", []):
                if str(inner.get("SeriesInstanceUID", "")) == series:
                    return True
            for inner in item.get("ReferencedSOPSequence", []) + item.get("ReferencedInstanceSequence", []):
                if str(inner.get("ReferencedSOPInstanceUID", "")) in sops:
                    return True
    for group in ds.get("SharedFunctionalGroupsSequence", []):
        for derivation in group.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                if str(source.get("ReferencedSOPInstanceUID", "")) in sops:
                    return True
    return False


def _observer(ds: Dataset) -> str | None:
    """The person who made a structured report (its author observer), if named."""
    for item in ds.get("AuthorObserverSequence", []):
        if item.get("PersonName"):
            return _person(item.PersonName)
    for item in ds.get("ContentSequence", []):
        concept = item.get("ConceptNameCodeSequence", [])
        if concept and str(concept[0].get("CodeValue", "")) == "121008" and item.get("PersonName"):
            return _person(item.PersonName)
    return None


def _person(name: Any) -> str | None:
    return " ".join(str(name or "").replace("^", " ").split()) or None
