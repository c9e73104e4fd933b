"""Collections of a lab's slides kept in the catalog (tables ``collections`` and
``collection_slides``): a teaching set, a research cohort, the slides sent for a second opinion.

A collection belongs to one lab and holds only that lab's slides; the lab's admins make it, fill
it and grant it (``lamina grants add --on collection:ID``): a grant on a collection reaches the
slides it holds when the grant is used, so a slide added later is reached and one removed is not
(within the bound of the principals' cache, 30 s). A deleted slide leaves its collections with it
(:mod:`lamina.archive.delete`). Every change is appended to the audit log with its actor.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping

from sqlalchemy import RowMapping, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.times import utc
from lamina.errors import NotFoundError, RequestError
from lamina.governance.model import MAX_COLLECTION_SLIDES, Collection, ResourceKind, check_finess

__all__ = ["Collections", "members"]

_C, _S = t.collections, t.collection_slides


class Collections:
    """The collections of one catalog.

    Parameters
    ----------
    catalog
        The catalog that holds them.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def add(self, tenant: str, name: str, slides: Iterable[str] = (), actor: str = "lamina") -> Collection:
        """Make a collection of ``tenant``'s ``slides`` (none: empty) named ``name`` (unique in
        the lab)."""
        code = check_finess(tenant, "--tenant")
        label = _name(name)
        now = dt.datetime.now(dt.UTC)
        ident = uuid.uuid4().hex
        wanted = _slide_ids(slides)
        with self.catalog.begin() as conn:
            _tenant_exists(conn, code)
            if conn.execute(select(_C.c.id).where(_C.c.tenant == code, _C.c.name == label)).first():
                raise RequestError("NAME", f"lab {code} already has a collection named {label!r}")
            try:
                conn.execute(
                    insert(_C).values(id=ident, tenant=code, name=label, created_at=now, created_by=actor)
                )
            except IntegrityError:  # made at the same moment by another request
                raise RequestError("NAME", f"lab {code} already has a collection named {label!r}") from None
            added = _put(conn, ident, code, wanted, now)
            audit.append(
                conn,
                actor,
                "collection-add",
                f"collection/{ident}",
                {"tenant": code, "name": label, "slides": added},
            )
        return self.get(ident)

    def get(self, collection_id: str, tenant: str | None = None) -> Collection:
        """The collection and its slides; :class:`NotFoundError` if there is none (in ``tenant``,
        when named: another lab's collection is answered as absent)."""
        with self.catalog.engine.connect() as conn:
            row = _row(conn, collection_id, tenant)
            slides = conn.execute(
                select(_S.c.slide_id)
                .where(_S.c.collection_id == row["id"])
                .order_by(_S.c.added_at, _S.c.slide_id)
            )
            return _collection(row, tuple(str(r[0]) for r in slides))

    def find(self, tenant: str | None = None) -> list[Collection]:
        """Every collection (of ``tenant``), by lab and name, with its slides."""
        query = select(_C).order_by(_C.c.tenant, _C.c.name)
        if tenant is not None:
            query = query.where(_C.c.tenant == check_finess(tenant, "--tenant"))
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            held = members(conn, [row["id"] for row in rows])
        return [_collection(row, held.get(row["id"], ())) for row in rows]

    def add_slides(
        self, collection_id: str, slides: Iterable[str], tenant: str | None = None, actor: str = "lamina"
    ) -> Collection:
        """Put ``slides`` (of the collection's lab) in it; those already in stay."""
        wanted = _slide_ids(slides, required=True)
        now = dt.datetime.now(dt.UTC)
        with self.catalog.begin() as conn:
            row = _row(conn, collection_id, tenant, lock=True)
            added = _put(conn, row["id"], row["tenant"], wanted, now)
            audit.append(
                conn,
                actor,
                "collection-slides-add",
                f"collection/{row['id']}",
                {"tenant": row["tenant"], "slides": added},
            )
        return self.get(row["id"])

    def remove_slides(
        self, collection_id: str, slides: Iterable[str], tenant: str | None = None, actor: str = "lamina"
    ) -> Collection:
        """Take ``slides`` out of it; :class:`NotFoundError` when none of them is in it."""
        wanted = _slide_ids(slides, required=True)
        with self.catalog.begin() as conn:
            row = _row(conn, collection_id, tenant, lock=True)
            done = conn.execute(delete(_S).where(_S.c.collection_id == row["id"], _S.c.slide_id.in_(wanted)))
            if not done.rowcount:
                raise NotFoundError(
                    f"none of {', '.join(wanted)} is in collection {row['id']}; "
                    "'lamina collections show' lists its slides"
                )
            audit.append(
                conn,
                actor,
                "collection-slides-remove",
                f"collection/{row['id']}",
                {"tenant": row["tenant"], "slides": wanted},
            )
        return self.get(row["id"])

    def delete(self, collection_id: str, tenant: str | None = None, actor: str = "lamina") -> Collection:
        """Delete the collection (its slides stay) and revoke the grants in force on it."""
        found = self.get(collection_id, tenant)
        now = dt.datetime.now(dt.UTC)
        with self.catalog.begin() as conn:
            _row(conn, found.id, tenant, lock=True)
            revoked = conn.execute(
                update(t.grants)
                .where(
                    t.grants.c.resource_kind == ResourceKind.COLLECTION.value,
                    t.grants.c.resource == found.id,
                    t.grants.c.revoked_at.is_(None),
                )
                .values(revoked_at=now, revoked_by=actor)
            )
            conn.execute(delete(_S).where(_S.c.collection_id == found.id))
            conn.execute(delete(_C).where(_C.c.id == found.id))
            audit.append(
                conn,
                actor,
                "collection-delete",
                f"collection/{found.id}",
                {"tenant": found.tenant, "name": found.name, "grants_revoked": int(revoked.rowcount or 0)},
            )
        return found


