"""Labs, people, the roles they hold and the grants labs give (``lamina.governance``).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("finess", sa.String(9), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "people",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("display_name", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "role_assignments",
        sa.Column(
            "person_id", sa.String(128), sa.ForeignKey("people.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("tenant", sa.String(9), sa.ForeignKey("tenants.finess"), primary_key=True),
        sa.Column("role", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_role_assignments_tenant", "role_assignments", ["tenant", "role"])
    op.create_table(
        "grants",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(9), sa.ForeignKey("tenants.finess"), nullable=False),
        sa.Column("grantee_kind", sa.String(16), nullable=False),
        sa.Column("grantee", sa.String(128), nullable=False),
        sa.Column("resource_kind", sa.String(16), nullable=False),
        sa.Column("resource", sa.String(128), nullable=False),
        sa.Column("permission", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_by", sa.String(128)),
    )
    op.create_index("ix_grants_grantee", "grants", ["grantee_kind", "grantee"])
    op.create_index("ix_grants_resource", "grants", ["resource_kind", "resource"])


def downgrade() -> None:
    for name in ("grants", "role_assignments", "people", "tenants"):
        op.drop_table(name)
