"""Sign-in: passwords of lamina's own sign-in page, the rights of calling AEs, and the tenant in
the index of QIDO's study searches.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "passwords",
        sa.Column(
            "person_id", sa.String(128), sa.ForeignKey("people.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("hash", sa.String(255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("application_entities") as batch:
        batch.add_column(sa.Column("calling", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("allowed", sa.String(64), nullable=False, server_default=""))
    # a lab's worklist: its studies newest first, read backwards like ix_studies_date(_pg)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_studies_tenant_date_pg ON studies (tenant, study_date NULLS FIRST, "
            "study_time NULLS FIRST, study_instance_uid) INCLUDE (modalities)"
        )
    else:
        op.create_index(
            "ix_studies_tenant_date",
            "studies",
            ["tenant", "study_date", "study_time", "study_instance_uid", "modalities"],
        )


def downgrade() -> None:
    op.drop_table("passwords")
