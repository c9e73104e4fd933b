"""The correspondence kept at the site: which PatientID or AccessionNumber each pseudonym it sent
stands for (``pseudonyms``).

De-identification for a push :func:`remember` s every pseudonym it writes into a slide, per lab,
kind and key (the site's own, or a health-data warehouse's). A lab admin of that lab may
:func:`resolve` one back (``lamina pseudonym resolve``): the only way back from the archive to a
patient, audited under their name (``pseudonym-resolve``, with the pseudonym, never the value).
Only a lab admin holding the role in that very lab: not a platform admin, who administers labs
but sees no patient.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import NotFoundError, PermissionDeniedError, RequestError, StorageError
from lamina.governance.decide import Action, Principal
from lamina.governance.model import check_finess
from lamina.governance.roles import Role

__all__ = ["KINDS", "Resolved", "remember", "resolve"]

#: what is pseudonymised: the DICOM keywords of the attributes
KINDS = ("PatientID", "AccessionNumber")
_MAX = 64


@dataclass(frozen=True)
class Resolved:
    """A pseudonym resolved: the kind of value and the value."""

    kind: str
    value: str
    warehouse: str | None


def _warehouse(warehouse: str | None) -> str:
    """The table's key for a warehouse: "" for the site's own key (a key column is never NULL)."""
    if warehouse is None or warehouse == "":
        return ""
    if len(warehouse) > _MAX or not warehouse.isprintable():
        raise RequestError("--warehouse", f"a warehouse's name is 1 to {_MAX} printable characters")
    return warehouse


def remember(
    conn: Connection, tenant: str, kind: str, value: str, pseudonym: str, warehouse: str | None = None
) -> None:
    """Keep that ``pseudonym`` stands for ``value`` in ``tenant`` (inside the caller's
    transaction); idempotent: remembering it again changes nothing. A pseudonym already kept for
    another value is a :class:`StorageError` (a collision, or a damaged catalog)."""
    code = check_finess(tenant, "tenant")
    if kind not in KINDS:
        raise RequestError("kind", f"{kind!r}: one of {', '.join(KINDS)}")
    for name, text in (("value", value), ("pseudonym", pseudonym)):
        if not text or len(text) > _MAX:
            raise RequestError(name, f"1 to {_MAX} characters")
    name = _warehouse(warehouse)
    row = {"tenant": code, "kind": kind, "warehouse": name, "pseudonym": pseudonym, "value": value}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(t.pseudonyms).values(**row, first_at=dt.datetime.now(dt.UTC))
    conn.execute(statement.on_conflict_do_nothing())
    kept = _value(conn, code, kind, name, pseudonym)
    if kept != value:
        raise StorageError(
            f"lab {code}: the {kind} pseudonym {pseudonym} is kept for another value; check the site "
            "key (a key changed under the same catalog?) before pushing more"
        )


def _value(conn: Connection, tenant: str, kind: str, warehouse: str, pseudonym: str) -> str | None:
    p = t.pseudonyms
    query = select(p.c.value).where(
        p.c.tenant == tenant, p.c.kind == kind, p.c.warehouse == warehouse, p.c.pseudonym == pseudonym
    )
    found = conn.execute(query).scalar()
    return None if found is None else str(found)


def resolve(
    catalog: Catalog,
    who: Principal,
    tenant: str,
    pseudonym: str,
    warehouse: str | None = None,
    *,
    via: str = "",
) -> Resolved:
    """The value ``pseudonym`` stands for in ``tenant`` (under ``warehouse``'s key, else the
    site's), for ``who``, a lab admin of that lab; audited as ``pseudonym-resolve`` with ``who``
    as actor (``via``: how they asked, e.g. the operator's account).

    Raises
    ------
    PermissionDeniedError
        ``who`` is not a lab admin of ``tenant`` (checked first: a refusal says nothing of the
        pseudonym).
    NotFoundError
        No such pseudonym kept in the lab (under that key).
    """
    code = check_finess(tenant, "--tenant")
    if Role.LAB_ADMIN not in who.roles.get(code, frozenset()):
        raise PermissionDeniedError(
            Action.ADMINISTER.value,
            f"lab {code}: only a lab admin of the lab may resolve its pseudonyms",
        )
    name = _warehouse(warehouse)
    text = pseudonym.strip()
    if not text or len(text) > _MAX or not text.isprintable():
        raise RequestError("PSEUDONYM", f"a pseudonym is 1 to {_MAX} printable characters")
    p = t.pseudonyms
    with catalog.begin() as conn:
        row = conn.execute(
            select(p.c.kind, p.c.value).where(
                p.c.tenant == code,
                p.c.warehouse == name,
                p.c.pseudonym.in_({text, text.lower(), text.upper()}),
            )
        ).first()
        if row is None:
            where = f"warehouse {name}" if name else "the site key"
            raise NotFoundError(f"lab {code}: no pseudonym {text} kept under {where}")
        detail: dict[str, object] = {"pseudonym": text, "kind": str(row[0]), "warehouse": name or None}
        if via:
            detail["via"] = via
        audit.append(conn, who.id, "pseudonym-resolve", f"tenant/{code}", detail)
    return Resolved(str(row[0]), str(row[1]), name or None)
