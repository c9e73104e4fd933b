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
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Serve the archive over DICOMweb (/dicomweb) with the viewer at /."""
    import uvicorn

    from lamina.api import create_app
    from lamina.config import Settings

    if not _is_loopback(host):
        err_console.print(
            f"[bold red]warning:[/] listening on {host}: there is no sign-in yet, so anyone who can "
            "reach this address can read every slide. Use 127.0.0.1 unless this network is trusted.",
            highlight=False,
        )
    settings = Settings.load((ctx.find_root().obj or {}).get("home"))
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
