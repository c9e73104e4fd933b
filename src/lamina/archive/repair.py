"""Repair: restore the objects a fixity run found missing or corrupt from the replica store.

Each damaged object is streamed from the replica into a new write on the primary while its SHA-256
is recomputed. Only when the replica's bytes hash to the object's digest is the damaged primary
copy removed and the new one committed (the primary writer's commit verifies what it wrote);
otherwise the write is aborted and the primary is left as it was. Every attempt is recorded in
the audit log as a ``repair`` entry naming the object and the outcome.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from lamina.archive import audit
from lamina.archive.blobstore.replicated import ReplicatedBlobStore
from lamina.archive.catalog import Catalog
from lamina.archive.fixity import FixityReport
from lamina.errors import LaminaError, NotFoundError

__all__ = ["RepairReport", "Unrepairable", "repair"]


@dataclass(frozen=True)
class Unrepairable:
    """A damaged object the replica could not restore.

    Attributes
    ----------
    sha256 : str
        The object's digest.
    problem : str
        What fixity found on the primary: ``"missing"`` or ``"corrupt"``.
    reason : str
        Why the replica copy could not be used.
    """

    sha256: str
    problem: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "problem": self.problem, "reason": self.reason}


@dataclass(frozen=True)
class RepairReport:
    """The outcome of one repair run.

    Attributes
    ----------
    repaired : list of str
        Digests restored on the primary from the replica.
    unrepairable : list of Unrepairable
        Damaged objects whose replica copy is missing, damaged or unreadable.
    """

    repaired: list[str] = field(default_factory=list)
    unrepairable: list[Unrepairable] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every damaged object was restored."""
        return not self.unrepairable

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "repaired": list(self.repaired),
            "unrepairable": [item.as_dict() for item in self.unrepairable],
        }


def _restore(store: ReplicatedBlobStore, digest: str) -> str | None:
    """Copy one object from the replica to the primary; None when done, else why not."""
    hasher = hashlib.sha256()
    try:
        with store.primary.writer() as writer:
            try:
                for chunk in store.replica.open(digest):
                    hasher.update(chunk)
                    writer.write(chunk)
            except (NotFoundError, FileNotFoundError):
                writer.abort()
                return "the replica does not hold it either"
            except OSError as exc:
                writer.abort()
                return f"the replica copy cannot be read: {exc.strerror or exc}"
            except LaminaError as exc:
                writer.abort()
                return f"copying the replica copy failed: {exc}"
            if hasher.hexdigest() != digest:
                writer.abort()
                return f"the replica copy is damaged too (it reads as {hasher.hexdigest()})"
            store.primary.delete(digest)  # a damaged copy in place would keep the new one out
            ref = writer.commit()
    except LaminaError as exc:
        return f"writing it back to the primary failed: {exc}"
    if ref.sha256 != digest:  # cannot happen: the same bytes were hashed twice
        return f"the primary stored it as {ref.sha256}"
    return None


def repair(
    report: FixityReport, store: ReplicatedBlobStore, catalog: Catalog, *, actor: str = "lamina"
) -> RepairReport:
    """Restore every missing or corrupt object of ``report`` from ``store.replica``.

    Parameters
    ----------
    report : FixityReport
        A fixity run over ``store``; its missing and corrupt objects are repaired.
    store : ReplicatedBlobStore
        The archive's store: damaged objects are read from its replica, written to its primary.
    catalog : Catalog
        Where the ``repair`` audit entries go, one per object, each in its own transaction.
    actor : str, optional
        Who runs the repair, for the audit entries.

    Returns
    -------
    RepairReport
        The digests restored and those that could not be, each sorted by digest.
    """
    damaged = sorted(
        [(m.sha256, "missing") for m in report.missing] + [(c.sha256, "corrupt") for c in report.corrupt]
    )
    repaired: list[str] = []
    unrepairable: list[Unrepairable] = []
    for digest, problem in damaged:
        reason = _restore(store, digest)
        detail: dict[str, Any] = {"problem": problem}
        if reason is None:
            repaired.append(digest)
            detail["outcome"] = "repaired"
        else:
            unrepairable.append(Unrepairable(digest, problem, reason))
            detail.update(outcome="unrepairable", reason=reason)
        with catalog.begin() as conn:
            audit.append(conn, actor, "repair", f"blob/{digest}", detail)
    return RepairReport(repaired, unrepairable)
