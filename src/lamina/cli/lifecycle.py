"""``lamina case final``, ``lamina interest``, ``lamina hold`` and ``lamina lifecycle
plan|run|restore|rules``: the care lifecycle from the command line (the node's operator)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import click
import orjson
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from lamina.archive.archive import Archive
from lamina.cli.common import console, handle_errors, open_archive, operator
from lamina.errors import ConfigurationError, RequestError
from lamina.lifecycle.marks import Interest, Marks, Target
from lamina.lifecycle.plan import TierPrices, Totals, plan
from lamina.lifecycle.policy import Policies
from lamina.lifecycle.reports import CLOCK_STATUSES, STATUSES, ReportForm, check_form_url, record_report
from lamina.lifecycle.restore import end_request, restore_slide
from lamina.lifecycle.rules import load_rules
from lamina.lifecycle.run import run
from lamina.lifecycle.tiers import TierMover

_NOW_HELP = "Act as if it were this date and time (ISO 8601; default: now): to see what a date brings."


def _when(value: str | None, parameter: str) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(
            parameter, f"{value!r}: an ISO 8601 date (2027-03-31) or date and time (2027-03-31T18:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _tenant(archive: Archive, tenant: str | None) -> str:
    code = tenant or archive.catalog.default_tenant()
    if not code:
        raise RequestError("--tenant", "name the lab (FINESS): this node serves several, or none yet")
    return code


def _target(archive: Archive, slide: str | None, case: str | None, tenant: str | None) -> Target:
    if bool(slide) == bool(case):
        raise RequestError("SLIDE", "name one slide (its id), or a whole case with --case ACCESSION")
    return Target(slide=slide) if slide else Target(tenant=_tenant(archive, tenant), accession=case)


# -- lamina case final ----------------------------------------------------------------------------


@click.group()
def case() -> None:
    """A case's events from the lab information system (its final report starts the clock)."""


