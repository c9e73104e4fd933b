"""From a validated token's claims to who signed in: the person, and the roles they hold in which
labs (tenants, by FINESS number), by rules written in ``lamina.toml``, so that any OpenID provider
plugs in.

Three kinds of rule, any number of each; their memberships add up:

``groups``
    A claim holding paths such as Keycloak's ``groups`` (``/lab/750000001/pathologist``), read
    with a ``pattern`` naming ``{finess}`` and ``{role}``.
``roles_by_tenant``
    A claim holding an object from FINESS to role names: ``{"750000001": ["pathologist"]}``.
``pro_sante_connect``
    Pro Santé Connect's ``SubjectRefPro``: each ``exercices[]`` (a profession the person
    practises: ``codeProfession``, ``codeCategorieProfessionnelle``, ``codeSavoirFaire``,
    ``codeTypeSavoirFaire``) holds ``activities[]`` (a place of work: ``numeroFinessSite``,
    ``numeroFinessetablissementJuridique``, ``codeRole``, ``codeSecteurDactivite``,
    ``codeModeExercice``...). Each activity gives its FINESS (the first of ``finess_fields``
    that is set) and the roles of every entry of the ``roles`` table whose ``when`` fields all
    match, read on the activity, then on its exercice. The codes are those of the ANS
    nomenclatures (profession: TRE_G15, e.g. ``10`` physician; specialty: TRE_R38; role:
    TRE_R21); which ones make a pathologist is the deployment's decision, so it is configuration.

A rule's role names may be renamed to lamina's with ``role_names`` (``{"anapath": "pathologist"}``);
a value naming no lamina role is ignored, as is a FINESS that is not one: a token is another
system's data, read tolerantly; the configuration is lamina's, checked strictly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lamina.errors import AuthenticationError, ConfigurationError, RequestError
from lamina.governance.model import check_finess, check_person_id
from lamina.governance.roles import Role

__all__ = ["ClaimsMapping", "Identity", "Membership"]

log = logging.getLogger("lamina.governance")

_KINDS = ("groups", "roles_by_tenant", "pro_sante_connect")
_PSC_FINESS = ("numeroFinessSite", "numeroFinessetablissementJuridique")
#: The most entries read from one claim: bounds the work a token can ask for.
_MAX_ITEMS = 1000


@dataclass(frozen=True, order=True)
class Membership:
    """A role held in one tenant."""

    finess: str
    role: Role


@dataclass(frozen=True)
class Identity:
    """Who signed in: ``person`` (as the mapping's person claim gives it) and their roles."""

    person: str
    memberships: tuple[Membership, ...]

    def roles_in(self, finess: str) -> frozenset[Role]:
        """The roles held in the tenant ``finess``."""
        return frozenset(m.role for m in self.memberships if m.finess == finess)


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``realm_access.roles``), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _finess(value: object) -> str | None:
    try:
        return check_finess(value) if isinstance(value, str) else None
    except RequestError:
        return None


