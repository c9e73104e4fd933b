"""Labs, people, roles and grants as values: no I/O (:mod:`.registry` keeps them in the catalog).

A **tenant** is a pathology structure, known by its FINESS number (the national register of
health establishments: 9 characters, a department code (2 digits, ``2A`` or ``2B``), then 7
digits). A **person** is whoever signs in, by the identifier the sign-in gives (the national
practitioner number that Pro Santé Connect's ``SubjectNameID`` carries, or a local login), and
holds :class:`~lamina.governance.roles.Role` s per tenant. A **collection** is a named set of one
lab's slides (a teaching set, a research cohort, the slides of a second opinion). A **grant** is a
lab's decision to let someone outside its own roles read (or read and annotate) one of its slides,
cases or collections, until an expiry, until revoked.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum

from lamina.errors import RequestError
from lamina.governance.roles import Role

__all__ = [
    "MAX_COLLECTION_SLIDES",
    "Collection",
    "Grant",
    "GranteeKind",
    "Permission",
    "Person",
    "ResourceKind",
    "RoleAssignment",
    "Tenant",
    "check_finess",
    "check_person_id",
]

_FINESS = re.compile(r"(?:\d{2}|2[AB])\d{7}")
_PERSON = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+/-]{0,127}")


def check_finess(value: str, parameter: str = "FINESS") -> str:
    """``value`` if it is a FINESS number (``750712184``, ``2A0000154``), else :class:`RequestError`."""
    text = value.strip().upper()
    if not _FINESS.fullmatch(text):
        raise RequestError(
            parameter,
            f"{value!r} is not a FINESS number: 9 characters, a department code (2 digits, 2A or 2B) "
            "then 7 digits, e.g. 750712184",
        )
    return text


def check_person_id(value: str, parameter: str = "PERSON") -> str:
    """``value`` if it can name a person (letters, digits and ``._@:+/-``, at most 128), else
    :class:`RequestError`."""
    if not _PERSON.fullmatch(value):
        raise RequestError(
            parameter,
            f"{value!r} cannot name a person: 1 to 128 letters, digits or . _ @ : + / -, starting "
            "with a letter or a digit (a login, or the national practitioner number)",
        )
    return value


@dataclass(frozen=True)
class Tenant:
    finess: str
    name: str

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of ``--json`` and of the HTTP API."""
        return {"finess": self.finess, "name": self.name}


@dataclass(frozen=True)
class RoleAssignment:
    tenant: str
    role: Role


@dataclass(frozen=True)
class Person:
    id: str
    display_name: str
    roles: tuple[RoleAssignment, ...] = ()

    def roles_in(self, tenant: str) -> frozenset[Role]:
        """The roles this person holds in ``tenant``."""
        return frozenset(item.role for item in self.roles if item.tenant == tenant)

    def as_dict(self, tenant: str | None = None) -> dict[str, object]:
        """The JSON shape of ``--json`` and of the HTTP API; with ``tenant``, the roles held there
        only (a lab sees nothing of the others)."""
        held = [item for item in self.roles if tenant is None or item.tenant == tenant]
        return {
            "id": self.id,
            "display_name": self.display_name,
            "roles": [{"tenant": item.tenant, "role": item.role.value} for item in held],
        }


class Permission(StrEnum):
    """What a grant allows on its resource."""

    READ = "read"
    READ_ANNOTATE = "read+annotate"


class GranteeKind(StrEnum):
    """Whom a grant is given to."""

    PERSON = "person"
    TENANT = "tenant"
    PROJECT = "project"


class ResourceKind(StrEnum):
    """What a grant is on: a slide (by its lamina id), a case (by its Study Instance UID), or a
    collection of slides (by its id)."""

    SLIDE = "slide"
    CASE = "case"
    COLLECTION = "collection"


#: The most slides a collection holds (a grant on it is read into every principal it reaches).
MAX_COLLECTION_SLIDES = 10_000


@dataclass(frozen=True)
class Collection:
    """A named set of one lab's slides; a grant on it reaches the slides it holds when the grant
    is used (a slide added later is reached too, one removed no longer)."""

    id: str
    tenant: str
    name: str
    created_at: dt.datetime
    created_by: str
    #: the ids of its slides, in the order they were added
    slides: tuple[str, ...] = ()

    def as_dict(self, with_slides: bool = True) -> dict[str, object]:
        """The JSON shape of ``--json`` and of the HTTP API (``with_slides`` False: their count)."""
        shape: dict[str, object] = {
            "id": self.id,
            "tenant": self.tenant,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "slide_count": len(self.slides),
        }
        if with_slides:
            shape["slides"] = list(self.slides)
        return shape


@dataclass(frozen=True)
class Grant:
    id: str
    tenant: str
    grantee_kind: GranteeKind
    grantee: str
    resource_kind: ResourceKind
    resource: str
    permission: Permission
    expires_at: dt.datetime | None
    created_at: dt.datetime
    created_by: str
    revoked_at: dt.datetime | None = None
    revoked_by: str | None = None

    def active(self, now: dt.datetime | None = None) -> bool:
        """Neither revoked nor expired at ``now`` (default: now)."""
        when = now or dt.datetime.now(dt.UTC)
        return self.revoked_at is None and (self.expires_at is None or when < self.expires_at)

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of ``--json`` and of the HTTP API."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "to": {"kind": self.grantee_kind.value, "id": self.grantee},
            "on": {"kind": self.resource_kind.value, "id": self.resource},
            "permission": self.permission.value,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "active": self.active(),
        }


def parse_target(
    value: str, parameter: str, kinds: type[GranteeKind] | type[ResourceKind]
) -> tuple[str, str]:
    """(kind, id) of ``KIND:ID`` (``person:810001234567``, ``slide:SLIDE_ID``); RequestError naming
    ``parameter`` when the kind is not one of ``kinds`` or a part is missing."""
    kind, sep, ident = value.partition(":")
    names = [member.value for member in kinds]
    if not sep or kind not in names or not ident:
        raise RequestError(parameter, f"{value!r}: write KIND:ID, KIND one of {', '.join(names)}")
    return kind, ident