@case.command("final")
@click.argument("accession")
@click.option("--tenant", default=None, help="The lab (FINESS; default: the node's only lab).")
@click.option("--at", "at", default=None, help="When the report was validated (ISO 8601; default: now).")
@click.option(
    "--status",
    type=click.Choice(list(CLOCK_STATUSES)),
    default="final",
    show_default=True,
    help="amended or corrected restarts the clock.",
)
@click.option(
    "--url", default=None, help="Where the report is read (http or https): the viewer's Report link."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report recorded as JSON.")
@click.pass_context
@handle_errors
def final(
    ctx: click.Context,
    accession: str,
    tenant: str | None,
    at: str | None,
    status: str,
    url: str | None,
    as_json: bool,
) -> None:
    """Record the validated report of the case ACCESSION: its slides' care retention starts."""
    assert status in STATUSES
    archive = open_archive(ctx)
    try:
        report = record_report(
            archive.catalog,
            _tenant(archive, tenant),
            accession,
            status,
            _when(at, "--at"),
            source="cli",
            actor=operator(),
            form=None if url is None else ReportForm(check_form_url(url, "--url")),
        )
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    held = (
        f"{report.slides} slide(s)"
        if report.slides
        else "no slide yet: applied when the case's slides arrive"
    )
    console.print(
        f"case {report.accession_number} of lab {report.tenant}: {status} report of "
        f"{report.issued_at.isoformat()} ({held})",
        highlight=False,
        markup=False,
    )


# -- lamina interest, lamina hold -------------------------------------------------------------------


@click.command()
@click.argument("slide", required=False)
@click.option("--case", "case_", default=None, help="Every slide of the case with this accession number.")
@click.option("--tenant", default=None, help="The case's lab (FINESS; default: the node's only lab).")
@click.option(
    "--category", type=click.Choice([c.value for c in Interest]), default=None, help="Why it is of interest."
)
@click.option("--reason", required=True, help="Why, in words (audited).")
@click.option("--remove", is_flag=True, help="Take the flag off (the slides may then expire).")
@click.pass_context
@handle_errors
def interest(
    ctx: click.Context,
    slide: str | None,
    case_: str | None,
    tenant: str | None,
    category: str | None,
    reason: str,
    remove: bool,
) -> None:
    """Flag a slide (or a case's slides) as of interest: never expired, ready for the archive."""
    archive = open_archive(ctx)
    try:
        marks, target = Marks(archive.catalog), _target(archive, slide, case_, tenant)
        if remove:
            done = marks.unflag(target, reason, operator())
            said = "no longer of interest"
        else:
            if category is None:
                raise RequestError("--category", "say why: " + ", ".join(c.value for c in Interest))
            done = marks.flag(target, Interest(category), reason, operator())
            said = f"of interest ({category})"
    finally:
        archive.close()
    console.print(f"{len(done)} slide(s) {said}: {', '.join(done)}", highlight=False, markup=False)


@click.command()
@click.argument("words", nargs=-1)
@click.option("--case", "case_", default=None, help="Every slide of the case with this accession number.")
@click.option("--tenant", default=None, help="The case's lab (FINESS; default: the node's only lab).")
@click.option("--reason", required=True, help="Why (audited): the request, the proceedings.")
@click.pass_context
@handle_errors
def hold(
    ctx: click.Context, words: tuple[str, ...], case_: str | None, tenant: str | None, reason: str
) -> None:
    """Put a legal hold on SLIDE (or --case ACCESSION): never expired, always readable at once.
    'lamina hold release SLIDE|--case ACCESSION --reason ...' releases it."""
    releasing = bool(words) and words[0] == "release"
    rest = words[1:] if releasing else words
    if len(rest) > 1:
        raise RequestError("SLIDE", "name one slide, or a case with --case")
    archive = open_archive(ctx)
    try:
        marks, target = Marks(archive.catalog), _target(archive, rest[0] if rest else None, case_, tenant)
        if releasing:
            done = marks.release(target, reason, operator())
            said = f"released {len(done)} hold(s) on {target.describe()}"
        else:
            done = marks.hold(target, reason, operator())
            said = f"{len(done)} slide(s) of {target.describe()} held"
    finally:
        archive.close()
    console.print(said, highlight=False, markup=False)


# -- lamina lifecycle plan|run|rules -----------------------------------------------------------------


@click.group()
def lifecycle() -> None:
    """Care retention, expiry with a thumbnail trace, tiers: what is due, and doing it."""


def _totals_table(totals: Totals, title: str) -> Table:
    table = Table(title=title)
    for column in (
        "slides",
        "expire",
        "move cold",
        "move hot",
        "review",
        "GB freed",
        "GB to cold",
        "€/year saved",
        "kg CO2/year saved",
    ):
        table.add_column(column, justify="right")
    shown = totals.as_dict()
    actions = totals.actions
    table.add_row(
        f"{totals.slides:,}",
        f"{actions.get('expire', 0):,}",
        f"{actions.get('move-cold', 0):,}",
        f"{actions.get('move-hot', 0):,}",
        f"{actions.get('review', 0):,}",
        f"{shown['gb_freed']:,}",
        f"{shown['gb_to_cold']:,}",
        f"{shown['eur_per_year_saved']:,}",
        f"{shown['kg_co2_per_year_saved']:,}",
    )
    return table


@lifecycle.command("plan")
@click.option("--now", default=None, help=_NOW_HELP)
@click.option("--tenant", default=None, help="Only this lab's slides.")
@click.option("--all", "everything", is_flag=True, help="Every slide, also those with nothing due.")
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=200,
    show_default=True,
    help="Slides listed (totals count all).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one per slide, then the totals.")
@click.pass_context
@handle_errors
def plan_(
    ctx: click.Context, now: str | None, tenant: str | None, everything: bool, limit: int, as_json: bool
) -> None:
    """Show what the lifecycle would do, slide by slide, with totals."""
    when = _when(now, "--now")
    archive = open_archive(ctx)
    totals, prices = Totals(), TierPrices()
    out = sys.stdout.buffer
    table = Table(title=f"due at {when.isoformat(timespec='minutes')}")
    for column in ("slide", "lab", "case", "action", "rule", "why", "GB"):
        table.add_column(column)
    try:
        for item in plan(archive.catalog, when, tenant=tenant, everything=everything):
            totals.add(item, prices)
            if as_json:
                out.write(item.json_line())
            elif totals.slides <= limit:
                table.add_row(
                    item.slide_id,
                    item.tenant,
                    escape(item.accession_number or "-"),
                    item.action.value,
                    escape(item.rule),
                    escape(item.reason),
                    f"{item.bytes / 1e9:.3f}",
                )
    finally:
        archive.close()
    if as_json:
        out.write(orjson.dumps({"totals": totals.as_dict()}) + b"\n")
        out.flush()
        return
    console.print(table)
    if totals.slides > limit:
        console.print(f"({totals.slides - limit:,} more not listed: --limit)", highlight=False)
    console.print(_totals_table(totals, "totals"))


