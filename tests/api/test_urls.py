"""Absolute URLs in answers come from configuration or an allowed Host, never from whatever a
client sends; forwarding headers count only from configured proxies (``lamina.api.urls``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lamina.api.app import create_app
from lamina.api.urls import ForwardedHeaders
from lamina.archive import audit
from lamina.archive.catalog import InstanceRow
from lamina.config import Settings
from lamina.errors import ConfigurationError
from tests.api.conftest import ServedArchive, serving_as_lamina
from tests.signin import signed


def _level0(served: ServedArchive) -> InstanceRow:
    return next(row for row in served.archive.catalog.instances(served.slide_ids[0]) if row.level == 0)


def _series(row: InstanceRow) -> str:
    return f"/dicomweb/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"


def _pixel_uri(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    return str(answer.json()[0]["7FE00010"]["BulkDataURI"])


@pytest.fixture(scope="module")
def server(served_archive: ServedArchive) -> Iterator[tuple[str, Settings]]:
    """A server run as ``lamina serve`` runs it, with no public URL and no trusted proxy."""
    settings = served_archive.archive.settings.with_(workers=0, verify_cron=None)
    with serving_as_lamina(create_app(settings, served_archive.archive), settings) as port:
        yield f"http://127.0.0.1:{port}", settings


@pytest.fixture(scope="module")
def behind_proxy(served_archive: ServedArchive) -> Iterator[str]:
    """The same behind a proxy on 127.0.0.1 that is trusted, for the name lamina.example."""
    settings = served_archive.archive.settings.with_(
        workers=0, verify_cron=None, trusted_proxies=("127.0.0.1",), allowed_hosts=("lamina.example",)
    )
    with serving_as_lamina(create_app(settings, served_archive.archive), settings) as port:
        yield f"http://127.0.0.1:{port}"


def test_a_foreign_host_is_refused_where_urls_are_built(
    served_archive: ServedArchive, server: tuple[str, Settings]
) -> None:
    base, _ = server
    row = _level0(served_archive)
    evil = {"Host": "evil.example"}

    answer = signed.get(f"{base}{_series(row)}/metadata", headers=evil)

    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert "'evil.example' is not a name of this server" in detail
    assert "LAMINA_PUBLIC_URL" in detail and "LAMINA_ALLOWED_HOSTS" in detail
    assert signed.get(f"{base}/dicomweb/studies", headers=evil).status_code == 400  # RetrieveURL
    # answers without URLs do not depend on the name
    frame = signed.get(
        f"{base}{_series(row)}/instances/{row.sop_instance_uid}/frames/1",
        headers={**evil, "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
    )
    assert frame.status_code == 200


@pytest.mark.parametrize(
    ("host", "root"),
    [
        ("127.0.0.1:{port}", "http://127.0.0.1:{port}"),
        ("127.0.0.1", "http://127.0.0.1:{port}"),  # dicomweb-client leaves the port out
        ("localhost:{port}", "http://localhost:{port}"),
        ("LOCALHOST:{port}", "http://LOCALHOST:{port}"),
    ],
)
def test_local_names_are_allowed(
    served_archive: ServedArchive, server: tuple[str, Settings], host: str, root: str
) -> None:
    base, _ = server
    port = base.rsplit(":", 1)[1]
    row = _level0(served_archive)
    uri = _pixel_uri(signed.get(f"{base}{_series(row)}/metadata", headers={"Host": host.format(port=port)}))
    assert uri.startswith(f"{root.format(port=port)}/dicomweb/studies/{row.study_instance_uid}/")


def test_forwarding_headers_from_an_untrusted_peer_are_ignored(
    served_archive: ServedArchive, server: tuple[str, Settings]
) -> None:
    """uvicorn alone would believe them from 127.0.0.1; lamina trusts no proxy unless told."""
    base, _ = server
    row = _level0(served_archive)
    forged = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-For": "198.51.100.9",
        "Forwarded": "for=198.51.100.10;proto=https;host=evil.example",
    }
    uri = _pixel_uri(signed.get(f"{base}{_series(row)}/metadata", headers=forged))
    assert uri.startswith(f"{base}/dicomweb/")
    assert _last_reader(served_archive, row) == "127.0.0.1"


def test_a_trusted_proxy_gives_scheme_host_and_client(
    served_archive: ServedArchive, behind_proxy: str
) -> None:
    # slides no other test opens here: a read is recorded once per opening (person and slide)
    row, other = (
        next(r for r in served_archive.archive.catalog.instances(slide) if r.level == 0)
        for slide in served_archive.slide_ids[2:4]
    )
    url = f"{behind_proxy}{_series(row)}/metadata"
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "lamina.example",
        "X-Forwarded-For": "203.0.113.7",
    }

    uri = _pixel_uri(signed.get(url, headers=forwarded))

    assert uri.startswith("https://lamina.example/dicomweb/studies/")
    assert _last_reader(served_archive, row) == "203.0.113.7"
    rfc7239 = {"Forwarded": 'for="[2001:db8::7]:4711";proto=https;host=lamina.example'}
    other_url = f"{behind_proxy}{_series(other)}/metadata"
    assert _pixel_uri(signed.get(other_url, headers=rfc7239)).startswith("https://lamina.example/dicomweb/")
    assert _last_reader(served_archive, other) == "2001:db8::7"
    # a trusted proxy's host must still be a name of this server
    refused = signed.get(url, headers={**forwarded, "X-Forwarded-Host": "evil.example"})
    assert refused.status_code == 400 and "evil.example" in refused.json()["detail"]


def test_the_public_url_wins(served_archive: ServedArchive) -> None:
    settings = served_archive.archive.settings.with_(
        workers=0, verify_cron=None, public_url="https://slides.example.org/lamina/"
    )
    row = _level0(served_archive)
    with serving_as_lamina(create_app(settings, served_archive.archive), settings) as port:
        answer = signed.get(
            f"http://127.0.0.1:{port}{_series(row)}/metadata", headers={"Host": "evil.example"}
        )
    assert _pixel_uri(answer).startswith("https://slides.example.org/lamina/dicomweb/studies/")


def _last_reader(served: ServedArchive, row: InstanceRow) -> str:
    with served.archive.catalog.begin() as conn:
        reads = [
            entry for entry in audit.entries(conn, action="read") if entry.entity == f"slide/{row.slide_id}"
        ]
    return str(reads[-1].detail["client"])


# -- the middleware and the settings on their own --------------------------------------------------


def _scope_seen(trusted: tuple[str, ...], client: str, headers: dict[str, str]) -> dict[str, Any]:
    """The scope the application behind ``ForwardedHeaders`` sees."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    middleware = ForwardedHeaders(app, trusted)
    scope = {
        "type": "http",
        "client": (client, 5000),
        "scheme": "http",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
    }
    asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    return seen


