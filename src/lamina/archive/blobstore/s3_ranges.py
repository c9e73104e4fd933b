"""Ranged GETs of S3 objects on keep-alive connections, signed with AWS Signature Version 4.

Serving a frame from an S3 store is one ranged ``GetObject`` of 5 to 50 kB. Through boto3 such a
request costs about 1 ms of CPU on the client (parameter validation, event hooks, a fresh
``AWSRequest``, response parsing), against about 0.16 ms for the HTTP exchange itself (measured
on the development machine: ``benchmarks/README.md``, "frames on S3"), so boto3 alone would cap a
two-core API host near 1,000 frames/s whatever the object server can do. :class:`RangeReader`
sends the same request on a pool of ``http.client`` connections, signed as botocore signs it
(the same canonical request and signed headers, checked against botocore by the tests), with
the credentials of the store's boto3 session, so that refreshed credentials (an instance role,
SSO) are used as they change. Everything else (writes, listings, copies, ``HEAD``) still goes
through boto3.

The reader does not handle proxies: :func:`direct_route` says whether the endpoint is reached
without one, and the store falls back to boto3 otherwise.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import http.client
import queue
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
#: errors of a connection the server closed while it idled in the pool: tried again at once
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.BadStatusLine)


@dataclass(frozen=True)
class FrozenCredentials:
    access_key: str
    secret_key: str
    token: str | None = None


class RangeError(Exception):
    """An S3 error answer: the HTTP status and the error code of its XML body (or the status)."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{code} (HTTP {status})")
        self.status = status
        self.code = code
        #: worth trying again (the server is busy or failing for now)
        self.transient = status in _TRANSIENT_STATUS or code in ("SlowDown", "RequestTimeout")
        #: the shape of botocore's ClientError.response, so that the store translates both alike
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


def direct_route(endpoint: str) -> bool:
    """True when ``endpoint`` is reached without an HTTP proxy (``HTTPS_PROXY`` and the like)."""
    host = urlsplit(endpoint).hostname or ""
    proxies = urllib.request.getproxies()
    scheme = urlsplit(endpoint).scheme
    return not (proxies.get(scheme) or proxies.get("all")) or bool(urllib.request.proxy_bypass(host))


class RangeReader:
    """Ranged GETs of the objects of one bucket.

    Parameters
    ----------
    endpoint
        ``scheme://host[:port]`` of the S3 service.
    bucket, region
        The bucket, and the region its requests are signed for.
    credentials
        Returns the current credentials (called for every request; botocore's
        ``get_frozen_credentials`` refreshes expiring ones).
    path_style
        ``/bucket/key`` on ``endpoint`` (custom endpoints) rather than ``bucket.host/key``.
    max_connections
        Idle connections kept for reuse; as many as the threads reading at once, so that no
        request pays a new TCP (or TLS) handshake.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        region: str,
        credentials: Callable[[], FrozenCredentials],
        *,
        path_style: bool = True,
        max_connections: int = 64,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        ca_bundle: str | None = None,
        attempts: int = 3,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint {endpoint!r}: expected http(s)://host[:port]")
        self.https = parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        host = parts.hostname if path_style else f"{bucket}.{parts.hostname}"
        self.connect_host = host
        # botocore writes the port into Host only when it is not the scheme's default
        self.host = host if parts.port in (None, 443 if self.https else 80) else f"{host}:{parts.port}"
        self.base_path = (parts.path.rstrip("/") + f"/{bucket}") if path_style else parts.path.rstrip("/")
        self.bucket = bucket
        self.region = region
        self.credentials = credentials
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.attempts = max(1, attempts)
        self._context = ssl.create_default_context(cafile=ca_bundle) if self.https else None
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue(max_connections)
        self._keys: tuple[str, str, bytes] | None = None  # (secret, date, signing key)
        self._keys_lock = threading.Lock()
        #: requests sent (the tests count round trips with it)
        self.requests = 0

    # ---------------------------------------------------------------- signing

    def path_for(self, key: str) -> str:
        # S3 signs the path as sent, each segment URI-encoded once ('/' kept)
        return self.base_path + "/" + quote(key, safe="/~")

    def _signing_key(self, secret: str, date: str) -> bytes:
        with self._keys_lock:
            if self._keys is not None and self._keys[:2] == (secret, date):
                return self._keys[2]
            key = hmac.digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
            for part in (self.region, "s3", "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._keys = (secret, date, key)
            return key

    def sign(self, path: str, headers: dict[str, str], when: dt.datetime) -> dict[str, str]:
        """``headers`` (lower-case names, ``host`` included) with the SigV4 headers added: every
        header given is signed, as botocore signs every header it sends."""
        creds = self.credentials()
        stamp = when.strftime("%Y%m%dT%H%M%SZ")
        date = stamp[:8]
        signed = {**headers, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
        if creds.token:
            signed["x-amz-security-token"] = creds.token
        names = sorted(signed)
        canonical = "\n".join(
            [
                "GET",
                path,
                "",
                *(f"{name}:{' '.join(signed[name].split())}" for name in names),
                "",
                ";".join(names),
                EMPTY_SHA256,
            ]
        )
        scope = f"{date}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(
            self._signing_key(creds.secret_key, date), to_sign.encode(), "sha256"
        ).hexdigest()
        signed["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return signed

    # ---------------------------------------------------------------- requests

    def _connection(self) -> http.client.HTTPConnection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        if self._context is not None:
            return http.client.HTTPSConnection(
                self.connect_host, self.port, timeout=self.connect_timeout, context=self._context
            )
        return http.client.HTTPConnection(self.connect_host, self.port, timeout=self.connect_timeout)

    def _release(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        if response.will_close:
            conn.close()
            return
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def get(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (inclusive) of ``key``; fewer at the object's end, none when
        ``start`` is past it. Raises :class:`RangeError` for an error answer and ``OSError`` (or
        ``http.client.HTTPException``) when the server cannot be reached, after the retries."""
        path = self.path_for(key)
        delay = 0.05
        failures = 0
        while True:
            conn = self._connection()
            reused = conn.sock is not None
            headers = self.sign(path, {"host": self.host, "range": f"bytes={start}-{end}"}, _now())
            try:
                self.requests += 1  # not locked: a count for tests, exact when one thread reads
                conn.request("GET", path, headers=headers)
                if conn.sock is not None:
                    conn.sock.settimeout(self.read_timeout)
                response = conn.getresponse()
                body = response.read()
            except _STALE:
                conn.close()
                if reused:  # closed by the server while it idled in the pool: a fresh one, at once
                    continue
                failures += 1
                if failures >= self.attempts:
                    raise
                continue
            except (OSError, http.client.HTTPException):
                conn.close()
                failures += 1
                if failures >= self.attempts:
                    raise
                time.sleep(delay)
                delay *= 4
                continue
            self._release(conn, response)
            result = _result(response.status, body, start, end)
            if isinstance(result, bytes):
                return result
            failures += 1
            if result.transient and failures < self.attempts:
                time.sleep(delay)
                delay *= 4
                continue
            raise result

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _result(status: int, body: bytes, start: int, end: int) -> bytes | RangeError:
    """The bytes a ranged GET answered, or its error."""
    if status == 206:
        return body
    if status == 200:  # a server that ignored the range: the whole object came
        return body[start : end + 1]
    if status == 416:
        return b""
    found = _CODE.search(body)
    return RangeError(status, found.group(1).decode("ascii", "replace") if found else str(status))


