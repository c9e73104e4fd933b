"""DICOM over TLS (PS3.15 B.1, the Basic TLS Secure Transport Connection Profile, with BCP 195's
TLS 1.2 or later): the server's context from the settings.

With ``LAMINA_DIMSE_TLS_CERT`` and ``LAMINA_DIMSE_TLS_KEY`` set, the DIMSE server accepts TLS
connections only; with ``LAMINA_DIMSE_TLS_CA`` too, a peer must present a client certificate
signed by one of those CAs (verified; the connection is closed otherwise).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from lamina.errors import ConfigurationError


def server_context(cert: Path | None, key: Path | None, ca: Path | None = None) -> ssl.SSLContext | None:
    """The TLS context of the DIMSE server, or None (plain TCP) when neither ``cert`` nor ``key``
    is set; :class:`ConfigurationError` naming the setting for a half or unreadable configuration."""
    if cert is None and key is None:
        if ca is not None:
            raise ConfigurationError(
                "LAMINA_DIMSE_TLS_CA is set without LAMINA_DIMSE_TLS_CERT and LAMINA_DIMSE_TLS_KEY: "
                "set the server's certificate and key too, or unset it"
            )
        return None
    if cert is None or key is None:
        missing = "LAMINA_DIMSE_TLS_CERT" if cert is None else "LAMINA_DIMSE_TLS_KEY"
        raise ConfigurationError(
            f"DIMSE TLS needs both a certificate and its key: set {missing} (or dimse_tls_"
            f"{missing.rsplit('_', 1)[1].lower()} in lamina.toml), a PEM file"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"LAMINA_DIMSE_TLS_CERT={str(cert)!r} / LAMINA_DIMSE_TLS_KEY={str(key)!r} cannot be loaded "
            f"({_why(exc)}); give PEM files of the certificate chain and of its private key"
        ) from None
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"LAMINA_DIMSE_TLS_CA={str(ca)!r} cannot be loaded ({_why(exc)}); give a PEM file of "
                "the CA certificates that sign the peers' client certificates"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _why(exc: OSError | ssl.SSLError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or type(exc).__name__)
