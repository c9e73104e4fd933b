"""A synthetic national-scale catalog, generated row by row and loaded with PostgreSQL ``COPY``.

``benchmarks/catalog.py`` fills lamina's own schema (created by ``Catalog.open``) with the rows
that a national archive of about a million slides would hold, without converting a single slide:

- 200 tenants (labs) of very different sizes (log-normal), each numbering its cases;
- patients, each with one or more cases; a case is a study (accession number, a date over ten
  years, the lab that owns it) holding one to ten slides;
- per slide a series (modality SM) and a ``slides`` row: barcode (container id), stain, organ,
  scanner format, source fingerprint, ``retain_until`` spread over the next three months (none
  for one slide in twenty: slides of interest, kept);
- per slide ten instances: seven pyramid levels, a thumbnail, a label and an overview, each with
  its frame index (little-endian offsets and lengths) and its stored DICOM JSON, rendered from
  the JSON of a real ingest (:func:`real_templates`) with this instance's UIDs, identity, dates
  and geometry, and compressed by lamina's own ``dicom_json.pack``;
- per slide an ``ingest`` entry of the hash-chained audit log, chained to the one before.

The slides have about the geometry of lamina's sample slides (level 0 of 1,536 to 2,560 pixels
across, tiles of 256): what makes the catalog large is rows, not the frame index, whose size at 100,000
pixels across (tens of kilobytes a level) would need a hundred times the disk.

Loading drops the indexes that no foreign key needs, copies the rows with foreign-key triggers
off (``session_replication_role = replica``: the rows are generated consistent), then recreates
the indexes from their own definitions (``pg_get_indexdef``, ``pg_get_constraintdef``), so the
schema after a load is exactly the one ``Catalog.open`` made.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.mapping import dicom_json
from lamina.model.ids import slide_id
from lamina.sample import SAMPLE_FORMATS, write_samples

TENANTS = 200
LEVELS = 7
INSTANCES_PER_SLIDE = LEVELS + 3
TILE = 256
FRAME_INDEX_VARIANTS = 64
PACK_LEVEL = 6  # zlib level of dicom_json.pack
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image
#: studies.modalities of a study whose series are all slides (\SM\), as COPY text escapes it
STUDY_MODALITIES = "\\\\SM\\\\"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
FIRST_STUDY_DATE = dt.date(2016, 1, 1)
RETENTION_DAYS = (-7, 90)  # retain_until: from a week ago to three months ahead
KEPT_SHARE = 0.05  # slides without retain_until
#: the tables loaded, in an order that satisfies the foreign keys
TABLES = ("patients", "studies", "series", "slides", "instances", "audit_log")
#: primary keys that foreign keys reference: kept during a load (their tables are the small ones)
REFERENCED = ("patients_pkey", "studies_pkey", "series_pkey", "slides_pkey", "audit_log_pkey")

_SURNAMES = (
    "MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS", "MOREAU",
    "LAURENT", "SIMON", "MICHEL", "LEFEBVRE", "LEROY", "ROUX", "DAVID", "BERTRAND", "MOREL",
    "FOURNIER", "GIRARD", "BONNET", "DUPONT", "LAMBERT", "FONTAINE", "ROUSSEAU", "VINCENT",
    "MULLER", "LEFEVRE", "FAURE", "ANDRE", "MERCIER", "BLANC", "GUERIN", "BOYER", "GARNIER",
    "CHEVALIER", "FRANCOIS", "LEGRAND", "GAUTHIER", "GARCIA", "PERRIN", "ROBIN", "CLEMENT",
)  # fmt: skip
_GIVEN = (
    "MARIE", "JEANNE", "FRANCOISE", "MONIQUE", "CATHERINE", "NATHALIE", "ISABELLE", "SYLVIE",
    "JEAN", "PIERRE", "MICHEL", "ANDRE", "PHILIPPE", "ALAIN", "PATRICK", "NICOLAS", "LOUIS",
    "CAMILLE", "LEA", "MANON", "HUGO", "LUCAS", "EMMA", "CHLOE", "THEO", "ARTHUR", "JULES",
)  # fmt: skip
_STAINS = ("HE", "HE", "HE", "HE", "HES", "PAS", "Masson trichrome", "Ki67", "HER2", "CK7", "CD20")
_ORGANS = (
    ("Colon", "8140/3"), ("Breast", "8500/3"), ("Skin", "8720/3"), ("Prostate", "8140/3"),
    ("Lung", "8070/3"), ("Kidney", "8312/3"), ("Stomach", "8490/3"), ("Liver", "8170/3"),
    ("Uterus", "8380/3"), ("Thyroid", "8260/3"), ("Lymph node", "9680/3"),
)  # fmt: skip
_EXTENSIONS = {
    "aperio_svs": "svs",
    "tiled_tiff": "tif",
    "dicom_wsi": "dcm",
    "ome_tiff": "ome.tiff",
    "philips_tiff": "tiff",
    "hamamatsu_ndpi": "ndpi",
    "histech_tiff": "mrxs",
}
_FORMAT_WEIGHTS = (30, 5, 10, 2, 20, 18, 15)


# --- the stored DICOM JSON, from a real ingest --------------------------------------------------


@dataclass(frozen=True)
class Template:
    """An instance's DICOM JSON with holes: literal text, then the names of the values between."""

    literals: tuple[str, ...]
    names: tuple[str, ...]

    def render(self, values: Mapping[str, str]) -> bytes:
        """The JSON text with ``values`` in the holes (numbers bare, strings already quoted)."""
        parts = [self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            parts.append(values[name])
            parts.append(literal)
        return "".join(parts).encode()


# top-level attributes rendered per instance, by tag; numbers are written bare
_BY_TAG = {
    "00080020": "study_date",
    "00080030": "study_time",
    "00080023": "content_date",
    "00080033": "content_time",
    "0008002A": "acquisition_datetime",
    "00100030": "birth_date",
    "00100040": "sex",
    "00080050": "accession",
    "00400512": "container",
}
_NUMBERS = {
    "00200013": "instance_number",
    "00280010": "rows",
    "00280011": "columns",
    "00280008": "frames",
    "00480006": "total_columns",
    "00480007": "total_rows",
}
_HOLE = "@@"


def _holes(element: Any, by_value: Mapping[str, str]) -> Any:
    """Replace, anywhere in ``element``, strings found in ``by_value`` by a named hole."""
    if isinstance(element, dict):
        return {key: _holes(value, by_value) for key, value in element.items()}
    if isinstance(element, list):
        return [_holes(value, by_value) for value in element]
    if isinstance(element, str) and element in by_value:
        return f"{_HOLE}{by_value[element]}{_HOLE}"
    return element


def make_template(data: dict[str, Any], by_value: Mapping[str, str]) -> Template:
    """A template of ``data``: the values of :data:`_BY_TAG`, :data:`_NUMBERS` and ``by_value``
    (the real UIDs and identity strings of the ingest, mapped to hole names) become holes."""
    data = _holes(data, by_value)
    for tag, name in {**_BY_TAG, **_NUMBERS}.items():
        if data.get(tag, {}).get("Value"):
            data[tag]["Value"] = [f"{_HOLE}{name}{_HOLE}"]
    text = orjson.dumps(data).decode()
    for name in _NUMBERS.values():
        text = text.replace(f'"{_HOLE}{name}{_HOLE}"', f"{_HOLE}{name}{_HOLE}")
    pieces = text.split(_HOLE)
    return Template(tuple(pieces[0::2]), tuple(pieces[1::2]))


@dataclass(frozen=True)
class Templates:
    """One template per kind of instance: level 0, the other levels, and the associated images."""

    level0: Template
    level: Template
    thumbnail: Template
    label: Template
    overview: Template
    #: packed size of the real JSON, and of the templated one (trimmed or not), by kind
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


#: left out of the stored JSON unless ``full``: the instance-level sequences, the same in every
#: instance of a slide and never in the viewers' search answers, the container type, and the
#: specimen's preparation steps (its identifier, UID, organ and description stay). With them the
#: packed JSON is 1.8 kB an instance, which would take the catalog to 28 GB.
TRIMMED = (
    "00480105",  # OpticalPathSequence
    "00209222",  # DimensionIndexSequence
    "52009229",  # SharedFunctionalGroupsSequence
    "00400518",  # ContainerTypeCodeSequence
)
TRIMMED_IN_SPECIMEN = "00400610"  # SpecimenDescriptionSequence > SpecimenPreparationSequence


def trim(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the attributes of :data:`TRIMMED` and the specimen preparation steps."""
    kept = {tag: value for tag, value in data.items() if tag not in TRIMMED}
    specimens = kept.get("00400560", {}).get("Value")
    if specimens:
        items = [
            {tag: value for tag, value in item.items() if tag != TRIMMED_IN_SPECIMEN} for item in specimens
        ]
        kept["00400560"] = {**kept["00400560"], "Value": items}
    return kept


def real_templates(work: Path, full: bool = False) -> Templates:
    """Ingest a lamina sample slide (Aperio SVS, with a manifest) and template its stored JSON.

    Unless ``full``, the templates are trimmed (:func:`trim`).
    """
    folder = work / "template"
    samples = write_samples(folder / "samples", ["aperio_svs"], seed=7)
    settings = Settings.load(folder / "home", env={})
    archive = Archive.open(settings)
    try:
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
        manifest = load_manifest(folder / "samples" / "manifest.csv")
        candidates = discover([samples[0].path])
        result = ingestor.ingest(candidates[0], manifest)
        slide = archive.catalog.slide(result.slide_id or "")
        if result.status not in ("ingested", "duplicate") or slide is None:
            raise RuntimeError(f"cannot ingest the template slide: {result.reason}")
        identity = samples[0].identity
        rows = archive.catalog.instances(slide.id)
    finally:
        archive.close()
    templates: dict[str, Template] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for row in rows:
        data = json.loads(dicom_json.unpack(row.metadata))
        by_value = {
            row.sop_instance_uid: "sop",
            slide.study_instance_uid: "study",
            slide.series_instance_uid: "series",
            _first(data, "00200052"): "frame_of_reference",
            _first(data, "00209221", "00209164"): "dimension",
            _first(data, "00400560", "00400554"): "specimen_uid",
            identity["patient_id"]: "patient_id",
            identity["patient_name"]: "patient_name",
            identity["specimen_id"]: "container",
            slide.container_id: "container",
        }
        kind = row.flavor.lower() if row.level is None else ("level0" if row.level == 0 else "level")
        if kind not in templates:
            kept = data if full else trim(data)
            templates[kind] = make_template(kept, by_value)
            sizes[kind] = (len(row.metadata), len(dicom_json.pack(kept)))
    return Templates(**templates, sizes=sizes)


def _first(data: dict[str, Any], tag: str, nested: str | None = None) -> str:
    value = data[tag]["Value"][0]
    return str(value if nested is None else value[nested]["Value"][0])


# --- the rows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    code: str  # a FINESS-like number
    number: int  # in the accession numbers
    weight: float


@dataclass
class Chunk:
    """The COPY lines of a run of whole cases, table by table.

    The instance lines wait for their stored JSON to be compressed (:meth:`finish`): ``pending``
    holds each line without its last column, and the JSON text.
    """

    data: dict[str, list[str]]
    pending: list[tuple[str, bytes]]
    slides: int
    instances: int

    def finish(self) -> Chunk:
        """Compress the JSON as ``dicom_json.pack`` does, and complete the instance lines.

        zlib lets go of the GIL while it compresses, so chunks finish in parallel threads.
        """
        self.data["instances"] = [
            f"{line}\t\\\\x{zlib.compress(text, PACK_LEVEL).hex()}\n" for line, text in self.pending
        ]
        self.pending = []
        return self


class CatalogGenerator:
    """Deterministic rows of the synthetic catalog, case by case, continuing where it stopped.

    ``next_chunk(slides)`` returns the COPY lines of at least ``slides`` more slides (whole cases
    only); the state (counters, the audit chain's head) carries over from one call to the next.
    """

    def __init__(
        self,
        templates: Templates,
        now: dt.datetime,
        seed: int = 1,
        audit_head: tuple[int, str] = (0, audit.GENESIS),
        first_patient: int = 1,
    ) -> None:
        self.templates = templates
        self.now = now
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.seq, self.prev_hash = audit_head
        self.next_patient = first_patient
        self.tenants = self._tenants()
        self._weights = [tenant.weight for tenant in self.tenants]
        self._cases = {tenant.code: 0 for tenant in self.tenants}
        self._patients: list[tuple[int, str, str, str, str]] = []
        self._days = (now.date() - FIRST_STUDY_DATE).days
        self._pending: list[tuple[str, bytes]] = []
        self._frame_indexes: dict[tuple[int, bool], list[tuple[str, str, int]]] = {}

    def _tenants(self) -> list[Tenant]:
        weights = [self.rng.lognormvariate(0.0, 1.0) for _ in range(TENANTS)]
        codes: set[str] = set()
        while len(codes) < TENANTS:
            codes.add(f"{self.rng.randint(1, 95):02d}0{self.rng.randint(0, 999_999):06d}")
        return [
            Tenant(code, number, weight)
            for number, (code, weight) in enumerate(zip(sorted(codes), weights, strict=True), start=1)
        ]

    def uid(self) -> str:
        return f"2.25.{self.rng.getrandbits(128)}"

    def hex64(self) -> str:
        return f"{self.rng.getrandbits(256):064x}"

    def _patient(self, lines: list[str]) -> tuple[int, str, str, str, str]:
        """An existing patient (three cases in ten) or a new one."""
        if self._patients and self.rng.random() < 0.3:
            return self._patients[self.rng.randrange(len(self._patients))]
        rng = self.rng
        pk = self.next_patient
        self.next_patient += 1
        sex = rng.choice("FM")
        born = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(80 * 365))
        patient_id = f"{1 if sex == 'M' else 2}{born:%y%m}{pk:08d}"
        name = f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN)}"
        patient = (pk, patient_id, name, f"{born:%Y%m%d}", sex)
        lines.append(f"{pk}\t{patient_id}\t\t{name}\t{born:%Y%m%d}\t{sex}\n")
        if len(self._patients) < 200_000:
            self._patients.append(patient)
        else:
            self._patients[rng.randrange(len(self._patients))] = patient
        return patient

    def next_chunk(self, slides: int) -> Chunk:
        """The rows of the next cases, until at least ``slides`` slides."""
        data: dict[str, list[str]] = {table: [] for table in TABLES}
        self._pending = []
        made = 0
        while made < slides:
            made += self._case(data)
        return Chunk(data, self._pending, made, made * INSTANCES_PER_SLIDE)

    def _case(self, data: dict[str, list[str]]) -> int:
        rng = self.rng
        tenant = rng.choices(self.tenants, self._weights)[0]
        self._cases[tenant.code] += 1
        day = FIRST_STUDY_DATE + dt.timedelta(days=rng.randrange(self._days))
        started = dt.datetime.combine(
            day, dt.time(rng.randrange(7, 19), rng.randrange(60), rng.randrange(60))
        )
        started = started.replace(tzinfo=dt.UTC)
        accession = f"H{tenant.number:03d}-{day:%y}-{self._cases[tenant.code]:06d}"
        patient = self._patient(data["patients"])
        study = self.uid()
        count = rng.choices((1, 2, 3, 4, 5, 6, 8, 10), (30, 25, 18, 10, 7, 5, 3, 2))[0]
        created = started + dt.timedelta(hours=rng.randrange(2, 72))
        data["studies"].append(
            f"{study}\t{patient[0]}\t{accession}\t{day:%Y%m%d}\t{started:%H%M%S}\t{created.isoformat()}"
            f"\t{tenant.code}\t{STUDY_MODALITIES}\n"
        )
        case = _Case(tenant.code, accession, patient, study, started, created)
        for index in range(count):
            self._slide(data, case, index)
        return count

    def _slide(self, data: dict[str, list[str]], case: _Case, index: int) -> None:
        rng = self.rng
        series = self.uid()
        sid = slide_id(series)
        container = f"{case.accession}-{'ABCDEFGH'[index // 3]}{index % 3 + 1}"
        created = case.created + dt.timedelta(minutes=5 * index, seconds=rng.randrange(60))
        stain = rng.choice(_STAINS)
        organ, diagnosis = _ORGANS[rng.randrange(len(_ORGANS))]
        fmt = rng.choices(SAMPLE_FORMATS, _FORMAT_WEIGHTS)[0]
        width, height = rng.randrange(1536, 2560), rng.randrange(1152, 1920)
        mpp = rng.choice((0.2499, 0.2527, 0.4990))
        if rng.random() < KEPT_SHARE:
            retain = "\\N"
        else:
            seconds = rng.uniform(RETENTION_DAYS[0] * 86400, RETENTION_DAYS[1] * 86400)
            retain = (self.now + dt.timedelta(seconds=int(seconds))).isoformat()
        instances, digests, total = self._instances(
            data, case, series, sid, container, created, width, height, mpp
        )
        data["series"].append(f"{series}\t{case.study}\tSM\t1\t{created.isoformat()}\n")
        source = f"/mnt/scanners/{case.tenant}/{created:%Y/%m}/{container}.{_EXTENSIONS[fmt]}"
        blake3 = self.hex64()
        source_bytes = rng.randrange(300_000_000, 3_000_000_000)
        row = (
            sid, series, case.study, container, container, stain, organ, diagnosis, fmt, source, blake3,
            self.hex64(), str(source_bytes), str(LEVELS), str(instances), str(total), "t", "t", str(width),
            str(height), str(mpp), created.isoformat(), case.tenant, retain,
        )  # fmt: skip
        data["slides"].append("\t".join(row) + "\n")
        detail = json.dumps(
            {"instances": digests, "source": source, "source_blake3": blake3},
            sort_keys=True,
            separators=(",", ":"),
        )
        at = created.replace(microsecond=0)
        self.seq += 1
        digest = audit.entry_hash(self.prev_hash, self.seq, at, "lamina", "ingest", f"slide/{sid}", detail)
        data["audit_log"].append(
            f"{self.seq}\t{at.isoformat()}\tlamina\tingest\tslide/{sid}\t{detail}\t{self.prev_hash}\t{digest}\n"
        )
        self.prev_hash = digest

    def _instances(
        self,
        data: dict[str, list[str]],
        case: _Case,
        series: str,
        sid: str,
        container: str,
        created: dt.datetime,
        width: int,
        height: int,
        mpp: float,
    ) -> tuple[int, list[str], int]:
        """The slide's ten instances; returns their count, blob digests and total size."""
        _, patient_id, patient_name, birth_date, sex = case.patient
        common = {
            "study": case.study,
            "series": series,
            "frame_of_reference": self.uid(),
            "specimen_uid": self.uid(),
            "patient_id": patient_id,
            "patient_name": patient_name,
            "birth_date": birth_date,
            "sex": sex,
            "accession": case.accession,
            "container": container,
            "study_date": f"{case.started:%Y%m%d}",
            "study_time": f"{case.started:%H%M%S}",
            "content_date": f"{created:%Y%m%d}",
            "content_time": f"{created:%H%M%S}",
            "acquisition_datetime": f"{case.started:%Y%m%d%H%M%S}",
        }
        shapes: list[tuple[str, int | None, int, int, int, int]] = []  # flavor, level, cols, rows, tile w, h
        for step in range(LEVELS):
            shapes.append(("VOLUME", step, -(-width // 2**step), -(-height // 2**step), TILE, TILE))
        thumb = (1024, max(1, round(1024 * height / width)))
        shapes.append(("THUMBNAIL", None, *thumb, *thumb))
        shapes.append(("LABEL", None, 387, 463, 387, 463))
        shapes.append(("OVERVIEW", None, 1280, 431, 1280, 431))
        digests = []
        total = 0
        for number, (flavor, level, columns, rows, tile_w, tile_h) in enumerate(shapes, start=1):
            frames = -(-columns // tile_w) * -(-rows // tile_h)
            volume = level is not None
            offsets, lengths, size = self._frame_index(frames, volume)
            sop = self.uid()
            values = {
                **common,
                "sop": sop,
                "dimension": self.uid(),
                "instance_number": str(number),
                "rows": str(tile_h),
                "columns": str(tile_w),
                "frames": str(frames),
                "total_columns": str(columns),
                "total_rows": str(rows),
            }
            digest = self.hex64()
            digests.append(digest)
            total += size
            scale = 2**level if level is not None else width / columns
            spacing = f"{mpp * scale / 1000:.8f}"
            row = (
                sop, sid, series, case.study, SOP_CLASS, str(number), flavor,
                "\\N" if level is None else str(level), str(tile_h), str(tile_w), str(columns), str(rows),
                str(frames), "3", "YBR_FULL_422" if volume else "RGB",
                JPEG_BASELINE if volume else JPEG_2000_LOSSLESS,
                spacing if flavor in ("VOLUME", "THUMBNAIL") else "\\N", "t" if volume else "f", digest,
                str(size), offsets, lengths,
            )  # fmt: skip
            line = "\t".join(row)
            self._pending.append((line, self._template(flavor, level).render(values)))
        return len(shapes), digests, total

    def _frame_index(self, frames: int, volume: bool) -> tuple[str, str, int]:
        """A frame index of ``frames`` frames as COPY text (offsets, lengths) and the object's size.

        JPEG tiles of 6 to 24 kB (associated images up to 300 kB) after a header that holds the
        Extended Offset Table. Drawn afresh for the first :data:`FRAME_INDEX_VARIANTS` instances
        of each frame count, then picked among those: the bytes differ by row, the generator is
        spared numpy calls for every instance.
        """
        variants = self._frame_indexes.setdefault((frames, volume), [])
        if len(variants) >= FRAME_INDEX_VARIANTS:
            return variants[self.rng.randrange(FRAME_INDEX_VARIANTS)]
        lengths = self.np.integers(6_000, 24_000 if volume else 300_000, frames, dtype=np.uint32)
        header = 4_096 + 8 * frames
        offsets = header + np.cumsum(lengths, dtype=np.uint64) - lengths
        size = int(header + lengths.sum(dtype=np.uint64) + 8 * frames)
        variant = (
            "\\\\x" + offsets.astype("<u8").tobytes().hex(),
            "\\\\x" + lengths.astype("<u4").tobytes().hex(),
            size,
        )
        variants.append(variant)
        return variant

    def _template(self, flavor: str, level: int | None) -> Template:
        templates = self.templates
        if flavor == "VOLUME":
            return templates.level0 if level == 0 else templates.level
        return {"THUMBNAIL": templates.thumbnail, "LABEL": templates.label}.get(flavor, templates.overview)


@dataclass(frozen=True)
class _Case:
    tenant: str
    accession: str
    patient: tuple[int, str, str, str, str]
    study: str
    started: dt.datetime
    created: dt.datetime


COLUMNS = {
    "patients": ("pk", "patient_id", "issuer", "patient_name", "birth_date", "sex"),
    "studies": (
        "study_instance_uid", "patient_pk", "accession_number", "study_date", "study_time", "created_at",
        "tenant", "modalities",
    ),
    "series": ("series_instance_uid", "study_instance_uid", "modality", "series_number", "created_at"),
    "slides": (
        "id", "series_instance_uid", "study_instance_uid", "container_id", "specimen_id", "stain", "organ",
        "diagnosis_code", "format", "source_path", "source_blake3", "source_head", "source_bytes", "levels",
        "instances", "bytes", "identified", "lossy", "width", "height", "mpp", "created_at", "tenant",
        "retain_until",
    ),
    "instances": (
        "sop_instance_uid", "slide_id", "series_instance_uid", "study_instance_uid", "sop_class_uid",
        "instance_number", "flavor", "level", "rows", "columns", "total_pixel_matrix_columns",
        "total_pixel_matrix_rows", "number_of_frames", "samples_per_pixel", "photometric_interpretation",
        "transfer_syntax_uid", "pixel_spacing_mm", "lossy", "blob_sha256", "bytes", "frame_offsets",
        "frame_lengths", "metadata",
    ),
    "audit_log": ("seq", "at", "actor", "action", "entity", "detail", "prev_hash", "hash"),
}  # fmt: skip
"""The columns of each table, in the order the generator writes them."""


# --- loading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ddl:
    """The indexes dropped for a load, as the statements that recreate them."""

    drop: tuple[str, ...]
    create: tuple[str, ...]


def droppable_indexes(conn: psycopg.Connection[Any]) -> Ddl:
    """Every index of the loaded tables but the primary keys that foreign keys reference."""
    rows = conn.execute(
        """
        SELECT t.relname, i.relname, c.conname, pg_get_indexdef(i.oid), pg_get_constraintdef(c.oid)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.contype IN ('p', 'u')
        WHERE n.nspname = current_schema() AND t.relname = ANY(%s)
        ORDER BY t.relname, i.relname
        """,
        (list(TABLES),),
    ).fetchall()
    drop, create = [], []
    for table, index, constraint, index_ddl, constraint_ddl in rows:
        if index in REFERENCED:
            continue
        if constraint:
            drop.append(f'ALTER TABLE "{table}" DROP CONSTRAINT "{constraint}"')
            create.append(f'ALTER TABLE "{table}" ADD CONSTRAINT "{constraint}" {constraint_ddl}')
        else:
            drop.append(f'DROP INDEX "{index}"')
            create.append(index_ddl)
    return Ddl(tuple(drop), tuple(create))


@dataclass
class LoadTimes:
    """Where the time of one load went, in seconds."""

    slides: int = 0
    instances: int = 0
    copy: float = 0.0
    generate: float = 0.0
    indexes: float = 0.0
    vacuum: float = 0.0

    @property
    def total(self) -> float:
        return self.copy + self.indexes + self.vacuum


def bulk_load(
    dsn: str,
    generator: CatalogGenerator,
    slides: int,
    chunk_slides: int = 2_000,
    progress: Callable[[str], None] | None = None,
) -> LoadTimes:
    """Add ``slides`` slides (or a few more: whole cases) to the catalog at ``dsn``.

    The rows are generated in a thread while the previous chunk is being copied, so that the
    generator and PostgreSQL each keep one core busy.
    """
    times = LoadTimes()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no foreign-key triggers
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '1GB'")
        ddl = droppable_indexes(conn)
        for statement in ddl.drop:
            conn.execute(statement)
        started = time.perf_counter()
        chunks: queue.Queue[Future[Chunk] | BaseException | None] = queue.Queue(maxsize=3)
        generated = [0.0]

        def produce(pool: ThreadPoolExecutor) -> None:
            try:
                left = slides
                while left > 0:
                    begun = time.perf_counter()
                    chunk = generator.next_chunk(min(chunk_slides, left))
                    generated[0] += time.perf_counter() - begun
                    left -= chunk.slides
                    chunks.put(pool.submit(chunk.finish))
                chunks.put(None)
            except BaseException as exc:  # handed to the consumer, which raises it
                chunks.put(exc)

        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="catalog-zlib") as pool:
            thread = threading.Thread(target=produce, args=(pool,), name="catalog-rows", daemon=True)
            thread.start()
            last_report = started
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                chunk = item.result()
                _copy_chunk(conn, chunk)
                times.slides += chunk.slides
                times.instances += chunk.instances
                now = time.perf_counter()
                if progress is not None and now - last_report > 30:
                    last_report = now
                    rate = times.instances / (now - started)
                    progress(f"  {times.slides:,} slides, {times.instances:,} instances ({rate:,.0f}/s)")
            thread.join()
        times.copy = time.perf_counter() - started
        times.generate = generated[0]
        begun = time.perf_counter()
        if progress is not None:
            progress(f"  recreating {len(ddl.create)} indexes and unique constraints ...")
        for statement in ddl.create:
            conn.execute(statement)
        conn.execute("SELECT setval('patients_pk_seq', (SELECT max(pk) FROM patients))")
        times.indexes = time.perf_counter() - begun
        begun = time.perf_counter()
        for table in TABLES:
            conn.execute(f'VACUUM (ANALYZE) "{table}"')
        times.vacuum = time.perf_counter() - begun
    return times


def _copy_chunk(conn: psycopg.Connection[Any], chunk: Chunk) -> None:
    """One transaction: a COPY per table."""
    with conn.transaction():
        for table in TABLES:
            lines = chunk.data[table]
            if lines:
                columns = ", ".join(f'"{name}"' for name in COLUMNS[table])
                with conn.cursor().copy(f'COPY "{table}" ({columns}) FROM STDIN') as copy:
                    copy.write("".join(lines).encode())


def audit_head(dsn: str) -> tuple[int, str]:
    """The last entry of the audit log: (seq, hash), or (0, GENESIS) when it is empty."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, audit.GENESIS) if row is None else (int(row[0]), str(row[1]))


def next_patient_pk(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(max(pk), 0) FROM patients").fetchone()
    return int(row[0]) + 1 if row else 1