@lifecycle.command("run")
@click.option("--now", default=None, help=_NOW_HELP)
@click.option("--tenant", default=None, help="Only this lab's slides.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_context
@handle_errors
def run_(ctx: click.Context, now: str | None, tenant: str | None, as_json: bool) -> None:
    """Do what is due: expire, move between tiers, list the cases to review (idempotent)."""
    when = _when(now, "--now")
    archive = open_archive(ctx)
    try:
        mover = TierMover.for_archive(archive)
        with Progress(console=console, transient=True, disable=as_json) as bar:
            task = bar.add_task("lifecycle", total=None)
            report = run(
                archive.catalog,
                archive.store,
                when,
                operator(),
                tenant=tenant,
                mover=mover,
                progress=lambda _: bar.advance(task),
                cold_store=mover.cold.store if mover is not None else None,
            )
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        console.print(_totals_table(report.done, "done"))
        for label, items in (
            ("kept (a hold or a flag came since)", report.kept),
            ("skipped", report.skipped),
            ("failed", report.failed),
        ):
            for slide_id, why in items:
                console.print(f"{label}: {slide_id}: {why}", highlight=False, markup=False)
        if report.review:
            console.print(
                f"{len(report.review)} slide(s) of cases without a final report to review", highlight=False
            )
    if report.failed:
        ctx.exit(1)


@lifecycle.command("restore")
@click.argument("slides", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_context
@handle_errors
def restore_(ctx: click.Context, slides: tuple[str, ...], as_json: bool) -> None:
    """Bring the cold SLIDES back to the hot tier now (copy, verify, switch; the cold copy is
    kept): what a read of a cold slide asks the restore job for. Waits out the cold tier's
    restore delay first; a slide already hot is left as it is."""
    archive = open_archive(ctx)
    done: list[dict[str, object]] = []
    try:
        mover = TierMover.for_archive(archive)
        if mover is None:
            raise ConfigurationError(
                "no cold tier is configured (tiers.cold in lamina.toml, LAMINA_COLD_URL): "
                "nothing to restore from"
            )
        for slide in slides:
            try:
                moved = restore_slide(mover, slide, operator())
            except Exception:  # as the restore job: the request ends, a read asks again
                end_request(archive.catalog, slide)
                raise
            if moved is None:
                done.append({"slide": slide, "status": "hot"})
                continue
            done.append(
                {
                    "slide": slide,
                    "status": "restored" if moved.status == "moved" else moved.status,
                    "objects": len(moved.objects),
                    "copied": moved.copied,
                    "present": moved.present,
                    "bytes_copied": moved.bytes_copied,
                    "seconds": round(moved.seconds, 3),
                }
            )
    finally:
        archive.close()
    if as_json:
        click.echo(json.dumps({"restored": done}, indent=2))
        return
    for item in done:
        said = (
            "already hot"
            if item["status"] == "hot"
            else f"{item['status']}: {item['copied']} of {item['objects']} object(s) copied "
            f"({int(str(item['bytes_copied'])) / 1e6:,.1f} MB) in {item['seconds']} s"
        )
        console.print(f"slide {item['slide']}: {said}", highlight=False, markup=False)


@lifecycle.group("rules")
def rules() -> None:
    """The labs' retention rules in force."""


@rules.command("set")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tenant", default=None, help="The lab (FINESS; default: the node's only lab).")
@click.pass_context
@handle_errors
def rules_set(ctx: click.Context, file: Path, tenant: str | None) -> None:
    """Check FILE (TOML) whole and make it the lab's rules in force."""
    checked = load_rules(file)
    archive = open_archive(ctx)
    try:
        code = _tenant(archive, tenant)
        done = Policies(archive.catalog).set(code, file.read_text(encoding="utf-8"), str(file), operator())
    finally:
        archive.close()
    assert done.digest == checked.digest
    names = ", ".join(rule.name for rule in done.rules)
    console.print(f"lab {code}: {len(done.rules)} rule(s) in force ({names})", highlight=False, markup=False)


@rules.command("show")
@click.option("--tenant", default=None, help="The lab (FINESS; default: the node's only lab).")
@click.pass_context
@handle_errors
def rules_show(ctx: click.Context, tenant: str | None) -> None:
    """Print the lab's rules in force (TOML)."""
    archive = open_archive(ctx)
    try:
        code = _tenant(archive, tenant)
        text = Policies(archive.catalog).document(code)
        if text is None:
            text = Policies(archive.catalog).for_tenant(code).to_toml()
    finally:
        archive.close()
    click.echo(text, nl=not text.endswith("\n"))
