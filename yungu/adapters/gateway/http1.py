"""A small HTTP/1.1 client for upstreams: keep-alive connections per host, responses parsed
by ``httptools`` (the parser uvicorn uses), bodies streamed as they arrive.

Why not httpx or aiohttp: the gateway's budget is a few hundred microseconds per request on
one core, and both cost more than that per call here (see BENCHMARKS.md, "Token gateway").
This client does only what the gateway needs: POST/GET with a JSON body to an
OpenAI-compatible server, plain or chunked responses, and closing a connection when a stream
is abandoned (the upstream sees the disconnect and stops generating).

Errors are mapped at the boundary: any socket or protocol failure raises ``UpstreamError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools


def timer_now() -> float:
    return asyncio.get_running_loop().time()


class UpstreamError(Exception):
    """The upstream could not be reached or broke the protocol (not an HTTP error status)."""


@dataclass
class _Parse:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: deque[bytes] = field(default_factory=deque)
    headers_done: bool = False
    done: bool = False
    keep_alive: bool = True
    parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        # Read here: once the whole message is parsed, llhttp has reset for the next one.
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.broken = False

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            self.writer.close()


class Response:
    """A response whose body is read as it arrives (``chunks``) or at once (``read``)."""

    def __init__(self, pool: Pool, conn: Connection, p: _Parse, parser: httptools.HttpResponseParser) -> None:
        self.pool, self.conn, self._p, self._parser = pool, conn, p, parser
        self.status = p.status
        self.headers = p.headers
        self._released = False

    async def chunks(self) -> AsyncIterator[bytes]:
        p = self._p
        try:
            while True:
                while p.chunks:
                    yield p.chunks.popleft()
                if p.done:
                    break
                data = await self.conn.reader.read(65536)
                if not data:
                    raise UpstreamError("upstream closed the connection mid-response")
                try:
                    self._parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    raise UpstreamError(f"bad HTTP from upstream: {exc}") from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.conn.close()
            raise UpstreamError(f"upstream read failed: {exc}") from exc
        self.release()

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    async def hang_up(self, timeout_s: float = 2.0) -> AsyncIterator[bytes]:
        """Tell the upstream we are gone without losing what it already sent: shut our write
        side (the server sees end-of-file, as when a client disconnects, and stops), then read
        the rest of the body until the server closes. Yields the remaining body bytes."""
        self._released = True
        p = self._p
        try:
            if self.conn.writer.can_write_eof():
                self.conn.writer.write_eof()
            deadline = asyncio.get_running_loop().time() + timeout_s
            while True:
                while p.chunks:
                    yield p.chunks.popleft()
                if p.done:
                    break
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                data = await asyncio.wait_for(self.conn.reader.read(65536), left)
                if not data:
                    break
                with contextlib.suppress(httptools.HttpParserError):
                    self._parser.feed_data(data)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self.conn.close()

    def release(self) -> None:
        """Give the connection back (complete response) or close it (abandoned mid-body)."""
        if self._released:
            return
        self._released = True
        if self._p.done and self._p.keep_alive and not self.conn.broken:
            self.pool._give_back(self.conn)
        else:
            self.conn.close()


class Pool:
    """Keep-alive connections to one upstream ``scheme://host:port`` (http only)."""

    def __init__(self, base_url: str, *, max_idle: int = 512, connect_timeout_s: float = 2.0) -> None:
        u = urlsplit(base_url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"upstream URL must be http://host:port/...: {base_url!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self._host_header = f"{self.host}:{self.port}".encode()
        self._idle: deque[Connection] = deque()
        self.max_idle = max_idle
        self.connect_timeout_s = connect_timeout_s

    async def _conn(self) -> Connection:
        while self._idle:
            c = self._idle.pop()
            if not c.broken and not c.reader.at_eof() and not c.writer.transport.is_closing():
                return c
            c.close()
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port, limit=1 << 20),
                                          self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return Connection(r, w)

    def _give_back(self, c: Connection) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append(c)
        else:
            c.close()

    async def request(self, method: str, path: str, body: bytes = b"", *,
                      headers: tuple[tuple[bytes, bytes], ...] = (), timeout_s: float = 600.0) -> Response:
        """Send a request and wait for the response head; the body follows via ``Response``."""
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile: retry once, fresh
            reused = bool(self._idle)
            c = await self._conn()
            head = b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
                method.encode(), (self.prefix + path).encode(), self._host_header, len(body))
            head += b"".join(b"%s: %s\r\n" % kv for kv in headers) + b"\r\n"
            p = _Parse()
            parser = p.parser = httptools.HttpResponseParser(p)
            # A timer, not asyncio.wait_for: wait_for costs a task per call on the hot path.
            timer = asyncio.get_running_loop().call_later(timeout_s, c.close)
            try:
                c.writer.write(head + body)
                while not p.headers_done:
                    data = await c.reader.read(65536)
                    if not data:
                        raise ConnectionResetError("closed before the response")
                    parser.feed_data(data)
            except (OSError, RuntimeError, httptools.HttpParserError) as exc:
                c.close()
                if attempt == 0 and reused and not timer.cancelled() and timer.when() > timer_now():
                    timer.cancel()
                    continue
                raise UpstreamError(f"{method} {path} to {self.host}:{self.port} failed: {exc!r}") from exc
            finally:
                timer.cancel()
            return Response(self, c, p, parser)
        raise AssertionError("unreachable")

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
