"""DICOM peers known by their AE title (``lamina ae add``): move destinations now; the lab they
belong to is kept for the calling-AE rights that come with tenants.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "application_entities",
        sa.Column("ae_title", sa.String(16), primary_key=True),
        sa.Column("host", sa.String(253)),
        sa.Column("port", sa.Integer),
        sa.Column("description", sa.String(255), nullable=False, server_default=""),
        sa.Column("move_destination", sa.Boolean, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
