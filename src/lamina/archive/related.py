"""The slides a pathologist compares with the one open: the other slides of its block, and the
patient's prior slides.

The block
    is the specimen the slide was cut from, as the catalog keeps it: the slide's Specimen
    Identifier (DICOM (0040,0551), ``slides.specimen_id``, e.g. ``S26-00123-A1``), in the same lab.
    Slides of one block are the serial sections (HE, PAS, immunostains) of that specimen, their
    Container Identifier (the slide's barcode) their own. A slide whose specimen is unknown has no
    block: the other slides of its case (study) stand for it (``block_by`` says ``"case"``).
Priors
    are the slides of the patient's other cases (studies of the same patient), newest first
    (study date, undated last); an unidentified slide has none.

Both lists keep what the caller may see, as a condition on ``series`` (QIDO-RS's:
:func:`lamina.governance.decide.visible_series`, passed in from above) in the query itself, and
are bounded: at most ``limit`` slides each, ``more`` saying when there were others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, select

from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t

__all__ = ["MAX_LIMIT", "Related", "RelatedSlide", "related_slides"]

#: The most slides of one list.
MAX_LIMIT = 50

_JOINED = t.slides.join(t.studies, t.slides.c.study_instance_uid == t.studies.c.study_instance_uid).join(
    t.series, t.slides.c.series_instance_uid == t.series.c.series_instance_uid
)
_COLUMNS = (
    t.slides.c.id,
    t.slides.c.study_instance_uid,
    t.slides.c.series_instance_uid,
    t.slides.c.container_id,
    t.slides.c.specimen_id,
    t.slides.c.stain,
    t.slides.c.organ,
    t.slides.c.expired_at,
    t.studies.c.tenant,
    t.studies.c.accession_number,
    t.studies.c.study_date,
    t.studies.c.patient_pk,
    t.series.c.series_number,
)


@dataclass(frozen=True)
class RelatedSlide:
    slide_id: str
    study: str
    series: str
    tenant: str
    accession: str | None
    date: str | None  # the case's date, YYYY-MM-DD
    container: str
    specimen: str | None
    stain: str | None
    organ: str | None
    expired: bool

    @property
    def label(self) -> str:
        return self.specimen or self.container

    def as_dict(self) -> dict[str, Any]:
        return {
            "slide": self.slide_id,
            "study": self.study,
            "series": self.series,
            "lab": self.tenant,
            "accession": self.accession,
            "date": self.date,
            "label": self.label,
            "container": self.container,
            "specimen": self.specimen,
            "description": ", ".join(part for part in (self.organ, self.stain) if part),
            "stain": self.stain,
            "organ": self.organ,
            "expired": self.expired,
        }


@dataclass(frozen=True)
class Related:
    slide: RelatedSlide
    #: "specimen" (same Specimen Identifier) or "case" (specimen unknown: the case's other slides)
    block_by: str
    same_block: list[RelatedSlide] = field(default_factory=list)
    priors: list[RelatedSlide] = field(default_factory=list)
    more_same_block: bool = False
    more_priors: bool = False


def _date(text: str | None) -> str | None:
    if not text or len(text) != 8 or not text.isdigit():
        return None
    return f"{text[:4]}-{text[4:6]}-{text[6:]}"


def _slide(row: Any) -> RelatedSlide:
    return RelatedSlide(
        slide_id=str(row.id),
        study=str(row.study_instance_uid),
        series=str(row.series_instance_uid),
        tenant=str(row.tenant),
        accession=row.accession_number or None,
        date=_date(row.study_date),
        container=str(row.container_id),
        specimen=row.specimen_id or None,
        stain=row.stain or None,
        organ=row.organ or None,
        expired=row.expired_at is not None,
    )


def _bounded(conn: Connection, query: Select[Any], limit: int) -> tuple[list[RelatedSlide], bool]:
    rows = conn.execute(query.limit(limit + 1)).all()
    return [_slide(row) for row in rows[:limit]], len(rows) > limit


def related_slides(
    catalog: Catalog, study: str, series: str, visible: ColumnElement[bool], limit: int = 20
) -> Related | None:
    """The slides related to the slide of ``series`` in ``study`` that ``visible`` keeps (None: no
    such slide, or one ``visible`` does not keep); at most ``limit`` (1 to :data:`MAX_LIMIT`) a list."""
    limit = max(1, min(limit, MAX_LIMIT))
    with catalog.engine.connect() as conn:
        row = conn.execute(
            select(*_COLUMNS)
            .select_from(_JOINED)
            .where(t.slides.c.series_instance_uid == series, t.slides.c.study_instance_uid == study, visible)
        ).first()
        if row is None:
            return None
        slide = _slide(row)
        others = (
            select(*_COLUMNS).select_from(_JOINED).where(t.slides.c.series_instance_uid != series, visible)
        )
        if slide.specimen is not None:
            block_by = "specimen"
            block = others.where(t.slides.c.specimen_id == slide.specimen, t.studies.c.tenant == slide.tenant)
        else:
            block_by = "case"
            block = others.where(t.slides.c.study_instance_uid == study)
        block = block.order_by(
            t.studies.c.study_date.desc().nulls_last(),
            t.series.c.series_number.nulls_last(),
            t.slides.c.container_id,
            t.slides.c.id,
        )
        same_block, more_block = _bounded(conn, block, limit)
        priors: list[RelatedSlide] = []
        more_priors = False
        if row.patient_pk is not None:
            # a slide of the block in another case (a block cut again later) is listed once, there
            listed = [each.series for each in same_block]
            prior = others.where(
                t.studies.c.patient_pk == row.patient_pk,
                t.slides.c.study_instance_uid != study,
                t.slides.c.series_instance_uid.not_in(listed),
            ).order_by(
                t.studies.c.study_date.desc().nulls_last(),
                t.studies.c.study_time.desc().nulls_last(),
                t.studies.c.study_instance_uid.desc(),
                t.series.c.series_number.nulls_last(),
                t.slides.c.id,
            )
            priors, more_priors = _bounded(conn, prior, limit)
    return Related(slide, block_by, same_block, priors, more_block, more_priors)
