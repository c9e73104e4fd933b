"""``lamina serve --tls-cert/--tls-key`` as a real process: HTTPS with a self-signed certificate
(trustme), TLS 1.2 at least, no plain HTTP on the same port, bad files refused in one line before
anything starts, and the clear-text warning exactly when listening beyond loopback without TLS.

TLS is the transport, whatever the catalog: these tests run on the embedded archive only (SQLite
and a folder); ``tests/cli/test_serve.py`` runs ``lamina serve`` on both backends.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from lamina.config import Settings
from tests.support import lamina_env, need


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA the clients trust
    cert: Path  # the server's certificate, then its chain
    key: Path  # its private key
    other_key: Path  # the key of another certificate
    encrypted_key: Path  # ``key``, encrypted with a password


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path / "tls"
    folder.mkdir()
    made = Certs(
        folder / "ca.pem",
        folder / "cert.pem",
        folder / "key.pem",
        folder / "other-key.pem",
        folder / "encrypted-key.pem",
    )
    ca.cert_pem.write_to_path(str(made.ca))
    made.cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(made.key))
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(str(made.other_key))
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    made.encrypted_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a password"),
        )
    )
    return made


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(tmp_path / "lamina-data", env={})


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tls_args(certs: Certs) -> list[str]:
    return ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]


def _client_context(certs: Certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca))


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    stderr: list[str]  # the lines the server printed so far

    def stop(self) -> str:
        """SIGTERM; everything the server printed on stderr."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return "".join(self.stderr)


