"""PostgreSQL: the index of QIDO's study order with NULLs where the query wants them, so that a
page of studies (newest first, undated last) is read from the index instead of sorting them all
(measured at 1 M studies: 740 ms -> 22 ms p95 for the first page; benchmarks/catalog.py).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_studies_date", table_name="studies")
    op.execute(
        "CREATE INDEX ix_studies_date_pg ON studies "
        "(study_date NULLS FIRST, study_time NULLS FIRST, study_instance_uid)"
    )
