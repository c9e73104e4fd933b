"""``lamina audit verify|show``: check the hash-chained audit log, and read it."""

from __future__ import annotations

import datetime as dt
import json
import sys

import click
from rich.table import Table

from lamina.archive import audit as audit_log
from lamina.cli.common import console, handle_errors, open_archive


def _instant(value: str, option: str, end_of_day: bool) -> dt.datetime:
    """An ISO date or date-time; naive means UTC. A bare date given to ``--until`` includes that day."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO date (2026-03-01 or 2026-03-01T12:00)", param_hint=option
        ) from None
    if end_of_day and len(value.strip()) == 10:
        parsed += dt.timedelta(days=1)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _anchor(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, sep, digest = value.partition(":")
    if not sep or not seq.strip().isdigit() or len(digest.strip()) != 64:
        raise click.BadParameter(
            "expected SEQ:HASH, as printed by 'lamina audit verify'", param_hint="--anchor"
        )
    return int(seq), digest.strip().lower()


@click.group()
def audit() -> None:
    """The tamper-evident audit log: verify its chain, show its entries."""


@audit.command()
@click.option(
    "--anchor", help="SEQ:HASH of a head kept from an earlier verify; finds truncation and rewrites."
)
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.pass_context
@handle_errors
def verify(ctx: click.Context, anchor: str | None, as_json: bool) -> None:
    """Check every entry's hash and link; exit 1 naming the first bad entry.

    Keep the printed head (or Merkle root) somewhere else: a log cut short at the end still
    chains, and only a kept head shows that (pass it back with --anchor)."""
    kept = _anchor(anchor)
    archive = open_archive(ctx)
    try:
        with archive.catalog.engine.connect() as conn:
            check = audit_log.verify(conn, kept)
            root = audit_log.merkle_root(conn)
    finally:
        archive.close()
    # A broken log has no head or root worth keeping: printing them would invite a user to save
    # a forged state as the trusted anchor, so a failure prints neither.
    if as_json:
        head = None
        if check.ok and check.head_seq is not None:
            head = {"seq": check.head_seq, "hash": check.head_hash}
        result = {
            "ok": check.ok,
            "entries": check.entries,
            "first_bad": check.first_bad,
            "reason": check.reason,
            "head": head,
            "merkle_root": root if check.ok else None,
        }
        click.echo(json.dumps(result, indent=2))
    elif check.ok:
        click.echo(f"ok: {check.entries} entr{'y' if check.entries == 1 else 'ies'} checked")
        if check.head_seq is None:
            click.echo("head: (empty log)")
        else:
            click.echo(f"head: seq {check.head_seq} hash {check.head_hash}")
        click.echo(f"merkle root: {root}")
    else:
        click.echo(f"entry {check.first_bad}: {check.reason}")
        click.echo(f"{check.entries} entries checked; no head or Merkle root is printed for a broken log")
    if not check.ok:
        sys.exit(1)


@audit.command()
@click.option("--slide", "slide_id", help="Only this slide's entries (and its instances').")
@click.option("--actor", help="Only entries by this actor.")
@click.option("--since", help="From this ISO date or date-time (UTC unless it says otherwise).")
@click.option("--until", help="Before this ISO date-time; a bare date includes that day.")
@click.option("--action", help="Only this action (ingest, store, export, ...).")
@click.option("--limit", type=click.IntRange(min=0), help="Only the newest N matching entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
@click.pass_context
@handle_errors
def show(
    ctx: click.Context,
    slide_id: str | None,
    actor: str | None,
    since: str | None,
    until: str | None,
    action: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List audit entries, oldest first, filtered by slide, actor, time and action."""
    start = None if since is None else _instant(since, "--since", end_of_day=False)
    end = None if until is None else _instant(until, "--until", end_of_day=True)
    archive = open_archive(ctx)
    try:
        with archive.catalog.engine.connect() as conn:
            rows = audit_log.entries(
                conn, slide=slide_id, actor=actor, since=start, until=end, action=action, limit=limit
            )
    finally:
        archive.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "seq": e.seq,
                        "at": e.at.isoformat(),
                        "actor": e.actor,
                        "action": e.action,
                        "entity": e.entity,
                        "detail": e.detail,
                        "hash": e.hash,
                    }
                    for e in rows
                ],
                indent=2,
            )
        )
        return
    table = Table(title=f"{len(rows)} audit entr{'y' if len(rows) == 1 else 'ies'}")
    for column in ("seq", "at (UTC)", "actor", "action", "entity", "detail"):
        table.add_column(column, overflow="fold")
    for e in rows:
        detail = json.dumps(e.detail, sort_keys=True, separators=(", ", ": "))
        table.add_row(
            str(e.seq),
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.actor,
            e.action,
            e.entity,
            detail if len(detail) <= 120 else detail[:117] + "...",
            end_section=False,
        )
    console.print(table, highlight=False)
