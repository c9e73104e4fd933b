"""The series of a study by study and modality: ``ModalitiesInStudy`` (is there a series of this
study with that modality?) becomes an index-only probe, and a deep page of studies walks indexes
alone (benchmarks/catalog.py). The index replaces ``ix_series_study``, whose lookups it serves.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_series_study_modality", "series", ["study_instance_uid", "modality"])
    op.drop_index("ix_series_study", table_name="series")
