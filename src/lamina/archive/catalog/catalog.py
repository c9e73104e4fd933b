"""Catalog access: one class, plain dataclasses in and out, one transaction per slide."""

from __future__ import annotations

import builtins
import datetime as dt
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import OperationalError

from lamina.archive import audit
from lamina.archive.catalog import availability, migrations, modalities
from lamina.archive.catalog import tables as t
from lamina.errors import ConfigurationError, InsufficientStorageError, RequestError, StorageError


@dataclass(frozen=True)
class InstanceRow:
    sop_instance_uid: str
    slide_id: str | None
    series_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str
    instance_number: int
    flavor: str
    level: int | None
    rows: int
    columns: int
    total_pixel_matrix_columns: int
    total_pixel_matrix_rows: int
    number_of_frames: int
    samples_per_pixel: int
    photometric_interpretation: str
    transfer_syntax_uid: str
    pixel_spacing_mm: float | None
    lossy: bool
    blob_sha256: str
    bytes: int
    frame_offsets: builtins.bytes
    frame_lengths: builtins.bytes
    metadata: builtins.bytes


@dataclass(frozen=True)
class SlideRow:
    id: str
    series_instance_uid: str
    study_instance_uid: str
    container_id: str
    specimen_id: str | None
    stain: str | None
    organ: str | None
    diagnosis_code: str | None
    format: str
    source_path: str
    source_blake3: str
    source_head: str
    source_bytes: int
    levels: int
    instances: int
    bytes: int
    identified: bool
    lossy: bool
    width: int
    height: int
    mpp: float | None
    created_at: dt.datetime
    tenant: str = ""
    retain_until: dt.datetime | None = None
    specimen_type: str | None = None
    tier: str = "hot"
    last_access_at: dt.datetime | None = None
    expired_at: dt.datetime | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    accession_number: str | None = None


@dataclass(frozen=True)
class PatientRecord:
    patient_id: str
    patient_name: str | None
    birth_date: str | None
    sex: str | None


@dataclass(frozen=True)
class NewSlide:
    """Everything the ingest transaction writes for one slide."""

    slide: SlideRow
    instances: Sequence[InstanceRow]
    patient: PatientRecord | None
    study_date: str | None
    study_time: str | None


def _row(cls: type[Any], mapping: Any) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in mapping.items() if k in names})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # lamina issues BEGIN itself (see _sqlite_begin): the driver's own implicit transactions start
    # only at the first write, so a read before it would not be part of the transaction
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_S * 1000}")
    _wal(cursor)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


#: how long a connection waits for SQLite's locks (seconds)
_SQLITE_BUSY_S = 30


def _wal(cursor: Any) -> None:
    """Switch a new catalog to WAL. The switch needs the database alone and fails at once (busy,
    without waiting) while another connection opening the same new file holds it: try again."""
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    deadline = time.monotonic() + _SQLITE_BUSY_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


_WRITE = "lamina_write"
#: the PostgreSQL advisory lock key that serialises migrations (ASCII "lamina\0\1")
_MIGRATION_LOCK = 0x6C616D696E610001


