"""``lamina issuer show|rotate``: this node's own token issuer and its signing keys."""

from __future__ import annotations

import json

import click

from lamina.archive import audit
from lamina.cli.common import console, handle_errors, open_archive, operator
from lamina.config import Settings
from lamina.governance.issuer import LocalIssuer


@click.group("issuer")
def issuer() -> None:
    """This node's own token issuer (the sign-in page's, and 'lamina token''s)."""


@issuer.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the issuer and its keys as JSON.")
@click.pass_context
@handle_errors
def show(ctx: click.Context, as_json: bool) -> None:
    """Show the issuer's identifier and its keys' ids; the current one signs new tokens."""
    home = (ctx.find_root().obj or {}).get("home")
    local = LocalIssuer.open(Settings.load(home).home)
    name, current, kids = local.issuer, local.current_kid, local.kids()
    if as_json:
        click.echo(json.dumps({"issuer": name, "current": current, "kids": kids}, indent=2))
        return
    console.print(f"issuer {name}", highlight=False, markup=False)
    for kid in kids:
        state = "current: signs new tokens" if kid == current else "retired: verifies the tokens it signed"
        console.print(f"key {kid} ({state})", highlight=False, markup=False)


@issuer.command("rotate")
@click.option("--json", "as_json", is_flag=True, help="Print the new key's id and the keys kept as JSON.")
@click.pass_context
@handle_errors
def rotate(ctx: click.Context, as_json: bool) -> None:
    """Make a new signing key. Tokens signed before stay valid until they expire; a running
    server signs with the new key from its next token on."""
    archive = open_archive(ctx)
    try:
        local = LocalIssuer.open(archive.settings.home)
        previous = local.current_kid
        kid = local.rotate()
        kids = local.kids()
        with archive.catalog.begin() as conn:
            audit.append(
                conn,
                operator(),
                "issuer-rotate",
                f"issuer/{local.issuer}",
                {"kid": kid, "previous": previous},
            )
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps({"issuer": local.issuer, "current": kid, "kids": kids}, indent=2))
        return
    click.echo(kid)
