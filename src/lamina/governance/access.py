"""Who owns what is asked for, and the decision on it, for the protocols (DICOMweb, DIMSE).

:class:`Access` finds the tenant that owns a study (a case) or a series (a slide, with its
lamina id), keeps what it found for ``ttl_s`` (an owner does not change; a deleted study stops
being found within that time, and the routes find it gone anyway), asks
:func:`~lamina.governance.decide.decide`, and raises what the protocols answer:

- something the principal may not read, and something that does not exist, raise the same
  :class:`~lamina.errors.NotFoundError` with the same message: an answer never tells whether
  another lab holds a UID (404 over HTTP);
- an action refused on something the principal can read raises
  :class:`~lamina.errors.PermissionDeniedError` (403).

Reads are recorded in the audit log once per *opening*: the first read of a slide (a series)
by a person, then again only after ``opening_s`` (30 min) without one, not for every tile. The
same opening sets the slide's ``last_access_at`` (the tier rules' "days without access"), in the
audit entry's transaction.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import NotFoundError, PermissionDeniedError
from lamina.governance.decide import Action, Principal, Resource, decide, withdrawn_slides, withdrawn_studies

__all__ = ["NOT_FOUND", "Access"]

#: What a retrieval of something absent or hidden answers, alike.
NOT_FOUND = "no such study, series or instance in this archive"

_MISSING = object()


class _Lru:
    """A bounded map with an age limit per entry."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._size, self._ttl_s, self._clock = size, ttl_s, clock
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return _MISSING
            if self._clock() - found[0] > self._ttl_s:
                del self._items[key]
                return _MISSING
            self._items.move_to_end(key)
            return found[1]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = (self._clock(), value)
            self._items.move_to_end(key)
            if len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Access:
    """Owners of studies and series, the decision on them, and the audit of openings.

    Thread-safe. ``lookup_*`` block (one indexed query on a miss); ``cached_*`` and
    :meth:`allowed_now` never do (for the frames fast path, on the event loop).
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        ttl_s: float = 30.0,
        opening_s: float = 1800.0,
        size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.opening_s = opening_s
        self._studies = _Lru(size, ttl_s, clock)
        self._series = _Lru(size, ttl_s, clock)
        self._opened = _Lru(size, opening_s, clock)

    # -- owners ----------------------------------------------------------------------------------

    def study(self, study: str) -> Resource | None:
        """The case ``study`` with its tenant, or None when there is none (blocking on a miss)."""
        found = self._studies.get(study)
        if found is _MISSING:
            withdrawn = t.studies.c.study_instance_uid.in_(withdrawn_studies())
            query = select(t.studies.c.tenant, withdrawn).where(t.studies.c.study_instance_uid == study)
            with self.catalog.engine.connect() as conn:
                row = conn.execute(query).first()
            found = (
                None if row is None else Resource("case", str(row[0]), study=study, withdrawn=bool(row[1]))
            )
            self._studies.put(study, found)
        return found  # type: ignore[no-any-return]

    def series(self, study: str, series: str) -> Resource | None:
        """The slide of ``series`` (its id when it is a slide's) in ``study``, with its tenant, or
        None when the study has no such series (blocking on a miss)."""
        found = self.cached_series(study, series)
        if found is _MISSING:
            query = (
                select(t.studies.c.tenant, t.slides.c.id, t.slides.c.id.in_(withdrawn_slides()))
                .select_from(
                    t.series.join(
                        t.studies, t.series.c.study_instance_uid == t.studies.c.study_instance_uid
                    ).outerjoin(t.slides, t.slides.c.series_instance_uid == t.series.c.series_instance_uid)
                )
                .where(t.series.c.series_instance_uid == series, t.series.c.study_instance_uid == study)
            )
            with self.catalog.engine.connect() as conn:
                row = conn.execute(query).first()
            found = None if row is None else Resource("slide", str(row[0]), row[1], study, bool(row[2]))
            self._series.put((study, series), found)
        assert found is None or isinstance(found, Resource)
        return found

    def cached_series(self, study: str, series: str) -> object:
        """What :meth:`series` would answer (a Resource or None) if it is kept, else a sentinel
        that is neither (never blocks)."""
        return self._series.get((study, series))

    def forget(self) -> None:
        """Drop the owners kept (after a deletion, or a withdrawal from research, in this
        process)."""
        self._studies.clear()
        self._series.clear()

    # -- decisions ---------------------------------------------------------------------------------

    def require(self, principal: Principal, action: Action, resource: Resource | None) -> None:
        """Raise unless ``principal`` may do ``action`` on ``resource`` (None: absent)."""
        if resource is None:
            raise NotFoundError(NOT_FOUND)
        decision = decide(principal, action, resource)
        if decision.allowed:
            return
        if decision.hidden:
            raise NotFoundError(NOT_FOUND if resource.kind != "tenant" else f"no lab {resource.tenant} here")
        raise PermissionDeniedError(
            action.value, f"your roles do not allow {action.value} on this {resource.kind}"
        )

    def allowed_now(self, principal: Principal, study: str, series: str) -> bool:
        """Whether ``principal`` may read the series, from what is kept alone, and its opening was
        recorded: the frames fast path answers only then (never blocks)."""
        found = self.cached_series(study, series)
        if not isinstance(found, Resource) or not decide(principal, Action.READ, found).allowed:
            return False
        return self._opened.get((principal.id, series)) is not _MISSING

    def read(
        self, principal: Principal, study: str, series: str | None = None, client: str | None = None
    ) -> tuple[Resource, frozenset[str] | None]:
        """Check a read of a study (``series`` None) or of a series, and record the opening of a
        slide in the audit log when it is the first for a while (blocking). (the resource, the
        series that may be read when only some of a study's may: the slides granted alone)."""
        resource = self.study(study) if series is None else self.series(study, series)
        only: frozenset[str] | None = None
        if resource is not None and series is None and not decide(principal, Action.READ, resource).allowed:
            only = self._granted_series(principal, study) or None
        if only is None:
            self.require(principal, Action.READ, resource)
        assert resource is not None
        key = (principal.id, series or study)
        if self._opened.get(key) is _MISSING:
            self._opened.put(key, True)
            target = f"slide/{resource.slide_id}" if resource.slide_id else f"study/{study}"
            with self.catalog.begin() as conn:
                audit.append(
                    conn,
                    principal.id,
                    "read",
                    target,
                    {"tenant": resource.tenant, "study": study, "series": series, "client": client},
                )
                self._accessed(conn, resource, study, series, only)
        return resource, only

    def _accessed(
        self,
        conn: Connection,
        resource: Resource,
        study: str,
        series: str | None,
        only: frozenset[str] | None,
    ) -> None:
        """Record the opening on the slides read (``slides.last_access_at``, for the tier rules of
        :mod:`lamina.lifecycle`): the series' slide, or the slides of a study read whole (those
        granted alone when only they may be). One UPDATE by an indexed column, with the audit
        entry, once per opening: never per tile."""
        now = dt.datetime.now(dt.UTC)
        if resource.slide_id is not None:
            where = t.slides.c.id == resource.slide_id
        elif series is not None:
            return  # a series that is no slide's (annotations, reports)
        elif only is not None:
            where = and_(t.slides.c.study_instance_uid == study, t.slides.c.series_instance_uid.in_(only))
        else:
            where = t.slides.c.study_instance_uid == study
        live = t.slides.c.expired_at.is_(None)
        conn.execute(update(t.slides).where(where, live).values(last_access_at=now))

    def _granted_series(self, principal: Principal, study: str) -> frozenset[str]:
        """The series of ``study`` whose slides the principal's grants in force reach alone (a
        slide grant, or a collection's)."""
        slides = principal.granted_slides()
        if not slides:
            return frozenset()
        query = select(t.slides.c.id, t.slides.c.series_instance_uid).where(
            t.slides.c.study_instance_uid == study, t.slides.c.id.not_in(withdrawn_slides())
        )
        with self.catalog.engine.connect() as conn:
            return frozenset(row[1] for row in conn.execute(query) if row[0] in slides)