class AsyncRangeReader:
    """The ranged GETs of a :class:`RangeReader` on asyncio connections: for an event loop that
    awaits a frame instead of handing it to a thread (a thread hop, and ``http.client``'s header
    parsing, cost twice the HTTP exchange). Connections belong to the loop that opened them; at
    most ``max_connections`` requests are in flight at once (the others wait their turn), as the
    thread pool bounds the blocking reader."""

    def __init__(self, reader: RangeReader, max_connections: int = 64) -> None:
        self.reader = reader
        self.max_connections = max_connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._turns: asyncio.Semaphore | None = None

    def _for_this_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._turns is None:  # a test's or a restarted server's loop
            self._loop, self._idle = loop, []
            self._turns = asyncio.Semaphore(self.max_connections)
        return self._turns

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        if self._idle:
            return (*self._idle.pop(), True)
        r = self.reader
        opened = asyncio.open_connection(
            r.connect_host, r.port, ssl=r._context, server_hostname=r.connect_host if r._context else None
        )
        stream, writer = await asyncio.wait_for(opened, r.connect_timeout)
        return stream, writer, False

    async def get(self, key: str, start: int, end: int) -> bytes:
        """As :meth:`RangeReader.get`; raises ``OSError``, ``asyncio.TimeoutError`` or
        :class:`RangeError` after the retries."""
        async with self._for_this_loop():
            return await self._get(key, start, end)

    async def _get(self, key: str, start: int, end: int) -> bytes:
        r = self.reader
        path = r.path_for(key)
        delay = 0.05
        failures = 0
        while True:
            stream, writer, reused = await self._connection()
            headers = r.sign(path, {"host": r.host, "range": f"bytes={start}-{end}"}, _now())
            request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            try:
                r.requests += 1
                writer.write(request.encode("latin-1") + b"\r\n")
                status, keep, body = await asyncio.wait_for(_response(stream), r.read_timeout)
            except (OSError, EOFError, ValueError, asyncio.LimitOverrunError):
                writer.close()
                if reused:  # closed by the server while it idled in the pool: a fresh one, at once
                    continue
                failures += 1
                if failures >= r.attempts:
                    raise
                await asyncio.sleep(delay)
                delay *= 4
                continue
            if keep and len(self._idle) < self.max_connections:
                self._idle.append((stream, writer))
            else:
                writer.close()
            result = _result(status, body, start, end)
            if isinstance(result, bytes):
                return result
            failures += 1
            if result.transient and failures < r.attempts:
                await asyncio.sleep(delay)
                delay *= 4
                continue
            raise result


async def _response(stream: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """(status, whether the connection may be reused, body) of one HTTP/1.1 response."""
    head = await stream.readuntil(b"\r\n\r\n")  # IncompleteReadError (an EOFError) if closed
    lines = head[:-4].split(b"\r\n")
    version, status, *_ = lines[0].split(b" ", 2)
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    keep = version == b"HTTP/1.1" and fields.get(b"connection", b"").lower() != b"close"
    if b"content-length" in fields:
        body = await stream.readexactly(int(fields[b"content-length"]))
    elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        pieces = []
        while size := int((await stream.readuntil(b"\r\n")).split(b";", 1)[0], 16):
            pieces.append(await stream.readexactly(size))
            await stream.readexactly(2)
        while await stream.readuntil(b"\r\n") != b"\r\n":  # trailers
            pass
        body = b"".join(pieces)
    else:
        body, keep = await stream.read(), False
    return int(status), keep, body


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def botocore_credentials(session: Any) -> Callable[[], FrozenCredentials] | None:
    """The credentials of a boto3 session as a function, or None when it has none."""
    found = session.get_credentials()
    if found is None:
        return None

    def current() -> FrozenCredentials:
        frozen = found.get_frozen_credentials()
        return FrozenCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    return current
