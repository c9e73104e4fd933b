"""``lamina ae add|list|remove``: the DICOM peers lamina knows: the AE titles it sends to (move
destinations) and those that may call its DIMSE server (calling AEs, each for one lab)."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from lamina.cli.common import console, handle_errors, open_archive
from lamina.errors import NotFoundError, RequestError
from lamina.governance.model import check_finess
from lamina.governance.registry import Registry
from lamina.peers import ApplicationEntity, Peer, PeerDirectory
from lamina.peers.entity import (
    check_ae_title,
    check_description,
    check_host,
    check_port,
    format_operations,
    parse_operations,
)


def _json(peer: Peer) -> dict[str, object]:
    destination, calling = peer.destination, peer.calling
    return {
        "ae_title": peer.ae_title,
        "host": destination.host if destination else None,
        "port": destination.port if destination else None,
        "description": peer.description,
        "address": destination.address if destination else None,
        "tenant": peer.tenant,
        "move_destination": destination is not None,
        "calling": calling is not None,
        "allowed": format_operations(calling.allowed).split(",") if calling else [],
    }


def _said(peer: Peer) -> str:
    parts = []
    if peer.calling is not None:
        parts.append(
            f"calling AE {peer.ae_title} of {peer.tenant} ({format_operations(peer.calling.allowed)})"
        )
    if peer.destination is not None:
        parts.append(f"{'move destination ' if peer.calling else ''}{peer.destination.address}")
    return ", ".join(parts)


@click.group()
def ae() -> None:
    """DICOM peers: the AE titles that may call lamina (each for one lab, with the operations it
    may ask) and those lamina sends to (C-MOVE destinations, lamina send --to)."""


@ae.command("add")
@click.argument("ae_title")
@click.option("--tenant", default="", help="The lab (FINESS number) a calling AE acts for.")
@click.option(
    "--allow",
    default="",
    help="What it may ask when it calls, some of echo,store,find,get,move (makes it a calling AE).",
)
@click.option("--host", default=None, help="Host name or IP address of a move destination.")
@click.option("--port", default=None, help="Its DICOM port (1-65535; often 104 or 11112).")
@click.option("--description", default="", help="What the lab calls it (one line).")
@click.option("--json", "as_json", is_flag=True, help="Print the peer added as JSON.")
@click.pass_context
@handle_errors
def add(
    ctx: click.Context,
    ae_title: str,
    tenant: str,
    allow: str,
    host: str | None,
    port: str | None,
    description: str,
    as_json: bool,
) -> None:
    """Add a peer. With --tenant and --allow, AE_TITLE may call lamina's DIMSE server for that lab
    and those operations (any other AE title is refused). With --host and --port, C-MOVE requests
    naming AE_TITLE send to HOST:PORT. Both may be given."""
    # each value checked under the name the user typed it with
    title = check_ae_title(ae_title, "AE_TITLE")
    text = check_description(description, "--description")
    operations = parse_operations(allow, "--allow") if allow.strip() else frozenset()
    if (host is None) != (port is None):
        raise RequestError(
            "--host" if host is None else "--port", "a move destination needs --host and --port"
        )
    if host is None and not operations:
        raise RequestError(
            "--allow", "give what a calling AE may ask (--tenant FINESS --allow echo,store,find,get,move), "
            "or where a move destination listens (--host and --port)"
        )  # fmt: skip
    if operations and not tenant.strip():
        raise RequestError("--tenant", "a calling AE acts for one lab: give its FINESS number")
    finess = check_finess(tenant, "--tenant") if tenant.strip() else ""
    destination = None
    if host is not None and port is not None:
        destination = ApplicationEntity(title, check_host(host, "--host"), check_port(port, "--port"), text)
    archive = open_archive(ctx)
    try:
        if finess:
            try:
                Registry(archive.catalog).tenant(finess)
            except NotFoundError as exc:
                raise RequestError("--tenant", str(exc)) from None
        peer = PeerDirectory(archive.catalog).add_peer(
            title, tenant=finess, allowed=operations, destination=destination, description=text
        )
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(_json(peer), indent=2))
    else:
        console.print(f"added {_said(peer)}", highlight=False, markup=False)


@ae.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per peer.")
@click.pass_context
@handle_errors
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the peers: calling AEs and move destinations."""
    archive = open_archive(ctx)
    try:
        peers = PeerDirectory(archive.catalog).peers()
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps([_json(peer) for peer in peers], indent=2))
        return
    table = Table(title=f"{len(peers)} DICOM peer(s) in {archive.settings.home}")
    for column in ("AE title", "tenant", "may call for", "host", "port", "description"):
        table.add_column(column)
    for peer in peers:
        destination = peer.destination
        table.add_row(
            escape(peer.ae_title),
            peer.tenant or "-",
            format_operations(peer.calling.allowed) if peer.calling else "-",
            destination.host if destination else "-",
            str(destination.port) if destination else "-",
            escape(peer.description) or "-",
        )
    console.print(table)


@ae.command("remove")
@click.argument("ae_title")
@click.option("--json", "as_json", is_flag=True, help="Print the peer removed as JSON.")
@click.pass_context
@handle_errors
def remove(ctx: click.Context, ae_title: str, as_json: bool) -> None:
    """Forget a peer: it may no longer call lamina, nor be sent to."""
    archive = open_archive(ctx)
    try:
        peer = PeerDirectory(archive.catalog).remove(check_ae_title(ae_title, "AE_TITLE"))
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(_json(peer), indent=2))
    else:
        console.print(f"removed {_said(peer)}", highlight=False, markup=False)
