"""Every 4xx and 5xx answer is logged with its reason (``lamina.api.errorlog``), so a client's
failure can be explained from the server's log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
import pytest

from lamina.api.errorlog import ErrorLog
from tests.api.conftest import ServedArchive
from tests.signin import signed


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "lamina.api"]


def test_refusals_are_logged_with_their_reason(
    served_archive: ServedArchive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lamina.api")
    base = served_archive.base_url
    row = next(
        r for r in served_archive.archive.catalog.instances(served_archive.slide_ids[0]) if r.level == 0
    )
    frames = (
        f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}/frames"
    )

    assert signed.get(f"{base}/studies/1.2.3/metadata").status_code == 404
    assert (
        signed.get(f"{frames}/1", headers={"Accept": 'multipart/related; type="image/jls"'}).status_code
        == 406
    )
    assert signed.get(f"{frames}/0,x").status_code == 400
    assert signed.get(f"{base}/no-such-resource").status_code == 404
    assert signed.get(f"{base}/studies", params={"PatientID": "SECRET-42", "limit": "-1"}).status_code == 400
    assert signed.get(f"{frames}/1", headers={"Accept": "*/*"}).status_code == 200

    lines = _lines(caplog)
    assert (
        "GET /dicomweb/studies/1.2.3/metadata 404 Not found: "
        "no such study, series or instance in this archive" in lines
    )
    (refused,) = [line for line in lines if " 406 " in line]
    assert refused.startswith(
        f"GET {frames.removeprefix(base.removesuffix('/dicomweb'))}/1 406 Not acceptable: "
    )
    assert "transfer-syntax=*" in refused
    assert any(
        line.endswith(
            "/frames/0,x 400 Bad request: frames: '0,x' is not a comma-separated list of frame numbers"
        )
        for line in lines
    ), lines
    assert (
        "GET /dicomweb/no-such-resource 404 Not Found: nothing at /dicomweb/no-such-resource; "
        "/openapi.json lists what this server answers" in lines
    )
    (search,) = [line for line in lines if line.startswith("GET /dicomweb/studies 400")]
    assert "limit" in search
    assert not any("SECRET-42" in line for line in lines)  # the query string stays out of the log
    assert not any(" 200 " in line for line in lines)
    assert all(record.levelno == logging.INFO for record in caplog.records if record.name == "lamina.api")


# -- the middleware on its own, around real ASGI applications that fail ----------------------------


async def _fails(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("the catalog\nconnection broke")


async def _cut_short(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part of it", "more_body": True})
    raise OSError("the stored object is shorter than its index")


async def _unavailable(scope: Any, receive: Any, send: Any) -> None:
    body = b"the blob store at s3://bucket does not answer"
    await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def _get(app: Any) -> None:
    async def run() -> None:
        transport = httpx.ASGITransport(app=ErrorLog(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://lamina") as client:
            await client.get("/dicomweb/studies/1/series/2?token=secret")

    with contextlib.suppress(RuntimeError, OSError):  # what the server above would see
        asyncio.run(run())


def test_errors_and_answers_cut_short_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lamina.api")

    _get(_fails)
    _get(_cut_short)
    _get(_unavailable)

    assert _lines(caplog) == [
        "GET /dicomweb/studies/1/series/2 500 unexpected error: RuntimeError: the catalog connection broke",
        "GET /dicomweb/studies/1/series/2 200 answer cut short: "
        "OSError: the stored object is shorter than its index",
        "GET /dicomweb/studies/1/series/2 503 the blob store at s3://bucket does not answer",
    ]
    levels = [record.levelno for record in caplog.records if record.name == "lamina.api"]
    assert levels == [logging.ERROR, logging.ERROR, logging.WARNING]
