"""The ``lamina`` command: one group, one module per sub-command."""

from __future__ import annotations

import logging

import click

from lamina import __version__
from lamina.cli.ae import ae
from lamina.cli.audit import audit
from lamina.cli.collections import collections
from lamina.cli.costs import costs
from lamina.cli.delete import delete
from lamina.cli.demo import demo
from lamina.cli.exchange import consent, pseudonym, push
from lamina.cli.export import export
from lamina.cli.grants import grants
from lamina.cli.ingest import ingest
from lamina.cli.issuer import issuer
from lamina.cli.lifecycle import case, hold, interest, lifecycle
from lamina.cli.passwords import password
from lamina.cli.report import report
from lamina.cli.sample import sample
from lamina.cli.send import send
from lamina.cli.serve import serve
from lamina.cli.slides import slides
from lamina.cli.tenants import tenants
from lamina.cli.token import token
from lamina.cli.users import users
from lamina.cli.verify import verify
from lamina.cli.watch import watch
from lamina.cli.worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lamina")
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="LAMINA_HOME",
    help="The data folder (default ./lamina-data, or $LAMINA_HOME).",
)
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """lamina: pathology slides from any scanner, kept as standard DICOM WSI."""
    ctx.obj = {"home": home}
    # readers report damaged files through lamina's own errors; their log lines are noise here
    for name in ("tifffile", "pydicom", "opentile", "wsidicom"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


for command in (
    ingest,
    slides,
    export,
    delete,
    sample,
    demo,
    serve,
    worker,
    verify,
    audit,
    watch,
    ae,
    send,
    tenants,
    users,
    grants,
    collections,
    token,
    issuer,
    costs,
    case,
    interest,
    hold,
    lifecycle,
    report,
    consent,
    pseudonym,
    push,
):
    cli.add_command(command)
users.add_command(password)


def main() -> None:
    cli(prog_name="lamina")