def _text(where: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _role(where: str, value: object) -> Role:
    try:
        return Role(_text(where, value))
    except ValueError:
        raise ConfigurationError(
            f"{where}: {value!r} is not a lamina role; use one of {', '.join(r.value for r in Role)}"
        ) from None


def _keys(where: str, data: object, allowed: set[str], required: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{where}: expected a table, got {data!r}")
    for name in sorted(set(data) - allowed):
        raise ConfigurationError(f"{where}.{name}: unknown key; known ones: {', '.join(sorted(allowed))}")
    for name in required:
        if name not in data:
            raise ConfigurationError(f"{where}.{name}: missing; it is required")
    return data


@dataclass(frozen=True)
class _PscRole:
    when: tuple[tuple[str, tuple[str, ...]], ...]
    role: Role

    def matches(self, activity: Mapping[str, Any], exercice: Mapping[str, Any]) -> bool:
        return all(activity.get(name, exercice.get(name)) in values for name, values in self.when)


@dataclass(frozen=True)
class _Rule:
    kind: str
    claim: str
    pattern: re.Pattern[str] | None
    role_names: Mapping[str, Role]
    finess_fields: tuple[str, ...]
    psc_roles: tuple[_PscRole, ...]

    def role(self, name: object) -> Role | None:
        if not isinstance(name, str):
            return None
        if name in self.role_names:
            return self.role_names[name]
        try:
            return Role(name)
        except ValueError:
            return None

    def memberships(self, claims: Mapping[str, Any]) -> Iterator[Membership]:
        value = claim_at(claims, self.claim)
        if self.kind == "groups" and isinstance(value, list):
            assert self.pattern is not None
            for group in value[:_MAX_ITEMS]:
                found = self.pattern.fullmatch(group) if isinstance(group, str) else None
                if found:
                    yield from self._pair(found["finess"], found["role"])
        elif self.kind == "roles_by_tenant" and isinstance(value, Mapping):
            for finess, names in list(value.items())[:_MAX_ITEMS]:
                for name in names[:_MAX_ITEMS] if isinstance(names, list) else [names]:
                    yield from self._pair(finess, name)
        elif self.kind == "pro_sante_connect" and isinstance(value, Mapping):
            yield from self._pro_sante_connect(value)

    def _pair(self, finess: object, name: object) -> Iterator[Membership]:
        tenant, role = _finess(finess), self.role(name)
        if tenant and role:
            yield Membership(tenant, role)
        else:
            log.debug(
                "claim %s: %r / %r is not a FINESS and a lamina role; ignored", self.claim, finess, name
            )

    def _pro_sante_connect(self, ref_pro: Mapping[str, Any]) -> Iterator[Membership]:
        exercices = ref_pro.get("exercices")
        for exercice in exercices[:_MAX_ITEMS] if isinstance(exercices, list) else []:
            activities = exercice.get("activities") if isinstance(exercice, Mapping) else None
            for activity in activities[:_MAX_ITEMS] if isinstance(activities, list) else []:
                if not isinstance(activity, Mapping):
                    continue
                tenant = next(
                    (f for f in (_finess(activity.get(name)) for name in self.finess_fields) if f), None
                )
                if tenant is None:
                    continue  # a place of work without FINESS (a private practice): no tenant
                for entry in self.psc_roles:
                    if entry.matches(activity, exercice):
                        yield Membership(tenant, entry.role)


@dataclass(frozen=True)
class ClaimsMapping:
    """How claims name the person and their roles per tenant.

    Parameters
    ----------
    person
        The dotted path of the claim naming the person: ``sub``, or ``SubjectNameID`` (the
        national practitioner number) for Pro Santé Connect.
    rules
        The rules giving memberships (see the module's documentation); built by
        :meth:`from_mapping`.
    """

    person: str = "sub"
    rules: tuple[_Rule, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], prefix: str = "auth.claims") -> ClaimsMapping:
        """A mapping from a table of ``lamina.toml``, checked: a :class:`ConfigurationError`
        names the key at fault. For example (TOML)::

            person = "SubjectNameID"
            [[rules]]
            kind = "pro_sante_connect"
            roles = [{when = {codeProfession = "10", codeSavoirFaire = "SM01"}, role = "pathologist"}]
        """
        table = _keys(prefix, data, {"person", "rules"})
        person = _text(f"{prefix}.person", table.get("person", "sub"))
        rules = table.get("rules", [])
        if not isinstance(rules, list):
            raise ConfigurationError(f"{prefix}.rules: expected a list of tables, got {rules!r}")
        return cls(person, tuple(_rule(f"{prefix}.rules[{i}]", rule) for i, rule in enumerate(rules)))

    def identity(self, claims: Mapping[str, Any]) -> Identity:
        """Who the claims say signed in, and their memberships (sorted, without duplicates).

        Raises
        ------
        AuthenticationError
            The claims do not name the person (the token cannot be used; ``invalid_token``).
        """
        person = claim_at(claims, self.person)
        if isinstance(person, int) and not isinstance(person, bool):
            person = str(person)
        try:
            person = check_person_id(person) if isinstance(person, str) else None
        except RequestError:
            person = None
        if person is None:
            log.debug("the token's claim %s does not name a person", self.person)
            raise AuthenticationError("the bearer token does not name a person; sign in again")
        found = {m for rule in self.rules for m in rule.memberships(claims)}
        return Identity(person, tuple(sorted(found)))


def _rule(where: str, data: object) -> _Rule:
    table = _keys(
        where, data, {"kind", "claim", "pattern", "role_names", "finess_fields", "roles"}, required=("kind",)
    )
    kind = _text(f"{where}.kind", table["kind"])
    if kind not in _KINDS:
        raise ConfigurationError(f"{where}.kind: {kind!r} is not a rule kind; use one of {', '.join(_KINDS)}")
    default_claim = {
        "groups": "groups",
        "roles_by_tenant": "lamina_roles",
        "pro_sante_connect": "SubjectRefPro",
    }
    claim = _text(f"{where}.claim", table.get("claim", default_claim[kind]))
    names = table.get("role_names", {})
    if not isinstance(names, Mapping):
        raise ConfigurationError(f'{where}.role_names: expected a table, e.g. {{anapath = "pathologist"}}')
    role_names = {name: _role(f"{where}.role_names.{name}", value) for name, value in names.items()}
    pattern = None
    if kind == "groups":
        pattern = _pattern(f"{where}.pattern", table.get("pattern", "/lab/{finess}/{role}"))
    elif "pattern" in table:
        raise ConfigurationError(f"{where}.pattern: only a 'groups' rule takes a pattern")
    finess_fields: tuple[str, ...] = ()
    psc_roles: tuple[_PscRole, ...] = ()
    if kind == "pro_sante_connect":
        fields = table.get("finess_fields", list(_PSC_FINESS))
        if not isinstance(fields, list) or not fields:
            raise ConfigurationError(
                f"{where}.finess_fields: expected a list of field names, e.g. {list(_PSC_FINESS)}"
            )
        finess_fields = tuple(_text(f"{where}.finess_fields[{i}]", f) for i, f in enumerate(fields))
        entries = table.get("roles")
        if not isinstance(entries, list) or not entries:
            raise ConfigurationError(
                f"{where}.roles: missing; give the table from PSC codes to roles, e.g. "
                '[{when = {codeProfession = "10", codeSavoirFaire = "SM01"}, role = "pathologist"}]'
            )
        psc_roles = tuple(_psc_role(f"{where}.roles[{i}]", entry) for i, entry in enumerate(entries))
    else:
        for name in ("finess_fields", "roles"):
            if name in table:
                raise ConfigurationError(f"{where}.{name}: only a 'pro_sante_connect' rule takes {name}")
    return _Rule(kind, claim, pattern, role_names, finess_fields, psc_roles)


def _pattern(where: str, text: object) -> re.Pattern[str]:
    pattern = _text(where, text)
    if pattern.count("{finess}") != 1 or pattern.count("{role}") != 1:
        raise ConfigurationError(
            f"{where}: {pattern!r} must name {{finess}} and {{role}} once each, e.g. /lab/{{finess}}/{{role}}"
        )
    escaped = (
        re.escape(pattern).replace(r"\{finess\}", "(?P<finess>[^/]+)").replace(r"\{role\}", "(?P<role>[^/]+)")
    )
    return re.compile(escaped)


def _psc_role(where: str, data: object) -> _PscRole:
    table = _keys(where, data, {"when", "role"}, required=("when", "role"))
    when = table["when"]
    if not isinstance(when, Mapping) or not when:
        raise ConfigurationError(
            f'{where}.when: expected a table of PSC fields, e.g. {{codeProfession = "10"}}'
        )
    conditions = []
    for name, value in when.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise ConfigurationError(
                f"{where}.when.{name}: expected a code or a list of codes, got {value!r}"
            )
        conditions.append((name, tuple(values)))
    return _PscRole(tuple(conditions), _role(f"{where}.role", table["role"]))
