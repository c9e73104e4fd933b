"""Labs, people, roles and grants kept in the catalog (tables ``tenants``, ``people``,
``role_assignments``, ``grants``); every change is appended to the audit log in its own
transaction, with who made it.

The first tenant added to a node adopts what was stored before tenants existed: the cases
(studies), slides and DICOM peers whose ``tenant`` is still empty become its own, in the same
transaction, so a site node that serves one lab needs nothing more. Later tenants adopt nothing:
what is unowned on a node with several labs is assigned explicitly (``lamina ingest --tenant``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping

from sqlalchemy import RowMapping, and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.archive.catalog.times import utc_or_none as _aware
from lamina.errors import NotFoundError, RequestError
from lamina.governance.collections import members
from lamina.governance.model import (
    Grant,
    GranteeKind,
    Permission,
    Person,
    ResourceKind,
    RoleAssignment,
    Tenant,
    check_finess,
    check_person_id,
)
from lamina.governance.roles import Role

__all__ = ["Adopted", "Registry"]

#: the tables whose rows belong to a tenant, adopted by the first one
_OWNED = {"cases": t.studies, "slides": t.slides, "DICOM peers": t.application_entities}

Adopted = dict[str, int]


class Registry:
    """The governance records of one catalog.

    Parameters
    ----------
    catalog
        The catalog that holds them.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- tenants ----------------------------------------------------------------------------------

    def add_tenant(self, finess: str, name: str, actor: str = "lamina") -> tuple[Tenant, Adopted]:
        """Record a lab; the first one adopts what has no tenant yet (the counts, by kind)."""
        tenant = Tenant(check_finess(finess), _name(name))
        now = dt.datetime.now(dt.UTC)
        with self.catalog.begin() as conn:
            if conn.execute(select(t.tenants.c.finess).where(t.tenants.c.finess == tenant.finess)).first():
                raise RequestError("FINESS", f"{tenant.finess} is already a tenant of this node")
            first = conn.execute(select(t.tenants.c.finess).limit(1)).first() is None
            conn.execute(insert(t.tenants).values(finess=tenant.finess, name=tenant.name, created_at=now))
            adopted: Adopted = {}
            if first:
                for kind, table in _OWNED.items():
                    done = conn.execute(
                        update(table).where(table.c.tenant == "").values(tenant=tenant.finess)
                    )
                    adopted[kind] = int(done.rowcount or 0)
            audit.append(
                conn, actor, "tenant-add", f"tenant/{tenant.finess}", {"name": tenant.name, **adopted}
            )
        return tenant, adopted

    def tenants(self) -> list[Tenant]:
        """Every tenant of this node, by FINESS number."""
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(select(t.tenants).order_by(t.tenants.c.finess)).mappings()
            return [Tenant(row["finess"], row["name"]) for row in rows]

    def tenant(self, finess: str) -> Tenant:
        """The tenant of this FINESS number; :class:`NotFoundError` naming the fix if none."""
        code = check_finess(finess)
        with self.catalog.engine.connect() as conn:
            return _tenant(conn, code)

    # -- people and roles -------------------------------------------------------------------------

    def add_person(
        self,
        person_id: str,
        tenant: str,
        roles: Iterable[Role],
        display_name: str = "",
        actor: str = "lamina",
    ) -> Person:
        """Give ``person_id`` (created if new) ``roles`` in ``tenant``; roles held already stay."""
        pid = check_person_id(person_id)
        wanted = sorted(set(roles))
        if not wanted:
            raise RequestError("--role", "name at least one role: " + ", ".join(role.value for role in Role))
        now = dt.datetime.now(dt.UTC)
        with self.catalog.begin() as conn:
            code = _tenant(conn, check_finess(tenant, "--tenant")).finess
            known = conn.execute(select(t.people.c.id).where(t.people.c.id == pid)).first() is not None
            if not known:
                conn.execute(
                    insert(t.people).values(
                        id=pid, display_name=_name(display_name, "", "--name"), created_at=now
                    )
                )
            elif display_name:
                conn.execute(
                    update(t.people)
                    .where(t.people.c.id == pid)
                    .values(display_name=_name(display_name, parameter="--name"))
                )
            held = {
                str(row[0])
                for row in conn.execute(
                    select(t.role_assignments.c.role).where(
                        t.role_assignments.c.person_id == pid, t.role_assignments.c.tenant == code
                    )
                )
            }
            added = [role for role in wanted if role.value not in held]
            for role in added:
                conn.execute(
                    insert(t.role_assignments).values(
                        person_id=pid, tenant=code, role=role.value, created_at=now
                    )
                )
            audit.append(
                conn,
                actor,
                "role-add",
                f"person/{pid}",
                {"tenant": code, "roles": [role.value for role in added], "created": not known},
            )
        return self.person(pid)

    def remove_roles(
        self, person_id: str, tenant: str, roles: Iterable[Role] = (), actor: str = "lamina"
    ) -> Person:
        """Take ``roles`` in ``tenant`` from the person (none named: every role held there);
        :class:`NotFoundError` if the person holds none of them there. The principals kept by
        servers see it within their cache's bound (30 s)."""
        pid = check_person_id(person_id)
        code = check_finess(tenant, "--tenant")
        named = sorted({role.value for role in roles})
        with self.catalog.begin() as conn:
            query = select(t.role_assignments.c.role).where(
                t.role_assignments.c.person_id == pid, t.role_assignments.c.tenant == code
            )
            held = {str(row[0]) for row in conn.execute(query)}
            taken = sorted(held & set(named)) if named else sorted(held)
            if not taken:
                raise NotFoundError(
                    f"{pid} holds {'none of ' + ', '.join(named) if named else 'no role'} in {code}; "
                    "'lamina users list' shows the roles held"
                )
            conn.execute(
                delete(t.role_assignments).where(
                    t.role_assignments.c.person_id == pid,
                    t.role_assignments.c.tenant == code,
                    t.role_assignments.c.role.in_(taken),
                )
            )
            audit.append(conn, actor, "role-remove", f"person/{pid}", {"tenant": code, "roles": taken})
        return self.person(pid)

    def person(self, person_id: str) -> Person:
        """The person and every role they hold; :class:`NotFoundError` if unknown."""
        pid = check_person_id(person_id)
        with self.catalog.engine.connect() as conn:
            row = conn.execute(select(t.people).where(t.people.c.id == pid)).mappings().first()
            if row is None:
                raise NotFoundError(f"no person {pid!r} on this node; add one with 'lamina users add'")
            return _person(conn, row)

    def people(self, tenant: str | None = None) -> list[Person]:
        """Everyone (or everyone holding a role in ``tenant``), by identifier."""
        query = select(t.people).order_by(t.people.c.id)
        if tenant is not None:
            code = check_finess(tenant, "--tenant")
            members = select(t.role_assignments.c.person_id).where(t.role_assignments.c.tenant == code)
            query = query.where(t.people.c.id.in_(members))
        with self.catalog.engine.connect() as conn:
            return [_person(conn, row) for row in conn.execute(query).mappings().all()]

    # -- grants -----------------------------------------------------------------------------------

    def add_grant(
        self,
        tenant: str,
        grantee_kind: GranteeKind,
        grantee: str,
        resource_kind: ResourceKind,
        resource: str,
        permission: Permission = Permission.READ,
        expires_at: dt.datetime | None = None,
        actor: str = "lamina",
    ) -> Grant:
        """Let ``grantee`` have ``permission`` on one of ``tenant``'s slides, cases or collections, until
        ``expires_at`` (None: until revoked). The resource must belong to ``tenant``."""
        now = dt.datetime.now(dt.UTC)
        if expires_at is not None and expires_at <= now:
            raise RequestError("--expires", f"{expires_at.isoformat()} is already past")
        grantee = _grantee(grantee_kind, grantee)
        with self.catalog.begin() as conn:
            code = _tenant(conn, check_finess(tenant, "--tenant")).finess
            if grantee_kind is GranteeKind.TENANT:
                _tenant(conn, grantee)
            owner = _owner(conn, resource_kind, resource)
            if owner != code:
                # the same answer whether it belongs to another lab or does not exist
                raise NotFoundError(f"no {resource_kind.value} {resource!r} in tenant {code}")
            grant = Grant(
                uuid.uuid4().hex,
                code,
                grantee_kind,
                grantee,
                resource_kind,
                resource,
                permission,
                expires_at,
                now,
                actor,
            )
            conn.execute(
                insert(t.grants).values(
                    id=grant.id,
                    tenant=code,
                    grantee_kind=grantee_kind.value,
                    grantee=grantee,
                    resource_kind=resource_kind.value,
                    resource=resource,
                    permission=permission.value,
                    expires_at=expires_at,
                    created_at=now,
                    created_by=actor,
                )
            )
            audit.append(
                conn,
                actor,
                "grant-add",
                f"grant/{grant.id}",
                {
                    "tenant": code,
                    "grantee": f"{grantee_kind.value}:{grantee}",
                    "resource": f"{resource_kind.value}:{resource}",
                    "permission": permission.value,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                },
            )
        return grant

    def grants(
        self, tenant: str | None = None, *, include_ended: bool = False, now: dt.datetime | None = None
    ) -> list[Grant]:
        """The grants given by ``tenant`` (default: every tenant), newest first; only the active
        ones unless ``include_ended`` (revoked or expired too)."""
        when = now or dt.datetime.now(dt.UTC)
        query = select(t.grants).order_by(t.grants.c.created_at.desc(), t.grants.c.id)
        if tenant is not None:
            query = query.where(t.grants.c.tenant == check_finess(tenant, "--tenant"))
        if not include_ended:
            query = query.where(
                t.grants.c.revoked_at.is_(None),
                or_(t.grants.c.expires_at.is_(None), t.grants.c.expires_at > when),
            )
        with self.catalog.engine.connect() as conn:
            return [_grant(row) for row in conn.execute(query).mappings()]

    def known_person(self, person_id: str) -> Person | None:
        """The person, or None when this node does not know them (no error: for sign-in)."""
        with self.catalog.engine.connect() as conn:
            row = conn.execute(select(t.people).where(t.people.c.id == person_id)).mappings().first()
            return None if row is None else _person(conn, row)

    def existing_tenants(self, codes: Iterable[str]) -> set[str]:
        """Those of ``codes`` that are tenants of this node."""
        wanted = sorted(set(codes))
        if not wanted:
            return set()
        query = select(t.tenants.c.finess).where(t.tenants.c.finess.in_(wanted))
        with self.catalog.engine.connect() as conn:
            return {row[0] for row in conn.execute(query)}

    def grants_reaching(
        self, person_id: str, tenants: Iterable[str], now: dt.datetime | None = None
    ) -> list[Grant]:
        """The grants in force given to the person, or to a tenant in ``tenants`` (theirs)."""
        when = now or dt.datetime.now(dt.UTC)
        whom = [and_(t.grants.c.grantee_kind == GranteeKind.PERSON.value, t.grants.c.grantee == person_id)]
        codes = sorted(set(tenants))
        if codes:
            whom.append(
                and_(t.grants.c.grantee_kind == GranteeKind.TENANT.value, t.grants.c.grantee.in_(codes))
            )
        query = select(t.grants).where(
            or_(*whom),
            t.grants.c.revoked_at.is_(None),
            or_(t.grants.c.expires_at.is_(None), t.grants.c.expires_at > when),
        )
        with self.catalog.engine.connect() as conn:
            return [_grant(row) for row in conn.execute(query).mappings()]

    def collections_of(self, grants: Iterable[Grant]) -> Mapping[str, tuple[str, ...]]:
        """The slides of each collection ``grants`` are on (for the decision on one slide)."""
        wanted = [g.resource for g in grants if g.resource_kind is ResourceKind.COLLECTION]
        if not wanted:
            return {}
        with self.catalog.engine.connect() as conn:
            return members(conn, wanted)

    def revoke_grant(self, grant_id: str, actor: str = "lamina") -> Grant:
        """End a grant now; :class:`NotFoundError` if there is no such grant still in force."""
        now = dt.datetime.now(dt.UTC)
        with self.catalog.begin() as conn:
            done = conn.execute(
                update(t.grants)
                .where(and_(t.grants.c.id == grant_id, t.grants.c.revoked_at.is_(None)))
                .values(revoked_at=now, revoked_by=actor)
            )
            if not done.rowcount:
                raise NotFoundError(
                    f"no grant {grant_id!r} in force on this node; 'lamina grants list' shows them"
                )
            row = conn.execute(select(t.grants).where(t.grants.c.id == grant_id)).mappings().one()
            audit.append(conn, actor, "grant-revoke", f"grant/{grant_id}", {"tenant": row["tenant"]})
        return _grant(row)


