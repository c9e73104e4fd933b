"""What keeps a slide beyond its care retention: a pathologist's flag of interest, and a legal hold.

A **slide of interest** (research, teaching, innovation, expertise, patient follow-up) is never
expired; it is ready to leave, de-identified, for the shared archive. A **legal hold** keeps a
slide whatever the rules say and keeps it readable at once (never moved to a tier it must be
restored from). Both are set on one slide or on every slide of a case (its accession number in a
lab), with a reason; every flag, unflag, hold and release is audited with its actor.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import NotFoundError, RequestError
from lamina.lifecycle.reports import check_accession

__all__ = ["Interest", "Marks", "Target"]

_MAX_REASON = 1000


class Interest(StrEnum):
    """Why a slide is of interest (the report's categories)."""

    RESEARCH = "research"
    TEACHING = "teaching"
    INNOVATION = "innovation"
    EXPERTISE = "expertise"
    FOLLOW_UP = "follow-up"


@dataclass(frozen=True)
class Target:
    """One slide (``slide``), or every slide of a case (``tenant`` and ``accession``)."""

    slide: str | None = None
    tenant: str | None = None
    accession: str | None = None

    def describe(self) -> str:
        return f"slide {self.slide}" if self.slide else f"case {self.accession} of lab {self.tenant}"


def _reason(value: str) -> str:
    text = " ".join(value.split())
    if not text or len(text) > _MAX_REASON:
        raise RequestError("--reason", f"say why, in 1 to {_MAX_REASON} characters")
    return text


def _slides(conn: Connection, target: Target) -> list[tuple[str, str]]:
    """(slide id, tenant) of the target; NotFoundError when it names none."""
    if target.slide:
        query = select(t.slides.c.id, t.slides.c.tenant).where(t.slides.c.id == target.slide)
    else:
        if not target.tenant or not target.accession:
            raise RequestError("--case", "name a slide, or a case by its accession number and lab (--tenant)")
        accession = check_accession(target.accession, "--case")
        query = (
            select(t.slides.c.id, t.slides.c.tenant)
            .select_from(
                t.slides.join(t.studies, t.slides.c.study_instance_uid == t.studies.c.study_instance_uid)
            )
            .where(t.studies.c.tenant == target.tenant, t.studies.c.accession_number == accession)
            .order_by(t.slides.c.id)
        )
    found = [(str(a), str(b)) for a, b in conn.execute(query)]
    if not found:
        raise NotFoundError(f"no {target.describe()} on this node; 'lamina slides' lists them")
    return found


class Marks:
    """Flags of interest and legal holds in one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def flag(self, target: Target, category: Interest, reason: str, actor: str) -> list[str]:
        """Flag the target's slides as of interest (a slide flagged already takes the new
        category and reason); the slide ids."""
        why = _reason(reason)
        now = dt.datetime.now(dt.UTC)
        with self.catalog.begin() as conn:
            slides = _slides(conn, target)
            for slide_id, tenant in slides:
                conn.execute(delete(t.slide_interest).where(t.slide_interest.c.slide_id == slide_id))
                conn.execute(
                    insert(t.slide_interest).values(
                        slide_id=slide_id,
                        category=category.value,
                        reason=why,
                        flagged_at=now,
                        flagged_by=actor,
                    )
                )
                audit.append(
                    conn,
                    actor,
                    "interest-flag",
                    f"slide/{slide_id}",
                    {"tenant": tenant, "category": category.value, "reason": why},
                )
        return [slide_id for slide_id, _ in slides]

    def unflag(self, target: Target, reason: str, actor: str) -> list[str]:
        """Take the flag of interest off the target's slides (those flagged); the slide ids."""
        why = _reason(reason)
        done: list[str] = []
        with self.catalog.begin() as conn:
            for slide_id, tenant in _slides(conn, target):
                if conn.execute(
                    delete(t.slide_interest).where(t.slide_interest.c.slide_id == slide_id)
                ).rowcount:
                    done.append(slide_id)
                    audit.append(
                        conn, actor, "interest-unflag", f"slide/{slide_id}", {"tenant": tenant, "reason": why}
                    )
            if not done:
                raise NotFoundError(f"no slide of {target.describe()} is flagged as of interest")
        return done

    def hold(self, target: Target, reason: str, actor: str) -> list[str]:
        """Put the target's slides under a legal hold (one more hold on a held slide is kept
        too: each is released on its own); the hold ids."""
        why = _reason(reason)
        now = dt.datetime.now(dt.UTC)
        made: list[str] = []
        with self.catalog.begin() as conn:
            for slide_id, tenant in _slides(conn, target):
                hold_id = uuid.uuid4().hex
                conn.execute(
                    insert(t.holds).values(
                        id=hold_id, slide_id=slide_id, reason=why, held_at=now, held_by=actor
                    )
                )
                audit.append(
                    conn,
                    actor,
                    "hold",
                    f"slide/{slide_id}",
                    {"tenant": tenant, "hold": hold_id, "reason": why},
                )
                made.append(hold_id)
        return made

    def release(self, target: Target, reason: str, actor: str) -> list[str]:
        """Release every hold in force on the target's slides; the hold ids released."""
        why = _reason(reason)
        now = dt.datetime.now(dt.UTC)
        released: list[str] = []
        with self.catalog.begin() as conn:
            for slide_id, tenant in _slides(conn, target):
                ids = [
                    str(row[0])
                    for row in conn.execute(
                        select(t.holds.c.id).where(
                            t.holds.c.slide_id == slide_id, t.holds.c.released_at.is_(None)
                        )
                    )
                ]
                if not ids:
                    continue
                conn.execute(
                    update(t.holds).where(t.holds.c.id.in_(ids)).values(released_at=now, released_by=actor)
                )
                audit.append(
                    conn,
                    actor,
                    "hold-release",
                    f"slide/{slide_id}",
                    {"tenant": tenant, "holds": ids, "reason": why},
                )
                released += ids
            if not released:
                raise NotFoundError(f"no hold in force on {target.describe()}")
        return released

    def interest_of(self, slide_id: str) -> tuple[str, str] | None:
        """(category, reason) of a slide of interest, else None."""
        query = select(t.slide_interest.c.category, t.slide_interest.c.reason).where(
            t.slide_interest.c.slide_id == slide_id
        )
        with self.catalog.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (str(row[0]), str(row[1]))

    def held(self, slide_id: str) -> bool:
        """Whether a hold is in force on the slide."""
        query = select(t.holds.c.id).where(t.holds.c.slide_id == slide_id, t.holds.c.released_at.is_(None))
        with self.catalog.engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None
