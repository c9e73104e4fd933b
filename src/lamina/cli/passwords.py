"""``lamina users password PERSON``: the password of PERSON for this node's sign-in page."""

from __future__ import annotations

import json
import sys

import click

from lamina.cli.common import console, handle_errors, open_archive, operator
from lamina.errors import RequestError
from lamina.governance.model import check_person_id
from lamina.governance.passwords import Passwords


def _from_stdin() -> str:
    """The first line of stdin, without its line ending (a password may hold spaces)."""
    line = sys.stdin.readline()
    if not line:
        raise RequestError("--stdin", "nothing on stdin; write the password, then a new line")
    return line.removesuffix("\n").removesuffix("\r")


@click.command("password")
@click.argument("person")
@click.option(
    "--stdin", "from_stdin", is_flag=True, help="Read the password from stdin's first line (scripts)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_context
@handle_errors
def password(ctx: click.Context, person: str, from_stdin: bool, as_json: bool) -> None:
    """Set PERSON's password for the sign-in page (12 to 1024 characters), asked twice without
    echo, or read from stdin with --stdin. Audited; the password is never shown nor logged."""
    pid = check_person_id(person)
    if from_stdin:
        secret = _from_stdin()
    else:
        secret = click.prompt(f"New password for {pid}", hide_input=True, confirmation_prompt=True, err=True)
    archive = open_archive(ctx)
    try:
        Passwords(archive.catalog).set(pid, secret, operator())
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps({"person": pid, "password_set": True}, indent=2))
        return
    console.print(f"password set for {pid}", highlight=False, markup=False)
