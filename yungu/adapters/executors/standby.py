"""What a standby server holds in place of an executor that only the leader may open.

A local executor owns its data directory (``executor.lock``: one instance at a time), and
with several ``yungu server`` processes on one machine sharing the data directory, only
the leader's instance may run, re-adopt and stop processes. A standby still serves the
API, so it keeps a :class:`StandbyLocal` for each local executor: job logs are read
straight from the run directories (``runs/<request id>/replica-<i>.<stream>.log``, the
layout of ``local.py``); everything else answers ``UNREACHABLE`` ("a standby: the leader
runs this executor"). On becoming leader the server swaps in the real executor
(:class:`ExclusiveExecutors`), and swaps it back out when it stands by again.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path

from yungu.ports.executor import (
    Capabilities,
    ExecError,
    ExecErrorCode,
    ExecStatus,
    Executor,
    Launch,
    LogChunk,
)

log = logging.getLogger("yungu.executor.standby")

_STREAM = re.compile(r"^(stdout|stderr)(?::(\d{1,6}))?$")
_RID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$")
STANDBY = "this server is a standby: the leader runs this executor"


class StandbyLocal:
    kind = "local"

    def __init__(self, name: str, data_dir: Path) -> None:
        self.name = name
        self.runs_dir = Path(data_dir) / "runs"

    def _no(self) -> ExecError:
        return ExecError(ExecErrorCode.UNREACHABLE, STANDBY)

    def capabilities(self) -> Capabilities:
        return Capabilities(name=self.name, unsupported={"standby": STANDBY})

    def submit(self, launch: Launch) -> ExecStatus | ExecError:
        return self._no()

    def cancel(self, request_id: str, grace_s: float = 10.0) -> ExecStatus | ExecError:
        return self._no()

    def status(self, request_id: str) -> ExecStatus | ExecError:
        return self._no()

    def observe(self, request_ids: Sequence[str]) -> Mapping[str, ExecStatus | ExecError]:
        return {rid: self._no() for rid in request_ids}

    def list_active(self) -> Sequence[ExecStatus] | ExecError:
        return self._no()

    def logs(self, request_id: str, stream: str = "stdout", offset: int = 0, limit: int = 1 << 20) -> LogChunk | ExecError:
        m = _STREAM.match(stream)
        if not m or offset < 0 or limit <= 0:
            return ExecError(ExecErrorCode.REJECTED, f"bad stream {stream!r}, offset {offset} or limit {limit}")
        if not _RID.match(request_id) or not (self.runs_dir / request_id).is_dir():
            return ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {request_id}")
        path = self.runs_dir / request_id / f"replica-{int(m.group(2) or 0)}.{m.group(1)}.log"
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(offset)
                data = fh.read(limit)
        except FileNotFoundError:
            data, size = b"", 0
        end = offset + len(data)
        return LogChunk(data, end, end >= size)  # the API also requires the job to be finished

    def check(self) -> Mapping[str, object]:
        # Not reachable *from here*: the leader's control loop must not take this placeholder
        # (left in place when the real executor could not be opened yet) for a working executor.
        return {"executor": self.name, "kind": self.kind, "reachable": False, "role": "standby",
                "error": STANDBY}

    def close(self) -> None:
        return None


class ExclusiveExecutors(MutableMapping[str, Executor]):
    """The executors by name, where some may be opened only by the leader.

    ``shared`` ones (Slurm, Ray: any number of clients) are built once and always present.
    ``exclusive`` ones are factories: ``open()`` builds them (on becoming leader; an open that
    fails, e.g. because a paused old leader still holds the lock, leaves the placeholder and
    is retried by the next ``open()``), ``close()`` closes them and puts the placeholders back.
    The control loop and the API hold this one mapping, so they always see the current one.
    """

    def __init__(self, shared: Mapping[str, Executor], exclusive: Mapping[str, Callable[[], Executor]],
                 placeholders: Mapping[str, Executor]) -> None:
        self._shared = dict(shared)
        self._factories = dict(exclusive)
        self._placeholders = dict(placeholders)
        self._current: dict[str, Executor] = {**self._shared, **self._placeholders}
        self._open: set[str] = set()

    def open(self) -> list[str]:
        """Open every exclusive executor not yet open; returns those still closed."""
        failed = []
        for name, factory in self._factories.items():
            if name in self._open:
                continue
            try:
                self._current[name] = factory()
                self._open.add(name)
            except Exception as exc:
                log.warning("executor %s not opened yet: %s", name, exc)
                failed.append(name)
        return failed

    def close(self) -> None:
        for name in list(self._open):
            ex = self._current[name]
            self._current[name] = self._placeholders[name]
            self._open.discard(name)
            ex.close()

    def close_all(self) -> None:
        self.close()
        for ex in self._shared.values():
            ex.close()

    @property
    def all_open(self) -> bool:
        return self._open == set(self._factories)

    def __getitem__(self, name: str) -> Executor:
        return self._current[name]

    def __setitem__(self, name: str, ex: Executor) -> None:
        self._current[name] = ex

    def __delitem__(self, name: str) -> None:
        del self._current[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current)

    def __len__(self) -> int:
        return len(self._current)
