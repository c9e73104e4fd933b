"""The authorization matrix (issue 10): every route of the application itself × every principal
(one person per role in lab A, and no token / malformed / expired / unknown person / another
node's issuer) × every target (lab A's own case, lab B's never-granted case, a lab-B slide granted
to lab A's pathologist and its ungranted sibling, a lab-B slide whose grant expired, a lab-B case
granted to all of lab A, a lab-B slide in a collection granted to lab A's pathologist, a path
mixing lab A's study with lab B's series, guessed UIDs) → the status expected, over real HTTP, on
both backends; every answer to a lab-A person is searched for the identifiers of what that person
may not see.

The expectations are written here from the rules as lamina.governance.decide documents them, not
by calling it: a role in lab A gives its actions there (a pathologist and a technician read; a lab
admin searches and administers; an archivist, a researcher and a committee member see nothing);
a platform admin searches everywhere and reads no pixels; a grant in force gives read on its
slide, its case, or the slides of its collection. What a principal may not read and cannot see
answers 404 like what does not exist; what it can see (search) but may not read answers 403. The
labs' administration (lamina's ``/api/tenants``) is sent to lab A, lab B and a FINESS number of no
lab: a lab admin administers its own lab, a platform admin every lab; bodies are ``{}`` and grant,
collection and slide ids made up, so the matrix changes nothing. The care lifecycle's slide
routes (``/api/slides/{slide}/...``) are sent to each slide and to a slide id of none: its state to
whoever reads the slide or administers its lab, its flag of interest to a pathologist of its lab,
its holds to its lab's admin (and a platform admin); the LIS's reports (``POST /fhir/...``) to
whoever may store (the technician), patients' oppositions (``POST /fhir/Consent``) to whoever may
record them (a pathologist, a technician, a lab admin); their bodies (``{}``) are refused 400, so
nothing changes.

A route of the application without a rule stops it from being built (LookupError), and a route
whose path the matrix cannot fill in fails here: a new route gets a rule and an expectation.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from lamina.api import app as app_module
from lamina.api import dicomweb
from lamina.api.auth import RULES, Rule, guard, route_keys
from lamina.config import Settings
from lamina.governance.tokens import INVALID_TOKEN
from tests.api.authz_world import BAD_TOKENS, GRANTEE, LAB_A, LAB_B, PEOPLE, ROLES, World, build_world
from tests.backends import Backend

# -- the expectations, from the documented rules --------------------------------------------------

#: roles whose role in lab A lets them read lab A's slides
READS_OWN = {"pathologist", "technician"}
#: roles that see lab A's cases (search or administer there) without necessarily reading them
SEES_OWN = {"pathologist", "technician", "lab_admin", "platform_admin"}
#: roles that search lab A (QIDO)
SEARCHES_OWN = {"pathologist", "technician", "lab_admin", "platform_admin"}
#: the role that searches every lab (and reads none)
EVERYWHERE = "platform_admin"
#: the role of the person lab B's slides are granted to
GRANTEE_ROLE = next(role for role, person in PEOPLE.items() if person == GRANTEE)

ALLOWED = 0  # the handler answers: anything but 401, 403, 404 and a 5xx
HANDLER = 1  # the handler answers about a path that names nothing: anything but 401, 403 and a 5xx
REFUSED = (401, 403, 404)

#: where a route with a study in its path is sent
TARGETS = ("own", "other", "granted", "sibling", "expired", "casegrant", "collected", "mixed", "guessed")
#: where a route with a lab in its path is sent: lab A, lab B, a FINESS number of no lab here
LAB_TARGETS = {"own": LAB_A, "other": LAB_B, "guessed": "130781810"}
#: a grant id of no grant, and of no collection (the matrix changes nothing: it revokes none)
NO_GRANT = "0" * 32
#: a slide id of no slide
NO_SLIDE = "0" * 16
#: where a route with a slide id (and no lab) in its path is sent: each slide, and one of no slide
SLIDE_TARGETS = ("own", "other", "granted", "sibling", "expired", "casegrant", "collected", "guessed")
#: a concrete path under each mount of the application
MOUNT_PATHS = {"MOUNT /": "/", "MOUNT /vendor/openseadragon": "/vendor/openseadragon/openseadragon.min.js"}


def expected_read(role: str, target: str, level: str) -> int:
    """A READ_STUDY (``level`` "study") or READ_SERIES ("series") route on ``target``."""
    if target == "guessed":
        return 404  # absent, for everyone
    if target == "mixed":  # lab A's study with lab B's series in it: no such series there
        return 404 if level == "series" else expected_read(role, "own", level)
    if target == "casegrant":  # granted to lab A: its pathologists and technicians read it
        return ALLOWED if role in READS_OWN else 403 if role == EVERYWHERE else 404
    if target == "own":
        return ALLOWED if role in READS_OWN else 403 if role in SEES_OWN else 404
    # lab B's: a person's slide grant gives the slide, at the study level too (the study's answer
    # then holds that slide alone: the bodies are checked for the case's other slides)
    if target in ("granted", "collected") and role == GRANTEE_ROLE:
        return ALLOWED
    return 403 if role == EVERYWHERE else 404


def expected_administer(role: str, target: str, level: str) -> int:
    """An ADMINISTER route on lab ``target`` (``level`` "grant": a made-up grant or collection of
    that lab, which the handler answers 404 to whoever may administer the lab)."""
    if target == "guessed":  # no such lab: 404, but a platform admin passes the rule (the handler says)
        return HANDLER if role == EVERYWHERE else 404
    if role == EVERYWHERE or (role == "lab_admin" and target == "own"):
        return 404 if level == "grant" else ALLOWED
    if target == "own" and role in SEES_OWN:
        return 403
    return 404


def expected_slide(role: str, rule: Rule, target: str) -> int:
    """A slide route (the lifecycle's: its state, its flag of interest, its holds) on ``target``:
    reading it (or administering its lab), a pathologist's role in its lab, or administering its
    lab; refused 403 where the slide can be seen (read, searched), 404 where it cannot."""
    if target == "guessed":
        return 404
    read = expected_read(role, target, "series")
    administers = role == EVERYWHERE or (role == "lab_admin" and target == "own")
    if rule is Rule.READ_SLIDE:
        allowed = read == ALLOWED or administers
    elif rule is Rule.ANNOTATE_SLIDE:
        allowed = role == "pathologist" and target == "own"
    else:
        allowed = administers
    return ALLOWED if allowed else 404 if read == 404 else 403


def visible_slides(role: str) -> set[str]:
    """The slides (by target name) a role's QIDO answers may hold."""
    if role == EVERYWHERE:
        return {"own", "other", "granted", "sibling", "expired", "casegrant", "collected"}
    seen = {"casegrant"} if role in READS_OWN else set()
    if role in SEARCHES_OWN:
        seen.add("own")
    if role == GRANTEE_ROLE:
        seen |= {"granted", "collected"}  # the slide alone: its sibling stays hidden
    return seen


def expected(principal: str, rule: Rule, target: str, level: str) -> int:
    if rule is Rule.PUBLIC:  # answered whatever the token (a stale one must not block sign-in)
        return ALLOWED
    if principal in BAD_TOKENS and principal != "no token":
        return 401  # a token that cannot be believed: refused by every route that needs one
    if principal == "no token":
        return 401
    if rule in (Rule.SIGNED_IN, Rule.SEARCH):
        return ALLOWED
    if rule is Rule.STORE:
        return ALLOWED if principal == "technician" else 403
    if rule is Rule.CONSENT:  # patients' oppositions: the lab's pathologists, admins, technicians
        return ALLOWED if principal in ("pathologist", "technician", "lab_admin") else 403
    if rule is Rule.EXCHANGE:  # the archive's side of the exchange: this world is a site, whose
        # handler answers 404 (only an archive answers) to whoever passes the rule
        return HANDLER if principal in ("technician", "lab_admin") else 403
    if rule in (Rule.READ_STUDY, Rule.READ_SERIES):
        return expected_read(principal, target, level)
    if rule is Rule.ADMINISTER:
        return expected_administer(principal, target, level)
    if rule is Rule.PLATFORM:
        return ALLOWED if principal == EVERYWHERE else 403
    if rule in (Rule.READ_SLIDE, Rule.ANNOTATE_SLIDE, Rule.ADMINISTER_SLIDE):
        return expected_slide(principal, rule, target)
    if rule is Rule.ANNOTATIONS:  # the handler decides on what its query or path names: sent
        # without (400) or on an annotation of none (404); tests/api/test_annotations.py decides
        return HANDLER
    raise AssertionError(f"no expectation for rule {rule}: write one in test_authorization.expected")


# -- the world ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(module_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from build_world(module_backend, tmp_path_factory.mktemp("authz"))


@dataclass(frozen=True)
class Target:
    name: str
    study: str
    series: str
    instance: str


def _targets(world: World) -> dict[str, Target]:
    slides = world.slides
    found = {name: Target(name, s.study, s.series, s.instance) for name, s in slides.items()}
    found["mixed"] = Target("mixed", slides["own"].study, slides["other"].series, slides["other"].instance)
    rng = random.Random(10)
    found["guessed"] = Target("guessed", *(f"2.25.{rng.getrandbits(120)}" for _ in range(3)))
    return found


_STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=authz'


@dataclass(frozen=True)
class Case:
    key: str
    rule: Rule
    target: str
    method: str
    path: str
    level: str


def _fill(template: str, target: Target) -> str:
    path = (
        template.replace("{study}", target.study)
        .replace("{series}", target.series)
        .replace("{instance}", target.instance)
        .replace("{frames}", "1")
        .replace("{path:path}", "7FE00010")  # Pixel Data: the BulkDataURI every image's metadata gives
        .replace("{name}", "volume.png")  # a plot of the storage report
    )
    assert "{" not in path, f"{template}: a path parameter the matrix cannot fill in; extend _fill"
    return path


def _lab_path(template: str, finess: str) -> str:
    return (
        template.replace("{finess}", finess)
        .replace("{grant}", NO_GRANT)
        .replace("{collection}", NO_GRANT)
        .replace("{slide}", NO_SLIDE)
    )


def cases(world: World) -> list[Case]:
    """Every route key of the application × the targets its path takes."""
    made = []
    targets = _targets(world)
    for key, _ in route_keys(world.app.starlette.routes):  # type: ignore[attr-defined]
        assert key in RULES, f"{key} has no rule in lamina.api.auth.RULES"
        rule = RULES[key]
        method, template = key.split(" ", 1)
        if method == "MOUNT":
            assert key in MOUNT_PATHS, f"{key}: add a concrete path under it to MOUNT_PATHS"
            made.append(Case(key, rule, "-", "GET", MOUNT_PATHS[key], "-"))
            continue
        if "{finess}" in template:
            level = "grant" if "{grant}" in template or "{collection}" in template else "lab"
            for name, finess in LAB_TARGETS.items():
                path = _fill(_lab_path(template, finess), targets["guessed"])
                made.append(Case(key, rule, name, method, path, level))
            continue
        if "{slide}" in template:
            for name in SLIDE_TARGETS:
                slide = world.slides[name].slide_id if name in world.slides else NO_SLIDE
                made.append(Case(key, rule, name, method, template.replace("{slide}", slide), "slide"))
            continue
        if "{study}" not in template:
            made.append(Case(key, rule, "-", method, _fill(template, targets["guessed"]), "-"))
            continue
        level = "series" if "{series}" in template else "study"
        for name in TARGETS:
            if level == "study" and name in ("sibling", "mixed"):
                continue  # the same study as "granted" and "own"
            made.append(Case(key, rule, name, method, _fill(template, targets[name]), level))
    return made


def _send(client: httpx.Client, case: Case, authorization: str | None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization else {}
    if case.method == "POST" and case.key.startswith("POST /dicomweb/"):
        headers["Content-Type"] = _STOW_TYPE
        return client.post(case.path, content=b"--authz--\r\n", headers=headers)
    if case.method == "POST" and case.key.startswith("POST /api/"):  # {}: 400, nothing changed
        return client.post(case.path, json={}, headers=headers)
    if case.method == "POST" and case.key.startswith("POST /fhir/"):  # {}: 400, nothing recorded
        headers["Content-Type"] = "application/fhir+json"
        return client.post(case.path, content=b"{}", headers=headers)
    if case.method == "PUT":  # {} (not TOML, not a flag): 400, nothing changed
        return client.put(case.path, json={}, headers=headers)
    if case.method == "POST":  # the sign-in form, sent without one: 400 from the handler
        return client.post(case.path, content=b"", headers=headers)
    if case.method == "DELETE":
        return client.delete(case.path, headers=headers)
    assert case.method == "GET", case
    return client.get(case.path, headers=headers)


# -- the checks of one answer ---------------------------------------------------------------------


def _markers_regex(markers: set[str]) -> re.Pattern[bytes] | None:
    if not markers:
        return None
    # a UID must not match inside a longer one (1.2.3 in 1.2.3.4)
    alternatives = "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
    return re.compile(rf"(?<![0-9.])(?:{alternatives})(?![0-9.])".encode())


def foreign_markers(world: World, principal: str) -> set[str]:
    """What ``principal``'s answers may never hold: the markers of every slide it may not see
    (all of them for someone without a valid token)."""
    if principal not in ROLES:
        return _all_markers(world)
    seen = visible_slides(principal)
    cases_seen = {world.slides[name].study for name in seen}
    foreign: set[str] = set()
    for name, slide in world.slides.items():
        if slide.study not in cases_seen:
            foreign |= slide.case_markers
        if name not in seen:
            foreign |= slide.slide_markers
    return foreign


def _all_markers(world: World) -> set[str]:
    return {m for s in world.slides.values() for m in s.case_markers | s.slide_markers}


def _values(answer: Any, tag: str) -> set[str]:
    return {str(v) for item in answer for v in item.get(tag, {}).get("Value", [])}


def search_problem(world: World, principal: str, case: Case, response: httpx.Response) -> str | None:
    """Whether a QIDO answer holds exactly what ``principal`` may see of what was asked."""
    targets = _targets(world)
    seen = [world.slides[name] for name in visible_slides(principal)]
    if case.target != "-":
        target = targets[case.target]
        seen = [s for s in seen if s.study == target.study]
        if case.level == "series":
            seen = [s for s in seen if s.series == target.series]
    answer = response.json()
    level = case.key.rsplit("/", 1)[1]
    if level == "studies":
        got, want = _values(answer, "0020000D"), {s.study for s in seen}
    elif level == "series":
        got, want = _values(answer, "0020000E"), {s.series for s in seen}
    else:
        got, want = _values(answer, "00080018"), {uid for s in seen for uid in s.instances}
    if got == want:
        return None
    names = {uid: s.name for s in world.slides.values() for uid in {s.study, s.series, *s.instances}}
    extra, missing = (
        sorted({names.get(u, u) for u in got - want}),
        sorted({names.get(u, u) for u in want - got}),
    )
    return f"{level}: extra {extra}, missing {missing}"


def check(
    world: World, principal: str, case: Case, response: httpx.Response, foreign: re.Pattern[bytes] | None
) -> str | None:
    """What is wrong with ``response`` (None: nothing)."""
    want = expected(principal, case.rule, case.target, case.level)
    status = response.status_code
    if want == ALLOWED and (status in REFUSED or status >= 500):
        return f"expected the handler's answer, got {status}"
    if want == HANDLER and (status in (401, 403) or status >= 500):
        return f"expected the handler's answer, got {status}"
    if want not in (ALLOWED, HANDLER) and status != want:
        return f"expected {want}, got {status}"
    body = response.content
    leak = foreign.search(body) if foreign is not None else None
    if leak is not None:
        return f"the body holds {leak.group().decode()!r}, which {principal} may not see"
    if status in REFUSED and (hit := _markers_regex(_all_markers(world))) and (found := hit.search(body)):
        return f"a refusal's body holds {found.group().decode()!r}"
    challenge = response.headers.get("www-authenticate")
    if status == 401 and principal == "no token" and challenge != 'Bearer realm="lamina"':
        return f"WWW-Authenticate {challenge!r}"
    if status == 401 and principal != "no token":
        if challenge != 'Bearer realm="lamina", error="invalid_token"':
            return f"WWW-Authenticate {challenge!r}"
        if json.loads(body).get("detail") != INVALID_TOKEN:
            return f"the refusal says more than 'invalid token': {body[:200]!r}"
    if case.rule is Rule.SEARCH and principal in ROLES:
        if status != 200:
            return f"a search answered {status}"
        return search_problem(world, principal, case, response)
    return None


PRINCIPALS = (*ROLES, *BAD_TOKENS)


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_every_route_answers_each_principal_as_the_rules_say(world: World, principal: str) -> None:
    # Arrange
    foreign = _markers_regex(foreign_markers(world, principal))
    matrix = cases(world)
    failures: list[tuple[str, str, str, str]] = []
    # Act and Assert, for every route and target (frames twice: the second may take the fast path)
    with httpx.Client(base_url=world.base, timeout=60) as client:
        for case in matrix:
            for _ in range(2 if case.key.endswith("/frames/{frames}") else 1):
                response = _send(client, case, world.headers[principal])
                problem = check(world, principal, case, response, foreign)
                if problem is not None:
                    failures.append((case.key, case.target, str(response.status_code), problem))
    table = "\n".join(
        f"  {key:70} {target:10} {status:4} {problem}" for key, target, status, problem in failures
    )
    assert not failures, f"{principal}: {len(failures)} of {len(matrix)} answers are wrong:\n{table}"


# -- every route has a rule -----------------------------------------------------------------------


def _app(tmp_path: Path) -> Any:
    return app_module.create_app(Settings.load(tmp_path / "lamina-data", env={}))


def test_every_route_of_the_application_has_a_rule_and_every_rule_a_route(tmp_path: Path) -> None:
    # Act
    keys = [key for key, _ in route_keys(_app(tmp_path).starlette.routes)]
    # without OpenSeadragon installed, the viewer's library is a page saying how to install it
    missing = app_module.create_app(
        Settings.load(tmp_path / "lamina-data", env={}).with_(viewer_vendor_dir=tmp_path / "nowhere")
    )
    without = [key for key, _ in route_keys(missing.starlette.routes)]
    # Assert
    assert len(keys) == len(set(keys))
    assert [key for key in keys + without if key not in RULES] == []
    assert sorted(set(RULES) - set(keys) - set(without)) == [], (
        "rules for routes the application no longer has"
    )


def _endpoint(request: Request) -> Response:
    return PlainTextResponse("a new route")


def test_a_route_without_a_rule_stops_the_application_from_being_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: a new route under /dicomweb, as a contributor would add it to dicomweb.routes()
    original: Callable[[], list[BaseRoute]] = dicomweb.routes
    extra = Route("/studies/{study}/annotations", _endpoint)
    monkeypatch.setattr(dicomweb, "routes", lambda: [*original(), extra])
    # Act and Assert
    with pytest.raises(LookupError, match=re.escape("/dicomweb/studies/{study}/annotations")):
        _app(tmp_path)
    monkeypatch.undo()
    assert _app(tmp_path) is not None  # the application builds without it


def test_guard_refuses_a_route_a_method_or_a_mount_that_has_no_rule(tmp_path: Path) -> None:
    rules = {"GET /known": Rule.SEARCH, "MOUNT /public": Rule.PUBLIC, "MOUNT /private": Rule.SEARCH}
    static = StaticFiles(directory=tmp_path)
    assert len(guard([Route("/known", _endpoint), Mount("/public", app=static)], rules)) == 2
    with pytest.raises(LookupError, match="/unknown has no authorization rule"):
        guard([Route("/known", _endpoint), Route("/unknown", _endpoint)], rules)
    with pytest.raises(LookupError, match=re.escape("['GET', 'POST'] /known")):
        guard([Route("/known", _endpoint, methods=["GET", "POST"])], rules)
    with pytest.raises(LookupError, match="MOUNT /private"):
        guard([Mount("/private", app=static)], rules)
    with pytest.raises(LookupError, match="MOUNT /other"):
        guard([Mount("/other", app=static)], rules)
    with pytest.raises(LookupError, match="/nested/unknown"):
        guard([Mount("/nested", routes=[Route("/unknown", _endpoint)])], rules)


def test_the_matrix_fills_in_every_route_of_the_application(tmp_path: Path) -> None:
    """The URLs are made from the route list alone (a new parameter fails here first)."""
    app = _app(tmp_path)
    target = Target("t", "1.2", "1.2.3", "1.2.3.4")
    for key, _ in route_keys(app.starlette.routes):
        method, template = key.split(" ", 1)
        if method == "MOUNT":
            assert key in MOUNT_PATHS, key
        else:
            filled = _lab_path(template, LAB_A)
            assert "{" not in _fill(filled, target), key
