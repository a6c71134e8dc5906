"""A small HTTP/1.1 client for upstreams: keep-alive connections per host, responses parsed
by ``httptools`` (the parser uvicorn uses), bodies streamed as they arrive.

Why not httpx or aiohttp: the gateway's budget is a few hundred microseconds per request on
one core, and both cost more than that per call here (see BENCHMARKS.md, "Token gateway").
This client does only what the gateway needs: POST/GET with a JSON body to an
OpenAI-compatible server, plain or chunked responses, and closing a connection when a stream
is abandoned (the upstream sees the disconnect and stops generating).

Errors are mapped at the boundary: any socket or protocol failure raises ``UpstreamError``;
a failure that is the gateway's own (out of file descriptors, socket buffers or local ports)
raises its subclass ``GatewayOverloaded``, which says nothing about the upstream.

The connect timeout is judged by the kernel, not by the event loop: when its timer fires, the
socket is asked whether it is connected (a loop busy admitting a burst of requests may run
that timer long after the kernel finished the handshake; such a dial is not a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import resource
import socket
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools


def timer_now() -> float:
    return asyncio.get_running_loop().time()


class UpstreamError(Exception):
    """The upstream could not be reached or broke the protocol (not an HTTP error status)."""


class GatewayOverloaded(UpstreamError):
    """The gateway could not dial because it ran out of a local resource: not the upstream's fault."""


# errno values that describe this process or host, not the peer.
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL})


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (a gateway holds two
    sockets per call in flight; the usual soft default of 1,024 is 500 calls). Returns the
    soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _connected(sock: socket.socket) -> bool:
    """Has the kernel finished this non-blocking connect? Raises the connect's error if it failed."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


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
        return await self._dial()

    async def _addresses(self) -> list[tuple[int, tuple[str, int] | tuple[str, int, int, int]]]:
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            pass
        else:
            fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return [(fam, (self.host, self.port))]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM),
                                           max(self.connect_timeout_s, 5.0))
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot resolve {self.host}: {exc!r}") from exc
        return [(fam, addr) for fam, _t, _p, _c, addr in infos]

    async def _dial(self) -> Connection:
        loop = asyncio.get_running_loop()
        last: Exception | None = None
        for fam, addr in await self._addresses():
            try:
                sock = socket.socket(fam, socket.SOCK_STREAM)
            except OSError as exc:
                if exc.errno in LOCAL_ERRNOS:
                    raise GatewayOverloaded(f"cannot open a socket to {self.host}:{self.port}: {exc}") from exc
                raise UpstreamError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self._connect(loop, sock, addr)
                r, w = await asyncio.open_connection(sock=sock, limit=1 << 20)
                return Connection(r, w)
            except (OSError, TimeoutError) as exc:
                sock.close()
                if isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS:
                    raise GatewayOverloaded(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
                last = exc
            except BaseException:
                sock.close()
                raise
        raise UpstreamError(f"cannot connect to {self.host}:{self.port}: {last!r}")

    async def _connect(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, addr: tuple[Any, ...]) -> None:
        """Connect now (not in a task the loop may run only after a stall) and wait until the
        socket is writable or the timeout; then the kernel says whether it connected."""
        err = sock.connect_ex(addr)
        if err == 0:
            return
        if err not in (errno.EINPROGRESS, errno.EAGAIN):
            raise OSError(err, os.strerror(err))
        fd = sock.fileno()
        writable = loop.create_future()
        loop.add_writer(fd, lambda: None if writable.done() else writable.set_result(None))
        try:
            await asyncio.wait({writable}, timeout=self.connect_timeout_s)
        finally:
            loop.remove_writer(fd)
            writable.cancel()
        if not _connected(sock):  # the kernel agrees: a real timeout
            raise TimeoutError(f"no connection within {self.connect_timeout_s} s")

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
