"""Patients' opposition to the research use of their slides (French law: a patient may oppose the
reuse of their data, at any time, without giving a reason).

At a **site**, an opposition names the patient by their PatientID in a lab (``consents``, one row
per decision, never updated: the newest decision of a patient in a lab is in force, and the rows
are the history, with who recorded each and from where). It comes from the LIS (``POST
/fhir/Consent``) or the operator (``lamina consent deny|allow``). Only a patient who has slides in
the lab may be named: an unknown PatientID is refused (:class:`NotFoundError`), not kept for later,
so that a mistyped identifier is noticed at once rather than silently protecting nobody. A deny
refuses the patient's slides still queued for the archive (``transfers``); those already sent are
counted in :attr:`Consent.at_archive`, for the push to tell the archive.

At the **archive**, the patient is known by their pseudonym only: :func:`withdraw` records the
site's word (source ``site``) and marks every slide received of that pseudonym from that lab
withdrawn from research, at once.

The audit log names the patient by the site key's pseudonym (``patient/FINESS/PSEUDONYM``), never
by the PatientID.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import NotFoundError, RequestError
from lamina.exchange.keys import ExchangeKeys
from lamina.governance.model import check_finess

__all__ = [
    "DECISIONS",
    "PURPOSE",
    "SOURCES",
    "Consent",
    "check_patient_id",
    "opposed",
    "opposed_pseudonym",
    "record",
    "withdraw",
]

#: deny: the patient opposes research use; allow: the opposition is lifted
DECISIONS = ("deny", "allow")
#: who told lamina: the LIS over FHIR, the operator, the site (at the archive)
SOURCES = ("fhir", "cli", "site")
#: the only purpose an opposition is about, today
PURPOSE = "research"
_MAX_ID = 64
_MAX_FHIR_ID = 128
_MAX_REASON = 1000


@dataclass(frozen=True)
class Consent:
    """A decision recorded at a site."""

    id: int
    tenant: str
    #: the patient's pseudonym under the site key: what the archive and the audit log know
    patient_pseudonym: str
    decision: str
    source: str
    fhir_id: str | None
    actor: str
    recorded_at: dt.datetime
    #: the patient's slides in the lab
    slides: int
    #: their transfers still queued, refused by a deny
    refused: int
    #: their slides already sent to the archive (which the push tells to withdraw them)
    at_archive: int

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``--json``."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "patient_pseudonym": self.patient_pseudonym,
            "decision": self.decision,
            "purpose": PURPOSE,
            "source": self.source,
            "fhir_id": self.fhir_id,
            "actor": self.actor,
            "recorded_at": self.recorded_at.isoformat(),
            "slides": self.slides,
            "transfers_refused": self.refused,
            "at_archive": self.at_archive,
        }


def check_patient_id(value: str, parameter: str = "PATIENT_ID") -> str:
    """``value`` trimmed if it can be a PatientID (LO: 1 to 64 printable characters), else
    :class:`RequestError` (which does not repeat it)."""
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > _MAX_ID or not text.isprintable() or "\\" in text:
        raise RequestError(parameter, f"a PatientID is 1 to {_MAX_ID} printable characters, without '\\'")
    return text


def _patient_slides(tenant: str, patient_id: str) -> Any:
    """The ids of the slides of ``patient_id`` in ``tenant`` (a subquery)."""
    return (
        select(t.slides.c.id)
        .select_from(
            t.slides.join(t.studies, t.slides.c.study_instance_uid == t.studies.c.study_instance_uid).join(
                t.patients, t.studies.c.patient_pk == t.patients.c.pk
            )
        )
        .where(t.slides.c.tenant == tenant, t.patients.c.patient_id == patient_id)
    )


def record(
    catalog: Catalog,
    tenant: str,
    patient_id: str,
    decision: str,
    actor: str,
    source: str,
    fhir_id: str | None = None,
    *,
    keys: ExchangeKeys,
    reason: str | None = None,
) -> Consent:
    """Record ``decision`` (deny or allow research use) for the patient ``patient_id`` of the lab
    ``tenant`` at a site, audited with the patient's pseudonym under ``keys``' site key.

    Raises
    ------
    NotFoundError
        The patient has no slide in the lab (nothing is recorded).
    RequestError
        A parameter is malformed (``decision``, ``source``, ``fhir_id``, ``reason``, the PatientID).
    """
    code = check_finess(tenant, "tenant")
    patient = check_patient_id(patient_id)
    if decision not in DECISIONS:
        raise RequestError("decision", f"{decision!r}: deny or allow")
    if source not in SOURCES:
        raise RequestError("source", f"{source!r}: one of {', '.join(SOURCES)}")
    if fhir_id is not None and (not fhir_id or len(fhir_id) > _MAX_FHIR_ID or not fhir_id.isprintable()):
        raise RequestError("id", f"a resource id is 1 to {_MAX_FHIR_ID} printable characters")
    if reason is not None and (len(reason) > _MAX_REASON or not reason.replace("\n", " ").isprintable()):
        raise RequestError("--reason", f"at most {_MAX_REASON} printable characters")
    pseudonym = keys.patient_pseudonym(patient)
    now = dt.datetime.now(dt.UTC)
    theirs = _patient_slides(code, patient)
    with catalog.begin() as conn:
        slides = int(conn.execute(select(func.count()).select_from(theirs.subquery())).scalar_one())
        if not slides:
            raise NotFoundError(
                f"lab {code}: this patient has no slide here; an opposition is recorded for a patient "
                "of the lab (check the PatientID and the lab)"
            )
        inserted = conn.execute(
            insert(t.consents).values(
                tenant=code,
                patient_id=patient,
                decision=decision,
                purpose=PURPOSE,
                source=source,
                fhir_id=fhir_id,
                reason=reason or None,
                actor=actor,
                recorded_at=now,
            )
        )
        consent_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
        refused = 0
        if decision == "deny":
            refused = conn.execute(
                update(t.transfers)
                .where(t.transfers.c.status == "queued", t.transfers.c.slide_id.in_(theirs))
                .values(status="refused", reason=f"the patient opposes research use (consent {consent_id})")
            ).rowcount
        at_archive = int(
            conn.execute(
                select(func.count()).where(
                    t.transfers.c.status.in_(("sent", "verified")), t.transfers.c.slide_id.in_(theirs)
                )
            ).scalar_one()
        )
        audit.append(
            conn,
            actor,
            "consent",
            f"patient/{code}/{pseudonym}",
            {
                "decision": decision,
                "purpose": PURPOSE,
                "source": source,
                "fhir_id": fhir_id,
                "slides": slides,
                "transfers_refused": refused,
                "at_archive": at_archive,
            },
        )
    return Consent(
        consent_id, code, pseudonym, decision, source, fhir_id, actor, now, slides, refused, at_archive
    )


def _latest(conn: Connection, tenant: str, column: Any, value: str) -> str | None:
    query = (
        select(t.consents.c.decision)
        .where(t.consents.c.tenant == tenant, column == value)
        .order_by(t.consents.c.id.desc())
        .limit(1)
    )
    found = conn.execute(query).scalar()
    return None if found is None else str(found)


def opposed(conn: Connection, tenant: str, patient_id: str) -> bool:
    """Whether the patient ``patient_id`` of ``tenant`` opposes research use now (at a site)."""
    return _latest(conn, tenant, t.consents.c.patient_id, patient_id) == "deny"


def opposed_pseudonym(conn: Connection, tenant: str, patient_pseudonym: str) -> bool:
    """Whether the site ``tenant`` said that the patient of this pseudonym opposes (at the
    archive): a slide of theirs received later is withdrawn at once."""
    return _latest(conn, tenant, t.consents.c.patient_pseudonym, patient_pseudonym) == "deny"


def withdraw(catalog: Catalog, tenant: str, patient_pseudonym: str, actor: str) -> int:
    """At the archive: record that the patient of ``patient_pseudonym`` at the lab ``tenant``
    opposes research use, and withdraw every slide received of theirs from that lab (audited);
    the number of slides withdrawn now (0 when none, or all were already)."""
    code = check_finess(tenant, "tenant")
    pseudonym = patient_pseudonym.strip().lower()
    if len(pseudonym) != 64 or any(c not in "0123456789abcdef" for c in pseudonym):
        raise RequestError("patient_pseudonym", "a patient's pseudonym is 64 hexadecimal digits")
    now = dt.datetime.now(dt.UTC)
    received = t.archive_received
    with catalog.begin() as conn:
        conn.execute(
            insert(t.consents).values(
                tenant=code,
                patient_pseudonym=pseudonym,
                decision="deny",
                purpose=PURPOSE,
                source="site",
                actor=actor,
                recorded_at=now,
            )
        )
        withdrawn = conn.execute(
            update(received)
            .where(
                received.c.tenant == code,
                received.c.patient_pseudonym == pseudonym,
                received.c.withdrawn_at.is_(None),
            )
            .values(withdrawn_at=now)
        ).rowcount
        audit.append(
            conn,
            actor,
            "withdraw",
            f"patient/{code}/{pseudonym}",
            {"purpose": PURPOSE, "slides": withdrawn},
        )
    return int(withdrawn)
