"""Every 4xx and 5xx answer in the log, with its reason, so that a client's failure can be
explained from the server's side (Orthanc's DICOMweb plug-in once failed on a problem+json
answer whose cause could not be found).

One line per answer, logger ``lamina.api``: method, path (never the query string, which may
carry secrets), status and the problem's detail (or the start of a plain-text body). 4xx are
logged at INFO, 5xx at WARNING; an exception that escapes a handler is logged at ERROR with its
type, and an answer cut short after its headers (a damaged object found while streaming) too.
"""

from __future__ import annotations

import logging

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("lamina.api")

#: Bytes of an error body kept to find its reason (problem details are short).
_KEPT = 4096
_SHOWN = 300


def _reason(content_type: str, body: bytes) -> str:
    """The detail of a problem+json body, or the start of any other body, on one line."""
    if "json" in content_type:
        try:
            problem = orjson.loads(body)
        except orjson.JSONDecodeError:
            problem = None
        if isinstance(problem, dict):
            title, detail = problem.get("title"), problem.get("detail")
            text = ": ".join(str(part) for part in (title, detail) if part)
            if text:
                return " ".join(text.split())[:_SHOWN]
    return " ".join(body[:_SHOWN].decode("utf-8", "replace").split()) or "(no body)"


class ErrorLog:
    """ASGI middleware that logs answers of status 400 and above, and failures while streaming."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        content_type = ""
        body = bytearray()

        async def watch(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        content_type = value.decode("latin-1").lower()
            elif message["type"] == "http.response.body" and status >= 400:
                if len(body) < _KEPT:
                    body.extend(message.get("body", b"")[: _KEPT - len(body)])
                if not message.get("more_body", False):
                    _log(scope, status, _reason(content_type, bytes(body)))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            what = "answer cut short" if status and status < 400 else "unexpected error"
            log.error(
                "%s %s %s %s: %s: %s",
                scope["method"],
                scope["path"],
                status or 500,
                what,
                type(exc).__name__,
                " ".join(str(exc).split())[:_SHOWN],
            )
            raise


def _log(scope: Scope, status: int, reason: str) -> None:
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(level, "%s %s %s %s", scope["method"], scope["path"], status, reason)
