"""The catalog as the first releases wrote it (schema version 2).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("schema_info", sa.Column("version", sa.Integer, nullable=False))
    op.create_table(
        "patients",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("patient_name", sa.String(324)),
        sa.Column("birth_date", sa.String(8)),
        sa.Column("sex", sa.String(16)),
        sa.UniqueConstraint("patient_id", "issuer", name="uq_patients_id"),
    )
    op.create_table(
        "studies",
        sa.Column("study_instance_uid", sa.String(64), primary_key=True),
        sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patients.pk"), nullable=True),
        sa.Column("accession_number", sa.String(16)),
        sa.Column("study_date", sa.String(8)),
        sa.Column("study_time", sa.String(14)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_studies_accession", "studies", ["accession_number"])
    op.create_index("ix_studies_date", "studies", ["study_date", "study_time", "study_instance_uid"])
    op.create_index("ix_studies_patient", "studies", ["patient_pk"])
    op.create_table(
        "series",
        sa.Column("series_instance_uid", sa.String(64), primary_key=True),
        sa.Column(
            "study_instance_uid",
            sa.String(64),
            sa.ForeignKey("studies.study_instance_uid"),
            nullable=False,
        ),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("series_number", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_series_study", "series", ["study_instance_uid"])
    op.create_table(
        "slides",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("series_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "study_instance_uid",
            sa.String(64),
            sa.ForeignKey("studies.study_instance_uid"),
            nullable=False,
        ),
        sa.Column("container_id", sa.String(64), nullable=False),
        sa.Column("specimen_id", sa.String(64)),
        sa.Column("stain", sa.String(64)),
        sa.Column("organ", sa.String(64)),
        sa.Column("diagnosis_code", sa.String(64)),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("source_path", sa.Text, nullable=False),
        sa.Column("source_blake3", sa.String(64), nullable=False, unique=True),
        sa.Column("source_head", sa.String(64), nullable=False),
        sa.Column("source_bytes", sa.BigInteger, nullable=False),
        sa.Column("levels", sa.Integer, nullable=False),
        sa.Column("instances", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("identified", sa.Boolean, nullable=False),
        sa.Column("lossy", sa.Boolean, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("mpp", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_slides_study", "slides", ["study_instance_uid"])
    op.create_index("ix_slides_container", "slides", ["container_id"])
    op.create_index("ix_slides_source_head", "slides", ["source_bytes", "source_head"])
    op.create_table(
        "instances",
        sa.Column("sop_instance_uid", sa.String(64), primary_key=True),
        sa.Column("slide_id", sa.String(16), sa.ForeignKey("slides.id"), nullable=True),
        sa.Column(
            "series_instance_uid",
            sa.String(64),
            sa.ForeignKey("series.series_instance_uid"),
            nullable=False,
        ),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("instance_number", sa.Integer, nullable=False),
        sa.Column("flavor", sa.String(16), nullable=False),
        sa.Column("level", sa.Integer),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("columns", sa.Integer, nullable=False),
        sa.Column("total_pixel_matrix_columns", sa.Integer, nullable=False),
        sa.Column("total_pixel_matrix_rows", sa.Integer, nullable=False),
        sa.Column("number_of_frames", sa.Integer, nullable=False),
        sa.Column("samples_per_pixel", sa.Integer, nullable=False),
        sa.Column("photometric_interpretation", sa.String(16), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("pixel_spacing_mm", sa.Float),
        sa.Column("lossy", sa.Boolean, nullable=False),
        sa.Column("blob_sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("frame_offsets", sa.LargeBinary, nullable=False),
        sa.Column("frame_lengths", sa.LargeBinary, nullable=False),
        sa.Column("metadata", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_instances_slide", "instances", ["slide_id"])
    op.create_index("ix_instances_series", "instances", ["series_instance_uid"])
    op.create_index("ix_instances_study", "instances", ["study_instance_uid"])
    op.create_index("ix_instances_blob", "instances", ["blob_sha256"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("entity", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.execute("INSERT INTO schema_info (version) VALUES (2)")
