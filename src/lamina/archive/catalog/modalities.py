"""The modalities of a study, kept on its ``studies`` row (``ModalitiesInStudy``).

A study's row holds the distinct modalities of its series, sorted, between backslashes (the DICOM
value delimiter, which a modality never contains): ``\\ANN\\SM\\``. The study-order index carries
the column, so a search by ``ModalitiesInStudy`` walks that index alone, without probing the
series of every study it passes (a deep page of the worklist skips thousands).

Every change to a study's series calls :func:`refresh` in the same transaction. It locks the
study's row first, so that two transactions adding series to one study are serialised and the
second reads the series the first committed.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, Connection, select, update

from lamina.archive.catalog import tables as t

DELIMITER = "\\"
#: the escape character of the ``LIKE`` patterns below (the delimiter cannot be)
_ESCAPE = "!"


def joined(modalities: Iterable[str]) -> str:
    """The column's value for these modalities: sorted, distinct, delimited on both sides."""
    distinct = sorted({modality for modality in modalities if modality})
    return DELIMITER + DELIMITER.join(distinct) + DELIMITER if distinct else ""


def refresh(conn: Connection, study_instance_uid: str) -> None:
    """Set the study's modalities from its series (inside the caller's transaction)."""
    studies = t.studies.c
    row = studies.study_instance_uid == study_instance_uid
    # FOR NO KEY UPDATE: waits for another refresh, not for the key-share locks of series inserts
    conn.execute(select(studies.study_instance_uid).where(row).with_for_update(key_share=True))
    found = conn.execute(
        select(t.series.c.modality).where(t.series.c.study_instance_uid == study_instance_uid).distinct()
    ).scalars()
    conn.execute(update(t.studies).where(row).values(modalities=joined(found)))


def has(modality: str) -> ColumnElement[bool]:
    """The condition "a series of the study has this modality", on the studies row."""
    escaped = "".join(_ESCAPE + c if c in "%_" + _ESCAPE else c for c in modality)
    pattern = "%" + DELIMITER + escaped + DELIMITER + "%"
    return t.studies.c.modalities.like(pattern, escape=_ESCAPE)
