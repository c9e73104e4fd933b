"""The care lifecycle: final reports of cases, slides of interest, legal holds, the labs'
retention rules, the traces of expired slides, and each slide's tier and last access; studies'
availability.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("availability", sa.String(16), nullable=False, server_default="ONLINE"))
    with op.batch_alter_table("slides") as batch:
        batch.add_column(sa.Column("specimen_type", sa.String(64)))
        batch.add_column(sa.Column("tier", sa.String(8), nullable=False, server_default="hot"))
        batch.add_column(sa.Column("last_access_at", _WHEN))
        batch.add_column(sa.Column("expired_at", _WHEN))
    op.create_table(
        "case_reports",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(9), nullable=False),
        sa.Column("accession_number", sa.String(64), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("issued_at", _WHEN, nullable=False),
        sa.Column("received_at", _WHEN, nullable=False),
        sa.Column("report_id", sa.String(128)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
    )
    op.create_index("ix_case_reports_case", "case_reports", ["tenant", "accession_number", "issued_at"])
    op.create_table(
        "slide_interest",
        sa.Column("slide_id", sa.String(16), primary_key=True),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("flagged_at", _WHEN, nullable=False),
        sa.Column("flagged_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("slide_id", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("held_at", _WHEN, nullable=False),
        sa.Column("held_by", sa.String(128), nullable=False),
        sa.Column("released_at", _WHEN),
        sa.Column("released_by", sa.String(128)),
    )
    op.create_index("ix_holds_slide", "holds", ["slide_id"])
    op.create_table(
        "lifecycle_rules",
        sa.Column("tenant", sa.String(9), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "slide_traces",
        sa.Column("slide_id", sa.String(16), primary_key=True),
        sa.Column("expired_at", _WHEN, nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("rule_digest", sa.String(64), nullable=False),
        sa.Column("report_at", _WHEN),
        sa.Column("source_blake3", sa.String(64)),
        sa.Column("thumbnail_sha256", sa.String(64)),
        sa.Column("thumbnail_width", sa.Integer),
        sa.Column("thumbnail_height", sa.Integer),
        sa.Column("deleted", sa.Text, nullable=False),
        sa.Column("bytes_freed", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("objects_removed_at", _WHEN),
    )
    op.create_index("ix_slide_traces_thumbnail", "slide_traces", ["thumbnail_sha256"])


def downgrade() -> None:
    for table in ("slide_traces", "lifecycle_rules", "holds", "slide_interest", "case_reports"):
        op.drop_table(table)
    with op.batch_alter_table("slides") as batch:
        for column in ("expired_at", "last_access_at", "tier", "specimen_type"):
            batch.drop_column(column)
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("availability")
