"""The link to a case's diagnostic report (the CR-ACP) that the LIS gives with it: the URL of the
report's ``presentedForm``, its media type and title, kept on ``case_reports`` so that the viewer
shows a "Report" link beside the case's slides.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("case_reports") as batch:
        batch.add_column(sa.Column("form_url", sa.Text))
        batch.add_column(sa.Column("form_type", sa.String(128)))
        batch.add_column(sa.Column("form_title", sa.String(255)))
