"""``lamina token PERSON``: a bearer token from this node's own issuer, for scripts and tests
(``TOKEN=$(lamina token alice)``)."""

from __future__ import annotations

import json

import click

from lamina.archive import audit
from lamina.cli.common import handle_errors, open_archive, operator
from lamina.governance.issuer import LocalIssuer, check_lifetime
from lamina.governance.model import check_person_id
from lamina.governance.registry import Registry


@click.command("token")
@click.argument("person")
@click.option(
    "--expires-in",
    "expires_in",
    type=int,
    default=3600,
    show_default=True,
    help="The token's lifetime in seconds (1 to 2592000, 30 days).",
)
@click.option("--json", "as_json", is_flag=True, help="Print an OAuth 2.0 token response as JSON.")
@click.pass_context
@handle_errors
def token(ctx: click.Context, person: str, expires_in: int, as_json: bool) -> None:
    """Print a bearer token naming PERSON, signed by this node's issuer (the token alone on
    stdout). PERSON must be known ('lamina users add'); the issue is audited, the token is not."""
    pid, lifetime = check_person_id(person), check_lifetime(expires_in, "--expires-in")
    archive = open_archive(ctx)
    try:
        Registry(archive.catalog).person(pid)  # NotFoundError names 'lamina users add'
        issued = LocalIssuer.open(archive.settings.home).issue(pid, lifetime)
        with archive.catalog.begin() as conn:
            audit.append(conn, operator(), "token-issue", f"person/{pid}", {"expires_in": lifetime})
    finally:
        archive.close()
    if as_json:
        answer = {"access_token": issued, "token_type": "Bearer", "expires_in": lifetime, "person": pid}
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(issued)
