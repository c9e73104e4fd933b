"""The ``lamina`` command: one group, one module per sub-command."""

from __future__ import annotations

import importlib
import logging

import click

from lamina import __version__

#: Each sub-command and where it is defined: a command's module is imported when it runs (or
#: when the help lists it), so that ``lamina ae list`` does not load the server, the DICOM
#: network stack and every reader first.
COMMANDS = {
    "ingest": "lamina.cli.ingest:ingest",
    "slides": "lamina.cli.slides:slides",
    "export": "lamina.cli.export:export",
    "delete": "lamina.cli.delete:delete",
    "sample": "lamina.cli.sample:sample",
    "demo": "lamina.cli.demo:demo",
    "serve": "lamina.cli.serve:serve",
    "worker": "lamina.cli.worker:worker",
    "verify": "lamina.cli.verify:verify",
    "audit": "lamina.cli.audit:audit",
    "watch": "lamina.cli.watch:watch",
    "ae": "lamina.cli.ae:ae",
    "send": "lamina.cli.send:send",
    "tenants": "lamina.cli.tenants:tenants",
    "users": "lamina.cli.users:users",
    "grants": "lamina.cli.grants:grants",
    "collections": "lamina.cli.collections:collections",
    "token": "lamina.cli.token:token",
    "issuer": "lamina.cli.issuer:issuer",
    "costs": "lamina.cli.costs:costs",
    "case": "lamina.cli.lifecycle:case",
    "interest": "lamina.cli.lifecycle:interest",
    "hold": "lamina.cli.lifecycle:hold",
    "lifecycle": "lamina.cli.lifecycle:lifecycle",
    "report": "lamina.cli.report:report",
    "consent": "lamina.cli.exchange:consent",
    "pseudonym": "lamina.cli.exchange:pseudonym",
    "push": "lamina.cli.exchange:push",
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported by name, the first time they are asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attribute = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):  # pragma: no cover - a wrong table entry
                raise TypeError(f"{COMMANDS[cmd_name]} is not a click command")
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    cli(prog_name="lamina")
