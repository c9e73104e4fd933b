"""A DICOM peer as lamina knows it: its application entity title and where to reach it.

Validated at construction (highdicom's rule: strict on encode), so that a title, host or port
that a DICOM association would refuse is refused where the user typed it, with the fix.

>>> ApplicationEntity("PACS", "10.0.0.5", 104).address
'PACS@10.0.0.5:104'
>>> parse_address("STORESCP@[::1]:11112").host
'::1'
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from lamina.errors import PeerError as PeerError  # here too: its import path before errors.py held it
from lamina.errors import RequestError

#: PS3.5 6.2: an AE value is at most 16 characters of the default repertoire, no backslash, no
#: control character; leading and trailing spaces are not significant.
AE_TITLE_MAX = 16
HOST_MAX = 253
DESCRIPTION_MAX = 255
_AE_CHARACTERS = re.compile(r"^[\x20-\x5b\x5d-\x7e]+$")  # printable ASCII without "\"
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_ADDRESS = re.compile(r"^(?P<ae>[^@]*)@(?:\[(?P<ipv6>[^\]]*)\]|(?P<host>[^:@\[\]]*)):(?P<port>[^:@]*)$")


def check_ae_title(value: str, parameter: str = "AE title") -> str:
    """The AE title without its non-significant spaces; :class:`RequestError` when DICOM refuses it."""
    title = value.strip(" ")
    if not title:
        raise RequestError(parameter, "an AE title cannot be empty; use 1 to 16 characters, e.g. PACS")
    if len(title) > AE_TITLE_MAX:
        raise RequestError(
            parameter, f"{title!r} has {len(title)} characters; an AE title has at most {AE_TITLE_MAX}"
        )
    if not _AE_CHARACTERS.match(title):
        raise RequestError(
            parameter,
            f"{title!r} holds a character DICOM does not allow in an AE title; use letters, digits, "
            "spaces and punctuation other than a backslash (no control characters, no accents)",
        )
    return title


def check_host(value: str, parameter: str = "host") -> str:
    """A host name (RFC 1123) or an IPv4 / IPv6 address; :class:`RequestError` otherwise."""
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if not name or len(name) > HOST_MAX or not all(_HOST_LABEL.match(label) for label in labels):
        raise RequestError(
            parameter,
            f"{value[:80]!r} is neither an IP address nor a host name (letters, digits and hyphens "
            "in dot-separated labels of at most 63 characters)",
        )
    if labels[-1].isdigit():  # 10.0.0.300: a mistyped address, not a name
        raise RequestError(parameter, f"{value!r} is not a valid IP address")
    return name.lower()


def check_port(value: int | str, parameter: str = "port") -> int:
    """A TCP port, 1 to 65535; :class:`RequestError` otherwise."""
    try:
        port = int(str(value).strip())
    except ValueError:
        raise RequestError(
            parameter, f"{str(value)[:20]!r} is not a number; give a TCP port, 1 to 65535"
        ) from None
    if not 1 <= port <= 65535:
        raise RequestError(parameter, f"{port} is not a TCP port; give 1 to 65535 (DICOM uses 104 or 11112)")
    return port


def check_description(value: str, parameter: str = "description") -> str:
    text = value.strip()
    if len(text) > DESCRIPTION_MAX:
        raise RequestError(parameter, f"{len(text)} characters; at most {DESCRIPTION_MAX}")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise RequestError(parameter, "holds a control character (a newline, a tab...); use one line of text")
    return text


@dataclass(frozen=True)
class ApplicationEntity:
    """A DICOM peer: its AE title, host and port, and what the lab calls it.

    Parameters
    ----------
    ae_title
        The peer's title, 1 to 16 characters (case matters in DICOM).
    host, port
        Where lamina opens associations to it.
    description
        A line for people ("IMS of the pathology lab, room 2").
    """

    ae_title: str
    host: str
    port: int
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        object.__setattr__(self, "host", check_host(self.host))
        object.__setattr__(self, "port", check_port(self.port))
        object.__setattr__(self, "description", check_description(self.description))

    @property
    def address(self) -> str:
        """``AE@HOST:PORT``, with an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def parse_address(text: str, parameter: str = "destination") -> ApplicationEntity:
    """An ``AE@HOST:PORT`` peer (``AE@[IPv6]:PORT`` for IPv6); :class:`RequestError` otherwise."""
    found = _ADDRESS.match(text.strip())
    if found is None:
        raise RequestError(
            parameter,
            f"{text[:80]!r} is not AE@HOST:PORT (e.g. PACS@10.0.0.5:104), nor a known AE title",
        )
    host = found["ipv6"] if found["ipv6"] is not None else found["host"]
    return ApplicationEntity(
        check_ae_title(found["ae"], parameter),
        check_host(host, parameter),
        check_port(found["port"], parameter),
    )


class Operation(StrEnum):
    """What a calling AE may ask lamina's DIMSE server: one DIMSE service each."""

    ECHO = "echo"  # C-ECHO, Verification
    STORE = "store"  # C-STORE, into the AE's lab
    FIND = "find"  # C-FIND, Study Root, on the AE's lab
    GET = "get"  # C-GET, Study Root
    MOVE = "move"  # C-MOVE, Study Root, to a known move destination


def parse_operations(text: str | Iterable[str], parameter: str = "--allow") -> frozenset[Operation]:
    """Operations from ``echo,store`` (or their names); :class:`RequestError` naming the valid ones."""
    names = text.split(",") if isinstance(text, str) else list(text)
    found: set[Operation] = set()
    for name in (item.strip().lower() for item in names):
        if not name:
            continue
        try:
            found.add(Operation(name))
        except ValueError:
            valid = ",".join(item.value for item in Operation)
            raise RequestError(
                parameter, f"{name[:20]!r} is not an operation; give some of {valid}, separated by commas"
            ) from None
    if not found:
        valid = ",".join(item.value for item in Operation)
        raise RequestError(parameter, f"give at least one operation of {valid}, separated by commas")
    return frozenset(found)


def format_operations(operations: Iterable[Operation]) -> str:
    """``echo,store,find``: in the order of :class:`Operation`, as the catalog keeps them."""
    held = set(operations)
    return ",".join(item.value for item in Operation if item in held)


@dataclass(frozen=True)
class CallingEntity:
    """A peer that may call lamina's DIMSE server: its AE title, its lab, what it may ask.

    Parameters
    ----------
    ae_title
        The calling AE title it associates with (case matters).
    tenant
        The lab (FINESS number) it acts for: it stores into that lab, and finds and retrieves
        what that lab's technicians may.
    allowed
        The operations it may ask; any other is refused with "Refused: Not Authorized" (0x0124).
    """

    ae_title: str
    tenant: str
    allowed: frozenset[Operation]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        object.__setattr__(self, "allowed", parse_operations(self.allowed, "allowed"))

    def may(self, operation: Operation) -> bool:
        return operation in self.allowed
