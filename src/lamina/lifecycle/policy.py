"""The retention rules in force for each lab, kept in the catalog (``lifecycle_rules``).

A lab's rules are a TOML document (:mod:`lamina.lifecycle.rules`); they are set from a file
(``lamina lifecycle rules set --tenant FINESS FILE``) or by the lab's admin over HTTP, and checked
whole before they replace the ones in force: a malformed document is refused with its line and
field, and the rules in force stay. A lab without rules of its own has the default rule (care
retention 30 days after the final report, a thumbnail trace).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, insert, select

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import NotFoundError
from lamina.governance.model import check_finess
from lamina.lifecycle.rules import DEFAULT_RULES, RuleSet, parse_rules

__all__ = ["Policies"]


class Policies:
    """The rules in force, per lab (read once per instance: one plan, one run)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._kept: dict[str, RuleSet] = {}

    def for_tenant(self, tenant: str) -> RuleSet:
        """The lab's rules in force (the default rule when it has none)."""
        found = self._kept.get(tenant)
        if found is None:
            text = self.document(tenant)
            found = DEFAULT_RULES if text is None else parse_rules(text, f"catalog:{tenant}")
            self._kept[tenant] = found
        return found

    def document(self, tenant: str) -> str | None:
        """The TOML text of the lab's rules, None when it has none of its own."""
        query = select(t.lifecycle_rules.c.document).where(t.lifecycle_rules.c.tenant == tenant)
        with self.catalog.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else str(row[0])

    def set(self, tenant: str, text: str, source: str, actor: str) -> RuleSet:
        """Check ``text`` whole (:class:`~lamina.lifecycle.rules.RuleError` naming ``source``,
        line and field), then make it the lab's rules in force (audited)."""
        code = check_finess(tenant, "--tenant")
        rules = parse_rules(text, source)
        now = dt.datetime.now(dt.UTC)
        with self.catalog.begin() as conn:
            if conn.execute(select(t.tenants.c.finess).where(t.tenants.c.finess == code)).first() is None:
                raise NotFoundError(f"no tenant {code} on this node; 'lamina tenants list' shows them")
            conn.execute(delete(t.lifecycle_rules).where(t.lifecycle_rules.c.tenant == code))
            conn.execute(
                insert(t.lifecycle_rules).values(
                    tenant=code, document=text, digest=rules.digest, updated_at=now, updated_by=actor
                )
            )
            audit.append(
                conn,
                actor,
                "rules-set",
                f"tenant/{code}",
                {"digest": rules.digest, "rules": [rule.name for rule in rules.rules], "source": source},
            )
        self._kept.pop(code, None)
        return rules
