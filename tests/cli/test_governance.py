"""``lamina tenants``, ``lamina users``, ``lamina grants`` and ``lamina collections`` as an
operator runs them: a slide stored before tenants becomes the first lab's, a grant is given,
listed, revoked, a collection made, granted and deleted; tables and JSON; one-line errors naming
the parameter; every change audited with the operator's name."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.sample import write_samples

Run = Callable[..., subprocess.CompletedProcess[str]]  # the fixture lamina, tests/cli/conftest.py
LYON, NICE = "690781810", "060785011"


@pytest.fixture
def backend_env() -> dict[str, str]:
    """The embedded default only (SQLite and a folder): these commands parse, print and call the registry;
    the registry they read and write is tested on both backends in tests/governance, and the
    same commands reach PostgreSQL + S3 through the same code."""
    return {}


def test_labs_people_and_grants_from_the_command_line(lamina: Run, tmp_path: Path) -> None:
    # Arrange: a slide stored before any tenant exists
    (sample,) = write_samples(tmp_path / "samples", ["aperio_svs"], size=(1024, 768), seed=11)
    ingested = lamina("ingest", str(sample.path), "--json")
    assert ingested.returncode == 0, ingested.stderr
    slide_id = json.loads(ingested.stdout)[0]["slide_id"]

    # Act / Assert: the first lab takes it
    added = lamina("tenants", "add", LYON, "Anatomie pathologique, HCL")
    assert added.returncode == 0, added.stderr
    assert f"added tenant {LYON}" in added.stdout and "1 slides" in added.stdout
    second = json.loads(lamina("tenants", "add", NICE, "CHU de Nice", "--json").stdout)
    assert second == {"finess": NICE, "name": "CHU de Nice", "adopted": {}}
    assert [t["finess"] for t in json.loads(lamina("tenants", "list", "--json").stdout)] == [NICE, LYON]
    assert "Anatomie pathologique, HCL" in lamina("tenants", "list").stdout

    person = lamina(
        "users",
        "add",
        "810001234567",
        "--tenant",
        LYON,
        "--role",
        "pathologist",
        "--role",
        "lab_admin",
        "--json",
    )
    assert person.returncode == 0, person.stderr
    assert {(r["tenant"], r["role"]) for r in json.loads(person.stdout)["roles"]} == {
        (LYON, "pathologist"),
        (LYON, "lab_admin"),
    }
    assert "810001234567" in lamina("users", "list", "--tenant", LYON).stdout
    assert json.loads(lamina("users", "list", "--tenant", NICE, "--json").stdout) == []
    removed = lamina("users", "remove", "810001234567", "--tenant", LYON, "--role", "lab_admin", "--json")
    assert removed.returncode == 0, removed.stderr
    assert [(r["tenant"], r["role"]) for r in json.loads(removed.stdout)["roles"]] == [(LYON, "pathologist")]
    again = lamina("users", "remove", "810001234567", "--tenant", LYON, "--role", "lab_admin")
    assert again.returncode != 0 and "holds none of lab_admin" in again.stderr, again.stderr

    given = lamina(
        "grants", "add", "--tenant", LYON, "--to", f"tenant:{NICE}", "--on", f"slide:{slide_id}",
        "--expires", "30d", "--json",
    )  # fmt: skip
    assert given.returncode == 0, given.stderr
    grant = json.loads(given.stdout)
    assert grant["to"] == {"kind": "tenant", "id": NICE} and grant["active"] is True
    listed = json.loads(lamina("grants", "list", "--tenant", LYON, "--json").stdout)
    assert [g["id"] for g in listed] == [grant["id"]]
    assert lamina("grants", "revoke", grant["id"]).returncode == 0
    assert json.loads(lamina("grants", "list", "--json").stdout) == []
    history = json.loads(lamina("grants", "list", "--all", "--json").stdout)
    assert history[0]["active"] is False and history[0]["revoked_at"]
    assert "revoked" in lamina("grants", "list", "--all").stdout

    # a collection of the lab's slides, granted, emptied, deleted (its grant revoked with it)
    made = lamina("collections", "add", "Teaching", "--tenant", LYON, "--slide", slide_id, "--json")
    assert made.returncode == 0, made.stderr
    collection = json.loads(made.stdout)
    assert collection["slides"] == [slide_id] and collection["tenant"] == LYON
    assert "Teaching" in lamina("collections", "list").stdout
    on = f"collection:{collection['id']}"
    shared = lamina("grants", "add", "--tenant", LYON, "--to", "person:810001234567", "--on", on, "--json")
    assert shared.returncode == 0, shared.stderr
    emptied = lamina("collections", "remove-slides", collection["id"], slide_id)
    assert emptied.returncode == 0 and "0 slide(s)" in emptied.stdout, emptied.stderr
    assert lamina("collections", "delete", collection["id"]).returncode == 0
    assert json.loads(lamina("collections", "list", "--json").stdout) == []
    assert json.loads(lamina("grants", "list", "--json").stdout) == []  # revoked with it

    # every change audited, by the operator
    entries = json.loads(lamina("audit", "show", "--json").stdout)
    actions = [(e["action"], e["actor"]) for e in entries]
    for action in ("tenant-add", "role-add", "role-remove", "grant-add", "grant-revoke", "collection-delete"):
        assert any(a == action and actor.startswith("operator:") for a, actor in actions), (action, actions)


def test_mistakes_get_one_line_naming_the_parameter(lamina: Run) -> None:
    cases = [
        (("tenants", "add", "75071218", "x"), "FINESS: '75071218' is not a FINESS number"),
        (("users", "add", "someone", "--tenant", LYON, "--role", "pathologist"), f"no tenant {LYON}"),
        (
            ("users", "add", "some one", "--tenant", LYON, "--role", "pathologist"),
            "PERSON: 'some one' cannot",
        ),
        (
            ("grants", "add", "--tenant", LYON, "--to", "nobody", "--on", "slide:X"),
            "--to: 'nobody': write KIND:ID",
        ),
        (
            ("grants", "add", "--tenant", LYON, "--to", "person:a", "--on", "slide:X", "--expires", "soon"),
            "--expires",
        ),
        (
            (
                "grants",
                "add",
                "--tenant",
                LYON,
                "--to",
                "person:a",
                "--on",
                "slide:X",
                "--expires",
                "99999999999d",
            ),
            "--expires: '99999999999d' is too far",
        ),
        (("tenants", "add", NICE, "  "), "NAME: give the lab's name"),
        (("grants", "revoke", "0123"), "no grant '0123' in force"),
    ]
    for args, message in cases:
        done = lamina(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    refused = lamina("users", "add", "someone", "--tenant", LYON, "--role", "surgeon")
    assert refused.returncode == 2 and "'surgeon' is not one of" in refused.stderr


def test_slides_are_ingested_into_a_lab_and_a_case_stays_in_one(lamina: Run, tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "samples", ["aperio_svs", "tiled_tiff"], size=(1024, 768), seed=13)
    svs, tiff = (sample.path for sample in samples)
    # one lab: the default
    assert lamina("tenants", "add", LYON, "HCL").returncode == 0
    first = lamina("ingest", str(svs), "--json")
    assert first.returncode == 0, first.stderr
    # two labs: the command asks which, and takes the one named
    assert lamina("tenants", "add", NICE, "Nice").returncode == 0
    asked = lamina("ingest", str(tiff))
    assert asked.returncode == 2
    assert f"--tenant: this node serves 2 labs ({NICE}, {LYON})" in asked.stderr
    unknown = lamina("ingest", str(tiff), "--tenant", "130786049")
    assert unknown.returncode == 2 and "no tenant 130786049" in unknown.stderr
    second = lamina("ingest", str(tiff), "--tenant", NICE, "--json")
    assert second.returncode == 0, second.stderr
    owners = {s["id"]: s["tenant"] for s in json.loads(lamina("slides", "--json").stdout)}
    assert owners == {
        json.loads(first.stdout)[0]["slide_id"]: LYON,
        json.loads(second.stdout)[0]["slide_id"]: NICE,
    }
