"""``lamina serve``: DICOMweb and the viewer over HTTP or HTTPS, on the archive of $LAMINA_HOME."""

from __future__ import annotations

import ipaddress
import math
import os
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from lamina.cli.common import err_console, handle_errors
from lamina.config import Settings
from lamina.errors import ConfigurationError, quote_name
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


def check_tls_files(cert: Path, key: Path) -> None:
    """Raise :class:`ConfigurationError`, in one line naming the option and the file, unless
    ``cert`` is a PEM certificate (chain) and ``key`` its unencrypted PEM private key."""
    for option, path, marker, what in (
        ("--tls-cert", cert, "-----BEGIN CERTIFICATE-----", "the server's certificate, then its chain"),
        ("--tls-key", key, "PRIVATE KEY-----", "the certificate's private key"),
    ):
        try:
            content = path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigurationError(
                f"{option} {quote_name(path)}: cannot read it ({reason}); give a readable PEM file "
                f"with {what}"
            ) from None
        if marker.encode() not in content:
            raise ConfigurationError(
                f"{option} {quote_name(path)}: not a PEM file with {what} (no '{marker}' line in it)"
            )
    asked: list[bool] = []

    def password() -> bytes:
        asked.append(True)
        return b""

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigurationError(
                f"--tls-key {quote_name(key)} is not the private key of the certificate in --tls-cert "
                f"{quote_name(cert)}: give the key the certificate was issued for"
            ) from None
        if asked:
            raise ConfigurationError(
                f"--tls-key {quote_name(key)} is encrypted: lamina serve reads an unencrypted key (keep it "
                "readable by lamina's account only), e.g. openssl pkey -in KEY -out KEY.plain"
            ) from None
        raise ConfigurationError(
            f"--tls-cert {quote_name(cert)} / --tls-key {quote_name(key)}: cannot be loaded "
            f"({exc.reason or exc}); give the certificate (then its chain) and its private key, both in PEM"
        ) from None


def server_config(
    app: Callable[..., Any],
    settings: Settings,
    host: str,
    port: int,
    tls: tuple[Path, Path] | None = None,
) -> uvicorn.Config:
    """How ``lamina serve`` runs uvicorn (the tests start servers the same way).

    - ``proxy_headers`` off: uvicorn would believe ``X-Forwarded-*`` from 127.0.0.1 by default;
      lamina applies ``LAMINA_TRUSTED_PROXIES`` itself (``lamina.api.urls.ForwardedHeaders``),
      since deciding on ``X-Forwarded-Host`` needs the proxy's own address.
    - ``timeout_graceful_shutdown``: on SIGTERM or Ctrl-C the server stops accepting, lets the
      requests in flight finish for up to ``shutdown_grace_s``, then stops; idle, it stops at once.
    - ``tls``: (certificate, key), PEM files checked by :func:`check_tls_files`: HTTPS. uvicorn
      builds an ``ssl.SSLContext(PROTOCOL_TLS_SERVER)``, whose minimum since Python 3.10 is TLS 1.2
      (older versions refused; tests/cli/test_serve_tls.py checks it), with Python's default ciphers
      (forward secrecy only, checked too). uvicorn has no option for the minimum version itself.
    """
    import uvicorn

    cert, key = tls if tls is not None else (None, None)
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
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
        # Python's defaults; older uvicorn's default, "TLSv1", also allowed ciphers without forward secrecy
        ssl_ciphers=None,
    )


def _warn_clear_text(host: str) -> None:
    """The warning of a server that listens beyond this machine without TLS (it still starts)."""
    err_console.print(
        f"[bold red]WARNING: listening on {host} without TLS.[/]\n"
        "[red]Bearer tokens, passwords and patient data would cross the network in clear text, readable "
        "by anyone on the path.[/]\n"
        "[red]Serve HTTPS with --tls-cert CERT.pem --tls-key KEY.pem (or LAMINA_TLS_CERT / LAMINA_TLS_KEY), "
        "or put a TLS reverse proxy in front and set LAMINA_TRUSTED_PROXIES to its address. "
        "Use --host 127.0.0.1 to listen on this machine only.[/]",
        highlight=False,
        soft_wrap=True,
    )


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"


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
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LAMINA_TLS_CERT",
    show_envvar=True,
    help="Serve HTTPS with this certificate (PEM; the server's, then its chain). With --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LAMINA_TLS_KEY",
    show_envvar=True,
    help="The certificate's private key (PEM, unencrypted). With --tls-cert.",
)
@click.pass_context
@handle_errors
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    dimse_port: int | None,
    ae_title: str | None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Serve the archive over DICOMweb (/dicomweb) with the viewer at /, and DIMSE if asked.

    Over HTTPS with --tls-cert and --tls-key (TLS 1.2 or later); over HTTP without, with a
    warning when HOST is reachable from other machines.
    """
    import logging

    import uvicorn

    from lamina.api import create_app
    from lamina.archive.archive import Archive
    from lamina.dimse import DimseOptions, DimseServer

    if (tls_cert is None) != (tls_key is None):
        given, missing = ("--tls-cert", "--tls-key") if tls_cert is not None else ("--tls-key", "--tls-cert")
        raise ConfigurationError(
            f"{given} was given without {missing} (LAMINA_TLS_CERT, LAMINA_TLS_KEY): give both to serve "
            "HTTPS, or neither to serve HTTP"
        )
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    if tls is not None:
        check_tls_files(*tls)
    elif not _is_loopback(host):
        _warn_clear_text(host)
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
    url = _url("https" if tls else "http", host, port)
    err_console.print(f"lamina: viewer and DICOMweb on {url}", highlight=False)
    # uvicorn handles SIGTERM while it serves, then sends it again to the handler found before
    # it: this one turns it into a clean exit, so that the DIMSE server and the archive close
    signal.signal(signal.SIGTERM, _exit)
    try:
        uvicorn.Server(server_config(create_app(settings, archive), settings, host, port, tls)).run()
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
