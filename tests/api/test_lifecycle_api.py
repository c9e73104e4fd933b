"""The care lifecycle over HTTP (``/api``, lamina.api.lifecycle) on a real server: a lab admin reads
and replaces its lab's rules (a malformed document names its line and field, and the rules in
force stay); a pathologist of the slide's lab flags it as of interest, its lab admin holds it;
the wrong roles are refused (403 where they see the slide, 404 where they do not); every change
is audited with its actor; a slide's state says what the rules decide. Embedded backend only:
the catalog's side is tested on both backends in tests/lifecycle."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterator

import pytest

from lamina.lifecycle.policy import Policies
from lamina.lifecycle.reports import record_report
from lamina.lifecycle.rules import DEFAULT_RULES, MAX_BYTES
from tests.api.lifecycle_node import LAB_A, LAB_B, Node, serve_node

RULES = """\
[defaults]
care_days = 90

[[rule]]
name = "biopsies"
specimen_types = ["biopsy"]
care_days = 30
"""
MALFORMED = """\
[defaults]
care_days = 60

[[rule]]
name = "broken"
care_days = "soon"
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from serve_node(tmp_path_factory.mktemp("lifecycle-api"))


def _detail(answer: object, status: int) -> str:
    assert getattr(answer, "status_code", None) == status, getattr(answer, "text", answer)
    detail: str = answer.json()["detail"]  # type: ignore[attr-defined]
    return detail


# -- the lab's rules ----------------------------------------------------------------------------------


def test_a_lab_admin_reads_the_default_rules_replaces_them_and_a_malformed_document_changes_nothing(
    node: Node,
) -> None:
    path = f"/api/tenants/{LAB_B}/lifecycle-rules"
    # Act: the default rules' TOML, while the lab has none of its own
    default = node.call("admin-b", "GET", path)
    # Assert
    assert default.status_code == 200
    assert default.headers["content-type"].startswith("application/toml")
    assert tomllib.loads(default.text)["defaults"]["care_days"] == DEFAULT_RULES.default.care_days

    # Act: replace them
    put = node.call("admin-b", "PUT", path, content=RULES, headers={"Content-Type": "application/toml"})
    # Assert: in force, audited with the admin as actor
    assert put.status_code == 200, put.text
    assert put.json()["rules"] == ["biopsies", "default"]
    assert node.call("admin-b", "GET", path).text == RULES
    assert Policies(node.archive.catalog).for_tenant(LAB_B).default.care_days == 90
    assert node.audited("admin-b", f"tenant/{LAB_B}") == ["rules-set"]

    # Act: a malformed document
    bad = node.call("admin-b", "PUT", path, content=MALFORMED, headers={"Content-Type": "application/toml"})
    # Assert: 400 naming the line, the rule and the field; the rules in force stay
    detail = _detail(bad, 400)
    assert "line 6" in detail and "field care_days" in detail, detail
    assert (bad.json()["line"], bad.json()["field"]) == (6, "care_days")
    assert node.call("admin-b", "GET", path).text == RULES
    assert node.audited("admin-b", f"tenant/{LAB_B}") == ["rules-set"]


def test_rules_are_the_lab_admins_alone_and_their_body_is_checked(node: Node) -> None:
    path = f"/api/tenants/{LAB_A}/lifecycle-rules"
    toml = {"Content-Type": "application/toml"}
    # a pathologist of the lab sees it but may not administer it; another lab's admin does not see it
    assert node.call("patho-a", "GET", path).status_code == 403
    assert node.call("patho-a", "PUT", path, content=RULES, headers=toml).status_code == 403
    assert node.call("admin-b", "PUT", path, content=RULES, headers=toml).status_code == 404
    # the body: TOML, at most 1 MiB
    assert "Content-Type" in _detail(node.call("admin-a", "PUT", path, json={"care_days": 1}), 400)
    too_big = "#" * (MAX_BYTES + 1)
    assert node.call("admin-a", "PUT", path, content=too_big, headers=toml).status_code == 413
    assert Policies(node.archive.catalog).document(LAB_A) is None  # nothing was set


# -- flags of interest ------------------------------------------------------------------------------


def test_a_pathologist_of_the_lab_flags_a_slide_and_unflags_it_audited(node: Node) -> None:
    slide = node.slide_a.id
    path = f"/api/slides/{slide}/interest"
    # Act
    flagged = node.call("patho-a", "PUT", path, json={"category": "teaching", "reason": "a rare case"})
    # Assert: the state says so, and the rules keep it
    assert flagged.status_code == 200, flagged.text
    state = flagged.json()
    assert state["interest"]["category"] == "teaching"
    assert state["interest"]["flagged_by"] == "patho-a"
    assert state["action"] == "keep" and "interest" in state["reason"]

    # Act: unflag without a reason, then with one
    assert "reason" in _detail(node.call("patho-a", "DELETE", path), 400)
    unflagged = node.call("patho-a", "DELETE", path, params={"reason": "published already"})
    # Assert
    assert unflagged.status_code == 200, unflagged.text
    assert unflagged.json()["interest"] is None
    assert node.audited("patho-a", f"slide/{slide}") == ["interest-flag", "interest-unflag"]
    # nothing to unflag any more
    assert node.call("patho-a", "DELETE", path, params={"reason": "again"}).status_code == 404


