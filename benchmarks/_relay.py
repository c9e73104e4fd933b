"""A loopback TCP relay that makes a slow link: a one-way delay each way and a bandwidth cap.

``Relay(target_port, delay_s=0.075, mbit_s=10)`` listens on 127.0.0.1 and forwards every
connection to ``127.0.0.1:target_port``. Each direction of each connection is its own pipe: a
chunk read at time t is written at t + ``delay_s`` (the propagation delay: 150 ms round trip
with 0.075), after it has passed the bandwidth cap, which is shared by all connections in that
direction (one access line, as an overseas lab has: six parallel connections share its
10 Mbit/s, they do not get 10 each). The cap is a serialiser: a chunk of n bytes occupies the
line for n * 8 / (mbit_s * 10^6) s after the previous chunk left it.

It runs its own event loop in a thread (``start()`` / ``stop()``, or ``with Relay(...) as r``),
so a benchmark or a test uses it beside a server in a subprocess and a browser. Nothing is
parsed: TCP in, TCP out, so HTTP keep-alive, pipelining and the browser's six connections per
host behave as over a real link.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from types import TracebackType

#: The most bytes read at once: a chunk is also what the cap serialises in one step.
CHUNK = 16 * 1024


class _Line:
    """One direction's shared bandwidth: when the line is next free (loop time)."""

    def __init__(self, mbit_s: float | None) -> None:
        self.bytes_per_s = None if not mbit_s else mbit_s * 1e6 / 8
        self.free_at = 0.0

    def send(self, now: float, size: int) -> float:
        """When a chunk of ``size`` bytes, ready at ``now``, has left the line."""
        if self.bytes_per_s is None:
            return now
        start = max(now, self.free_at)
        self.free_at = start + size / self.bytes_per_s
        return self.free_at


class Relay:
    def __init__(self, target_port: int, delay_s: float = 0.0, mbit_s: float | None = None) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.mbit_s = mbit_s
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self.connections = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Relay:
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the relay did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():

            async def close() -> None:
                if self._server is not None:
                    self._server.close()
                tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                asyncio.get_running_loop().stop()

            asyncio.run_coroutine_threadsafe(close(), loop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        up, down = _Line(self.mbit_s), _Line(self.mbit_s)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                writer.close()
                return
            _nodelay(writer)
            _nodelay(target_writer)
            with contextlib.suppress(asyncio.CancelledError):  # stopped: asyncio would log it
                await asyncio.gather(
                    self._pipe(reader, target_writer, up),
                    self._pipe(target_reader, writer, down),
                    return_exceptions=True,
                )

        async def serve() -> None:
            self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        loop.run_until_complete(serve())
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: _Line) -> None:
        """Copy ``reader`` to ``writer``, each chunk delivered after the cap and the delay; the
        chunks of a connection stay in order (a queue, drained by one writer task)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(CHUNK)
                now = loop.time()
                left = line.send(now, len(chunk)) if chunk else now
                queue.put_nowait((left + self.delay_s, chunk))
                if not chunk:
                    break
                # the line paces the reader too: nothing is read far ahead of what has been sent
                ahead = left - now
                if ahead > 0.05:
                    await asyncio.sleep(ahead - 0.05)
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def measure(relay: Relay, size: int = 1_000_000) -> tuple[float, float]:
    """(round trip s, download Mbit/s) of the relay, against a one-off local server: a check that
    the link is what it says."""
    payload = b"x" * size

    def serve(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1)
            conn.sendall(b"p")
            conn.recv(1)
            conn.sendall(payload)

    listener = socket.create_server(("127.0.0.1", 0))
    target = Relay(listener.getsockname()[1], relay.delay_s, relay.mbit_s).start()
    thread = threading.Thread(target=serve, args=(listener,), daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", target.port)) as sock:
            start = time.perf_counter()
            sock.sendall(b"?")
            sock.recv(1)
            rtt = time.perf_counter() - start
            sock.sendall(b"!")
            got, start = 0, time.perf_counter()
            while got < size:
                data = sock.recv(1 << 16)
                if not data:
                    break
                got += len(data)
            seconds = time.perf_counter() - start - rtt  # the request's and first byte's trip
        return rtt, got * 8 / 1e6 / max(seconds, 1e-9)
    finally:
        target.stop()
        listener.close()
