"""``lamina collections add|list|show|add-slides|remove-slides|delete``: named sets of a lab's
slides (teaching sets, cohorts, second opinions), which the lab may grant like a slide or a case
(``lamina grants add --on collection:ID``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import click
from rich.markup import escape
from rich.table import Table

from lamina.cli.common import console, handle_errors, open_archive, operator
from lamina.governance.collections import Collections
from lamina.governance.model import Collection

T = TypeVar("T")


def _run(ctx: click.Context, work: Callable[[Collections], T]) -> T:
    archive = open_archive(ctx)
    try:
        return work(Collections(archive.catalog))
    finally:
        archive.close()


def _show(found: Collection, as_json: bool, said: str) -> None:
    if as_json:
        click.echo(json.dumps(found.as_dict(), indent=2))
        return
    console.print(
        f"{said + ' ' if said else ''}collection {found.id} ({found.name}, lab {found.tenant}): "
        f"{len(found.slides)} slide(s)",
        highlight=False,
        markup=False,
    )
    for slide in found.slides:
        console.print(f"  {slide}", highlight=False, markup=False)


@click.group()
def collections() -> None:
    """Named sets of a lab's slides, which the lab may grant (grants add --on collection:ID)."""


@collections.command("add")
@click.argument("name")
@click.option("--tenant", required=True, help="The lab whose slides it holds (FINESS).")
@click.option("--slide", "slides", multiple=True, help="A slide of the lab to put in it (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the collection as JSON.")
@click.pass_context
@handle_errors
def add(ctx: click.Context, name: str, tenant: str, slides: tuple[str, ...], as_json: bool) -> None:
    """Make the collection NAME of a lab's slides."""
    found = _run(ctx, lambda c: c.add(tenant, name, slides, operator()))
    _show(found, as_json, "made")


@collections.command("list")
@click.option("--tenant", default=None, help="Only this lab's collections.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per collection.")
@click.pass_context
@handle_errors
def list_(ctx: click.Context, tenant: str | None, as_json: bool) -> None:
    """List the collections (with their number of slides)."""
    found = _run(ctx, lambda c: c.find(tenant))
    if as_json:
        click.echo(json.dumps([item.as_dict(with_slides=False) for item in found], indent=2))
        return
    table = Table(title=f"{len(found)} collection(s)")
    for column in ("id", "tenant", "name", "slides", "created by"):
        table.add_column(column)
    for item in found:
        table.add_row(item.id, item.tenant, escape(item.name), str(len(item.slides)), escape(item.created_by))
    console.print(table)


@collections.command("show")
@click.argument("collection_id")
@click.option("--json", "as_json", is_flag=True, help="Print the collection as JSON.")
@click.pass_context
@handle_errors
def show(ctx: click.Context, collection_id: str, as_json: bool) -> None:
    """Show a collection and its slides."""
    _show(_run(ctx, lambda c: c.get(collection_id)), as_json, "")


@collections.command("add-slides")
@click.argument("collection_id")
@click.argument("slides", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the collection as JSON.")
@click.pass_context
@handle_errors
def add_slides(ctx: click.Context, collection_id: str, slides: tuple[str, ...], as_json: bool) -> None:
    """Put SLIDES (ids, of the collection's lab) in a collection."""
    found = _run(ctx, lambda c: c.add_slides(collection_id, slides, actor=operator()))
    _show(found, as_json, "updated")


@collections.command("remove-slides")
@click.argument("collection_id")
@click.argument("slides", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the collection as JSON.")
@click.pass_context
@handle_errors
def remove_slides(ctx: click.Context, collection_id: str, slides: tuple[str, ...], as_json: bool) -> None:
    """Take SLIDES out of a collection (the slides stay in the archive)."""
    found = _run(ctx, lambda c: c.remove_slides(collection_id, slides, actor=operator()))
    _show(found, as_json, "updated")


@collections.command("delete")
@click.argument("collection_id")
@click.option("--json", "as_json", is_flag=True, help="Print the deleted collection as JSON.")
@click.pass_context
@handle_errors
def delete(ctx: click.Context, collection_id: str, as_json: bool) -> None:
    """Delete a collection (its slides stay) and revoke the grants in force on it."""
    found = _run(ctx, lambda c: c.delete(collection_id, actor=operator()))
    _show(found, as_json, "deleted")