def members(conn: Connection, collection_ids: Iterable[str]) -> Mapping[str, tuple[str, ...]]:
    """The slide ids each collection of ``collection_ids`` holds (those with none are absent)."""
    wanted = sorted(set(collection_ids))
    if not wanted:
        return {}
    query = (
        select(_S.c.collection_id, _S.c.slide_id)
        .where(_S.c.collection_id.in_(wanted))
        .order_by(_S.c.collection_id, _S.c.added_at, _S.c.slide_id)
    )
    held: dict[str, list[str]] = {}
    for collection_id, slide_id in conn.execute(query):
        held.setdefault(str(collection_id), []).append(str(slide_id))
    return {key: tuple(value) for key, value in held.items()}


def _put(conn: Connection, collection_id: str, tenant: str, slides: list[str], now: dt.datetime) -> list[str]:
    """Insert the slides not in the collection yet (each of ``tenant``); the ids added."""
    if not slides:
        return []
    owned = {
        str(row[0])
        for row in conn.execute(
            select(t.slides.c.id).where(t.slides.c.id.in_(slides), t.slides.c.tenant == tenant)
        )
    }
    absent = [slide for slide in slides if slide not in owned]
    if absent:
        # the same answer whether a slide belongs to another lab or does not exist
        raise NotFoundError(f"no slide {', '.join(absent)} in lab {tenant}; 'lamina slides' lists them")
    there = {
        str(row[0])
        for row in conn.execute(
            select(_S.c.slide_id).where(_S.c.collection_id == collection_id, _S.c.slide_id.in_(slides))
        )
    }
    added = [slide for slide in slides if slide not in there]
    count = conn.execute(
        select(func.count()).select_from(_S).where(_S.c.collection_id == collection_id)
    ).scalar_one()
    if int(count) + len(added) > MAX_COLLECTION_SLIDES:
        raise RequestError(
            "SLIDE",
            f"a collection holds at most {MAX_COLLECTION_SLIDES} slides ({count} there, {len(added)} more "
            "asked): make another collection",
        )
    if added:
        conn.execute(
            insert(_S),
            [{"collection_id": collection_id, "slide_id": slide, "added_at": now} for slide in added],
        )
    return added


def _row(conn: Connection, collection_id: str, tenant: str | None, lock: bool = False) -> RowMapping:
    query = select(_C).where(_C.c.id == collection_id)
    if tenant is not None:
        query = query.where(_C.c.tenant == check_finess(tenant, "--tenant"))
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        where = f" in lab {tenant}" if tenant else " on this node"
        raise NotFoundError(f"no collection {collection_id!r}{where}; 'lamina collections list' lists them")
    return row


def _tenant_exists(conn: Connection, code: str) -> None:
    if conn.execute(select(t.tenants.c.finess).where(t.tenants.c.finess == code)).first() is None:
        raise NotFoundError(f"no tenant {code} on this node; 'lamina tenants list' shows them")


def _slide_ids(slides: Iterable[str], required: bool = False) -> list[str]:
    wanted = list(dict.fromkeys(s.strip() for s in slides if s.strip()))
    if required and not wanted:
        raise RequestError("SLIDE", "name at least one slide by its id ('lamina slides' lists them)")
    bad = [s for s in wanted if len(s) > 64 or not s.isprintable()]
    if bad:
        raise RequestError("SLIDE", f"{bad[0]!r} is not a slide id ('lamina slides' lists them)")
    if len(wanted) > MAX_COLLECTION_SLIDES:
        raise RequestError("SLIDE", f"at most {MAX_COLLECTION_SLIDES} slides at once")
    return wanted


def _name(value: str) -> str:
    text = " ".join(value.split())
    if not text or len(text) > 255 or not text.isprintable():
        raise RequestError(
            "NAME", "name the collection: 1 to 255 printable characters, e.g. 'Teaching: sarcomas'"
        )
    return text


def _collection(row: RowMapping, slides: tuple[str, ...]) -> Collection:
    return Collection(
        row["id"], row["tenant"], row["name"], utc(row["created_at"]), row["created_by"], slides
    )
