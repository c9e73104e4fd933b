"""Tables of the catalog (SQLAlchemy Core; the same definitions serve SQLite and PostgreSQL).

Any change here comes with a migration in ``migrations/versions/`` (``tests/archive/
test_migrations.py`` fails when the two disagree)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

patients = Table(
    "patients",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False),
    Column("issuer", String(64), nullable=False, default=""),
    Column("patient_name", String(324)),
    Column("birth_date", String(8)),
    Column("sex", String(16)),
    UniqueConstraint("patient_id", "issuer", name="uq_patients_id"),
)

studies = Table(
    "studies",
    metadata,
    Column("study_instance_uid", String(64), primary_key=True),
    Column("patient_pk", Integer, ForeignKey("patients.pk"), nullable=True),
    Column("accession_number", String(16)),
    Column("study_date", String(8)),
    Column("study_time", String(14)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # the lab (site) that owns the case; "" until tenants are configured
    Column("tenant", String(64), nullable=False, server_default=""),
    # the distinct modalities of its series, delimited: \ANN\SM\ (catalog/modalities.py)
    Column("modalities", Text, nullable=False, server_default=""),
    # InstanceAvailability of its slides: ONLINE, NEARLINE, UNAVAILABLE (catalog/availability.py)
    Column("availability", String(16), nullable=False, server_default="ONLINE"),
    Index("ix_studies_accession", "accession_number"),
    Index("ix_studies_patient", "patient_pk"),
)
# QIDO's stable order, newest first with undated studies last (ORDER BY ... DESC NULLS LAST): a
# page of /studies reads this index backwards. SQLite sorts NULLs first in an ascending index,
# PostgreSQL last unless told: each database gets the index whose backward scan is that order.
# It carries the modalities, so that ModalitiesInStudy is tested on the index entry.
Index(
    "ix_studies_date",
    studies.c.study_date,
    studies.c.study_time,
    studies.c.study_instance_uid,
    studies.c.modalities,
).ddl_if(dialect="sqlite")
Index(
    "ix_studies_date_pg",
    studies.c.study_date.nulls_first(),
    studies.c.study_time.nulls_first(),
    studies.c.study_instance_uid,
    postgresql_include=["modalities"],
).ddl_if(dialect="postgresql")
# a lab's worklist (QIDO as one lab's people): the same order within a tenant
Index(
    "ix_studies_tenant_date",
    studies.c.tenant,
    studies.c.study_date,
    studies.c.study_time,
    studies.c.study_instance_uid,
    studies.c.modalities,
).ddl_if(dialect="sqlite")
Index(
    "ix_studies_tenant_date_pg",
    studies.c.tenant,
    studies.c.study_date.nulls_first(),
    studies.c.study_time.nulls_first(),
    studies.c.study_instance_uid,
    postgresql_include=["modalities"],
).ddl_if(dialect="postgresql")

series = Table(
    "series",
    metadata,
    Column("series_instance_uid", String(64), primary_key=True),
    Column("study_instance_uid", String(64), ForeignKey("studies.study_instance_uid"), nullable=False),
    Column("modality", String(16), nullable=False),
    Column("series_number", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_series_study_modality", "study_instance_uid", "modality"),
)

slides = Table(
    "slides",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("series_instance_uid", String(64), nullable=False, unique=True),
    Column("study_instance_uid", String(64), ForeignKey("studies.study_instance_uid"), nullable=False),
    Column("container_id", String(64), nullable=False),
    Column("specimen_id", String(64)),
    Column("stain", String(64)),
    Column("organ", String(64)),
    Column("diagnosis_code", String(64)),
    Column("format", String(32), nullable=False),
    Column("source_path", Text, nullable=False),
    Column("source_blake3", String(64), nullable=False, unique=True),
    # BLAKE3 of the sizes and first MiB of the source files: finds possible duplicates cheaply
    Column("source_head", String(64), nullable=False),
    Column("source_bytes", BigInteger, nullable=False),
    Column("levels", Integer, nullable=False),
    Column("instances", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("identified", Boolean, nullable=False),
    Column("lossy", Boolean, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("mpp", Float),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("tenant", String(64), nullable=False, server_default=""),
    # when the care retention of the slide ends (None: not set yet, or kept)
    Column("retain_until", DateTime(timezone=True)),
    # the care lifecycle (lamina.lifecycle): biopsy, resection, cytology... for retention rules
    Column("specimen_type", String(64)),
    # where its objects are: hot (read at once) or cold (restored before reading)
    Column("tier", String(8), nullable=False, server_default="hot"),
    # the last opening or retrieval (not per tile), for tier rules
    Column("last_access_at", DateTime(timezone=True)),
    # when its pyramid was deleted after its care retention (its trace: slide_traces)
    Column("expired_at", DateTime(timezone=True)),
    Index("ix_slides_study", "study_instance_uid"),
    Index("ix_slides_retain_until", "retain_until"),
    Index("ix_slides_tenant", "tenant", "created_at"),
    Index("ix_slides_container", "container_id"),
    Index("ix_slides_source_head", "source_bytes", "source_head"),
)

instances = Table(
    "instances",
    metadata,
    Column("sop_instance_uid", String(64), primary_key=True),
    # the slide an instance belongs to; none for annotations, reports and other objects
    Column("slide_id", String(16), ForeignKey("slides.id"), nullable=True),
    Column("series_instance_uid", String(64), ForeignKey("series.series_instance_uid"), nullable=False),
    Column("study_instance_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer, nullable=False),
    Column("flavor", String(16), nullable=False),
    Column("level", Integer),
    Column("rows", Integer, nullable=False),
    Column("columns", Integer, nullable=False),
    Column("total_pixel_matrix_columns", Integer, nullable=False),
    Column("total_pixel_matrix_rows", Integer, nullable=False),
    Column("number_of_frames", Integer, nullable=False),
    Column("samples_per_pixel", Integer, nullable=False),
    Column("photometric_interpretation", String(16), nullable=False),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("pixel_spacing_mm", Float),
    Column("lossy", Boolean, nullable=False),
    Column("blob_sha256", String(64), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    # frame index: little-endian uint64 offsets and uint32 lengths of each frame in the object
    Column("frame_offsets", LargeBinary, nullable=False),
    Column("frame_lengths", LargeBinary, nullable=False),
    # the instance's header as DICOM JSON (zlib), bulk data as relative "bulkdata/..." URIs
    Column("metadata", LargeBinary, nullable=False),
    Index("ix_instances_slide", "slide_id"),
    Index("ix_instances_series", "series_instance_uid"),
    Index("ix_instances_study", "study_instance_uid"),
    Index("ix_instances_blob", "blob_sha256"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("entity", String(128), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

job_reports = Table(
    "job_reports",
    metadata,
    # what a queued job tells the request that is waiting for it (a STOW-RS outcome per instance)
    Column("job_key", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("report", Text, nullable=False),
)

application_entities = Table(
    "application_entities",
    metadata,
    # a DICOM peer known by its AE title (PS3.5: at most 16 characters; case matters)
    Column("ae_title", String(16), primary_key=True),
    # where lamina reaches it; a peer that only calls in (rights to come) may have no address
    Column("host", String(253)),
    Column("port", Integer),
    Column("description", String(255), nullable=False, server_default=""),
    # lamina may send to it: a C-MOVE destination, a target of `lamina send --to`
    Column("move_destination", Boolean, nullable=False),
    # the lab it belongs to; "" until tenants are configured
    Column("tenant", String(64), nullable=False, server_default=""),
    # it may call lamina (associate with its DIMSE server), for the operations in ``allowed``
    Column("calling", Boolean, nullable=False, server_default=false()),
    # what it may ask when it calls: a comma-separated subset of echo,store,find,get,move
    Column("allowed", String(64), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# -- governance: labs, people, roles, grants (lamina.governance) ---------------------------------

tenants = Table(
    "tenants",
    metadata,
    # a pathology structure, by its FINESS number (9 characters: a department code, 7 digits)
    Column("finess", String(9), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

people = Table(
    "people",
    metadata,
    # who signs in: the identifier the sign-in gives (a national practitioner number, a login)
    Column("id", String(128), primary_key=True),
    Column("display_name", String(255), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

role_assignments = Table(
    "role_assignments",
    metadata,
    Column("person_id", String(128), ForeignKey("people.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant", String(9), ForeignKey("tenants.finess"), primary_key=True),
    Column("role", String(32), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_role_assignments_tenant", "tenant", "role"),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(32), primary_key=True),
    # the lab that owns what is granted, and whose admins create and revoke the grant
    Column("tenant", String(9), ForeignKey("tenants.finess"), nullable=False),
    # to whom: a person, a whole tenant, a research project
    Column("grantee_kind", String(16), nullable=False),
    Column("grantee", String(128), nullable=False),
    # on what: a slide (its id), a case (its Study Instance UID), a collection
    Column("resource_kind", String(16), nullable=False),
    Column("resource", String(128), nullable=False),
    Column("permission", String(16), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoked_by", String(128)),
    Index("ix_grants_grantee", "grantee_kind", "grantee"),
    Index("ix_grants_resource", "resource_kind", "resource"),
)

# -- the care lifecycle (lamina.lifecycle) ------------------------------------------------------

case_reports = Table(
    "case_reports",
    metadata,
    Column("id", String(32), primary_key=True),
    # the case, by the lab and its accession number: a report may come before the case's slides
    Column("tenant", String(9), nullable=False),
    Column("accession_number", String(64), nullable=False),
    # FHIR DiagnosticReport.status: final, amended, corrected and appended start (restart) the clock
    Column("status", String(24), nullable=False),
    # when the report was validated (DiagnosticReport.issued): the clock's start
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # the LIS's identifier of the report (DiagnosticReport.id or identifier), if any
    Column("report_id", String(128)),
    # fhir or cli, and who sent it
    Column("source", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    # the report itself, where the LIS gives its URL (DiagnosticReport.presentedForm): http(s) only
    Column("form_url", Text),
    Column("form_type", String(128)),
    Column("form_title", String(255)),
    Index("ix_case_reports_case", "tenant", "accession_number", "issued_at"),
)

slide_interest = Table(
    "slide_interest",
    metadata,
    # a slide of interest: kept beyond care, ready to leave for the archive
    Column("slide_id", String(16), primary_key=True),
    Column("category", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("flagged_at", DateTime(timezone=True), nullable=False),
    Column("flagged_by", String(128), nullable=False),
)

holds = Table(
    "holds",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("slide_id", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("held_at", DateTime(timezone=True), nullable=False),
    Column("held_by", String(128), nullable=False),
    Column("released_at", DateTime(timezone=True)),
    Column("released_by", String(128)),
    Index("ix_holds_slide", "slide_id"),
)

lifecycle_rules = Table(
    "lifecycle_rules",
    metadata,
    # a lab's retention rules, as their TOML text (lamina.lifecycle.rules)
    Column("tenant", String(9), primary_key=True),
    Column("document", Text, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(128), nullable=False),
)

slide_traces = Table(
    "slide_traces",
    metadata,
    # what an expired slide keeps: the record of its scan, its thumbnail, what was deleted
    Column("slide_id", String(16), primary_key=True),
    Column("expired_at", DateTime(timezone=True), nullable=False),
    Column("rule", String(128), nullable=False),
    Column("rule_digest", String(64), nullable=False),
    Column("report_at", DateTime(timezone=True)),
    # the BLAKE3 of the source file, moved here from slides (the same file may come back)
    Column("source_blake3", String(64)),
    # the JPEG thumbnail in the blob store (None: the rule keeps the record only)
    Column("thumbnail_sha256", String(64)),
    Column("thumbnail_width", Integer),
    Column("thumbnail_height", Integer),
    # JSON: [{"sop": SOP Instance UID, "sha256": digest, "bytes": n}, ...] of the objects deleted
    Column("deleted", Text, nullable=False),
    Column("bytes_freed", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
    # when the deleted objects had all left the store(s): None while some may be left (a crash
    # after the commit), which the next lifecycle run finishes
    Column("objects_removed_at", DateTime(timezone=True)),
    Index("ix_slide_traces_thumbnail", "thumbnail_sha256"),
)

collections = Table(
    "collections",
    metadata,
    Column("id", String(32), primary_key=True),
    # the lab whose slides it holds, and whose admins edit it and grant it
    Column("tenant", String(9), ForeignKey("tenants.finess"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    UniqueConstraint("tenant", "name", name="uq_collections_tenant_name"),
)

collection_slides = Table(
    "collection_slides",
    metadata,
    Column("collection_id", String(32), ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True),
    # a slide of the collection's lab (its row goes with the slide: lamina.archive.delete)
    Column("slide_id", String(64), primary_key=True),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Index("ix_collection_slides_slide", "slide_id"),
)

passwords = Table(
    "passwords",
    metadata,
    # the password of a person for lamina's own sign-in page (argon2id, governance/passwords.py)
    Column("person_id", String(128), ForeignKey("people.id", ondelete="CASCADE"), primary_key=True),
    Column("hash", String(255), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# -- the exchange between a site and the archive (lamina.exchange) --------------------------------

consents = Table(
    "consents",
    metadata,
    # one row per decision, never updated: the newest (highest id) of a patient in a lab is in force
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(9), nullable=False),
    # the patient: their PatientID at a site, their pseudonym at the archive (one of the two)
    Column("patient_id", String(64)),
    Column("patient_pseudonym", String(64)),
    # deny (the patient opposes research use) or allow (the opposition is lifted)
    Column("decision", String(8), nullable=False),
    Column("purpose", String(16), nullable=False, server_default="research"),
    # fhir (the LIS's Consent), cli (the operator), site (told by the site, at the archive)
    Column("source", String(8), nullable=False),
    Column("fhir_id", String(128)),
    # why, in words, when the operator gave it (kept here, not in the audit log)
    Column("reason", Text),
    Column("actor", String(128), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("ix_consents_patient", "tenant", "patient_id"),
    Index("ix_consents_pseudonym", "tenant", "patient_pseudonym"),
)

pseudonyms = Table(
    "pseudonyms",
    metadata,
    # the correspondence kept at the site: which value a pseudonym it sent stands for
    Column("tenant", String(9), primary_key=True),
    # PatientID or AccessionNumber
    Column("kind", String(16), primary_key=True),
    # the health-data warehouse whose key made it; "" for the site's own key (a key part: not NULL)
    Column("warehouse", String(64), primary_key=True, server_default=""),
    Column("pseudonym", String(64), primary_key=True),
    Column("value", String(64), nullable=False),
    Column("first_at", DateTime(timezone=True), nullable=False),
)

transfers = Table(
    "transfers",
    metadata,
    # the push of one slide of interest to the archive, at the site
    Column("slide_id", String(16), primary_key=True),
    Column("tenant", String(9), nullable=False),
    # queued, sent, verified (the archive acknowledged it), refused, quarantined
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("verified_at", DateTime(timezone=True)),
    Column("archive_url", Text),
    # the de-identified UIDs the archive knows the slide by
    Column("study_instance_uid_out", String(64)),
    Column("series_instance_uid_out", String(64)),
    # the archive's acknowledgement, as JSON
    Column("acknowledgement", Text),
    Index("ix_transfers_due", "status", "next_attempt_at"),
)

archive_received = Table(
    "archive_received",
    metadata,
    # a de-identified slide a site announced, then sent, at the archive (lamina.exchange.receiving):
    # one row per series, whichever lab announced it first (a UID is the world's, never two labs')
    Column("series_instance_uid", String(64), primary_key=True),
    Column("study_instance_uid", String(64), nullable=False),
    # the archive's own slide, once verified (None while expected)
    Column("slide_id", String(16), unique=True),
    # the sending lab (FINESS) and the site node's name
    Column("tenant", String(9), nullable=False),
    Column("site", String(255), nullable=False),
    Column("patient_pseudonym", String(64), nullable=False),
    Column("category", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    # expected (announced, not verified yet) or verified
    Column("status", String(16), nullable=False, server_default="expected"),
    # the announcement as the site sent it last (JSON: the instances, their frames' SHA-256)
    Column("announced", Text),
    # when it was first announced
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("verified_at", DateTime(timezone=True)),
    # when it was withdrawn from research (its patient opposed, told by the site); None: usable
    Column("withdrawn_at", DateTime(timezone=True)),
    Index("ix_archive_received_patient", "tenant", "patient_pseudonym"),
)
