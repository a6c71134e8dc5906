"""cgroup limits for sandboxed local jobs: CPU, memory and process count per replica.

Each replica gets one leaf cgroup per controller, named ``<request id>-r<replica>`` under
``<mount>/yungu/<executor key>/``. The platform creates the leaf and writes the limits
before the spawn; the supervisor shell joins it (``echo 0 > cgroup.procs``, i.e. "this
process") in the subshell that then execs the sandbox, so the job and the sandbox's own
processes are inside and the supervisor, which writes the exit record, is not (an
out-of-memory kill can never take the record with it).

Both layouts are supported, per controller (a "hybrid" machine mixes them):

- **cgroup v2** (one unified tree): where the v2 root lists the controller in
  ``cgroup.controllers``. ``memory.max`` (+ ``memory.swap.max`` 0, ``memory.oom.group`` 1:
  an out-of-memory kill stops the whole replica), ``cpu.max`` "<quota> <period>",
  ``pids.max``. The controllers are enabled in ``cgroup.subtree_control`` on the way down.
- **cgroup v1** (one tree per controller, as on the machines this was built on):
  ``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes`` where swap accounting is
  on), ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, ``pids.max``.

A controller that is missing or not writable (an unprivileged platform without a
delegated subtree, a read-only cgroupfs in a container) is reported in ``problems``; the
executor logs it at start and ``check()`` (``yungu sites check``) shows it. Jobs then run
without that limit: the sandbox's namespaces and uid still apply.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("yungu.executor.local")

CONTROLLERS = ("cpu", "memory", "pids")
CPU_PERIOD_US = 100_000
PARENT = "yungu"


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller's cgroups for this executor live."""

    controller: str
    base: Path  # <mount>/yungu/<key>
    v2: bool


@dataclass(frozen=True)
class Limits:
    cpus: int  # 0: no CPU limit
    memory_bytes: int  # 0: no memory limit
    pids: int  # 0: no process limit


@dataclass(frozen=True)
class Events:
    """What the kernel counted for a replica's cgroup, read before it is removed."""

    oom_kills: int = 0
    pids_denied: int = 0  # forks refused because pids.max was reached


def parse_mounts(text: str) -> tuple[list[Path], dict[str, Path]]:
    """cgroup2 mount points, and controller -> v1 mount point, from /proc/self/mounts."""
    v2: list[Path] = []
    v1: dict[str, Path] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        where, fstype, options = Path(parts[1].replace("\\040", " ")), parts[2], parts[3].split(",")
        if fstype == "cgroup2":
            v2.append(where)
        elif fstype == "cgroup":
            for ctl in CONTROLLERS:
                if ctl in options:
                    v1.setdefault(ctl, where)
    return v2, v1


