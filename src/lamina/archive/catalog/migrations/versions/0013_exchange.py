"""The exchange between sites and the archive: patients' oppositions (consents), the site's
correspondence of pseudonyms, the push's state per slide (transfers), and the slides the archive
announced and received (archive_received: expected, then verified, with their withdrawal from
research).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(9), nullable=False),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("patient_pseudonym", sa.String(64)),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False, server_default="research"),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("fhir_id", sa.String(128)),
        sa.Column("reason", sa.Text),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("recorded_at", _WHEN, nullable=False),
    )
    op.create_index("ix_consents_patient", "consents", ["tenant", "patient_id"])
    op.create_index("ix_consents_pseudonym", "consents", ["tenant", "patient_pseudonym"])
    op.create_table(
        "pseudonyms",
        sa.Column("tenant", sa.String(9), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("warehouse", sa.String(64), primary_key=True, server_default=""),
        sa.Column("pseudonym", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("first_at", _WHEN, nullable=False),
    )
    op.create_table(
        "transfers",
        sa.Column("slide_id", sa.String(16), primary_key=True),
        sa.Column("tenant", sa.String(9), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", _WHEN),
        sa.Column("queued_at", _WHEN, nullable=False),
        sa.Column("sent_at", _WHEN),
        sa.Column("verified_at", _WHEN),
        sa.Column("archive_url", sa.Text),
        sa.Column("study_instance_uid_out", sa.String(64)),
        sa.Column("series_instance_uid_out", sa.String(64)),
        sa.Column("acknowledgement", sa.Text),
    )
    op.create_index("ix_transfers_due", "transfers", ["status", "next_attempt_at"])
    op.create_table(
        "archive_received",
        sa.Column("series_instance_uid", sa.String(64), primary_key=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("slide_id", sa.String(16), unique=True),
        sa.Column("tenant", sa.String(9), nullable=False),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("patient_pseudonym", sa.String(64), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="expected"),
        sa.Column("announced", sa.Text),
        sa.Column("received_at", _WHEN, nullable=False),
        sa.Column("verified_at", _WHEN),
        sa.Column("withdrawn_at", _WHEN),
    )
    op.create_index("ix_archive_received_patient", "archive_received", ["tenant", "patient_pseudonym"])


def downgrade() -> None:
    for table in ("archive_received", "transfers", "pseudonyms", "consents"):
        op.drop_table(table)