def _sqlite_begin(conn: Connection) -> None:
    """Write transactions take SQLite's write lock at BEGIN (IMMEDIATE): what they read (the last
    audit entry, a study already there) cannot change before they write."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: the engine for write transactions (BEGIN IMMEDIATE on SQLite)
        self.writer = engine.execution_options(**{_WRITE: True})

    @classmethod
    def open(cls, url: str) -> Catalog:
        try:
            engine = create_engine(url, future=True)
        except Exception as exc:  # bad URL or missing driver
            raise ConfigurationError(
                f"catalog URL cannot be used ({type(exc).__name__}); check LAMINA_DATABASE_URL"
            ) from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        catalog = cls(engine)
        catalog.migrate()
        return catalog

    def migrate(self) -> None:
        """Bring the catalog to this release's schema (Alembic, ``migrations/``), at most one
        process at a time: PostgreSQL by an advisory lock, SQLite by its write lock."""
        try:
            with self.writer.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
                migrations.upgrade(conn)
        except OperationalError as exc:
            reason = (
                str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
            )
            where = self.engine.url.render_as_string(hide_password=True)
            raise StorageError(
                f"cannot open the catalog {where} ({reason}); check LAMINA_DATABASE_URL and that the "
                "database server is running"
            ) from exc

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction (serialised with the other writers on SQLite)."""
        with self._writing(), self.writer.begin() as conn:
            yield conn

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write that finds the disk full says so, naming the catalog (SQLite: "database or disk
        is full"; PostgreSQL: SQLSTATE 53100), rather than passing for a damaged input."""
        try:
            yield
        except OperationalError as exc:
            orig = exc.orig
            full = getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            if not (full or getattr(orig, "sqlstate", None) == "53100"):
                raise
            url = self.engine.url
            where = str(url.database) if url.get_backend_name() == "sqlite" else url.render_as_string(True)
            reason = str(orig).strip().splitlines()[0] if str(orig).strip() else "no space left"
            raise InsufficientStorageError(
                where,
                f"the catalog {where} is full ({reason}); free disk space where it is kept, then send or "
                "ingest again",
            ) from exc

    # -- reads -------------------------------------------------------------------------------
    def _slide_query(self) -> Any:
        return select(
            t.slides, t.patients.c.patient_id, t.patients.c.patient_name, t.studies.c.accession_number
        ).select_from(
            t.slides.join(
                t.studies, t.slides.c.study_instance_uid == t.studies.c.study_instance_uid
            ).outerjoin(t.patients, t.studies.c.patient_pk == t.patients.c.pk)
        )

    def slide_by_source(self, source_blake3: str) -> SlideRow | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(self._slide_query().where(t.slides.c.source_blake3 == source_blake3))
                .mappings()
                .first()
            )
        return None if row is None else _row(SlideRow, row)

    def slides_by_head(self, source_bytes: int, source_head: str) -> list[SlideRow]:
        """Slides whose source had this size and first MiB: the only possible duplicates."""
        query = self._slide_query().where(
            t.slides.c.source_bytes == source_bytes, t.slides.c.source_head == source_head
        )
        with self.engine.connect() as conn:
            return [_row(SlideRow, row) for row in conn.execute(query).mappings()]

    def slide(self, slide_id: str) -> SlideRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._slide_query().where(t.slides.c.id == slide_id)).mappings().first()
        return None if row is None else _row(SlideRow, row)

    def slides(self) -> list[SlideRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(self._slide_query().order_by(t.slides.c.created_at, t.slides.c.id)).mappings()
            return [_row(SlideRow, row) for row in rows]

    def instances(self, slide_id: str) -> list[InstanceRow]:
        query = (
            select(t.instances)
            .where(t.instances.c.slide_id == slide_id)
            .order_by(t.instances.c.instance_number)
        )
        with self.engine.connect() as conn:
            return [_row(InstanceRow, row) for row in conn.execute(query).mappings()]

    def instance(self, sop_instance_uid: str) -> InstanceRow | None:
        query = select(t.instances).where(t.instances.c.sop_instance_uid == sop_instance_uid)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _row(InstanceRow, row)

    def instances_in(self, study: str, series: str | None = None) -> list[InstanceRow]:
        """A study's or a series' instances, in series then instance-number order."""
        query = select(t.instances).where(t.instances.c.study_instance_uid == study)
        if series is not None:
            query = query.where(t.instances.c.series_instance_uid == series)
        query = query.order_by(t.instances.c.series_instance_uid, t.instances.c.instance_number)
        with self.engine.connect() as conn:
            return [_row(InstanceRow, row) for row in conn.execute(query).mappings()]

    def study_for_accession(
        self, accession_number: str, patient_id: str | None, tenant: str = ""
    ) -> str | None:
        """The study already holding this case, so that all slides of a case share one study."""
        query = (
            select(t.studies.c.study_instance_uid, t.patients.c.patient_id)
            .select_from(t.studies.outerjoin(t.patients, t.studies.c.patient_pk == t.patients.c.pk))
            .where(t.studies.c.accession_number == accession_number, t.studies.c.tenant == tenant)
        )
        with self.engine.connect() as conn:
            for uid, known_patient in conn.execute(query):
                if known_patient == patient_id:
                    return str(uid)
        return None

    def referenced_blobs(self) -> set[str]:
        """Every object the catalog references: the instances', and the thumbnails expired slides
        keep (their traces)."""
        thumbnails = select(t.slide_traces.c.thumbnail_sha256).where(
            t.slide_traces.c.thumbnail_sha256.is_not(None)
        )
        with self.engine.connect() as conn:
            found = {row[0] for row in conn.execute(select(t.instances.c.blob_sha256))}
            return found | {row[0] for row in conn.execute(thumbnails)}

    def blobs_in_use(self, digests: Sequence[str]) -> set[str]:
        """Those of ``digests`` that an instance, or an expired slide's trace, references."""
        wanted = list(digests)
        instances = select(t.instances.c.blob_sha256).where(t.instances.c.blob_sha256.in_(wanted))
        traces = select(t.slide_traces.c.thumbnail_sha256).where(
            t.slide_traces.c.thumbnail_sha256.in_(wanted)
        )
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(instances)} | {row[0] for row in conn.execute(traces)}

    def sop_instance_exists(self, uids: Sequence[str]) -> list[str]:
        with self.engine.connect() as conn:
            query = select(t.instances.c.sop_instance_uid).where(
                t.instances.c.sop_instance_uid.in_(list(uids))
            )
            return [row[0] for row in conn.execute(query)]

    def default_tenant(self) -> str:
        """The lab slides go into when none is named: the node's only tenant; "" when it has
        none (they are adopted by the first one added) or several (the caller must name one)."""
        with self.engine.connect() as conn:
            codes = [row[0] for row in conn.execute(select(t.tenants.c.finess).limit(2))]
        return codes[0] if len(codes) == 1 else ""

    def count_slides(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.slides)).scalar_one())

    # -- the ingest transaction -------------------------------------------------------------
    def add_slide(self, new: NewSlide, actor: str) -> None:
        """Patient, study, slide, instances and the audit entry, in one transaction."""
        slide = new.slide
        try:
            with self._writing(), self.writer.begin() as conn:
                patient_pk = self.upsert_patient(conn, new.patient)
                known = conn.execute(
                    select(t.studies.c.study_instance_uid, t.studies.c.tenant).where(
                        t.studies.c.study_instance_uid == slide.study_instance_uid
                    )
                ).first()
                if known is not None and known[1] != slide.tenant:
                    owner, asked = known[1] or "no lab", slide.tenant or "no lab"
                    raise RequestError(
                        "tenant",
                        f"the case {slide.study_instance_uid} belongs to {owner}, not to {asked}: a case "
                        "stays in one lab; ingest its slides into that lab (lamina ingest --tenant)",
                    )
                if known is None:
                    conn.execute(
                        insert(t.studies).values(
                            study_instance_uid=slide.study_instance_uid,
                            patient_pk=patient_pk,
                            accession_number=slide.accession_number,
                            study_date=new.study_date,
                            study_time=new.study_time,
                            created_at=slide.created_at,
                            tenant=slide.tenant,
                        )
                    )
                conn.execute(
                    insert(t.series).values(
                        series_instance_uid=slide.series_instance_uid,
                        study_instance_uid=slide.study_instance_uid,
                        modality="SM",
                        series_number=1,
                        created_at=slide.created_at,
                    )
                )
                modalities.refresh(conn, slide.study_instance_uid)
                values = {column.name: getattr(slide, column.name) for column in t.slides.columns}
                conn.execute(insert(t.slides).values(**values))
                availability.now_online(conn, slide.study_instance_uid)  # a new slide is hot and live
                conn.execute(
                    insert(t.instances),
                    [{f.name: getattr(row, f.name) for f in fields(InstanceRow)} for row in new.instances],
                )
                audit.append(
                    conn,
                    actor,
                    "ingest",
                    f"slide/{slide.id}",
                    {
                        "source": slide.source_path,
                        "source_blake3": slide.source_blake3,
                        "instances": [row.blob_sha256 for row in new.instances],
                        "tenant": slide.tenant,
                    },
                )
        except SqlIntegrityError as exc:
            raise StorageError(f"slide {slide.id} conflicts with the catalog: {exc.orig}") from exc

    def upsert_patient(self, conn: Connection, patient: PatientRecord | None) -> int | None:
        """The patient's key, inserting the patient the first time (inside the caller's transaction)."""
        if patient is None:
            return None
        found = conn.execute(
            select(t.patients.c.pk).where(
                t.patients.c.patient_id == patient.patient_id, t.patients.c.issuer == ""
            )
        ).scalar()
        if found is not None:
            return int(found)
        result = conn.execute(
            insert(t.patients).values(
                patient_id=patient.patient_id,
                issuer="",
                patient_name=patient.patient_name,
                birth_date=patient.birth_date,
                sex=patient.sex,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])
