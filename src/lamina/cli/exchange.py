"""``lamina consent deny|allow`` and ``lamina pseudonym resolve``: patients' opposition to research
use, and the way back from a pseudonym, at a site (:mod:`lamina.exchange`).

``consent`` acts as the node's operator, like ``lamina case final``. ``pseudonym resolve``
re-identifies: it names the lab admin who asks (``--as PERSON_ID``, a person of the node holding
``lab_admin`` in that lab), who is the actor of its audit entry (``pseudonym-resolve``, with the
operator's account beside); anyone else is refused.
"""

from __future__ import annotations

import json
from typing import Any

import click

from lamina.cli.common import console, handle_errors, open_archive, operator
from lamina.exchange.consent import record
from lamina.exchange.keys import ExchangeKeys
from lamina.exchange.pseudonyms import resolve
from lamina.governance.decide import principal_of
from lamina.governance.registry import Registry


@click.group()
def consent() -> None:
    """A patient's opposition to the research use of their slides, in a lab."""


def _record(
    ctx: click.Context, patient_id: str, tenant: str, reason: str | None, decision: str, as_json: bool
) -> None:
    archive = open_archive(ctx)
    try:
        keys = ExchangeKeys.for_settings(archive.settings)
        found = record(
            archive.catalog, tenant, patient_id, decision, operator(), "cli", keys=keys, reason=reason
        )
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(found.as_dict(), indent=2))
        return
    said = "opposes research use" if decision == "deny" else "no longer opposes research use"
    line = f"lab {found.tenant}: the patient {found.patient_pseudonym[:12]}… {said} ({found.slides} slide(s)"
    if found.refused:
        line += f"; {found.refused} transfer(s) still queued refused"
    if decision == "deny" and found.at_archive:
        line += f"; {found.at_archive} already at the archive, to be withdrawn there"
    console.print(line + ")", highlight=False, markup=False)


_TENANT = click.option("--tenant", required=True, help="The patient's lab (FINESS).")
_REASON = click.option("--reason", default=None, help="Why, in words (kept with the decision; no identity).")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the decision recorded as JSON.")


@consent.command("deny")
@click.argument("patient_id")
@_TENANT
@_REASON
@_JSON
@click.pass_context
@handle_errors
def deny(ctx: click.Context, patient_id: str, tenant: str, reason: str | None, as_json: bool) -> None:
    """Record that the patient PATIENT_ID opposes the research use of their slides: their
    transfers still queued are refused; those already sent are counted, for the archive."""
    _record(ctx, patient_id, tenant, reason, "deny", as_json)


@consent.command("allow")
@click.argument("patient_id")
@_TENANT
@_REASON
@_JSON
@click.pass_context
@handle_errors
def allow(ctx: click.Context, patient_id: str, tenant: str, reason: str | None, as_json: bool) -> None:
    """Record that the patient PATIENT_ID lifts their opposition."""
    _record(ctx, patient_id, tenant, reason, "allow", as_json)


@click.group()
def pseudonym() -> None:
    """The correspondence of the pseudonyms the site sent (lab admins only)."""


@pseudonym.command("resolve")
@click.argument("pseudonym_", metavar="PSEUDONYM")
@_TENANT
@click.option(
    "--warehouse", default=None, help="The health-data warehouse whose key made it (default: the site's)."
)
@click.option(
    "--as", "person", required=True, help="The lab admin who asks (a person of this node; audited)."
)
@click.pass_context
@handle_errors
def resolve_(ctx: click.Context, pseudonym_: str, tenant: str, warehouse: str | None, person: str) -> None:
    """Print the PatientID or AccessionNumber the pseudonym PSEUDONYM stands for (audited)."""
    archive = open_archive(ctx)
    try:
        held = Registry(archive.catalog).person(person)
        who = principal_of(held.id, [(item.tenant, item.role) for item in held.roles], [])
        found = resolve(archive.catalog, who, tenant, pseudonym_, warehouse, via=operator())
    finally:
        archive.close()
    click.echo(f"{found.kind} {found.value}")


@click.command()
@click.argument("slide_ids", metavar="[SLIDE...]", nargs=-1)
@click.option("--to", "url", default=None, help="The archive node's URL (default [exchange] archive_url).")
@click.option(
    "--token",
    default=None,
    help="The bearer token the archive issued to this lab (default: the file archive_token_file).",
)
@click.option(
    "--limit-mb-per-s",
    type=click.FloatRange(min=0),
    default=None,
    help="The push's bandwidth in MB/s, so care traffic is not starved (default [exchange]; 0: none).",
)
@click.option("--tenant", default=None, help="Only this lab's slides of interest (FINESS).")
@click.option("--keep-overview", is_flag=True, help="Send the overview image with its label area blanked.")
@click.option("--status", "status_only", is_flag=True, help="Show each transfer's state; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="The outcome of every slide as JSON.")
@click.pass_context
@handle_errors
def push(
    ctx: click.Context,
    slide_ids: tuple[str, ...],
    url: str | None,
    token: str | None,
    limit_mb_per_s: float | None,
    tenant: str | None,
    keep_overview: bool,
    status_only: bool,
    as_json: bool,
) -> None:
    """Push the slides of interest to the archive: de-identified, pseudonymised, verified there.

    Without SLIDE, every slide of interest not yet at the archive whose next attempt is due; a
    slide that failed is tried again after a back-off, unless named. Exits 1 if a slide was
    refused or quarantined, 2 if some wait for a later attempt (the archive unreachable).
    """
    from lamina.exchange.deid import DeidOptions
    from lamina.exchange.push import Pusher, transfers_of

    archive = open_archive(ctx)
    try:
        if status_only:
            rows = transfers_of(archive, tenant)
            if as_json:
                click.echo(json.dumps({"transfers": rows}, indent=2))
            else:
                for row in rows:
                    reason = f" ({row['reason']})" if row["reason"] else ""
                    console.print(
                        f"{row['slide_id']}  {row['status']:<11} attempts {row['attempts']}{reason}",
                        highlight=False,
                        markup=False,
                    )
            return

        def said(result: Any) -> None:
            if not as_json:
                reason = f": {result.reason}" if result.reason else ""
                console.print(
                    f"{result.slide_id}  {result.status}  {result.instances} instance(s), "
                    f"{result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s{reason}",
                    highlight=False,
                    markup=False,
                )

        exchange = archive.settings.exchange
        options = DeidOptions(
            keep_overview=keep_overview, warehouses=tuple(name for name, _ in exchange.warehouses)
        )
        with Pusher(
            archive,
            url=url,
            token=token,
            limit_mb_per_s=limit_mb_per_s,
            options=options,
            actor=operator(),
            on_result=said,
        ) as pusher:
            results = pusher.run(slide_ids, tenant)
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps({"results": [result.json() for result in results]}, indent=2))
    elif not results:
        console.print("nothing to push", highlight=False, markup=False)
    statuses = {result.status for result in results}
    if statuses & {"refused", "quarantined"}:
        ctx.exit(1)
    if statuses & {"queued", "sent"}:
        ctx.exit(2)