def test_interest_is_refused_to_other_roles_and_labs_and_checks_its_body(node: Node) -> None:
    path = f"/api/slides/{node.slide_a.id}/interest"
    body = {"category": "research", "reason": "cohort"}
    # roles of the slide's lab that do not annotate: refused, the slide seen
    assert node.call("lis-a", "PUT", path, json=body).status_code == 403
    assert node.call("admin-a", "PUT", path, json=body).status_code == 403
    # another lab's pathologist, and no such slide: alike
    assert node.call("patho-b", "PUT", path, json=body).status_code == 404
    assert node.call("patho-a", "PUT", "/api/slides/0000000000000000/interest", json=body).status_code == 404
    assert node.call(None, "PUT", path, json=body).status_code == 401
    # the body, field by field
    assert _detail(node.call("patho-a", "PUT", path, json={**body, "category": "fun"}), 400).startswith(
        "category"
    )
    assert _detail(node.call("patho-a", "PUT", path, json={**body, "reason": " "}), 400).startswith("reason")
    assert _detail(node.call("patho-a", "PUT", path, json={"category": "research"}), 400).startswith("reason")
    # nothing was flagged by a refused request
    for who in ("lis-a", "admin-a", "patho-b"):
        assert node.audited(who, f"slide/{node.slide_a.id}") == []


# -- legal holds ------------------------------------------------------------------------------------


def test_a_lab_admin_holds_a_slide_and_releases_it_audited(node: Node) -> None:
    slide = node.slide_b.id
    path = f"/api/slides/{slide}/holds"
    # Act
    held = node.call("admin-b", "POST", path, json={"reason": "proceedings 2026/117"})
    # Assert
    assert held.status_code == 201, held.text
    state = held.json()
    assert state["held"] is True and len(state["holds_made"]) == 1
    assert state["holds"][0]["held_by"] == "admin-b"
    assert state["action"] == "keep" and state["reason"].startswith("held")
    # the slide's pathologist reads the hold but may not release it; another lab's admin sees nothing
    assert node.call("patho-b", "GET", f"/api/slides/{slide}/lifecycle").json()["held"] is True
    assert node.call("patho-b", "DELETE", path, params={"reason": "x"}).status_code == 403
    assert node.call("admin-a", "DELETE", path, params={"reason": "x"}).status_code == 404
    assert node.call("admin-a", "POST", path, json={"reason": "x"}).status_code == 404

    # Act: release, the reason in a JSON body
    released = node.call("admin-b", "DELETE", path, json={"reason": "proceedings closed"})
    # Assert
    assert released.status_code == 200, released.text
    assert released.json()["holds_released"] == state["holds_made"]
    assert released.json()["held"] is False
    assert node.audited("admin-b", f"slide/{slide}") == ["hold", "hold-release"]
    assert node.call("admin-b", "DELETE", path, params={"reason": "again"}).status_code == 404


# -- a slide's state ----------------------------------------------------------------------------------


def test_a_slides_state_gives_its_case_clock_the_rule_and_what_is_due(node: Node) -> None:
    slide = node.slide_a
    path = f"/api/slides/{slide.id}/lifecycle"
    # Arrange: no report yet
    before = node.call("patho-a", "GET", path)
    assert before.status_code == 200, before.text
    assert before.json()["report_at"] is None and before.json()["action"] == "keep"
    assert before.json()["tier"] == "hot" and before.json()["expired"] is False
    # Act: the case's final report, 10 days ago
    issued = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=10)
    record_report(node.archive.catalog, LAB_A, slide.accession, "final", issued, source="cli", actor="tests")
    state = node.call("patho-a", "GET", path).json()
    # Assert: the default rule, 30 days after the report
    assert dt.datetime.fromisoformat(state["report_at"]) == issued
    assert state["rule"] == "default"
    assert dt.datetime.fromisoformat(state["retain_until"]) == issued + dt.timedelta(days=30)
    assert state["accession_number"] == slide.accession
    # who may read it: its lab's readers and admin; not another lab, not a role that sees nothing
    assert node.call("admin-a", "GET", path).status_code == 200
    assert node.call("lis-a", "GET", path).status_code == 200
    assert node.call("patho-b", "GET", path).status_code == 404
    assert node.call("admin-b", "GET", path).status_code == 404


def test_a_slides_state_says_what_the_principal_may_change(node: Node) -> None:
    path = f"/api/slides/{node.slide_a.id}/lifecycle"
    # Act, Assert: the slide's pathologist flags, its lab admin holds, its technician does neither
    may = {who: node.call(who, "GET", path).json()["may"] for who in ("patho-a", "admin-a", "lis-a")}
    assert may == {
        "patho-a": {"flag": True, "hold": False},
        "admin-a": {"flag": False, "hold": True},
        "lis-a": {"flag": False, "hold": False},
    }
    # what a change answers says it too
    holds = f"/api/slides/{node.slide_a.id}/holds"
    changed = node.call("admin-a", "POST", holds, json={"reason": "audit"})
    assert changed.status_code == 201 and changed.json()["may"] == may["admin-a"], changed.text
    released = node.call("admin-a", "DELETE", holds, params={"reason": "done"})
    assert released.status_code == 200 and released.json()["held"] is False, released.text
