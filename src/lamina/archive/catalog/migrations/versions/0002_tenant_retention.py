"""Tenants (the lab that owns a case and its slides) and the end of a slide's care retention;
Alembic's version table replaces schema_info.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=False, server_default=""))
    with op.batch_alter_table("slides") as batch:
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("retain_until", sa.DateTime(timezone=True)))
    op.create_index("ix_slides_retain_until", "slides", ["retain_until"])
    op.create_index("ix_slides_tenant", "slides", ["tenant", "created_at"])
    op.drop_table("schema_info")