@contextlib.contextmanager
def lamina_serve(
    settings: Settings, *args: str, host: str = "127.0.0.1", certs: Certs | None = None, **env: str
) -> Iterator[Served]:
    """A ``lamina serve --host HOST`` on a free port, once /healthz answers 200 on 127.0.0.1
    (over HTTPS verified against ``certs.ca`` when ``certs`` is given); its stderr is collected."""
    port = _free_port(host)
    process = subprocess.Popen(
        [sys.executable, "-m", "lamina", "serve", "--host", host, "--port", str(port), *args],
        env=lamina_env(settings, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stream = process.stderr
    assert stream is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True)
    reader.start()
    url = f"{'https' if certs else 'http'}://127.0.0.1:{port}/healthz"
    verify: ssl.SSLContext | bool = _client_context(certs) if certs else True
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "lamina serve stopped:\n" + "".join(lines)
            assert time.monotonic() < deadline, "lamina serve did not start:\n" + "".join(lines)
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, verify=verify, timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield Served(process, port, lines)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        reader.join(timeout=30)


def _handshake(port: int, certs: Certs, version: ssl.TLSVersion, ciphers: str = "DEFAULT") -> str:
    """A TLS handshake with 127.0.0.1:``port`` at exactly ``version``: the version agreed, or the
    error. The client allows every cipher of ``ciphers`` at OpenSSL's security level 0, so that a
    refusal is the server's."""
    context = _client_context(certs)
    context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    with warnings.catch_warnings():  # Python deprecates asking for TLS 1.1, which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            return str(tls.version())
    except (ssl.SSLError, ConnectionError) as exc:
        return f"refused: {exc!r}"


def _permissive_server(certs: Certs) -> int:
    """A one-connection TLS server on loopback that takes TLS 1.0 and later: the control that shows
    the client below can speak TLS 1.1 at all; its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        with listener:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


def test_https_with_the_certificate_and_key(settings: Settings, certs: Certs) -> None:
    with lamina_serve(settings, *_tls_args(certs), certs=certs) as served:
        # Act
        answer = httpx.get(f"https://127.0.0.1:{served.port}/healthz", verify=_client_context(certs))
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{served.port}/healthz", timeout=10)
        tls12 = _handshake(served.port, certs, ssl.TLSVersion.TLSv1_2)
        tls13 = _handshake(served.port, certs, ssl.TLSVersion.TLSv1_3)
        # RSA key exchange: no forward secrecy
        no_forward_secrecy = _handshake(served.port, certs, ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256")
        control = _handshake(_permissive_server(certs), certs, ssl.TLSVersion.TLSv1_1)
        refused = _handshake(served.port, certs, ssl.TLSVersion.TLSv1_1)
        output = served.stop()

    # Assert
    assert answer.status_code == 200 and "version" in answer.json()
    assert (tls12, tls13) == ("TLSv1.2", "TLSv1.3")
    assert no_forward_secrecy.startswith("refused"), no_forward_secrecy
    need(control == "TLSv1.1", "an OpenSSL that still speaks TLS 1.1 (to show it is refused)")
    assert refused.startswith("refused"), refused
    assert served.process.returncode == 0, output
    assert f"on https://127.0.0.1:{served.port}/" in output
    assert "WARNING" not in output and "Traceback" not in output, output


def test_the_environment_variables_serve_https(settings: Settings, certs: Certs) -> None:
    env = {"LAMINA_TLS_CERT": str(certs.cert), "LAMINA_TLS_KEY": str(certs.key)}
    with lamina_serve(settings, certs=certs, **env) as served:
        answer = httpx.get(f"https://127.0.0.1:{served.port}/healthz", verify=_client_context(certs))
        output = served.stop()
    assert answer.status_code == 200
    assert f"on https://127.0.0.1:{served.port}/" in output


def _serve_refused(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamina", "serve", "--port", str(_free_port("127.0.0.1")), *args],
        env=lamina_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_key_that_is_not_the_certificates_is_refused_in_one_line(settings: Settings, certs: Certs) -> None:
    refused = _serve_refused(settings, "--tls-cert", str(certs.cert), "--tls-key", str(certs.other_key))

    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: --tls-key {certs.other_key} is not the private key of the certificate in --tls-cert "
        f"{certs.cert}: give the key the certificate was issued for"
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--tls-cert", "{cert}"), "--tls-cert was given without --tls-key"),
        (("--tls-key", "{key}"), "--tls-key was given without --tls-cert"),
        (("--tls-cert", "{missing}", "--tls-key", "{key}"), "--tls-cert {missing}: cannot read it"),
        (("--tls-cert", "{cert}", "--tls-key", "{missing}"), "--tls-key {missing}: cannot read it"),
        (("--tls-cert", "{key}", "--tls-key", "{key}"), "--tls-cert {key}: not a PEM file with"),
        (("--tls-cert", "{cert}", "--tls-key", "{cert}"), "--tls-key {cert}: not a PEM file with"),
        (("--tls-cert", "{cert}", "--tls-key", "{encrypted_key}"), "--tls-key {encrypted_key} is encrypted"),
        (("--tls-cert", "{folder}", "--tls-key", "{key}"), "'--tls-cert'"),
    ],
    ids=[
        "cert-only",
        "key-only",
        "no-cert-file",
        "no-key-file",
        "key-as-cert",
        "cert-as-key",
        "encrypted",
        "folder",
    ],
)
def test_bad_tls_files_are_refused_naming_the_option_and_the_file(
    settings: Settings, certs: Certs, args: tuple[str, ...], expected: str
) -> None:
    names = {
        "cert": certs.cert,
        "key": certs.key,
        "encrypted_key": certs.encrypted_key,
        "missing": certs.cert.parent / "missing.pem",
        "folder": certs.cert.parent,
    }

    refused = _serve_refused(settings, *(arg.format(**names) for arg in args))

    assert refused.returncode == 2, refused.stderr
    assert expected.format(**names) in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and "lamina: viewer" not in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("host", "tls", "warned"),
    [("0.0.0.0", False, True), ("0.0.0.0", True, False), ("127.0.0.1", False, False)],
    ids=["all-addresses", "all-addresses-tls", "loopback"],
)
def test_the_clear_text_warning_beyond_loopback_without_tls(
    settings: Settings, certs: Certs, host: str, tls: bool, warned: bool
) -> None:
    args = _tls_args(certs) if tls else []
    # FORCE_COLOR: rich colours its output in a pipe too, as on a terminal
    with lamina_serve(settings, *args, host=host, certs=certs if tls else None, FORCE_COLOR="1") as served:
        output = served.stop()  # it started and served: a warning, never a refusal

    assert served.process.returncode == 0, output
    warning = [line for line in output.splitlines() if "WARNING" in line]
    if warned:
        assert len(warning) == 1 and "\x1b[" in warning[0] and "31" in warning[0], output
        assert f"listening on {host} without TLS" in output
        assert "clear text" in output and "patient data" in output and "tokens" in output
        assert "--tls-cert" in output and "--tls-key" in output and "LAMINA_TRUSTED_PROXIES" in output
    else:
        assert warning == [] and "clear text" not in output, output
