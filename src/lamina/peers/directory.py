"""The DICOM peers lamina knows, kept in the catalog (table ``application_entities``).

Only move destinations are recorded now: peers lamina may send to, by C-MOVE or ``lamina send``.
A row also names the lab it belongs to (``tenant``), so that the rights of calling AEs can be
added with tenants without moving peers elsewhere. Adding and removing a peer is audited: a
move destination decides where slides may go.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import RowMapping, delete, insert, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import NotFoundError, RequestError
from lamina.peers.entity import ApplicationEntity, check_ae_title

_TABLE = t.application_entities


def _entity(row: RowMapping) -> ApplicationEntity:
    return ApplicationEntity(row["ae_title"], row["host"], row["port"], row["description"])


class PeerDirectory:
    """The move destinations of an archive, by AE title.

    Parameters
    ----------
    catalog
        The catalog that holds them.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def add(self, entity: ApplicationEntity, actor: str = "lamina") -> None:
        """Record a move destination; :class:`RequestError` if its AE title is already known."""
        known = self.get(entity.ae_title)
        if known is not None:
            raise _duplicate(known)
        try:
            with self.catalog.begin() as conn:
                conn.execute(
                    insert(_TABLE).values(
                        ae_title=entity.ae_title,
                        host=entity.host,
                        port=entity.port,
                        description=entity.description,
                        move_destination=True,
                        tenant="",
                        created_at=dt.datetime.now(dt.UTC),
                    )
                )
                audit.append(
                    conn,
                    actor,
                    "ae-add",
                    f"ae/{entity.ae_title}",
                    {"host": entity.host, "port": entity.port, "move_destination": True},
                )
        except SqlIntegrityError:  # added by another process meanwhile
            known = self.get(entity.ae_title)
            raise _duplicate(known or entity) from None

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

    def remove(self, ae_title: str, actor: str = "lamina") -> ApplicationEntity:
        """Forget a move destination; :class:`NotFoundError` if it is not known."""
        title = check_ae_title(ae_title)
        with self.catalog.begin() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.ae_title == title)).mappings().first()
            if row is None:
                raise NotFoundError(
                    f"no DICOM peer {title!r} in this archive; 'lamina ae list' shows the known ones "
                    "(AE titles are case-sensitive)"
                )
            conn.execute(delete(_TABLE).where(_TABLE.c.ae_title == title))
            audit.append(conn, actor, "ae-remove", f"ae/{title}", {"host": row["host"], "port": row["port"]})
        return _entity(row)


def _duplicate(known: ApplicationEntity) -> RequestError:
    return RequestError(
        "AE title",
        f"{known.ae_title!r} is already known ({known.address}); remove it first with "
        f"'lamina ae remove {known.ae_title}' to change it",
    )