def test_a_chain_of_proxies_gives_the_first_untrusted_address() -> None:
    chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.5, 10.0.0.2", "X-Forwarded-Proto": "http, https"}
    seen = _scope_seen(("10.0.0.0/8",), "10.0.0.1", chain)
    assert seen["client"] == ("203.0.113.5", 0)
    assert seen["scheme"] == "https"  # what the nearest proxy says
    untrusted = _scope_seen(("10.0.0.0/8",), "192.0.2.1", chain)
    assert untrusted["client"] == ("192.0.2.1", 5000) and untrusted["scheme"] == "http"
    nothing = _scope_seen((), "10.0.0.1", chain)
    assert nothing["client"] == ("10.0.0.1", 5000)
    junk = _scope_seen(
        ("10.0.0.0/8",), "10.0.0.1", {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": 'a"b'}
    )
    assert junk["scheme"] == "http" and "lamina.forwarded_host" not in junk


def test_trusted_proxies_are_checked_when_settings_load(tmp_path: Any) -> None:
    settings = Settings.load(tmp_path, env={"LAMINA_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"})
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.7")
    with pytest.raises(ConfigurationError, match=r"LAMINA_TRUSTED_PROXIES.*'proxy\.example'"):
        Settings.load(tmp_path, env={"LAMINA_TRUSTED_PROXIES": "10.0.0.0/8,proxy.example"})
    names = Settings.load(tmp_path, env={"LAMINA_ALLOWED_HOSTS": "slides.example.org, lamina"})
    assert names.allowed_hosts == ("slides.example.org", "lamina")
