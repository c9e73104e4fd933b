"""``lamina delete SLIDE_ID... --reason TEXT``: remove slides and their objects, with an audit entry."""

from __future__ import annotations

import getpass
import json
import sys

import click
from rich.table import Table

from lamina.archive.archive import Archive
from lamina.archive.delete import MAX_REASON, DeletedSlide, check_reason
from lamina.cli.common import console, err_console, handle_errors, human_bytes, open_archive
from lamina.errors import LaminaError, NotFoundError


def _login() -> str:
    try:
        return getpass.getuser() or "lamina"
    except (OSError, KeyError):  # no user name in the environment or the password database
        return "lamina"


@click.command()
@click.argument("slide_ids", nargs=-1, required=True)
@click.option(
    "--reason",
    required=True,
    help=f"Why the slides are deleted (kept in the audit log; at most {MAX_REASON} characters).",
)
@click.option("--yes", is_flag=True, help="Delete without asking for confirmation.")
@click.option(
    "--actor", default=_login, show_default="your login name", help="Who deletes, for the audit log."
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_context
@handle_errors
def delete(
    ctx: click.Context, slide_ids: tuple[str, ...], reason: str, yes: bool, actor: str, as_json: bool
) -> None:
    """Delete slides: their catalog entries in one transaction, then their stored objects.

    A slide that is not in the archive is reported and the others are still deleted; the exit
    status is then 1. Deleting a slide again finishes a deletion that was interrupted.
    """
    reason = check_reason(reason)
    wanted = list(dict.fromkeys(slide_ids))
    archive = open_archive(ctx)
    try:
        if not yes:
            _confirm(archive, wanted)
        results = [_delete_one(archive, slide_id, actor, reason) for slide_id in wanted]
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps([_as_dict(result) for result in results], indent=2))
    else:
        for result in results:
            if result.error:
                console.print(f"[red]{result.status}[/] {result.slide_id}: {result.error}", highlight=False)
        console.print(_table(results))
    if any(result.status not in ("deleted", "already deleted") or result.error for result in results):
        sys.exit(1)


def _confirm(archive: Archive, slide_ids: list[str]) -> None:
    """Show what would be deleted (on stderr, so that --json stays parseable) and ask."""
    table = Table(title="to delete")
    for column in ("slide", "barcode", "patient", "case", "instances", "stored"):
        table.add_column(column)
    present = 0
    for slide_id in slide_ids:
        slide = archive.catalog.slide(slide_id)
        if slide is None:
            table.add_row(slide_id, "[yellow]not in the catalog[/]", "", "", "", "")
            continue
        present += 1
        table.add_row(
            slide.id,
            slide.container_id,
            slide.patient_id or "unidentified",
            slide.accession_number or "-",
            str(slide.instances),
            human_bytes(slide.bytes),
        )
    err_console.print(table)
    if present:
        click.confirm(
            f"Delete {present} slide(s) and their stored objects? This cannot be undone",
            abort=True,
            err=True,
        )


def _delete_one(archive: Archive, slide_id: str, actor: str, reason: str) -> DeletedSlide:
    try:
        return archive.delete_slide(slide_id, actor, reason)
    except NotFoundError as exc:
        return DeletedSlide(slide_id, "not found", error=str(exc))
    except LaminaError as exc:  # the catalog changed meanwhile, or the store failed: the rest go on
        return DeletedSlide(slide_id, "failed", error=str(exc))


def _as_dict(result: DeletedSlide) -> dict[str, object]:
    return {
        "slide_id": result.slide_id,
        "status": result.status,
        "instances": [
            {"sop_instance_uid": item.sop_instance_uid, "sha256": item.sha256} for item in result.instances
        ],
        "study_removed": result.study_removed,
        "audit_seq": result.audit_seq,
        "objects_removed": result.objects_removed,
        "objects_kept": result.objects_kept,
        "objects_left": result.objects_left,
        "error": result.error,
        "seconds": round(result.seconds, 3),
    }


def _table(results: list[DeletedSlide]) -> Table:
    table = Table(title=f"{len(results)} slide(s)")
    for column in ("slide", "instances", "objects removed", "kept (shared)", "study", "result"):
        table.add_column(column, justify="right" if column in ("instances", "objects removed") else "left")
    for r in results:
        colour = {"deleted": "green", "already deleted": "cyan"}.get(r.status, "red")
        table.add_row(
            r.slide_id,
            str(len(r.instances)) if r.instances else "-",
            str(r.objects_removed),
            str(r.objects_kept),
            "removed" if r.study_removed else "-",
            f"[{colour}]{r.status}[/]" + (f" ({r.objects_left} object(s) left)" if r.objects_left else ""),
        )
    return table
