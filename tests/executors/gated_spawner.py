"""A launcher that waits: the real launcher process behind a gate the test controls.

``Gate(allow=n)`` lets the first ``n`` spawn requests through to the real launcher
(``local_launcher.default_spawner``) and holds the rest until ``open()``; every other
request (cancel, stop) passes at once, in order. So a test decides exactly when a launch is
accepted-but-not-started, without a sleep or a wall-clock assertion. Importable by the owner
processes that tests start and kill (``python -c`` from the repository root).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from yungu.adapters.executors.local_launcher import OnEvents, Spawner, SpawnerFactory, default_spawner


class Gate:
    def __init__(self, allow: int = 0) -> None:
        self.allow = allow
        self.cv = threading.Condition()
        self.held: list[tuple[Spawner, Mapping[str, Any]]] = []
        self.spawns_seen: list[str] = []  # request ids, in the order the executor sent them
        self.spawners: list[Spawner] = []

    def factory(self, inner: SpawnerFactory = default_spawner) -> SpawnerFactory:
        def make(init: Mapping[str, Any], lock_fd: int, on_events: OnEvents, on_gone: Callable[[], None]) -> Spawner:
            spawner = _Gated(inner(init, lock_fd, on_events, on_gone), self)
            self.spawners.append(spawner.inner)
            return spawner

        return make

    def open(self) -> None:
        with self.cv:
            self.allow = 1 << 30
            held, self.held = self.held, []
            self.cv.notify_all()
        for spawner, request in held:
            spawner.send(request)


class _Gated:
    def __init__(self, inner: Spawner, gate: Gate) -> None:
        self.inner, self.gate = inner, gate

    def send(self, request: Mapping[str, Any]) -> None:
        g = self.gate
        with g.cv:
            if request.get("op") == "spawn":
                g.spawns_seen.append(str(request["rid"]))
                if g.allow <= 0:
                    g.held.append((self.inner, request))
                    g.cv.notify_all()
                    return
                g.allow -= 1
        self.inner.send(request)

    def close(self) -> None:
        self.inner.close()
