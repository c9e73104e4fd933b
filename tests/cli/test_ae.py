"""``lamina ae add|list|remove`` as a user runs it, on both backends: tables and JSON, one-line
errors naming the parameter, exit codes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]  # the fixture lamina, tests/cli/conftest.py


def test_add_list_remove_with_tables_and_json(lamina: Run) -> None:
    added = lamina(
        "ae", "add", "PACS", "--host", "10.0.0.5", "--port", "104", "--description", "IMS [room 2]"
    )
    assert added.returncode == 0, added.stderr
    assert "added PACS@10.0.0.5:104" in added.stdout
    as_json = lamina("ae", "add", "STORESCP", "--host", "127.0.0.1", "--port", "11112", "--json")
    assert json.loads(as_json.stdout)["address"] == "STORESCP@127.0.0.1:11112"

    table = lamina("ae", "list")
    assert table.returncode == 0
    assert "IMS [room 2]" in table.stdout  # the description is shown as typed, not read as markup
    assert table.stdout.index("PACS") < table.stdout.index("STORESCP")
    listed = json.loads(lamina("ae", "list", "--json").stdout)
    assert [(p["ae_title"], p["host"], p["port"]) for p in listed] == [
        ("PACS", "10.0.0.5", 104),
        ("STORESCP", "127.0.0.1", 11112),
    ]

    removed = lamina("ae", "remove", "PACS", "--json")
    assert removed.returncode == 0 and json.loads(removed.stdout)["ae_title"] == "PACS"
    assert [p["ae_title"] for p in json.loads(lamina("ae", "list", "--json").stdout)] == ["STORESCP"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["AN_AE_TITLE_TOO_LONG", "--host", "h", "--port", "104"], "AE_TITLE: 'AN_AE_TITLE_TOO_LONG' has 20"),
        (["A\\B", "--host", "h", "--port", "104"], "AE_TITLE:"),
        (["PACS", "--host", "bad host", "--port", "104"], "--host: 'bad host' is neither"),
        (["PACS", "--host", "h", "--port", "0"], "--port: 0 is not a TCP port"),
        (["PACS", "--host", "h", "--port", "dicom"], "--port: 'dicom' is not a number"),
    ],
)
def test_bad_values_are_one_line_naming_the_parameter(
    lamina_here: Run, args: list[str], message: str
) -> None:
    lamina = lamina_here
    done = lamina("ae", "add", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert json.loads(lamina("ae", "list", "--json").stdout) == []  # nothing half-added


def test_duplicates_and_unknown_titles_fail_with_the_fix(lamina: Run) -> None:
    assert lamina("ae", "add", "PACS", "--host", "h", "--port", "104").returncode == 0
    again = lamina("ae", "add", "PACS", "--host", "other", "--port", "104")
    assert again.returncode == 2 and "lamina ae remove PACS" in again.stderr
    gone = lamina("ae", "remove", "NOBODY")
    assert gone.returncode == 2 and "lamina ae list" in gone.stderr


LAB = "750712184"


def test_a_calling_ae_of_a_lab_with_its_operations(lamina: Run) -> None:
    assert lamina("tenants", "add", LAB, "Anatomie pathologique").returncode == 0
    # Act: a scanner that only calls; a PACS that calls and is a move destination
    scanner = lamina("ae", "add", "SCANNER1", "--tenant", LAB, "--allow", "echo,store")
    both = lamina(
        "ae", "add", "PACS", "--tenant", LAB, "--allow", "echo,find,move,get,store", "--host", "10.0.0.5",
        "--port", "104", "--json",
    )  # fmt: skip
    # Assert
    assert scanner.returncode == 0, scanner.stderr
    assert f"added calling AE SCANNER1 of {LAB} (echo,store)" in scanner.stdout
    assert both.returncode == 0, both.stderr
    added = json.loads(both.stdout)
    assert (added["tenant"], added["calling"], added["move_destination"]) == (LAB, True, True)
    assert added["allowed"] == ["echo", "store", "find", "get", "move"]
    listed = {p["ae_title"]: p for p in json.loads(lamina("ae", "list", "--json").stdout)}
    assert listed["SCANNER1"]["allowed"] == ["echo", "store"] and listed["SCANNER1"]["host"] is None
    assert listed["PACS"]["address"] == "PACS@10.0.0.5:104"
    table = lamina("ae", "list").stdout
    assert "echo,store" in table and LAB in table
    audited = lamina("audit", "show", "--action", "ae-add", "--json")
    assert audited.returncode == 0, audited.stderr
    assert "SCANNER1" in audited.stdout and LAB in audited.stdout and "echo,store" in audited.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", LAB, "--allow", "echo,delete"], "--allow: 'delete' is not an operation; give some of "
         "echo,store,find,get,move"),
        (["--tenant", "123", "--allow", "echo"], "--tenant: '123' is not a FINESS number"),
        (["--tenant", "690000000", "--allow", "echo"], "--tenant: no tenant 690000000 on this node; add it "
         "with 'lamina tenants add 690000000 NAME'"),
        (["--allow", "echo"], "--tenant: a calling AE acts for one lab"),
        ([], "--allow: give what a calling AE may ask"),
        (["--host", "h"], "--port: a move destination needs --host and --port"),
    ],
)  # fmt: skip
def test_bad_calling_ae_values_are_one_line_naming_the_parameter(
    lamina_here: Run, args: list[str], message: str
) -> None:
    lamina = lamina_here
    assert lamina("tenants", "add", LAB, "Anatomie pathologique").returncode == 0
    done = lamina("ae", "add", "SCANNER1", *args)
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    assert json.loads(lamina("ae", "list", "--json").stdout) == []
