"""An application entity is valid once built: AE titles, hosts and ports DICOM would refuse are
refused with the parameter named, and AE@HOST:PORT addresses parse both ways."""

from __future__ import annotations

import pytest

from lamina.errors import RequestError
from lamina.peers.entity import ApplicationEntity, check_ae_title, check_host, parse_address


@pytest.mark.parametrize(
    ("title", "kept"),
    [("PACS", "PACS"), ("  IMS 2  ", "IMS 2"), ("A" * 16, "A" * 16), ("ims-lab_2.b", "ims-lab_2.b")],
)
def test_valid_ae_titles_are_kept_without_outer_spaces(title: str, kept: str) -> None:
    assert check_ae_title(title) == kept


@pytest.mark.parametrize(
    ("title", "reason"),
    [
        ("", "cannot be empty"),
        ("    ", "cannot be empty"),
        ("A" * 17, "has 17 characters"),
        ("A\\B", "does not allow"),
        ("TAB\tAE", "does not allow"),
        ("MÜLLER", "does not allow"),
    ],
)
def test_invalid_ae_titles_are_refused_with_the_reason(title: str, reason: str) -> None:
    with pytest.raises(RequestError, match=reason) as caught:
        check_ae_title(title, "AE_TITLE")
    assert caught.value.parameter == "AE_TITLE"


@pytest.mark.parametrize(
    ("host", "kept"),
    [("10.0.0.5", "10.0.0.5"), ("PACS.Example.org", "pacs.example.org"), ("[::1]", "::1"), ("ims", "ims")],
)
def test_hosts_are_addresses_or_names(host: str, kept: str) -> None:
    assert check_host(host) == kept


@pytest.mark.parametrize("host", ["", "bad host", "-lead.example", "a" * 64 + ".org", "10.0.0.300", "x@y"])
def test_bad_hosts_are_refused(host: str) -> None:
    with pytest.raises(RequestError) as caught:
        check_host(host, "--host")
    assert caught.value.parameter == "--host"


@pytest.mark.parametrize("port", [0, 65536, -1, "http"])
def test_bad_ports_are_refused(port: int | str) -> None:
    with pytest.raises(RequestError, match=r"port|number"):
        ApplicationEntity("PACS", "10.0.0.5", port)  # type: ignore[arg-type]


def test_addresses_parse_and_print_back() -> None:
    entity = parse_address("STORESCP@127.0.0.1:11112")
    assert (entity.ae_title, entity.host, entity.port) == ("STORESCP", "127.0.0.1", 11112)
    assert entity.address == "STORESCP@127.0.0.1:11112"
    six = parse_address("PACS@[::1]:104")
    assert (six.host, six.port, six.address) == ("::1", 104, "PACS@[::1]:104")


@pytest.mark.parametrize("text", ["PACS", "PACS@host", "@host:104", "PACS@:104", "PACS@host:", "A@B@C:1"])
def test_malformed_addresses_are_refused(text: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_address(text, "--to")
    assert caught.value.parameter == "--to"


def test_descriptions_are_one_bounded_line() -> None:
    assert ApplicationEntity("PACS", "h", 104, " IMS, room 2 ").description == "IMS, room 2"
    with pytest.raises(RequestError, match="control character"):
        ApplicationEntity("PACS", "h", 104, "two\nlines")
    with pytest.raises(RequestError, match="at most 255"):
        ApplicationEntity("PACS", "h", 104, "x" * 256)
