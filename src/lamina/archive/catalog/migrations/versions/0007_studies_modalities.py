"""Studies keep the modalities of their series (``\\ANN\\SM\\``), and the study-order index
carries them: ``ModalitiesInStudy`` is tested on the index entry, so a deep page of the worklist
walks one index instead of probing the series of every study it skips (benchmarks/catalog.py).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("studies", sa.Column("modalities", sa.Text(), nullable=False, server_default=""))
    if bind.dialect.name == "postgresql":
        op.execute(
            "UPDATE studies SET modalities = found.modalities FROM ("
            " SELECT study_instance_uid,"
            " E'\\\\' || string_agg(DISTINCT modality, E'\\\\' ORDER BY modality) || E'\\\\' AS modalities"
            " FROM series GROUP BY study_instance_uid) AS found"
            " WHERE studies.study_instance_uid = found.study_instance_uid"
        )
        op.drop_index("ix_studies_date_pg", table_name="studies")
        op.execute(
            "CREATE INDEX ix_studies_date_pg ON studies "
            "(study_date NULLS FIRST, study_time NULLS FIRST, study_instance_uid) INCLUDE (modalities)"
        )
        return
    found: dict[str, list[str]] = {}
    rows = bind.execute(sa.text("SELECT DISTINCT study_instance_uid, modality FROM series ORDER BY 1, 2"))
    for study, modality in rows:
        found.setdefault(study, []).append(modality)
    if found:
        values = [
            {"study": study, "modalities": "\\" + "\\".join(names) + "\\"} for study, names in found.items()
        ]
        bind.execute(
            sa.text("UPDATE studies SET modalities = :modalities WHERE study_instance_uid = :study"), values
        )
    op.drop_index("ix_studies_date", table_name="studies")
    op.create_index(
        "ix_studies_date", "studies", ["study_date", "study_time", "study_instance_uid", "modalities"]
    )
