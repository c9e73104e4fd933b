"""``lamina users add|remove|list``: the people who sign in, and the roles they hold in each lab."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from lamina.cli.common import console, handle_errors, open_archive, operator
from lamina.governance.model import check_finess, check_person_id
from lamina.governance.registry import Registry
from lamina.governance.roles import Role


@click.group()
def users() -> None:
    """The people who sign in (by the identifier their sign-in gives) and their roles per lab."""


@users.command("add")
@click.argument("person")
@click.option("--tenant", "tenant", required=True, help="The lab's FINESS number.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice([role.value for role in Role]),
    help="A role in that lab (repeat for several).",
)
@click.option("--name", "display_name", default="", help="The name to show (e.g. 'Dr A. Martin').")
@click.option("--json", "as_json", is_flag=True, help="Print the person, with every role held, as JSON.")
@click.pass_context
@handle_errors
def add(
    ctx: click.Context, person: str, tenant: str, roles: tuple[str, ...], display_name: str, as_json: bool
) -> None:
    """Give PERSON roles in a lab (PERSON is added if new; roles held already stay)."""
    pid, code = check_person_id(person), check_finess(tenant, "--tenant")
    archive = open_archive(ctx)
    try:
        found = Registry(archive.catalog).add_person(
            pid, code, [Role(r) for r in roles], display_name, operator()
        )
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(found.as_dict(), indent=2))
        return
    held = ", ".join(sorted(role.value for role in found.roles_in(code)))
    console.print(f"{found.id} holds in {code}: {held}", highlight=False, markup=False)


@users.command("remove")
@click.argument("person")
@click.option("--tenant", "tenant", required=True, help="The lab's FINESS number.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice([role.value for role in Role]),
    help="A role to take away (repeat for several; none: every role held in that lab).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the person, with the roles left, as JSON.")
@click.pass_context
@handle_errors
def remove(ctx: click.Context, person: str, tenant: str, roles: tuple[str, ...], as_json: bool) -> None:
    """Take roles in a lab from PERSON (all of them without --role). Servers apply it within 30 s;
    tokens already issued stay valid until they expire but give nothing the roles gave."""
    pid, code = check_person_id(person), check_finess(tenant, "--tenant")
    archive = open_archive(ctx)
    try:
        found = Registry(archive.catalog).remove_roles(pid, code, [Role(r) for r in roles], operator())
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(found.as_dict(), indent=2))
        return
    left = ", ".join(sorted(role.value for role in found.roles_in(code))) or "no role"
    console.print(f"{found.id} now holds in {code}: {left}", highlight=False, markup=False)


@users.command("list")
@click.option("--tenant", default=None, help="Only the people holding a role in this lab.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per person.")
@click.pass_context
@handle_errors
def list_(ctx: click.Context, tenant: str | None, as_json: bool) -> None:
    """List the people and their roles."""
    archive = open_archive(ctx)
    try:
        found = Registry(archive.catalog).people(tenant)
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps([person.as_dict() for person in found], indent=2))
        return
    table = Table(title=f"{len(found)} person(s) in {archive.settings.home}")
    for column in ("person", "name", "roles"):
        table.add_column(column)
    for person in found:
        roles = "; ".join(f"{item.tenant} {item.role.value}" for item in person.roles)
        table.add_row(escape(person.id), escape(person.display_name) or "-", roles or "-")
    console.print(table)


def _with_password() -> None:
    from lamina.cli.passwords import password  # passwords imports nothing of this module

    users.add_command(password)


_with_password()
