"""``lamina grants add|list|revoke``: what a lab lets others read on its slides, cases and
collections."""

from __future__ import annotations

import datetime as dt
import json

import click
from rich.markup import escape
from rich.table import Table

from lamina.cli.common import console, handle_errors, open_archive, operator
from lamina.errors import RequestError
from lamina.governance.model import GranteeKind, Permission, ResourceKind, parse_target
from lamina.governance.registry import Registry


def _expiry(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        if value[-1:] in ("d", "h") and value[:-1].isdigit():
            unit = dt.timedelta(days=1) if value[-1] == "d" else dt.timedelta(hours=1)
            return dt.datetime.now(dt.UTC) + int(value[:-1]) * unit
        when = dt.datetime.fromisoformat(value)
    except OverflowError:  # 99999999999d: past the calendar's end
        raise RequestError("--expires", f"{value!r} is too far: give a date before the year 9999") from None
    except ValueError:
        raise RequestError(
            "--expires", f"{value!r}: a date (2027-03-31), a time (2027-03-31T18:00Z), or 30d, 12h"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@click.group()
def grants() -> None:
    """What a lab lets a person, another lab or a project read on its slides and cases."""


@grants.command("add")
@click.option("--tenant", required=True, help="The lab giving the grant (it must own what is granted).")
@click.option("--to", "to", required=True, help="Who: person:ID, tenant:FINESS or project:ID.")
@click.option(
    "--on", "on", required=True, help="What: slide:SLIDE_ID, case:STUDY_INSTANCE_UID or collection:ID."
)
@click.option(
    "--permission",
    type=click.Choice([p.value for p in Permission]),
    default=Permission.READ.value,
    show_default=True,
    help="Read, or read and annotate.",
)
@click.option(
    "--expires",
    default=None,
    help="Until when: 2027-03-31, 2027-03-31T18:00Z, 30d, 12h (default: until revoked).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the grant as JSON.")
@click.pass_context
@handle_errors
def add(
    ctx: click.Context, tenant: str, to: str, on: str, permission: str, expires: str | None, as_json: bool
) -> None:
    """Give a grant on one of the lab's slides, cases or collections."""
    to_kind, grantee = parse_target(to, "--to", GranteeKind)
    on_kind, resource = parse_target(on, "--on", ResourceKind)
    until = _expiry(expires)
    archive = open_archive(ctx)
    try:
        grant = Registry(archive.catalog).add_grant(
            tenant,
            GranteeKind(to_kind),
            grantee,
            ResourceKind(on_kind),
            resource,
            Permission(permission),
            until,
            operator(),
        )
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(grant.as_dict(), indent=2))
    else:
        console.print(f"grant {grant.id}: {to} may {permission} {on}", highlight=False, markup=False)


@grants.command("list")
@click.option("--tenant", default=None, help="Only the grants this lab gave.")
@click.option("--all", "include_ended", is_flag=True, help="Also the revoked and expired ones.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per grant.")
@click.pass_context
@handle_errors
def list_(ctx: click.Context, tenant: str | None, include_ended: bool, as_json: bool) -> None:
    """List the grants in force (with --all, every grant ever given)."""
    archive = open_archive(ctx)
    try:
        found = Registry(archive.catalog).grants(tenant, include_ended=include_ended)
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps([grant.as_dict() for grant in found], indent=2))
        return
    table = Table(title=f"{len(found)} grant(s) in {archive.settings.home}")
    for column in ("id", "tenant", "to", "on", "permission", "expires", "state"):
        table.add_column(column)
    for grant in found:
        table.add_row(
            grant.id,
            grant.tenant,
            escape(f"{grant.grantee_kind.value}:{grant.grantee}"),
            escape(f"{grant.resource_kind.value}:{grant.resource}"),
            grant.permission.value,
            grant.expires_at.isoformat(timespec="minutes") if grant.expires_at else "-",
            "active" if grant.active() else ("revoked" if grant.revoked_at else "expired"),
        )
    console.print(table)


@grants.command("revoke")
@click.argument("grant_id")
@click.option("--json", "as_json", is_flag=True, help="Print the revoked grant as JSON.")
@click.pass_context
@handle_errors
def revoke(ctx: click.Context, grant_id: str, as_json: bool) -> None:
    """End a grant now."""
    archive = open_archive(ctx)
    try:
        grant = Registry(archive.catalog).revoke_grant(grant_id, operator())
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(grant.as_dict(), indent=2))
    else:
        console.print(f"revoked grant {grant.id}", highlight=False, markup=False)