class Cgroups:
    """The writable cgroup controllers of this machine, and one leaf per replica."""

    def __init__(self, key: str, *, mounts: str | None = None) -> None:
        self.key = key
        self.hierarchies: dict[str, Hierarchy] = {}
        self.problems: list[str] = []
        if mounts is None:
            try:
                mounts = Path("/proc/self/mounts").read_text()
            except OSError as exc:
                self.problems.append(f"cannot read /proc/self/mounts: {exc}")
                return
        v2_mounts, v1_mounts = parse_mounts(mounts)
        v2_root, v2_controllers = self._v2(v2_mounts)
        for ctl in CONTROLLERS:
            if v2_root is not None and ctl in v2_controllers:
                self.hierarchies[ctl] = Hierarchy(ctl, v2_root / PARENT / key, True)
            elif ctl in v1_mounts:
                self.hierarchies[ctl] = Hierarchy(ctl, v1_mounts[ctl] / PARENT / key, False)
            else:
                self.problems.append(f"{ctl}: no cgroup controller mounted")
        v2_wanted = sorted(c for c, h in self.hierarchies.items() if h.v2)
        if v2_root is not None and v2_wanted:
            problem = _enable_v2(v2_root, [PARENT, key], v2_wanted)
            if problem:
                for ctl in v2_wanted:
                    del self.hierarchies[ctl]
                self.problems.append(f"{', '.join(v2_wanted)} (cgroup v2): {problem}")
        for ctl, h in list(self.hierarchies.items()):
            if h.v2:
                continue
            try:
                h.base.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                del self.hierarchies[ctl]
                self.problems.append(f"{ctl} (cgroup v1): cannot create {h.base}: {exc.strerror}")
                continue
            if not os.access(h.base, os.W_OK):
                del self.hierarchies[ctl]
                self.problems.append(f"{ctl} (cgroup v1): {h.base} is not writable")

    @classmethod
    def of(cls, key: str, hierarchies: list[list[Any]]) -> Cgroups:
        """The same controllers as another instance's ``export()``, without probing the
        machine again (the launcher process uses the platform's)."""
        self = cls.__new__(cls)
        self.key, self.problems = key, []
        self.hierarchies = {str(c): Hierarchy(str(c), Path(base), bool(v2)) for c, base, v2 in hierarchies}
        return self

    def export(self) -> list[list[Any]]:
        return [[h.controller, str(h.base), h.v2] for h in self.hierarchies.values()]

    @staticmethod
    def _v2(mounts: list[Path]) -> tuple[Path | None, set[str]]:
        """The v2 mount that offers our controllers (a hybrid machine's may offer none)."""
        for where in mounts:
            try:
                offered = set((where / "cgroup.controllers").read_text().split())
            except OSError:
                continue
            if offered & set(CONTROLLERS):
                return where, offered
        return (mounts[0] if mounts else None), set()

    def describe(self) -> dict[str, str | None]:
        """controller -> "v1" / "v2" / None (not available), for check()."""
        return {
            ctl: ("v2" if self.hierarchies[ctl].v2 else "v1") if ctl in self.hierarchies else None
            for ctl in CONTROLLERS
        }

    def create(self, leaf: str, limits: Limits) -> list[Path]:
        """Make the replica's cgroups and write its limits; the ``cgroup.procs`` files to join.

        Raises ``OSError`` when a limit cannot be written (the launch must then not run
        with less confinement than it was promised)."""
        procs: list[Path] = []
        done_v2 = False
        made: list[Path] = []
        try:
            for ctl, h in self.hierarchies.items():
                path = h.base / leaf
                if h.v2 and done_v2:
                    _write_limit(ctl, path, limits, v2=True)
                    continue
                if not h.base.is_dir():  # removed behind our back (an operator's cleanup)
                    self._recreate(h)
                with contextlib.suppress(FileExistsError):
                    path.mkdir()
                made.append(path)
                _write_limit(ctl, path, limits, v2=h.v2)
                procs.append(path / "cgroup.procs")
                done_v2 = done_v2 or h.v2
        except OSError:
            for path in made:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
        return procs

    def _recreate(self, h: Hierarchy) -> None:
        if h.v2:
            root = h.base.parent.parent
            problem = _enable_v2(root, [PARENT, self.key], sorted(c for c, x in self.hierarchies.items() if x.v2))
            if problem:
                raise OSError(problem)
        else:
            h.base.mkdir(parents=True, exist_ok=True)

    def events(self, leaf: str) -> Events:
        oom = pids = 0
        for ctl, h in self.hierarchies.items():
            path = h.base / leaf
            if ctl == "memory":
                name = "memory.events" if h.v2 else "memory.oom_control"
                oom = max(oom, _counter(path / name, "oom_kill"))
            elif ctl == "pids":
                pids = max(pids, _counter(path / "pids.events", "max"))
        return Events(oom, pids)

    def remove(self, leaf: str) -> bool:
        """Remove a replica's cgroups (empty once its supervisor has exited). False if busy."""
        ok = True
        for path in {h.base / leaf for h in self.hierarchies.values()}:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                ok = False
                if exc.errno != errno.EBUSY:
                    log.warning("cannot remove cgroup", extra={"path": str(path), "error": str(exc)})
        return ok

    def leaves(self) -> set[str]:
        out: set[str] = set()
        for h in self.hierarchies.values():
            with contextlib.suppress(OSError):
                out.update(p.name for p in h.base.iterdir() if p.is_dir())
        return out

    def close(self) -> None:
        """Remove this executor's (empty) parent cgroups; busy ones stay for the next start."""
        for path in {h.base for h in self.hierarchies.values()}:
            with contextlib.suppress(OSError):
                path.rmdir()


def _enable_v2(root: Path, levels: list[str], controllers: list[str]) -> str:
    """mkdir down to root/levels..., enabling the controllers for each level's children."""
    want = " ".join(f"+{c}" for c in controllers)
    here = root
    for name in ["", *levels]:
        if name:
            here = here / name
            try:
                here.mkdir(exist_ok=True)
            except OSError as exc:
                return f"cannot create {here}: {exc.strerror}"
        try:
            enabled = set((here / "cgroup.subtree_control").read_text().split())
            if not set(controllers) <= enabled:
                (here / "cgroup.subtree_control").write_text(want)
        except OSError as exc:
            return f"cannot enable {want} in {here / 'cgroup.subtree_control'}: {exc.strerror}"
    return ""


def _write_limit(ctl: str, path: Path, limits: Limits, *, v2: bool) -> None:
    def put(name: str, value: object, *, optional: bool = False) -> None:
        target = path / name
        if optional and not target.exists():
            return
        target.write_text(f"{value}\n")

    if ctl == "memory" and limits.memory_bytes > 0:
        if v2:
            put("memory.max", limits.memory_bytes)
            put("memory.swap.max", 0, optional=True)
            put("memory.oom.group", 1, optional=True)
        else:
            put("memory.limit_in_bytes", limits.memory_bytes)
            put("memory.memsw.limit_in_bytes", limits.memory_bytes, optional=True)
    elif ctl == "cpu" and limits.cpus > 0:
        quota = limits.cpus * CPU_PERIOD_US
        if v2:
            put("cpu.max", f"{quota} {CPU_PERIOD_US}")
        else:
            put("cpu.cfs_period_us", CPU_PERIOD_US)
            put("cpu.cfs_quota_us", quota)
    elif ctl == "pids" and limits.pids > 0:
        put("pids.max", limits.pids)


def _counter(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
