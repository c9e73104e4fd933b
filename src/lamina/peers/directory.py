"""The DICOM peers lamina knows, kept in the catalog (table ``application_entities``).

A row is one AE title, in one or both of two roles:

- a **move destination** (``move_destination``): lamina may send to it, by C-MOVE or
  ``lamina send``; it has a host and a port;
- a **calling AE** (``calling``): it may associate with lamina's DIMSE server, for its lab
  (``tenant``) and for the operations in ``allowed`` only. An AE title that is not a calling AE
  is refused at association.

Adding and removing a peer is audited: a move destination decides where slides may go, a
calling AE who may read and store a lab's slides.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import RowMapping, delete, insert, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import NotFoundError, RequestError
from lamina.governance.registry import Registry
from lamina.peers.entity import (
    ApplicationEntity,
    CallingEntity,
    Operation,
    check_ae_title,
    check_description,
    format_operations,
    parse_operations,
)

_TABLE = t.application_entities


@dataclass(frozen=True)
class Peer:
    """One known AE title: where lamina sends to it (``destination``), what it may ask when it
    calls (``calling``), or both; its lab and what the lab calls it."""

    ae_title: str
    tenant: str = ""
    description: str = ""
    destination: ApplicationEntity | None = None
    calling: CallingEntity | None = None


def _entity(row: RowMapping) -> ApplicationEntity:
    return ApplicationEntity(row["ae_title"], row["host"], row["port"], row["description"])


def _calling(row: RowMapping) -> CallingEntity:
    return CallingEntity(row["ae_title"], row["tenant"], parse_operations(row["allowed"], "allowed"))


def _peer(row: RowMapping) -> Peer:
    return Peer(
        row["ae_title"],
        row["tenant"],
        row["description"],
        _entity(row) if row["move_destination"] else None,
        _calling(row) if row["calling"] and row["allowed"] else None,
    )


class PeerDirectory:
    """The DICOM peers of an archive, by AE title.

    Parameters
    ----------
    catalog
        The catalog that holds them.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def add(self, entity: ApplicationEntity, actor: str = "lamina", *, tenant: str = "") -> None:
        """Record a move destination; :class:`RequestError` if its AE title is already known."""
        self.add_peer(entity.ae_title, destination=entity, tenant=tenant, actor=actor)

    def add_calling(
        self,
        calling: CallingEntity,
        actor: str = "lamina",
        *,
        destination: ApplicationEntity | None = None,
        description: str = "",
    ) -> None:
        """Record a calling AE (and, with ``destination``, the same AE as a move destination).

        Raises :class:`NotFoundError` if its tenant is not one of this node
        (``lamina tenants add``), :class:`RequestError` if its AE title is already known.
        """
        if destination is not None and destination.ae_title != calling.ae_title:
            raise RequestError("AE title", "a calling AE and its move destination have one AE title")
        self.add_peer(
            calling.ae_title,
            tenant=calling.tenant,
            allowed=calling.allowed,
            destination=destination,
            description=description,
            actor=actor,
        )

    def add_peer(
        self,
        ae_title: str,
        *,
        tenant: str = "",
        allowed: Iterable[Operation] = (),
        destination: ApplicationEntity | None = None,
        description: str = "",
        actor: str = "lamina",
    ) -> Peer:
        """Record an AE title: a calling AE when ``allowed`` names operations (``tenant`` then
        required), a move destination when ``destination`` is given, or both."""
        title = check_ae_title(ae_title)
        operations = format_operations(allowed)
        if not operations and destination is None:
            raise RequestError(
                "AE title", f"{title!r}: give what it may ask (--allow) or where it is (--host)"
            )
        if operations and not tenant:
            raise RequestError("tenant", "a calling AE acts for one lab: give its FINESS number (--tenant)")
        if tenant:
            tenant = Registry(self.catalog).tenant(tenant).finess  # NotFoundError: lamina tenants add
        text = check_description(description or (destination.description if destination else ""))
        known = self.peer(title)
        if known is not None:
            raise _duplicate(known)
        values = {
            "ae_title": title,
            "host": destination.host if destination else None,
            "port": destination.port if destination else None,
            "description": text,
            "move_destination": destination is not None,
            "tenant": tenant,
            "calling": bool(operations),
            "allowed": operations,
            "created_at": dt.datetime.now(dt.UTC),
        }
        details: dict[str, object] = {"tenant": tenant, "move_destination": destination is not None}
        if destination is not None:
            details |= {"host": destination.host, "port": destination.port}
        if operations:
            details |= {"calling": True, "allowed": operations}
        try:
            with self.catalog.begin() as conn:
                conn.execute(insert(_TABLE).values(**values))
                audit.append(conn, actor, "ae-add", f"ae/{title}", details)
        except SqlIntegrityError:  # added by another process meanwhile
            known = self.peer(title)
            if known is None:
                raise
            raise _duplicate(known) from None
        found = self.peer(title)
        assert found is not None
        return found

    def destinations(self) -> list[ApplicationEntity]:
        """Every move destination, by AE title."""
        query = select(_TABLE).where(_TABLE.c.move_destination.is_(True)).order_by(_TABLE.c.ae_title)
        with self.catalog.engine.connect() as conn:
            return [_entity(row) for row in conn.execute(query).mappings()]

    def get(self, ae_title: str) -> ApplicationEntity | None:
        """The move destination of this AE title, or None."""
        title = check_ae_title(ae_title)
        query = select(_TABLE).where(_TABLE.c.ae_title == title, _TABLE.c.move_destination.is_(True))
        with self.catalog.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _entity(row)

    def calling(self, ae_title: str) -> CallingEntity | None:
        """The calling AE of this AE title (its lab and what it may ask), or None: refused at
        association. A title DICOM would not allow is None too (it cannot have been added)."""
        title = ae_title.strip(" ")
        if not title or len(title) > 16:
            return None
        query = select(_TABLE).where(_TABLE.c.ae_title == title, _TABLE.c.calling.is_(True))
        with self.catalog.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None or not row["allowed"] else _calling(row)

    def peer(self, ae_title: str) -> Peer | None:
        """Whatever is known of this AE title, or None."""
        title = check_ae_title(ae_title)
        with self.catalog.engine.connect() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.ae_title == title)).mappings().first()
        return None if row is None else _peer(row)

    def peers(self) -> list[Peer]:
        """Every known AE title, move destination or calling AE, by AE title."""
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(select(_TABLE).order_by(_TABLE.c.ae_title)).mappings()
            return [_peer(row) for row in rows]

    def remove(self, ae_title: str, actor: str = "lamina") -> Peer:
        """Forget a peer (in both its roles); :class:`NotFoundError` if it is not known."""
        title = check_ae_title(ae_title)
        with self.catalog.begin() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.ae_title == title)).mappings().first()
            if row is None:
                raise NotFoundError(
                    f"no DICOM peer {title!r} in this archive; 'lamina ae list' shows the known ones "
                    "(AE titles are case-sensitive)"
                )
            conn.execute(delete(_TABLE).where(_TABLE.c.ae_title == title))
            audit.append(
                conn,
                actor,
                "ae-remove",
                f"ae/{title}",
                {
                    "host": row["host"],
                    "port": row["port"],
                    "tenant": row["tenant"],
                    "allowed": row["allowed"],
                },
            )
        return _peer(row)


def _duplicate(known: Peer) -> RequestError:
    where = f" ({known.destination.address})" if known.destination else ""
    return RequestError(
        "AE title",
        f"{known.ae_title!r} is already known{where}; remove it first with "
        f"'lamina ae remove {known.ae_title}' to change it",
    )
