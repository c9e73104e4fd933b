"""The job queue's tables (Procrastinate 3.x) in the catalog's PostgreSQL database: workers on
other hosts then share nothing but the catalog and the blob store. The embedded SQLite catalog
runs its jobs in-process and needs no tables.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    from lamina.archive.catalog.migrations import create_queue_schema

    create_queue_schema(op.get_bind())
