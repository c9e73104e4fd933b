"""``lamina token``, ``lamina issuer show|rotate`` and ``lamina users password`` as an operator runs
them (on the embedded default): a token the node's validator accepts, alone on stdout; rotation keeps the
tokens given before; a password from stdin or a hidden prompt, verified by the catalog; every
change audited, never with the token or the password in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from lamina.archive.archive import Archive
from lamina.cli import cli
from lamina.config import Settings
from lamina.governance.issuer import LocalIssuer
from lamina.governance.passwords import Passwords

Run = Callable[..., subprocess.CompletedProcess[str]]  # the fixture lamina, tests/cli/conftest.py
LYON = "690781810"
SECRET = "correct horse battery staple"


@pytest.fixture
def backend_env() -> dict[str, str]:
    """The embedded default only (SQLite and a folder): these commands sign tokens and set passwords;
    the registry they read and write is tested on both backends in tests/governance, and the
    same commands reach PostgreSQL + S3 through the same code."""
    return {}


def _alice(lamina: Run) -> None:
    assert lamina("tenants", "add", LYON, "Anatomie pathologique, HCL").returncode == 0
    added = lamina("users", "add", "alice", "--tenant", LYON, "--role", "pathologist")
    assert added.returncode == 0, added.stderr


def test_a_token_alone_on_stdout_that_the_node_accepts(lamina: Run, tmp_path: Path) -> None:
    # Arrange
    _alice(lamina)

    # Act
    plain = lamina("token", "alice")
    as_json = lamina("token", "alice", "--expires-in", "600", "--json")

    # Assert
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.count("\n") == 1 and plain.stdout.count(".") == 2
    validator = LocalIssuer.open(tmp_path / "home").validator()
    assert validator.validate(plain.stdout.strip()).subject == "alice"
    answer = json.loads(as_json.stdout)
    assert {k: v for k, v in answer.items() if k != "access_token"} == {
        "token_type": "Bearer",
        "expires_in": 600,
        "person": "alice",
    }
    claims = validator.validate(answer["access_token"])
    assert claims["exp"] - claims["iat"] == 600

    audit = lamina("audit", "show", "--json")
    issued = [e for e in json.loads(audit.stdout) if e["action"] == "token-issue"]
    assert [e["detail"]["expires_in"] for e in issued] == [3600, 600]
    assert all(e["actor"].startswith("operator:") and e["entity"] == "person/alice" for e in issued)
    assert plain.stdout.strip() not in audit.stdout and answer["access_token"] not in audit.stdout


def test_token_mistakes_get_one_line(lamina: Run) -> None:
    _alice(lamina)
    cases = [
        (("token", "nobody"), "no person 'nobody' on this node; add one with 'lamina users add'"),
        (("token", "alice", "--expires-in", "0"), "--expires-in: 0 is not a lifetime from 1 to 2592000"),
        (("token", "alice", "--expires-in", "2592001"), "--expires-in: 2592001 is not a lifetime"),
    ]
    for args, message in cases:
        done = lamina(*args)
        assert done.returncode == 2 and done.stdout == "", (args, done.stdout)
        assert message in done.stderr and done.stderr.count("\n") == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_rotation_from_the_command_line_keeps_the_tokens_given(lamina: Run, tmp_path: Path) -> None:
    # Arrange
    _alice(lamina)
    before = lamina("token", "alice").stdout.strip()
    shown = json.loads(lamina("issuer", "show", "--json").stdout)
    assert shown["issuer"].startswith("urn:lamina:issuer:") and shown["kids"] == [shown["current"]]

    # Act
    rotated = lamina("issuer", "rotate", "--json")

    # Assert
    assert rotated.returncode == 0, rotated.stderr
    after = json.loads(rotated.stdout)
    assert after["issuer"] == shown["issuer"] and after["current"] != shown["current"]
    assert after["kids"] == [shown["current"], after["current"]]
    validator = LocalIssuer.open(tmp_path / "home").validator()
    assert validator.validate(before).subject == "alice"
    assert validator.validate(lamina("token", "alice").stdout.strip()).subject == "alice"
    text = lamina("issuer", "show").stdout
    assert f"key {after['current']} (current: signs new tokens)" in text
    assert f"key {shown['current']} (retired" in text
    kid = lamina("issuer", "rotate").stdout.strip()
    assert kid == json.loads(lamina("issuer", "show", "--json").stdout)["current"]

    entries = json.loads(lamina("audit", "show", "--json").stdout)
    rotations = [e for e in entries if e["action"] == "issuer-rotate"]
    assert [e["detail"]["kid"] for e in rotations] == [after["current"], kid]
    assert rotations[0]["entity"] == f"issuer/{shown['issuer']}"


def test_a_password_from_stdin_is_set_and_verified(
    lamina: Run, tmp_path: Path, backend_env: dict[str, str]
) -> None:
    # Arrange
    _alice(lamina)
    env = {**os.environ, "LAMINA_HOME": str(tmp_path / "home"), **backend_env}
    command = [sys.executable, "-m", "lamina", "users", "password", "alice", "--stdin", "--json"]

    # Act
    done = subprocess.run(command, input=f"{SECRET}\n", capture_output=True, text=True, env=env, timeout=120)
    short = subprocess.run(command, input="too short\n", capture_output=True, text=True, env=env, timeout=120)

    # Assert
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"person": "alice", "password_set": True}
    assert SECRET not in done.stdout + done.stderr
    assert short.returncode == 2 and "password: must be 12 to 1024 characters" in short.stderr
    assert "too short" not in short.stderr
    archive = Archive.open(Settings.load(tmp_path / "home", env=backend_env))
    try:
        assert Passwords(archive.catalog).verify("alice", SECRET, "127.0.0.1") is True
    finally:
        archive.close()
    audit = lamina("audit", "show", "--json").stdout
    entries = [e for e in json.loads(audit) if e["action"] == "password-set"]
    assert [e["entity"] for e in entries] == ["person/alice"] and SECRET not in audit
    unknown = subprocess.run(
        [sys.executable, "-m", "lamina", "users", "password", "nobody", "--stdin"],
        input=f"{SECRET}\n", capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert unknown.returncode == 2 and "no person 'nobody'" in unknown.stderr


def test_a_password_asked_twice_without_echo(
    lamina: Run, tmp_path: Path, backend_env: dict[str, str]
) -> None:
    _alice(lamina)
    env = {"LAMINA_HOME": str(tmp_path / "home"), **backend_env}
    runner = CliRunner()

    args = ["users", "password", "alice"]
    mismatch = runner.invoke(cli, args, input=f"{SECRET}\nsomething else!!\n", env=env)
    done = runner.invoke(cli, args, input=f"{SECRET}\n{SECRET}\n", env=env)

    assert mismatch.exit_code != 0 and "password set" not in mismatch.output
    assert done.exit_code == 0, done.output
    assert "password set for alice" in done.output and SECRET not in done.output
    archive = Archive.open(Settings.load(tmp_path / "home", env=backend_env))
    try:
        assert Passwords(archive.catalog).verify("alice", SECRET, "127.0.0.1") is True
    finally:
        archive.close()
