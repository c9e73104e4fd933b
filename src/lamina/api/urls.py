"""The address clients use: absolute URLs in answers, and the headers of trusted proxies.

DICOMweb answers carry absolute URLs (``BulkDataURI``, ``RetrieveURL``, STOW-RS's
``RetrieveURL``). They start with ``LAMINA_PUBLIC_URL`` when it is set. Otherwise they are
built from the request's ``Host``, but only when that name is one of this server's:
``localhost``, a loopback address, the address the request came in on, or one of
``LAMINA_ALLOWED_HOSTS``. Any other name gets 400: a URL from ``Host: evil.example`` would send
the client, and its credentials later, elsewhere.

``Forwarded`` (RFC 7239) and ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` are believed only from
the addresses of ``LAMINA_TRUSTED_PROXIES`` (none by default), by :class:`ForwardedHeaders`;
``lamina serve`` turns uvicorn's own handling off, which trusts 127.0.0.1 by default.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.config import Settings
from lamina.errors import RequestError

#: Names every server answers to when no public URL is configured.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
#: A host name or an address, with an optional port: what ``Host`` may hold.
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?$")
#: Where the host a trusted proxy forwarded is kept in the ASGI scope.
FORWARDED_HOST = "lamina.forwarded_host"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(items: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _forwarded(value: str) -> list[dict[str, str]]:
    """The elements of a ``Forwarded`` header, each as {for, proto, host, by}."""
    elements = []
    for element in value.split(","):
        pairs: dict[str, str] = {}
        for pair in element.split(";"):
            name, _, text = pair.partition("=")
            if name.strip():
                pairs[name.strip().lower()] = text.strip().strip('"')
        elements.append(pairs)
    return elements


class ForwardedHeaders:
    """ASGI middleware: a request from a trusted proxy takes its client address, scheme and host
    from the proxy's headers; from anyone else those headers are ignored.

    With several proxies in a chain, the client is the rightmost address that is not a trusted
    proxy, and the scheme and host are those the nearest proxy reports.
    """

    def __init__(self, app: ASGIApp, trusted: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted = _networks(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and self.trusted and client and _in(client[0], self.trusted):
            scope = self._apply(scope)
        await self.app(scope, receive, send)

    def _apply(self, scope: Scope) -> Scope:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        hops: list[str] = []
        proto = host = None
        if "forwarded" in headers:
            elements = _forwarded(headers["forwarded"])
            hops = [element.get("for", "") for element in elements]
            proto, host = elements[-1].get("proto"), elements[-1].get("host")
        else:
            hops = [hop.strip() for hop in headers.get("x-forwarded-for", "").split(",") if hop.strip()]
            if "x-forwarded-proto" in headers:
                proto = headers["x-forwarded-proto"].split(",")[-1].strip()
            if "x-forwarded-host" in headers:
                host = headers["x-forwarded-host"].split(",")[-1].strip()
        scope = dict(scope)
        for hop in reversed(hops):
            address = _address(hop)
            if not _in(address, self.trusted):
                scope["client"] = (address, 0)
                break
        if proto and proto.lower() in ("http", "https"):
            scope["scheme"] = proto.lower()
        if host and _HOST.match(host):
            scope[FORWARDED_HOST] = host
        return scope


def _address(hop: str) -> str:
    """The address of a hop without its port: ``192.0.2.1:4711`` and ``[2001:db8::7]:4711`` too."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    return hop.rsplit(":", 1)[0] if hop.count(":") == 1 else hop


def _split(host: str) -> tuple[str, str | None]:
    """(name, port) of a Host value: ``[::1]:8000`` -> (``::1``, ``8000``)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else None
    name, colon, port = host.partition(":")
    return name, port if colon else None


def allowed_host(name: str, scope: Scope, settings: Settings) -> bool:
    """Whether a request may be answered with URLs under host ``name``."""
    name = name.lower().rstrip(".")
    allowed = {entry.lower().rstrip(".") for entry in settings.allowed_hosts}
    if "*" in allowed or name in allowed or name in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    server = scope.get("server")
    return address.is_loopback or bool(server and str(server[0]).lower() == name)


def dicomweb_base(request: Request) -> str:
    """The absolute URL of the DICOMweb root, as clients must use it; 400 when the request came
    under a host name that is not this server's (see the module's docstring)."""
    settings: Settings = request.app.state.settings
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/dicomweb"
    scope = request.scope
    forwarded = scope.get(FORWARDED_HOST)
    host = forwarded or request.headers.get("host", "")
    server = scope.get("server")
    if not host and server:
        host = f"[{server[0]}]" if ":" in str(server[0]) else str(server[0])
    if not _HOST.match(host):
        raise RequestError("Host", f"{host!r} is not a host name; send the name this server is reached by")
    name, port = _split(host)
    if not allowed_host(name, scope, settings):
        raise RequestError(
            "Host",
            f"{name!r} is not a name of this server, so no URL can be built on it; set LAMINA_PUBLIC_URL "
            "(the address clients use), or add the name to LAMINA_ALLOWED_HOSTS",
        )
    scheme = str(scope.get("scheme", "http"))
    default = {"http": 80, "https": 443}.get(scheme)
    # some clients (dicomweb-client) send a Host without the port: add back the one the
    # connection came in on (not behind a proxy, whose own port is the scheme's default)
    if port is None and not forwarded and server and server[1] != default:
        host = f"{host}:{server[1]}"
    root = str(scope.get("root_path", "")).rstrip("/")
    if not root.endswith("/dicomweb"):
        root += "/dicomweb"
    return f"{scheme}://{host}{root}"
