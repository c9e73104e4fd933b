"""``lamina send SLIDE... --to AE``: slides C-STOREd to a PACS or another DICOM peer."""

from __future__ import annotations

import json
import sys

import click
from pydicom.uid import UID
from rich.markup import escape
from rich.table import Table

from lamina.cli.common import console, err_console, handle_errors, human_bytes, open_archive
from lamina.dimse.send import SlideSent, send_slides
from lamina.dimse.storescu import Sent
from lamina.errors import NotFoundError, RequestError
from lamina.peers import ApplicationEntity, PeerDirectory, parse_address
from lamina.peers.entity import check_ae_title


def _what(sent: Sent) -> str:
    row = sent.row
    return f"level {row.level}" if row.level is not None else row.flavor.lower()


def _instance_json(sent: Sent) -> dict[str, object]:
    return {
        "sop_instance_uid": sent.row.sop_instance_uid,
        "instance": _what(sent),
        "outcome": sent.outcome,
        "status": sent.status,
        "transfer_syntax": sent.transfer_syntax,
        "transcoded": sent.transcoded,
        "bytes": sent.row.bytes,
        "reason": sent.reason or None,
    }


def _slide_json(report: SlideSent) -> dict[str, object]:
    return {
        "slide_id": report.slide_id,
        "ok": report.ok,
        "instances": len(report.sent),
        "completed": report.completed,
        "failed": report.failed,
        "reason": report.reason or None,
        "sent": [_instance_json(item) for item in report.sent],
    }


@click.command()
@click.argument("slide_ids", metavar="SLIDE...", nargs=-1, required=True)
@click.option("--to", "to", required=True, help="A known AE title ('lamina ae list'), or AE@HOST:PORT.")
@click.option(
    "--ae-title",
    default=None,
    help="lamina's own (calling) AE title (default LAMINA_DIMSE_AE_TITLE, else LAMINA).",
)
@click.option("--json", "as_json", is_flag=True, help="The outcome of every slide and instance as JSON.")
@click.pass_context
@handle_errors
def send(
    ctx: click.Context, slide_ids: tuple[str, ...], to: str, ae_title: str | None, as_json: bool
) -> None:
    """Send every instance of each SLIDE to a DICOM peer (C-STORE), as stored.

    Exits 1 if any instance or slide could not be sent.
    """
    calling = check_ae_title(ae_title, "--ae-title") if ae_title is not None else None
    archive = open_archive(ctx)
    try:
        calling = calling or archive.settings.dimse_ae_title
        peer = _destination(PeerDirectory(archive.catalog), to)
        err_console.print(f"sending to {peer.address} as {calling}", highlight=False, markup=False)
        done = 0

        def progress(sent: Sent) -> None:
            nonlocal done
            done += 1
            row = sent.row
            if sent.outcome == "failed":
                line = f"failed: {sent.reason}"
            else:
                how = UID(sent.transfer_syntax or "").name + (" (transcoded)" if sent.transcoded else "")
                line = f"{sent.outcome} as {how}, {human_bytes(row.bytes)}"
            err_console.print(
                f"{done:>4} {row.slide_id} {_what(sent):<10} {row.sop_instance_uid}: {line}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )

        limit = archive.settings.max_transcode_bytes
        reports = send_slides(
            archive, list(slide_ids), peer, calling, on_sent=progress, max_transcode_bytes=limit
        )
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps({"to": peer.address, "slides": [_slide_json(r) for r in reports]}, indent=2))
    else:
        table = Table(title=f"sent to {escape(peer.address)}")
        for column in ("slide", "instances", "completed", "failed", "reason"):
            table.add_column(column)
        for report in reports:
            reasons = (
                [report.reason] if report.reason else sorted({s.reason for s in report.sent if s.reason})
            )
            table.add_row(
                report.slide_id,
                str(len(report.sent)),
                str(report.completed),
                str(report.failed),
                escape("; ".join(reasons)) or "-",
            )
        console.print(table)
    if not all(report.ok for report in reports):
        sys.exit(1)


def _destination(peers: PeerDirectory, to: str) -> ApplicationEntity:
    """A known AE title (which may itself hold an '@'), else AE@HOST:PORT."""
    if "@" in to:
        try:
            known = peers.get(to)
        except RequestError:  # not an AE title: an address
            known = None
        return known or parse_address(to, "--to")
    known = peers.get(check_ae_title(to, "--to"))
    if known is None:
        raise NotFoundError(
            f"--to: no DICOM peer {to!r} in this archive; add it with 'lamina ae add {to} --host H "
            "--port P', or give AE@HOST:PORT"
        )
    return known
