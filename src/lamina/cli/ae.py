"""``lamina ae add|list|remove``: the DICOM peers lamina sends to (move destinations)."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from lamina.cli.common import console, handle_errors, open_archive
from lamina.peers import ApplicationEntity, PeerDirectory
from lamina.peers.entity import check_ae_title, check_description, check_host, check_port


def _json(entity: ApplicationEntity) -> dict[str, object]:
    return {
        "ae_title": entity.ae_title,
        "host": entity.host,
        "port": entity.port,
        "description": entity.description,
        "address": entity.address,
    }


@click.group()
def ae() -> None:
    """DICOM peers: the AE titles lamina sends to (C-MOVE destinations, lamina send --to)."""


@ae.command("add")
@click.argument("ae_title")
@click.option("--host", required=True, help="Host name or IP address of the peer.")
@click.option("--port", required=True, help="Its DICOM port (1-65535; often 104 or 11112).")
@click.option("--description", default="", help="What the lab calls it (one line).")
@click.option("--json", "as_json", is_flag=True, help="Print the peer added as JSON.")
@click.pass_context
@handle_errors
def add(ctx: click.Context, ae_title: str, host: str, port: str, description: str, as_json: bool) -> None:
    """Add a move destination: C-MOVE requests naming AE_TITLE send to HOST:PORT."""
    # each value checked under the name the user typed it with
    entity = ApplicationEntity(
        check_ae_title(ae_title, "AE_TITLE"),
        check_host(host, "--host"),
        check_port(port, "--port"),
        check_description(description, "--description"),
    )
    archive = open_archive(ctx)
    try:
        PeerDirectory(archive.catalog).add(entity)
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(_json(entity), indent=2))
    else:
        console.print(f"added {entity.address}", highlight=False, markup=False)


@ae.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per peer.")
@click.pass_context
@handle_errors
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the move destinations."""
    archive = open_archive(ctx)
    try:
        peers = PeerDirectory(archive.catalog).destinations()
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps([_json(entity) for entity in peers], indent=2))
        return
    table = Table(title=f"{len(peers)} DICOM peer(s) in {archive.settings.home}")
    for column in ("AE title", "host", "port", "description"):
        table.add_column(column)
    for entity in peers:
        table.add_row(
            escape(entity.ae_title), entity.host, str(entity.port), escape(entity.description) or "-"
        )
    console.print(table)


@ae.command("remove")
@click.argument("ae_title")
@click.option("--json", "as_json", is_flag=True, help="Print the peer removed as JSON.")
@click.pass_context
@handle_errors
def remove(ctx: click.Context, ae_title: str, as_json: bool) -> None:
    """Forget a move destination."""
    archive = open_archive(ctx)
    try:
        entity = PeerDirectory(archive.catalog).remove(check_ae_title(ae_title, "AE_TITLE"))
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(_json(entity), indent=2))
    else:
        console.print(f"removed {entity.address}", highlight=False, markup=False)
