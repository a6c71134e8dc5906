"""A test network on one machine: each platform in its own network namespace, joined to the test's
namespace by a veth pair, and one delaying TCP proxy per directed link (this kernel has no
``netem``, so latency is injected in user space). A partition drops a pair's traffic at its
proxies (connections are cut, new ones black-holed until healed); ``isolate`` takes a
platform's link down entirely.

Names carry a ``yf-`` prefix and a random suffix; ``Lab.close`` removes everything (call it in
a ``finally``). Namespaces need root: ``Lab.available()`` says why not, for a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass, field


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=20)


class Pipe:
    """One direction of one link: listen here, forward to ``upstream``, delay each chunk ``delay_s``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, listen: tuple[str, int], upstream: tuple[str, int],
                 delay_s: float) -> None:
        self.loop, self.listen, self.upstream, self.delay_s = loop, listen, upstream, delay_s
        self.down = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._healed = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, *self.listen, reuse_address=True)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._writers.add(w)
        try:
            if self.down:  # black hole: swallow what comes, answer nothing, until healed
                self._healed.clear()
                while self.down:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(r.read(65536), 0.2)
                return
            try:
                ur, uw = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            self._writers.add(uw)
            await asyncio.gather(self._pump(r, uw), self._pump(ur, w), return_exceptions=True)
        finally:
            for x in (w,):
                x.close()
            self._writers.discard(w)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        q: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                while data := await src.read(65536):
                    q.put_nowait((self.loop.time() + self.delay_s, data))
            finally:
                q.put_nowait(None)

        async def write() -> None:
            while (item := await q.get()) is not None:
                due, data = item
                if due > self.loop.time():
                    await asyncio.sleep(due - self.loop.time())
                if self.down:
                    break
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(read(), write(), return_exceptions=True)

    def cut(self) -> None:
        self.down = True
        for w in list(self._writers):
            transport = w.transport
            if transport is not None:
                transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        self.down = False
        self._healed.set()


@dataclass
class Lab:
    names: list[str]  # platform names (short): e.g. ["bj", "hr", "gz"]
    rtt_ms: dict[frozenset[str], float] = field(default_factory=dict)
    port: int = 8600
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    net: int = field(default_factory=lambda: 200 + secrets.randbelow(50))

    def __post_init__(self) -> None:
        self.ns = {n: f"yf-{self.tag}-{n}" for n in self.names}
        self.veth = {n: (f"yf{self.tag}{i}a", f"yf{self.tag}{i}b") for i, n in enumerate(self.names)}
        self.index = {n: i + 1 for i, n in enumerate(self.names)}
        self.pipes: dict[tuple[str, str], Pipe] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="yf-proxies", daemon=True)

    @staticmethod
    def available() -> str:
        if os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "iproute2 ('ip') is not installed"
        probe = f"yf-probe-{secrets.token_hex(3)}"
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if r.returncode != 0:
            return f"cannot create a network namespace: {r.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return ""

    def host_ip(self, n: str) -> str:  # the test's side of n's link (proxies listen here)
        return f"10.{self.net}.{self.index[n]}.1"

    def ip(self, n: str) -> str:  # the platform's address in its namespace
        return f"10.{self.net}.{self.index[n]}.2"

    def proxy_port(self, src: str, dst: str) -> int:
        return 19000 + 10 * self.index[src] + self.index[dst]

    def url(self, src: str, dst: str) -> str:
        """How ``src`` reaches ``dst``: through the delaying proxy of that directed link."""
        return f"http://{self.host_ip(src)}:{self.proxy_port(src, dst)}"

    def up(self) -> None:
        try:
            for n in self.names:
                ns, (a, b) = self.ns[n], self.veth[n]
                _ip("netns", "add", ns)
                _ip("link", "set", "lo", "up", ns=ns)
                _ip("link", "add", a, "type", "veth", "peer", "name", b)
                _ip("link", "set", b, "netns", ns)
                _ip("addr", "add", f"{self.host_ip(n)}/30", "dev", a)
                _ip("link", "set", a, "up")
                _ip("addr", "add", f"{self.ip(n)}/30", "dev", b, ns=ns)
                _ip("link", "set", b, "up", ns=ns)
            self._thread.start()
            for src in self.names:
                for dst in self.names:
                    if src == dst:
                        continue
                    rtt = self.rtt_ms.get(frozenset((src, dst)), 0.0)
                    pipe = Pipe(self.loop, (self.host_ip(src), self.proxy_port(src, dst)), (self.ip(dst), self.port),
                                rtt / 2000.0)
                    asyncio.run_coroutine_threadsafe(pipe.start(), self.loop).result(10)
                    self.pipes[(src, dst)] = pipe
        except Exception:
            self.close()
            raise

    def partition(self, a: str, b: str) -> None:
        for key in ((a, b), (b, a)):
            self.loop.call_soon_threadsafe(self.pipes[key].cut)

    def heal(self, a: str, b: str) -> None:
        for key in ((a, b), (b, a)):
            self.loop.call_soon_threadsafe(self.pipes[key].heal)

    def isolate(self, n: str, down: bool = True) -> None:
        """Take ``n``'s link down (or up again): nothing reaches it, not even the test."""
        _ip("link", "set", self.veth[n][0], "down" if down else "up")

    def close(self) -> None:
        for pipe in self.pipes.values():
            if pipe.server is not None:
                self.loop.call_soon_threadsafe(pipe.server.close)
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        for n in self.names:
            _ip("link", "del", self.veth[n][0], check=False)
            subprocess.run(["ip", "netns", "del", self.ns[n]], capture_output=True)
