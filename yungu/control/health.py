"""What the control loop knows of each executor: reachable or not, and what it cannot do.

The scheduler's snapshot is only as true as this. Two sources:

- **every call's answer**: an ``UNREACHABLE`` error from submit, observe or cancel marks the
  executor down at once (with the engine's message); any other answer marks it up;
- **probes**: while an executor is down, ``check()`` is asked again every ``probe_interval_s``
  (the loop runs probes off its own thread: a dead Slurm controller can take seconds to
  time out), and ``capabilities()`` is refreshed every ``capabilities_ttl_s``.

Pools of a down executor's sites are ``available=False`` in the snapshot (the ``reachable``
filter keeps new placements away) and jobs placed there but not yet dispatched are placed
again. ``Capabilities.unsupported`` (plus ``gangs``/``devices`` when false) become the pool's
``unsupported`` features (the ``supported`` filter). When an executor comes back up,
``on_up(name)`` lets the loop sweep it for launches no live attempt owns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from yungu.domain.clock import Clock
from yungu.domain.world import World
from yungu.ports.executor import Capabilities, ExecError, ExecErrorCode, Executor

log = logging.getLogger("yungu.control.health")


@dataclass
class _State:
    up: bool = True
    since: float = 0.0
    why: str = ""
    last_probe: float = float("-inf")
    unsupported: Mapping[str, str] | None = None
    caps_at: float = float("-inf")


def unsupported_of(caps: Capabilities) -> dict[str, str]:
    out = dict(caps.unsupported)
    if not caps.gangs:
        out.setdefault("gangs", f"executor {caps.name} does not run gangs")
    if not caps.devices:
        out.setdefault("devices", f"executor {caps.name} does not assign devices")
    return out


class ExecutorHealth:
    def __init__(self, executors: Mapping[str, Executor], clock: Clock, *, probe_interval_s: float = 5.0,
                 capabilities_ttl_s: float = 300.0, on_up: Callable[[str], None] | None = None) -> None:
        self.executors = executors
        self.clock = clock
        self.probe_interval_s = probe_interval_s
        self.capabilities_ttl_s = capabilities_ttl_s
        self.on_up = on_up
        self._lock = threading.Lock()
        self._state: dict[str, _State] = {}

    def reset(self) -> None:
        """Forget everything (a new leadership: the executors may be other instances now)."""
        with self._lock:
            self._state.clear()

    def _get(self, name: str) -> _State:
        st = self._state.get(name)
        if st is None:
            st = self._state[name] = _State(since=self.clock.monotonic())
        return st

    # ---- what calls tell us ---------------------------------------------------------------

    def note(self, name: str, result: object) -> None:
        """Record what a call answered: ``UNREACHABLE`` means down, anything else up."""
        if isinstance(result, ExecError) and result.code is ExecErrorCode.UNREACHABLE:
            self.down(name, result.message)
        elif not isinstance(result, ExecError):
            self.up(name)

    def down(self, name: str, why: str) -> None:
        with self._lock:
            st = self._get(name)
            was_up = st.up
            st.up, st.why = False, why
            if was_up:
                st.since = st.last_probe = self.clock.monotonic()
        if was_up:
            log.warning("executor %s unreachable: %s", name, why, extra={"executor": name})

    def up(self, name: str) -> None:
        with self._lock:
            st = self._get(name)
            was_down = not st.up
            st.up, st.why = True, ""
            if was_down:
                st.since = self.clock.monotonic()
        if was_down:
            log.warning("executor %s reachable again", name, extra={"executor": name})
            if self.on_up is not None:
                self.on_up(name)

    # ---- what the loop asks ----------------------------------------------------------------

    def reachable(self, name: str) -> bool:
        with self._lock:
            return self._get(name).up

    def reason(self, name: str) -> str:
        with self._lock:
            return self._get(name).why

    def unsupported(self, name: str) -> Mapping[str, str]:
        with self._lock:
            return self._get(name).unsupported or {}

    def by_pool(self, world: World) -> tuple[dict[str, bool], dict[str, Mapping[str, str]]]:
        """Reachability and unsupported features of every pool (through its site's executor)."""
        executor_of = {s.id: s.executor for s in world.sites}
        available: dict[str, bool] = {}
        unsupported: dict[str, Mapping[str, str]] = {}
        with self._lock:
            for p in world.pools:
                st = self._get(executor_of[p.site_id])
                available[p.id] = st.up
                if st.unsupported:
                    unsupported[p.id] = st.unsupported
        return available, unsupported

    def due(self) -> list[str]:
        """Executors to probe now: down ones every ``probe_interval_s``; capabilities when stale."""
        now = self.clock.monotonic()
        with self._lock:
            return [n for n in self.executors
                    if (not self._get(n).up and now - self._get(n).last_probe >= self.probe_interval_s)
                    or now - self._get(n).caps_at >= self.capabilities_ttl_s]

    def probe(self, names: list[str] | None = None) -> None:
        """Ask ``check()`` (and ``capabilities()`` when stale) of each executor named (default: due)."""
        for name in self.due() if names is None else names:
            ex = self.executors.get(name)
            if ex is None:
                continue
            now = self.clock.monotonic()
            with self._lock:
                st = self._get(name)
                st.last_probe = now
                stale = now - st.caps_at >= self.capabilities_ttl_s
            try:
                result = ex.check()
            except Exception as exc:  # the contract says check() does not raise: a bug
                log.exception("check of executor %s failed", name)
                result = {"reachable": False, "error": f"{type(exc).__name__}: {exc}"}
            if result.get("reachable", False):
                self.up(name)
            else:
                self.down(name, str(result.get("error") or result.get("warnings") or "check() says unreachable"))
            if stale and result.get("reachable", False):
                try:
                    caps = unsupported_of(ex.capabilities())
                except Exception:
                    log.exception("capabilities of executor %s failed", name)
                    continue
                with self._lock:
                    st.unsupported, st.caps_at = caps, now
