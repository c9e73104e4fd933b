"""``lamina serve``: DICOMweb and the viewer over HTTP, on the archive of $LAMINA_HOME."""

from __future__ import annotations

import ipaddress
import math
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from lamina.cli.common import err_console, handle_errors
from lamina.config import Settings
from lamina.peers.entity import check_ae_title

if TYPE_CHECKING:
    import uvicorn


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_config(app: Callable[..., Any], settings: Settings, host: str, port: int) -> uvicorn.Config:
    """How ``lamina serve`` runs uvicorn (the tests start servers the same way).

    - ``proxy_headers`` off: uvicorn would believe ``X-Forwarded-*`` from 127.0.0.1 by default;
      lamina applies ``LAMINA_TRUSTED_PROXIES`` itself (``lamina.api.urls.ForwardedHeaders``),
      since deciding on ``X-Forwarded-Host`` needs the proxy's own address.
    - ``timeout_graceful_shutdown``: on SIGTERM or Ctrl-C the server stops accepting, lets the
      requests in flight finish for up to ``shutdown_grace_s``, then stops; idle, it stops at once.
    """
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        forwarded_allow_ips=list(settings.trusted_proxies),
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),  # 0: stop at once
        lifespan="on",
    )


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--dimse-port",
    type=click.IntRange(1, 65535),
    help="Also serve DIMSE (C-ECHO, C-STORE, C-FIND, C-MOVE to 'lamina ae' destinations, C-GET).",
)
@click.option(
    "--ae-title",
    default=None,
    help="The DIMSE application entity title (default LAMINA_DIMSE_AE_TITLE, else LAMINA).",
)
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, dimse_port: int | None, ae_title: str | None) -> None:
    """Serve the archive over DICOMweb (/dicomweb) with the viewer at /, and DIMSE if asked."""
    import logging

    import uvicorn

    from lamina.api import create_app
    from lamina.archive.archive import Archive
    from lamina.dimse import DimseOptions, DimseServer

    if not _is_loopback(host):
        err_console.print(
            f"[bold red]warning:[/] listening on {host}: there is no sign-in yet, so anyone who can "
            "reach this address can read every slide. Use 127.0.0.1 unless this network is trusted.",
            highlight=False,
        )
    settings = Settings.load((ctx.find_root().obj or {}).get("home"))
    if ae_title is not None:
        settings = settings.with_(dimse_ae_title=check_ae_title(ae_title, "--ae-title"))
    archive = Archive.open(settings)
    dimse = None
    if dimse_port:
        options = DimseOptions.from_settings(settings)
        dimse = DimseServer(archive, settings.dimse_ae_title, host, dimse_port, options)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("lamina.dimse").setLevel(logging.INFO)
    # every 4xx and 5xx answer, with its reason (lamina.api.errorlog)
    logging.getLogger("lamina.api").setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if dimse is not None:
        dimse.start()
        err_console.print(f"DIMSE: {dimse.ae_title} on {host}:{dimse.port}", highlight=False)
    err_console.print(f"lamina: viewer and DICOMweb on http://{host}:{port}/", highlight=False)
    # uvicorn handles SIGTERM while it serves, then sends it again to the handler found before
    # it: this one turns it into a clean exit, so that the DIMSE server and the archive close
    signal.signal(signal.SIGTERM, _exit)
    try:
        uvicorn.Server(server_config(create_app(settings, archive), settings, host, port)).run()
        code = 0
    except SystemExit as stop:  # SIGTERM (0), or uvicorn could not start (3)
        code = stop.code if isinstance(stop.code, int) else 1
    except KeyboardInterrupt:  # Ctrl-C: uvicorn stopped, then sent SIGINT on
        code = 0
    finally:
        if dimse is not None:
            dimse.stop()
        archive.close()
    # Everything that holds state is closed: skip the interpreter's teardown of numpy, pydicom,
    # boto3, SQLAlchemy... (0.3 s or more on a busy machine), so that a stop takes well under 1 s.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
