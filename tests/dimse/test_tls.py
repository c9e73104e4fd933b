"""DIMSE over TLS (LAMINA_DIMSE_TLS_CERT/KEY/CA): certificates from a test CA (trustme); a TLS peer
with a client certificate echoes and stores (pynetdicom, dcmtk's echoscu), a plain TCP peer and a
TLS peer without a client certificate are refused, and a half configuration names the setting."""

from __future__ import annotations

import logging
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE
from pynetdicom.association import Association

from lamina.archive.archive import Archive
from lamina.config import Settings
from lamina.dimse import DimseOptions, DimseServer, status
from lamina.dimse.contexts import VERIFICATION, VL_WSI
from lamina.errors import ConfigurationError
from lamina.sample import write_samples
from tests.dimse.peers import LAB, calling
from tests.support import tool

SCU_AE = "TLSSCU"


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA's certificate
    server: Path  # the server's key and certificate chain, one PEM file
    client_key: Path
    client_cert: Path
    ca_object: trustme.CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(folder / "server.pem")
    )
    client = ca.issue_cert("tlsscu.lab.example")
    client.private_key_pem.write_to_path(str(folder / "client-key.pem"))
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    return Pki(folder / "ca.pem", folder / "server.pem", folder / "client-key.pem", folder / "client.pem", ca)


@pytest.fixture
def server(archive: Archive, pki: Pki) -> Iterator[DimseServer]:
    calling(archive, SCU_AE)
    options = DimseOptions(tls_cert=pki.server, tls_key=pki.server, tls_ca=pki.ca)
    with DimseServer(archive, ae_title="LAMINA", port=0, options=options) as served:
        yield served


def _client_context(pki: Pki, with_certificate: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if with_certificate:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


def _associate(port: int, tls: ssl.SSLContext | None, *contexts: tuple[str, list[str]]) -> Association:
    ae = AE(ae_title=SCU_AE)
    ae.acse_timeout = ae.network_timeout = 10
    for abstract, syntaxes in contexts or ((VERIFICATION, [ExplicitVRLittleEndian]),):
        ae.add_requested_context(abstract, syntaxes)
    tls_args = None if tls is None else (tls, "127.0.0.1")
    return ae.associate("127.0.0.1", port, ae_title="LAMINA", tls_args=tls_args)


def test_a_tls_peer_with_a_client_certificate_echoes_and_stores(
    server: DimseServer, archive: Archive, pki: Pki, tmp_path: Path
) -> None:
    [sample] = write_samples(tmp_path, ["dicom_wsi"], size=(1024, 768))
    files = sorted(sample.path.glob("*.dcm"))
    # Act
    assoc = _associate(
        server.port,
        _client_context(pki),
        (VERIFICATION, [ExplicitVRLittleEndian]),
        (VL_WSI, [JPEGBaseline8Bit]),
    )
    assert assoc.is_established
    try:
        echoed = assoc.send_c_echo()
        stored = [assoc.send_c_store(file).Status for file in files]
    finally:
        assoc.release()
    assert server.wait_idle(60)
    # Assert
    assert echoed.Status == status.SUCCESS
    assert stored == [status.SUCCESS] * len(files)
    [slide] = archive.catalog.slides()
    assert slide.tenant == LAB


def test_plain_tcp_and_tls_without_a_client_certificate_are_refused(server: DimseServer, pki: Pki) -> None:
    plain = _associate(server.port, None)
    anonymous = _associate(server.port, _client_context(pki, with_certificate=False))
    assert not plain.is_established
    assert not anonymous.is_established
    # the server still serves the peer that does it right
    good = _associate(server.port, _client_context(pki))
    assert good.is_established
    good.release()


def test_dcmtk_echoscu_over_tls(server: DimseServer, pki: Pki) -> None:
    echoscu = tool("echoscu")
    helped = subprocess.run([echoscu, "--help"], capture_output=True, text=True, check=False)
    assert "+tls" in helped.stdout, "this dcmtk was built without TLS (OpenSSL)"
    common = ["-aet", SCU_AE, "-aec", "LAMINA", "+cf", str(pki.ca)]
    tls = subprocess.run(
        [echoscu, "-v", *common, "+tls", str(pki.client_key), str(pki.client_cert), "127.0.0.1",
         str(server.port)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    plain = subprocess.run(
        [echoscu, "-aet", SCU_AE, "-aec", "LAMINA", "-to", "10", "127.0.0.1", str(server.port)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert tls.returncode == 0, tls.stdout + tls.stderr
    assert plain.returncode != 0


def test_a_half_tls_configuration_names_the_setting(archive: Archive, pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="LAMINA_DIMSE_TLS_KEY"):
        DimseServer(archive, port=0, options=DimseOptions(tls_cert=pki.server)).start()
    with pytest.raises(ConfigurationError, match="LAMINA_DIMSE_TLS_CERT"):
        DimseServer(
            archive, port=0, options=DimseOptions(tls_cert=tmp_path / "none.pem", tls_key=pki.server)
        ).start()
    settings = Settings.load(
        tmp_path / "home",
        env={"LAMINA_DIMSE_TLS_CERT": str(pki.server), "LAMINA_DIMSE_TLS_KEY": str(pki.server),
             "LAMINA_DIMSE_TLS_CA": str(pki.ca)},
    )  # fmt: skip
    options = DimseOptions.from_settings(settings)
    assert (options.tls_cert, options.tls_key, options.tls_ca) == (pki.server, pki.server, pki.ca)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "client-certificates"])
def test_a_server_on_the_network_without_client_certificates_names_the_settings(
    archive: Archive, pki: Pki, caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="lamina.dimse")
    options = DimseOptions(tls_cert=pki.server, tls_key=pki.server, tls_ca=pki.ca) if tls else DimseOptions()
    # 0.0.0.0: every address of this machine, as an operator serving a network would listen
    with DimseServer(archive, host="0.0.0.0", port=0, options=options):
        pass
    warned = [r.getMessage() for r in caplog.records if "without client certificates" in r.getMessage()]
    if tls:
        assert warned == []
    else:
        (message,) = warned
        assert "LAMINA_DIMSE_TLS_CERT, LAMINA_DIMSE_TLS_KEY and LAMINA_DIMSE_TLS_CA" in message
