"""Claims to person and (FINESS, role) pairs, by the rules of lamina.toml: Keycloak-style groups,
a roles-per-tenant claim, and Pro Santé Connect's SubjectRefPro; a bad rule names its key."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.errors import AuthenticationError, ConfigurationError
from lamina.governance.claims import ClaimsMapping, Membership
from lamina.governance.roles import Role

#: Pathologists: physicians (profession 10) with the specialty "anatomie et cytologie
#: pathologiques" (SM01 is assumed here: the deployment's table decides, not lamina).
PSC_RULES = {
    "person": "SubjectNameID",
    "rules": [
        {
            "kind": "pro_sante_connect",
            "roles": [
                {"when": {"codeProfession": "10", "codeSavoirFaire": "SM01"}, "role": "pathologist"},
                {"when": {"codeProfession": "10", "codeRole": "FON-05"}, "role": "lab_admin"},
                {"when": {"codeProfession": ["96", "97"]}, "role": "technician"},
            ],
        }
    ],
}


def activity(**fields: str) -> dict[str, str]:
    """A place of work as Pro Santé Connect's userinfo lists it (fields absent are empty)."""
    return {
        "codeModeExercice": "S",
        "codeSecteurDactivite": "SA01",
        "codeRole": "",
        "numeroFinessSite": "",
        "numeroFinessetablissementJuridique": "",
        "raisonSocialeSite": "CHU",
        **fields,
    }


def psc_claims(*exercices: dict[str, Any]) -> dict[str, Any]:
    return {
        "sub": "f:550dc1c8-d97b-4b1e-ac8c-8eb4471cf9dd:810000000001",
        "SubjectNameID": "810000000001",
        "acr": "eidas1",
        "SubjectRefPro": {"codeCivilite": "M", "exercices": list(exercices)},
    }


def exercice(profession: str, savoir_faire: str, *activities: dict[str, str]) -> dict[str, Any]:
    return {
        "codeProfession": profession,
        "codeCategorieProfessionnelle": "C",
        "codeTypeSavoirFaire": "S",
        "codeSavoirFaire": savoir_faire,
        "activities": list(activities),
    }


def test_pro_sante_connect_places_of_work_give_tenants_and_roles() -> None:
    mapping = ClaimsMapping.from_mapping(PSC_RULES)
    claims = psc_claims(
        exercice(
            "10",
            "SM01",
            activity(numeroFinessSite="750712184", codeRole="FON-05"),
            # no site FINESS: the legal entity's is taken
            activity(numeroFinessetablissementJuridique="2A0000154"),
            # a private practice without FINESS: no tenant
            activity(),
        ),
        exercice("10", "SM54", activity(numeroFinessSite="690000001")),  # another specialty: no role
    )
    # Act
    identity = ClaimsMapping.from_mapping(PSC_RULES).identity(claims)
    # Assert
    assert identity.person == "810000000001"
    assert identity.memberships == (
        Membership("2A0000154", Role.PATHOLOGIST),
        Membership("750712184", Role.LAB_ADMIN),
        Membership("750712184", Role.PATHOLOGIST),
    )
    assert identity.roles_in("750712184") == {Role.PATHOLOGIST, Role.LAB_ADMIN}
    technician = psc_claims(exercice("96", "", activity(numeroFinessSite="750712184")))
    assert mapping.identity(technician).memberships == (Membership("750712184", Role.TECHNICIAN),)


def test_keycloak_groups_and_a_roles_claim() -> None:
    mapping = ClaimsMapping.from_mapping(
        {
            "person": "preferred_username",
            "rules": [
                {"kind": "groups", "role_names": {"anapath": "pathologist"}},
                {"kind": "roles_by_tenant", "claim": "lamina.roles"},
            ],
        }
    )
    claims = {
        "preferred_username": "jdupont",
        "groups": ["/lab/750712184/anapath", "/lab/750712184/technician", "/staff", "/lab/123/pathologist"],
        "lamina": {"roles": {"690000001": ["researcher", "not-a-role"], "2B0000012": "archivist"}},
    }
    # Act
    identity = mapping.identity(claims)
    # Assert: the malformed FINESS and the unknown role are ignored
    assert identity.person == "jdupont"
    assert identity.memberships == (
        Membership("2B0000012", Role.ARCHIVIST),
        Membership("690000001", Role.RESEARCHER),
        Membership("750712184", Role.PATHOLOGIST),
        Membership("750712184", Role.TECHNICIAN),
    )


def test_a_custom_group_pattern() -> None:
    mapping = ClaimsMapping.from_mapping(
        {"rules": [{"kind": "groups", "claim": "realm_access.roles", "pattern": "lamina:{role}@{finess}"}]}
    )
    claims = {"sub": "u-1", "realm_access": {"roles": ["lamina:lab_admin@750712184", "offline_access"]}}
    assert mapping.identity(claims).memberships == (Membership("750712184", Role.LAB_ADMIN),)


@pytest.mark.parametrize("person", [None, "", "a b", "x" * 200, True, {"id": 1}])
def test_claims_without_a_person_are_refused(person: object) -> None:
    mapping = ClaimsMapping.from_mapping({"person": "SubjectNameID"})
    with pytest.raises(AuthenticationError) as caught:
        mapping.identity({"sub": "x", "SubjectNameID": person})
    assert caught.value.error == "invalid_token"


def test_hostile_shapes_in_the_claims_are_ignored() -> None:
    mapping = ClaimsMapping.from_mapping(PSC_RULES | {"rules": [*PSC_RULES["rules"], {"kind": "groups"}]})
    claims = {
        "SubjectNameID": "810000000001",
        "groups": "not-a-list",
        "SubjectRefPro": {
            "exercices": [None, 3, {"activities": "x"}, {"activities": [None, {"numeroFinessSite": 9}]}]
        },
    }
    assert mapping.identity(claims).memberships == ()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"persn": "sub"}, "auth.claims.persn"),
        ({"person": ""}, "auth.claims.person"),
        ({"rules": {"kind": "groups"}}, "auth.claims.rules"),
        ({"rules": [{"claim": "groups"}]}, r"auth.claims.rules\[0\].kind"),
        ({"rules": [{"kind": "ldap"}]}, r"auth.claims.rules\[0\].kind"),
        ({"rules": [{"kind": "groups", "pattern": "/lab/{finess}"}]}, r"auth.claims.rules\[0\].pattern"),
        (
            {"rules": [{"kind": "groups", "role_names": {"x": "doctor"}}]},
            r"auth.claims.rules\[0\].role_names.x",
        ),
        ({"rules": [{"kind": "groups", "roles": []}]}, r"auth.claims.rules\[0\].roles"),
        ({"rules": [{"kind": "pro_sante_connect"}]}, r"auth.claims.rules\[0\].roles"),
        (
            {
                "rules": [
                    {"kind": "pro_sante_connect", "roles": [{"when": {"codeProfession": "10"}, "role": "x"}]}
                ]
            },
            r"auth.claims.rules\[0\].roles\[0\].role",
        ),
        (
            {
                "rules": [
                    {"kind": "pro_sante_connect", "roles": [{"when": {"codeProfession": 10}, "role": "x"}]}
                ]
            },
            r"auth.claims.rules\[0\].roles\[0\].when.codeProfession",
        ),
        (
            {"rules": [{"kind": "pro_sante_connect", "roles": [{"role": "pathologist"}]}]},
            r"auth.claims.rules\[0\].roles\[0\].when",
        ),
    ],
)
def test_a_bad_mapping_names_its_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^{key}: "):
        ClaimsMapping.from_mapping(table)
