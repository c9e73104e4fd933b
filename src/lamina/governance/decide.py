"""The one decision: may this principal do this action on this resource?

Every route and every DICOM service asks :func:`decide`; searches ask :func:`visible_studies`
for the same rule as a SQL condition, so that a page is filtered before it is built (paging stays
right and fast). The rule:

- A role in a tenant gives actions on that tenant's resources (:data:`ROLE_ACTIONS`): a
  pathologist reads, searches and annotates; a technician reads, searches and stores; a lab
  admin administers the lab (people, grants, rules) and searches; an archivist operates storage
  and sees no pixels; a platform admin administers tenants and operates, and sees no pixels.
  Researchers and committee members get nothing from their role alone.
- A grant in force gives ``read`` (and ``annotate`` for read+annotate) on one slide, one case or
  one collection of slides to a person, to a tenant's pathologists and technicians, or to a
  project's members. A slide granted alone (or through a collection) is read alone: at the study
  level, the answer holds that slide only (the case's other slides stay hidden:
  :meth:`lamina.governance.access.Access.read`). A collection's slides are those it held when the
  principal was read (:attr:`Principal.collections`) for the decision on one slide, and those it
  holds now in searches.
- A platform admin's role, held in any tenant, applies to every tenant: it administers labs,
  operates storage and searches metadata everywhere, and reads no pixels.
- A slide received at the archive and withdrawn from research (its patient opposed:
  ``archive_received.withdrawn_at``, :mod:`lamina.exchange.consent`) is reached by no grant, in
  :func:`decide` (:attr:`Resource.withdrawn`) and in the searches' conditions alike; its lab's own
  roles still reach it (it is their slide).
- Nothing else is allowed.

What a principal may not read does not exist for it: a retrieval of another lab's slide, or of a
guessed identifier, is answered as not found (404), never as forbidden, so that no answer tells
whether another lab holds a UID. Forbidden (403) is kept for an action refused on something the
principal can read (a pathologist deleting a slide of their lab).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, Select, and_, false, or_, select, true, union_all

from lamina.archive.catalog import tables as t
from lamina.governance.model import Grant, GranteeKind, Permission, ResourceKind
from lamina.governance.roles import Role

__all__ = [
    "GLOBAL_ROLES",
    "ROLE_ACTIONS",
    "Action",
    "Decision",
    "Principal",
    "Resource",
    "decide",
    "principal_of",
    "visible_series",
    "visible_studies",
    "visible_study_branches",
    "withdrawn_slides",
    "withdrawn_studies",
]


class Action(StrEnum):
    """What a request does."""

    #: metadata, frames, rendered images, whole instances of a slide or a case
    READ = "read"
    #: find studies, series, instances (the answer holds only what may be read)
    SEARCH = "search"
    #: add annotations to a slide
    ANNOTATE = "annotate"
    #: store instances into a tenant (STOW-RS, C-STORE, ingest)
    STORE = "store"
    #: delete a slide or a case
    DELETE = "delete"
    #: the lab's people, grants and rules
    ADMINISTER = "administer"
    #: storage work that needs no pixels: fixity, tiers, lifecycle runs
    OPERATE = "operate"
    #: record a patient's opposition to research use (or its lifting) in the lab: its
    #: pathologists, its admins, and the LIS's account (a technician-like role)
    CONSENT = "consent"
    #: at the archive: announce, verify and withdraw the lab's de-identified slides of interest
    #: (lamina.exchange.receiving): the account the archive issued to the sending lab, a
    #: technician or an admin of that lab there
    EXCHANGE_RECEIVE = "exchange-receive"


#: what each role allows on its own tenant's resources
ROLE_ACTIONS: Mapping[Role, frozenset[Action]] = {
    Role.PATHOLOGIST: frozenset({Action.READ, Action.SEARCH, Action.ANNOTATE, Action.CONSENT}),
    Role.TECHNICIAN: frozenset(
        {Action.READ, Action.SEARCH, Action.STORE, Action.CONSENT, Action.EXCHANGE_RECEIVE}
    ),
    Role.LAB_ADMIN: frozenset(
        {Action.SEARCH, Action.ADMINISTER, Action.DELETE, Action.CONSENT, Action.EXCHANGE_RECEIVE}
    ),
    Role.ARCHIVIST: frozenset({Action.OPERATE}),
    Role.RESEARCHER: frozenset(),
    Role.COMMITTEE_MEMBER: frozenset(),
    Role.PLATFORM_ADMIN: frozenset({Action.ADMINISTER, Action.OPERATE, Action.SEARCH}),
}
#: the roles a grant to a whole tenant reaches (those that read slides in their own lab)
TENANT_GRANT_ROLES = frozenset({Role.PATHOLOGIST, Role.TECHNICIAN})
#: the roles whose actions hold in every tenant, wherever they are held
GLOBAL_ROLES = frozenset({Role.PLATFORM_ADMIN})

_GRANTED: Mapping[Permission, frozenset[Action]] = {
    Permission.READ: frozenset({Action.READ, Action.SEARCH}),
    Permission.READ_ANNOTATE: frozenset({Action.READ, Action.SEARCH, Action.ANNOTATE}),
}


@dataclass(frozen=True)
class Principal:
    """Who asks: a person, the roles they hold per tenant, the projects they belong to, and the
    grants in force that reach them (their own, their tenants', their projects')."""

    id: str
    roles: Mapping[str, frozenset[Role]] = field(default_factory=dict)
    projects: frozenset[str] = frozenset()
    grants: tuple[Grant, ...] = ()
    #: the slide ids of each collection a grant in ``grants`` is on
    collections: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def granted_slides(self, now: dt.datetime | None = None) -> frozenset[str]:
        """The slides granted alone by the grants in force that reach this principal (slide
        grants, and the slides of the collections granted)."""
        found: set[str] = set()
        for grant in self.grants:
            if not grant.active(now) or not self.reached_by(grant):
                continue
            if grant.resource_kind is ResourceKind.SLIDE:
                found.add(grant.resource)
            elif grant.resource_kind is ResourceKind.COLLECTION:
                found |= self.collections.get(grant.resource, frozenset())
        return frozenset(found)

    def tenants(self) -> frozenset[str]:
        """The tenants in which this principal holds any role."""
        return frozenset(tenant for tenant, held in self.roles.items() if held)

    def allowed_in(self, tenant: str) -> frozenset[Action]:
        """What the roles held in ``tenant`` allow there (with those of a global role)."""
        local = (action for role in self.roles.get(tenant, ()) for action in ROLE_ACTIONS[role])
        return frozenset(local) | self.everywhere

    @property
    def everywhere(self) -> frozenset[Action]:
        """What a global role (platform admin), wherever held, allows in every tenant."""
        return frozenset(
            action
            for held in self.roles.values()
            for role in held & GLOBAL_ROLES
            for action in ROLE_ACTIONS[role]
        )

    def reached_by(self, grant: Grant) -> bool:
        """Whether ``grant`` is given to this principal (directly, through a tenant or a project)."""
        if grant.grantee_kind is GranteeKind.PERSON:
            return grant.grantee == self.id
        if grant.grantee_kind is GranteeKind.TENANT:
            # the lab's people who read slides: its pathologists and technicians, not its
            # archivists, researchers or committee members (nor a platform admin)
            return bool(self.roles.get(grant.grantee, frozenset()) & TENANT_GRANT_ROLES)
        return grant.grantee in self.projects


@dataclass(frozen=True)
class Resource:
    """What is asked for: a tenant itself (``kind`` ``tenant``), or a slide or a case with the
    tenant that owns it (``slide_id`` of the slide, ``study`` of its case, for case grants);
    ``withdrawn``: the slide (or a slide of the case) was withdrawn from research at the archive,
    so that no grant reaches it."""

    kind: str
    tenant: str
    slide_id: str | None = None
    study: str | None = None
    withdrawn: bool = False


@dataclass(frozen=True)
class Decision:
    """The answer: ``allowed``; when refused, whether the resource is ``hidden`` from the
    principal (answer 404) or only the action is refused (403); ``reason`` for the log."""

    allowed: bool
    hidden: bool = False
    reason: str = ""


def decide(
    principal: Principal, action: Action, resource: Resource, now: dt.datetime | None = None
) -> Decision:
    """May ``principal`` do ``action`` on ``resource``?"""
    if action in principal.allowed_in(resource.tenant):
        return Decision(True, reason=f"role in {resource.tenant}")
    granted = _granted(principal, resource, now)
    if action in granted:
        return Decision(True, reason="grant")
    readable = Action.READ in principal.allowed_in(resource.tenant) or Action.READ in granted
    visible = readable or bool(principal.allowed_in(resource.tenant) & {Action.SEARCH, Action.ADMINISTER})
    return Decision(False, hidden=not visible, reason=f"no role or grant for {action.value}")


def _granted(principal: Principal, resource: Resource, now: dt.datetime | None) -> frozenset[Action]:
    actions: set[Action] = set()
    if resource.withdrawn:  # withdrawn from research: only its lab's own roles reach it
        return frozenset()
    for grant in principal.grants:
        if grant.tenant != resource.tenant or not grant.active(now) or not principal.reached_by(grant):
            continue
        kind = grant.resource_kind
        if (
            (kind is ResourceKind.SLIDE and grant.resource == resource.slide_id)
            or (kind is ResourceKind.CASE and grant.resource == resource.study)
            or (
                kind is ResourceKind.COLLECTION
                and resource.slide_id is not None
                and resource.slide_id in principal.collections.get(grant.resource, frozenset())
            )
        ):
            actions |= _GRANTED[grant.permission]
    return frozenset(actions)


@dataclass(frozen=True)
class _Searchable:
    """What a principal may search: the tenants where a role gives ``search``, and the cases,
    the slides and the collections its grants in force reach."""

    tenants: list[str]
    cases: list[str]
    slides: list[str]
    collections: list[str]

    def granted_slides(self) -> ColumnElement[bool] | None:
        """The condition on ``slides`` that keeps the slides granted alone (None: none): one
        ``id IN (...)`` over the union of the slides granted and those of the collections granted,
        which the database plans as a semi-join from those few ids (an OR of the two would make it
        read the whole slides table)."""
        parts: list[Select[Any]] = []
        if self.slides:
            parts.append(select(t.slides.c.id).where(t.slides.c.id.in_(self.slides)))
        if self.collections:
            parts.append(
                select(t.collection_slides.c.slide_id).where(
                    t.collection_slides.c.collection_id.in_(self.collections)
                )
            )
        if not parts:
            return None
        granted = t.slides.c.id.in_(parts[0] if len(parts) == 1 else union_all(*parts))
        return and_(granted, t.slides.c.id.not_in(withdrawn_slides()))

    def granted_studies(self) -> Select[Any] | CompoundSelect[Any] | None:
        """The Study Instance UIDs the grants reach (cases granted, and the cases of the slides
        granted alone or through a collection), as one query (None: none)."""
        parts: list[Select[Any]] = []
        if self.cases:
            parts.append(
                select(t.studies.c.study_instance_uid).where(
                    t.studies.c.study_instance_uid.in_(self.cases),
                    t.studies.c.study_instance_uid.not_in(withdrawn_studies()),
                )
            )
        if (alone := self.granted_slides()) is not None:
            parts.append(select(t.slides.c.study_instance_uid).where(alone))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else union_all(*parts)


def withdrawn_slides() -> Select[Any]:
    """The ids of the slides withdrawn from research at the archive (a subquery; empty on a site
    node). Those still expected have no slide id yet and are left out, so that ``NOT IN`` never
    meets a NULL."""
    received = t.archive_received
    return select(received.c.slide_id).where(
        received.c.withdrawn_at.is_not(None), received.c.slide_id.is_not(None)
    )


def withdrawn_studies() -> Select[Any]:
    """The cases holding a slide withdrawn from research (a subquery): a case grant no longer
    reaches them (a case is one patient's: their slides are withdrawn together)."""
    received = t.archive_received
    return select(received.c.study_instance_uid).where(received.c.withdrawn_at.is_not(None))


def _searchable(principal: Principal, now: dt.datetime | None) -> _Searchable:
    """What ``principal`` may search. (A principal searching everywhere is not asked.)"""
    tenants = sorted(
        tenant for tenant in principal.tenants() if Action.SEARCH in principal.allowed_in(tenant)
    )
    reaching = [g for g in principal.grants if g.active(now) and principal.reached_by(g)]

    def of(kind: ResourceKind) -> list[str]:
        return sorted({g.resource for g in reaching if g.resource_kind is kind})

    return _Searchable(tenants, of(ResourceKind.CASE), of(ResourceKind.SLIDE), of(ResourceKind.COLLECTION))


def visible_studies(principal: Principal, now: dt.datetime | None = None) -> ColumnElement[bool]:
    """The condition on ``studies`` that keeps what ``principal`` may search: its tenants where a
    role gives ``search``, and the cases its grants in force reach (a case grant, or a grant on
    one of the case's slides). Used in the query itself, so pages are filtered before paging."""
    if Action.SEARCH in principal.everywhere:
        return true()
    reach = _searchable(principal, now)
    conditions: list[ColumnElement[bool]] = []
    if reach.tenants:
        conditions.append(t.studies.c.tenant.in_(reach.tenants))
    if (granted := reach.granted_studies()) is not None:
        conditions.append(t.studies.c.study_instance_uid.in_(granted))
    return or_(*conditions) if conditions else false()


def visible_study_branches(
    principal: Principal, now: dt.datetime | None = None
) -> tuple[ColumnElement[bool], ...] | None:
    """:func:`visible_studies` as disjoint conditions, for a search that pages through their
    union (:func:`lamina.archive.catalog.search.find_studies`): one per tenant searched (``tenant =
    'L'``, read in order from the lab's index) and one for the cases the grants reach outside
    those tenants. None: no condition (a principal searching everywhere); ``()``: nothing."""
    if Action.SEARCH in principal.everywhere:
        return None
    reach = _searchable(principal, now)
    branches: list[ColumnElement[bool]] = [t.studies.c.tenant == tenant for tenant in reach.tenants]
    if (granted := reach.granted_studies()) is not None:
        # one IN over the union of what the grants reach: a semi-join from those few studies
        outside = [t.studies.c.tenant.not_in(reach.tenants)] if reach.tenants else []
        branches.append(and_(t.studies.c.study_instance_uid.in_(granted), *outside))
    return tuple(branches)


def visible_series(principal: Principal, now: dt.datetime | None = None) -> ColumnElement[bool]:
    """The condition on ``series`` that keeps what ``principal`` may search: the series of its
    searchable tenants' cases and of the cases granted to it, and of a slide granted alone only
    that slide's series (the case's other slides stay hidden)."""
    if Action.SEARCH in principal.everywhere:
        return true()
    reach = _searchable(principal, now)
    conditions: list[ColumnElement[bool]] = []
    if reach.tenants:
        owned = select(t.studies.c.study_instance_uid).where(t.studies.c.tenant.in_(reach.tenants))
        conditions.append(t.series.c.study_instance_uid.in_(owned))
    if reach.cases:
        conditions.append(
            and_(
                t.series.c.study_instance_uid.in_(reach.cases),
                t.series.c.study_instance_uid.not_in(withdrawn_studies()),
            )
        )
    if (alone := reach.granted_slides()) is not None:
        granted = select(t.slides.c.series_instance_uid).where(alone)
        conditions.append(t.series.c.series_instance_uid.in_(granted))
    return or_(*conditions) if conditions else false()


def principal_of(
    person_id: str,
    roles: Iterable[tuple[str, Role]],
    grants: Iterable[Grant],
    projects: Iterable[str] = (),
    collections: Mapping[str, Iterable[str]] | None = None,
) -> Principal:
    """A :class:`Principal` from (tenant, role) pairs, the grants in force that may reach it
    (those that do not are dropped) and the slides of the collections granted."""
    held: dict[str, set[Role]] = {}
    for tenant, role in roles:
        held.setdefault(tenant, set()).add(role)
    base = Principal(person_id, {k: frozenset(v) for k, v in held.items()}, frozenset(projects))
    kept = tuple(g for g in grants if base.reached_by(g))
    granted = {g.resource for g in kept if g.resource_kind is ResourceKind.COLLECTION}
    members = {key: frozenset(value) for key, value in (collections or {}).items() if key in granted}
    return Principal(base.id, base.roles, base.projects, kept, members)
