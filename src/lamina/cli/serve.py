"""``lamina serve``: DICOMweb and the viewer over HTTP, on the archive of $LAMINA_HOME."""

from __future__ import annotations

import ipaddress

import click

from lamina.cli.common import err_console, handle_errors


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--dimse-port", type=click.IntRange(1, 65535), help="Also serve DIMSE (C-ECHO, C-STORE, C-FIND)."
)
@click.option("--ae-title", default="LAMINA", show_default=True, help="The DIMSE application entity title.")
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, dimse_port: int | None, ae_title: str) -> None:
    """Serve the archive over DICOMweb (/dicomweb) with the viewer at /, and DIMSE if asked."""
    import logging

    import uvicorn

    from lamina.api import create_app
    from lamina.archive.archive import Archive
    from lamina.config import Settings
    from lamina.dimse import DimseServer

    if not _is_loopback(host):
        err_console.print(
            f"[bold red]warning:[/] listening on {host}: there is no sign-in yet, so anyone who can "
            "reach this address can read every slide. Use 127.0.0.1 unless this network is trusted.",
            highlight=False,
        )
    settings = Settings.load((ctx.find_root().obj or {}).get("home"))
    archive = Archive.open(settings)
    dimse = DimseServer(archive, ae_title=ae_title, host=host, port=dimse_port) if dimse_port else None
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("lamina.dimse").setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if dimse is not None:
        dimse.start()
        err_console.print(f"DIMSE: {ae_title} on {host}:{dimse.port}", highlight=False)
    err_console.print(f"lamina: viewer and DICOMweb on http://{host}:{port}/", highlight=False)
    try:
        uvicorn.run(
            create_app(settings, archive), host=host, port=port, log_level="warning", access_log=False
        )
    finally:
        if dimse is not None:
            dimse.stop()
        archive.close()
