"""``lamina tenants add|list``: the labs (pathology structures, by FINESS number) this node serves."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from lamina.cli.common import console, handle_errors, open_archive, operator
from lamina.governance.model import check_finess
from lamina.governance.registry import Registry


@click.group()
def tenants() -> None:
    """The labs this node serves, by FINESS number; their slides, people and grants are theirs."""


@tenants.command("add")
@click.argument("finess")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the tenant added as JSON.")
@click.pass_context
@handle_errors
def add(ctx: click.Context, finess: str, name: str, as_json: bool) -> None:
    """Add the lab FINESS called NAME. The first lab added takes what was stored before."""
    code = check_finess(finess)
    archive = open_archive(ctx)
    try:
        tenant, adopted = Registry(archive.catalog).add_tenant(code, name, operator())
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps({**tenant.as_dict(), "adopted": adopted}, indent=2))
        return
    console.print(f"added tenant {tenant.finess} ({tenant.name})", highlight=False, markup=False)
    if any(adopted.values()):
        counts = ", ".join(f"{count} {kind}" for kind, count in adopted.items() if count)
        console.print(f"it now owns what was stored before: {counts}", highlight=False, markup=False)


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per tenant.")
@click.pass_context
@handle_errors
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the labs of this node."""
    archive = open_archive(ctx)
    try:
        found = Registry(archive.catalog).tenants()
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps([tenant.as_dict() for tenant in found], indent=2))
        return
    table = Table(title=f"{len(found)} tenant(s) in {archive.settings.home}")
    table.add_column("FINESS")
    table.add_column("name")
    for tenant in found:
        table.add_row(tenant.finess, escape(tenant.name))
    console.print(table)