def _name(value: str, default: str | None = None, parameter: str = "NAME") -> str:
    text = " ".join(value.split())
    if not text:
        if default is not None:
            return default
        raise RequestError(parameter, "give the lab's name, e.g. 'Anatomie pathologique, CHU de Lyon'")
    if len(text) > 255 or not text.isprintable():
        raise RequestError(parameter, "at most 255 printable characters")
    return text


def _tenant(conn: Connection, finess: str) -> Tenant:
    row = conn.execute(select(t.tenants).where(t.tenants.c.finess == finess)).mappings().first()
    if row is None:
        raise NotFoundError(
            f"no tenant {finess} on this node; add it with 'lamina tenants add {finess} NAME' "
            "('lamina tenants list' shows them)"
        )
    return Tenant(row["finess"], row["name"])


def _grantee(kind: GranteeKind, value: str) -> str:
    if kind is GranteeKind.TENANT:
        return check_finess(value, "--to")
    return check_person_id(value, "--to")  # a person's, or a project's (the same rule)


def _owner(conn: Connection, kind: ResourceKind, resource: str) -> str | None:
    if kind is ResourceKind.SLIDE:
        query = select(t.slides.c.tenant).where(t.slides.c.id == resource)
    elif kind is ResourceKind.COLLECTION:
        query = select(t.collections.c.tenant).where(t.collections.c.id == resource)
    else:
        query = select(t.studies.c.tenant).where(t.studies.c.study_instance_uid == resource)
    row = conn.execute(query).first()
    return None if row is None else str(row[0])


def _person(conn: Connection, row: RowMapping) -> Person:
    roles = conn.execute(
        select(t.role_assignments.c.tenant, t.role_assignments.c.role)
        .where(t.role_assignments.c.person_id == row["id"])
        .order_by(t.role_assignments.c.tenant, t.role_assignments.c.role)
    )
    return Person(row["id"], row["display_name"], tuple(RoleAssignment(str(a), Role(b)) for a, b in roles))


def _grant(row: RowMapping) -> Grant:
    return Grant(
        row["id"],
        row["tenant"],
        GranteeKind(row["grantee_kind"]),
        row["grantee"],
        ResourceKind(row["resource_kind"]),
        row["resource"],
        Permission(row["permission"]),
        _aware(row["expires_at"]),
        _aware(row["created_at"]) or dt.datetime.now(dt.UTC),
        row["created_by"],
        _aware(row["revoked_at"]),
        row["revoked_by"],
    )
