"""The job sandbox of the local executor: every tenant's job runs as that tenant's own uid,
in a private view of the machine, under cgroup limits, watched by a supervisor it cannot
touch.

How one replica runs (``sandbox = true``, the default)::

    platform (root) ── launcher process (root; local_launcher.py: run dir, cgroups, spawn)
     └─ supervisor: /bin/sh, root, own session          control dir (root, 0700):
         │  opens the logs, writes replica-<i>.start       <data>/executors/<name>/runs/<rid>/
         │  and replica-<i>.exit (the records the          launch.json, replica-<i>.{start,exit,
         │  platform reads: outcome, start, end)            pid,args}, the logs, verdict.json
         └─ (subshell joins the replica's cgroups, then exec)
             unshare --setgid T --setuid T: drops the supplementary groups, then to uid T
             (root's capabilities go with uid 0; no exec of anything but bwrap follows)
              └─ bwrap --unshare-user --uid T --unshare-pid --unshare-ipc ... (host uid T)
                  └─ pid 1 of the job's PID namespace (bwrap's init; host uid T)
                      └─ /bin/sh -c <command>               cwd /job = <runs_root>/<key>/<rid>
                                                            (owned by T, 0700; no capabilities,
                                                            empty bounding set, no_new_privs)

- **uid**: tenant -> uid from :class:`TenantUids` (``uid_base`` + n, in order of first use,
  persisted in ``<runs_root>/tenant-uids.json``); never root, never the platform's uid.
- **file system**: bubblewrap mounts a fresh root with ``/usr`` and ``/etc`` read-only
  (``/bin``, ``/lib``... as on the host), a fresh ``/proc`` (the job's own PID namespace),
  a minimal ``/dev``, a private ``/tmp`` and the run directory at ``/job``. Nothing else
  exists inside: not the data dir (database, keys), not other runs, not the control dir.
  Operators may add bind mounts (``binds``); tenants cannot.
- **processes**: a PID namespace per replica. Other tenants' processes (and the platform,
  and the supervisor) are not visible, so they cannot be signalled or traced. When the
  command exits, its namespace ends and every process left in it is killed by the kernel.
- **environment**: ``--clearenv``, then the job's own env and the ``YUNGU_*`` variables
  (plus ``PATH``, ``HOME=/job``, ``TMPDIR=/tmp``, ``LANG``), passed to bwrap through a file
  descriptor (``--args``), never argv. No process that runs as root sees the job's
  environment (it could hold ``LD_PRELOAD``).
- **stopping**: SIGTERM goes to the job's process group (the namespace's session), SIGKILL
  to the namespace's init, which takes every process of the replica with it.

Why ``unshare --setuid`` and not ``setpriv``: both are util-linux; ``setpriv --reuid`` looks
the uid up by name first (NSS: ``/etc/passwd``, then ``libnss_systemd`` is loaded and asked),
which cost about 0.7 ms of CPU per launch here; ``unshare`` takes numbers. bubblewrap then
gives the job an empty bounding set and ``no_new_privs`` itself (the attack suite checks
both); only bwrap's own monitor process, which runs no tenant code and sits outside the job's
PID namespace, keeps a full bounding set (with no capabilities in it).

When the platform is not root, the same chain runs without ``unshare``: bubblewrap's user
namespace maps the tenant uid onto the platform's own uid (the tenant sees uid T; the
host sees the platform's uid), the namespaces are the isolation, and cgroup limits apply
only where the platform's cgroup subtree is delegated. If bubblewrap or user namespaces
are missing, the executor refuses every launch with a bilingual message (``refusal``)
instead of running tenants unconfined; ``sandbox = false`` is the explicit opt-out for a
trusted single-tenant machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yungu.adapters.executors.sandbox_cgroups import Cgroups, Events, Limits
from yungu.domain.errors import InvalidInput

log = logging.getLogger("yungu.executor.local")

DEFAULT_ROOT_PRIVILEGED = Path("/var/lib/yungu-runs")
RUNS_ROOT_ENV = "YUNGU_RUNS_ROOT"
JOB_DIR = "/job"
CHECKPOINT_DIR = "/checkpoint"  # where a job sees its YUNGU_CHECKPOINT_DIR inside the sandbox
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The supervisor's own environment: only what it needs to run absolute paths. Never the
# job's (root must not run with a tenant's LD_PRELOAD) and never the platform's.
SUPERVISOR_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
JOB_BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": JOB_DIR,
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
}
_SYSTEM_DIRS = ("/usr", "/etc")
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_RESERVED_DST = ("/", JOB_DIR, "/proc", "/dev", "/tmp", "/usr", "/etc")
_BIND_MODES = {"ro": "--ro-bind", "rw": "--bind", "dev": "--dev-bind"}
_TENANT = re.compile(r"^[^\x00]{1,200}$")

# The supervisor. $1: the replica's path prefix in the control dir; $2: the cgroup.procs
# files to join (space-separated, may be empty); the rest: the sandbox argv. It runs with
# SUPERVISOR_ENV only. The subshell joins the cgroups and execs the sandbox, so the
# supervisor itself stays outside them; fd 3 carries bwrap's --args (the job's env).
# The start record is the mtime of replica-<i>.start, the end record that of
# replica-<i>.exit (code and newline in one write(2), as for the plain shim).
SANDBOX_SHIM = (
    'p=$1; g=$2; shift 2; umask 022; exec </dev/null >>"$p.stdout.log" 2>>"$p.stderr.log"; '
    ': >"$p.start"; '
    '(set -f; for f in $g; do echo 0 >"$f" || { echo "yungu: cannot join cgroup $f" >&2; exit 125; }; done; '
    'exec "$@") 3<"$p.args"; '
    "rc=$?; printf '%s\\n' \"$rc\" >\"$p.exit\"; exit \"$rc\""
)


class SandboxError(Exception):
    """A launch cannot be confined as promised (so it must not run)."""


@dataclass(frozen=True)
class Bind:
    """An operator's extra bind mount (``binds = [{src=..., dst=..., mode="ro"}]``)."""

    src: str
    dst: str
    mode: str = "ro"

    @classmethod
    def parse(cls, raw: object) -> Bind:
        if not isinstance(raw, Mapping):
            raise InvalidInput(f"local executor: each bind must be a table {{src, dst, mode}}, got {raw!r}")
        extra = sorted(set(raw) - {"src", "dst", "mode"})
        if extra:
            raise InvalidInput(f"local executor: bind has unknown key(s) {extra}; known: src, dst, mode")
        src, dst, mode = raw.get("src"), raw.get("dst", raw.get("src")), raw.get("mode", "ro")
        for what, value in (("src", src), ("dst", dst)):
            if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
                raise InvalidInput(f"local executor: bind {what} must be an absolute path, got {value!r}")
        assert isinstance(src, str) and isinstance(dst, str)
        if mode not in _BIND_MODES:
            raise InvalidInput(f"local executor: bind mode must be ro, rw or dev, got {mode!r}")
        norm = posixpath.normpath(dst)
        inside = [r for r in (JOB_DIR, "/proc") if norm.startswith(r + "/")]
        if norm in _RESERVED_DST or inside or (norm.startswith("/dev/") and mode != "dev"):
            raise InvalidInput(
                f"local executor: bind dst {dst!r} would hide a path the sandbox provides "
                f"({', '.join(_RESERVED_DST)}; /dev/... only with mode = \"dev\")"
            )
        return cls(posixpath.normpath(src), norm, str(mode))


SANDBOX_KEYS = ("runs_root", "uid_base", "uid_count", "binds", "network", "pids_per_replica")


def parse_sandbox_setting(key: str, value: Any) -> Any:
    """One sandbox setting of ``[executor.<name>]``, validated (``LocalSettings.parse``)."""
    if key == "runs_root":
        if not isinstance(value, str) or not value.startswith("/"):
            raise InvalidInput(f"local executor: runs_root must be an absolute path, got {value!r}")
        return value
    if key == "network":
        if value not in ("host", "none"):
            raise InvalidInput(f"local executor: network must be \"host\" or \"none\", got {value!r}")
        return value
    if key == "binds":
        if not isinstance(value, list | tuple):
            raise InvalidInput(f"local executor: binds must be a list of {{src, dst, mode}} tables, got {value!r}")
        return tuple(Bind.parse(b) for b in value)
    lo, hi = {"uid_base": (1001, 2**31), "uid_count": (1, 2**30), "pids_per_replica": (16, 4_194_304)}[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"local executor: {key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


class TenantUids:
    """Tenant id -> host uid: ``base`` + n in order of first use, persisted and stable.

    One file per runs root (``tenant-uids.json``, root 0600), shared by every executor
    that uses that root, so two tenants never share a uid on this machine; updates are
    serialised with ``flock`` on ``tenant-uids.lock`` and written tmp + fsync + rename.
    """

    def __init__(self, path: Path, base: int, count: int) -> None:
        self.path, self.base, self.count = path, base, count
        self._lockpath = path.with_name(path.stem + ".lock")
        self._known: dict[str, int] = {}
        self._mutex = threading.Lock()

    def uid(self, tenant_id: str) -> int:
        if not _TENANT.match(tenant_id):
            raise SandboxError(f"tenant id {tenant_id!r} cannot be mapped to a uid")
        with self._mutex:
            uid = self._known.get(tenant_id)
            if uid is not None:
                return uid
            fd = os.open(self._lockpath, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                table = self._read()
                uid = table.get(tenant_id)
                if uid is not None and not self.base <= uid < self.base + self.count:
                    raise SandboxError(
                        f"{self.path} maps tenant {tenant_id} to uid {uid}, outside this executor's range "
                        f"{self.base}..{self.base + self.count - 1} (executors sharing a runs root share uid_base)"
                    )
                if uid is None:
                    uid = self._allocate(set(table.values()))
                    table[tenant_id] = uid
                    self._write(table)
                    log.info("tenant %s runs local jobs as uid %d", tenant_id, uid,
                             extra={"tenant_id": tenant_id, "uid": uid})
                self._known = table
                return uid
            finally:
                os.close(fd)

    def table(self) -> dict[str, int]:
        with self._mutex:
            return dict(self._read())

    def _allocate(self, used: set[int]) -> int:
        mine = [u for u in used if self.base <= u < self.base + self.count]
        uid = max(mine, default=self.base - 1) + 1
        while uid in used:
            uid += 1
        if uid >= self.base + self.count:
            raise SandboxError(
                f"the tenant uid range {self.base}..{self.base + self.count - 1} is exhausted "
                f"({len(mine)} tenants); raise uid_count"
            )
        return uid

    def _read(self) -> dict[str, int]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise SandboxError(f"cannot read the tenant uid map {self.path}: {exc}") from exc
        tenants = raw.get("tenants", {}) if isinstance(raw, dict) else {}
        return {str(k): int(v) for k, v in tenants.items()}

    def _write(self, table: Mapping[str, int]) -> None:
        body = json.dumps({"version": 1, "tenants": dict(table)}, indent=1, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=".tenant-uids.", dir=self.path.parent)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def default_runs_root(privileged: bool) -> Path:
    configured = os.environ.get(RUNS_ROOT_ENV)
    if configured:
        return Path(configured)
    if privileged:
        return DEFAULT_ROOT_PRIVILEGED
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "yungu-runs"


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def refusal_message(reason: str) -> str:
    return (
        f"本地执行器拒绝运行租户作业：作业沙箱不可用（{reason}）。请安装 bubblewrap（apt-get install "
        "bubblewrap）并允许用户命名空间；仅在可信的单租户环境中可设置 sandbox = false。 / "
        f"The local executor refuses tenant jobs: the job sandbox is unavailable ({reason}). Install "
        "bubblewrap (apt-get install bubblewrap) and allow user namespaces; only a trusted single-tenant "
        "machine may set sandbox = false."
    )


class Sandbox:
    """Builds and probes the confinement of local jobs; one per local executor."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        *,
        runs_root: Path | None,
        uid_base: int,
        uid_count: int,
        binds: Sequence[Bind],
        network: str,
        pids_per_replica: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self.privileged = os.geteuid() == 0
        self.data_dir = data_dir.resolve()
        self.runs_root = (runs_root or default_runs_root(self.privileged)).absolute()
        self.key = f"{name}-{hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:10]}"
        self.root = self.runs_root / self.key
        self.uid_base, self.uid_count = uid_base, uid_count
        self.binds, self.network, self.pids_per_replica = tuple(binds), network, pids_per_replica
        self.bwrap = shutil.which("bwrap") or ""
        self.unshare = shutil.which("unshare") or ""
        self.bwrap_version = ""
        self.warnings: list[str] = []
        self.refusal = ""
        self._mutex = threading.Lock()
        self._unremoved: set[str] = set()
        self._check_paths()
        self.uids = TenantUids(self.runs_root / "tenant-uids.json", uid_base, uid_count)
        self.cgroups = Cgroups(self.key)
        for problem in self.cgroups.problems:
            self.warnings.append(
                f"cgroup limit unavailable / 无法设置 cgroup 限制: {problem}; jobs run without it"
            )
        self._system = self._system_args()
        self.refusal = self._probe()
        if self.refusal:
            log.error("%s", self.refusal, extra={"executor": name})
        else:
            cg = " ".join(f"{c}={v or 'none'}" for c, v in self.cgroups.describe().items())
            log.info("local executor %s: job sandbox on (%s, bubblewrap %s), run dirs in %s, cgroups %s",
                     name, "unshare --setuid + user namespace" if self.privileged else "user namespace, unprivileged",
                     self.bwrap_version, self.root, cg, extra={"executor": name})
        for w in self.warnings:
            log.warning("local executor %s: %s", name, w, extra={"executor": name})

    # ---- start-up ---------------------------------------------------------------------

    def _check_paths(self) -> None:
        platform_dir = self.data_dir.parent.parent if self.data_dir.parent.name == "executors" else self.data_dir
        for guarded in {self.data_dir, platform_dir}:
            if _inside(self.runs_root, guarded) or _inside(guarded, self.runs_root):
                raise InvalidInput(
                    f"local executor: runs_root {self.runs_root} must lie outside the platform's data dir "
                    f"{guarded} (and not contain it): jobs must never be able to reach it"
                )
        for b in self.binds:
            src = Path(b.src)
            if not src.exists():
                raise InvalidInput(f"local executor: bind src {b.src} does not exist")
            for guarded in {self.data_dir, platform_dir, self.runs_root}:
                if _inside(src.resolve(), guarded) or _inside(guarded, src.resolve()):
                    raise InvalidInput(
                        f"local executor: bind src {b.src} overlaps {guarded}; binding it would show jobs "
                        "the platform's files or other tenants' runs"
                    )
        problem = self._make_root()
        if problem:
            self.refusal = refusal_message(problem)
        if self.uid_base - 1 <= os.getuid() < self.uid_base + self.uid_count:
            raise InvalidInput(f"local executor: the tenant uid range from {self.uid_base} contains the platform's own uid")
        overlap = _subid_overlap(self.uid_base - 1, self.uid_base + self.uid_count)
        if overlap:
            self.warnings.append(
                f"tenant uid range {self.uid_base}..{self.uid_base + self.uid_count - 1} overlaps {overlap}; "
                "choose uid_base outside it / 租户 uid 区间与系统已分配的 uid 重叠"
            )

    def _make_root(self) -> str:
        """Create the runs root and this executor's dir in it: traversable, not listable
        (bwrap, running as the tenant, must reach its own run dir; nobody may list the
        others), owned by the platform and writable by nobody else (a planted symlink or
        uid map would hand tenants' files, or root, to someone else). An existing runs root
        is checked, never chmod-ed."""
        try:
            if not self.runs_root.exists():
                self.runs_root.mkdir(parents=True, mode=0o711)
                self.runs_root.chmod(0o711)
            self.root.mkdir(mode=0o711, exist_ok=True)
            for d in (self.runs_root, self.root):
                st = os.lstat(d)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                    return f"{d} must be a directory owned by uid {os.geteuid()}"
                if st.st_mode & 0o022 or not st.st_mode & 0o001:
                    if d == self.root:
                        d.chmod(0o711)
                    else:
                        return f"runs_root {d} must be writable only by its owner and traversable (chmod 0711)"
        except OSError as exc:
            return f"runs_root {self.root} is not usable: {exc.strerror}"
        return ""

    def _system_args(self) -> list[str]:
        args: list[str] = []
        for d in _SYSTEM_DIRS:
            args += ["--ro-bind", d, d]
        for d in _SYSTEM_LINKS:
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
        return args

    def _probe(self) -> str:
        """Run the real chain once with /bin/true as ``uid_base - 1``: a refusal reason or ""."""
        if self.refusal:
            return self.refusal
        if not self.bwrap:
            return refusal_message("bwrap not found on PATH")
        if self.privileged and not self.unshare:
            return refusal_message("unshare (util-linux) not found on PATH")
        try:
            out = subprocess.run([self.bwrap, "--version"], capture_output=True, text=True, timeout=10)
            self.bwrap_version = out.stdout.strip().removeprefix("bubblewrap ").strip()
        except (OSError, subprocess.SubprocessError) as exc:
            return refusal_message(f"bwrap --version failed: {exc}")
        if not self._disable_userns():
            self.warnings.append(
                f"bubblewrap {self.bwrap_version} lacks --disable-userns (0.8+): jobs may create user namespaces"
            )
        uid = self.uid_base - 1
        probe, ctl = self.root / ".probe", self.root / ".probe-ctl"
        for d in (probe, ctl):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(d)
        try:
            ctl.mkdir(mode=0o700)
            probe.mkdir(mode=0o700)
            if self.privileged:
                os.chown(probe, uid, uid)
            (ctl / "p.args").write_bytes(self.env_args(JOB_BASE_ENV))
            cmd = f'test "$(id -u)" = {uid} && : >{JOB_DIR}/ok'
            r = subprocess.run(
                ["/bin/sh", "-c", SANDBOX_SHIM, "yungu-probe", str(ctl / "p"), "", *self.argv(uid, probe, cmd)],
                env=SUPERVISOR_ENV, cwd="/", capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
            )
            if r.returncode != 0 or not (probe / "ok").exists():
                err = (ctl / "p.stderr.log").read_text(errors="replace").strip().splitlines()
                return refusal_message(f"the sandbox probe failed (exit {r.returncode}): {err[-1] if err else ''}")
        except (OSError, subprocess.SubprocessError) as exc:
            return refusal_message(f"the sandbox probe could not run: {exc}")
        finally:
            for d in (probe, ctl):
                with contextlib.suppress(OSError):
                    shutil.rmtree(d)
        return ""

    def _disable_userns(self) -> bool:
        try:
            return tuple(int(x) for x in self.bwrap_version.split(".")[:2]) >= (0, 8)
        except ValueError:
            return False

    # ---- per launch -------------------------------------------------------------------

    def plan(self, request_id: str, tenant_id: str) -> tuple[int, Path]:
        """The tenant's uid and the launch's run directory (made by ``make_run_dir``)."""
        return self.uids.uid(tenant_id), self.root / request_id

    def prepare(self, request_id: str, tenant_id: str) -> tuple[int, Path]:
        """The tenant's uid and a fresh run directory owned by it (mode 0700)."""
        uid, work = self.plan(request_id, tenant_id)
        make_run_dir(work, uid, privileged=self.privileged)
        return uid, work

    def checkpoint_dir(self, job_id: str, uid: int) -> Path:
        """The job's checkpoint directory on the host, owned by its tenant's uid (0700): one per
        *job* (``<runs root>/<key>/.checkpoints/<job id>``), so an attempt after a preemption
        finds what the last one saved. Bound at ``/checkpoint`` in the sandbox."""
        if not _JOB_ID.match(job_id):
            raise SandboxError(f"job id {job_id!r} cannot name a checkpoint directory")
        parent = self.root / ".checkpoints"
        path = parent / job_id
        try:
            parent.mkdir(mode=0o711, exist_ok=True)
            os.chmod(parent, 0o711)  # mkdir's mode is masked by the platform's umask 077: the
            # tenant's uid (bwrap runs as it) must traverse the parent to reach its own directory
            path.mkdir(mode=0o700, exist_ok=True)
            st = path.lstat()
            if path.is_symlink() or not path.is_dir() or (self.privileged and st.st_uid not in (uid, 0)):
                raise SandboxError(f"checkpoint directory {path} exists and is not this job's")
            if self.privileged:
                os.chown(path, uid, uid)
            os.chmod(path, 0o700)
        except OSError as exc:
            raise SandboxError(f"cannot prepare checkpoint directory {path}: {exc.strerror}") from exc
        return path

    @staticmethod
    def env_items(env: Mapping[str, str]) -> list[str]:
        """bwrap --args items: clear the environment, then set exactly ``env``."""
        items = ["--clearenv"]
        for k, v in env.items():
            items += ["--setenv", k, v]
        return items

    def env_args(self, env: Mapping[str, str]) -> bytes:
        """bwrap --args content (NUL-separated ``env_items``)."""
        return b"".join(x.encode() + b"\0" for x in self.env_items(env))

    def argv(self, uid: int, work: Path, command: str, checkpoint: Path | None = None) -> list[str]:
        pre: list[str] = []
        if self.privileged:
            pre = [self.unshare, f"--setgid={uid}", f"--setuid={uid}", "--"]
        ns = ["--unshare-user", "--uid", str(uid), "--gid", str(uid)]
        if self._disable_userns():
            ns.append("--disable-userns")
        ns += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if self.network == "none":
            ns.append("--unshare-net")
        fs = [*self._system, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", str(work), JOB_DIR]
        if checkpoint is not None:
            fs += ["--bind", str(checkpoint), CHECKPOINT_DIR]
        for b in self.binds:
            fs += [_BIND_MODES[b.mode], b.src, b.dst]
        tail = ["--chdir", JOB_DIR, "--die-with-parent", "--new-session", "--args", "3", "--", "/bin/sh", "-c", command]
        return [*pre, self.bwrap, *ns, *fs, *tail]

    def cgroup(self, leaf: str, cpus: int, memory_gb: int) -> str:
        """Create the replica's cgroups; the supervisor's ``$2`` (files to join)."""
        if not self.cgroups.hierarchies:
            return ""
        try:
            procs = self.cgroups.create(leaf, Limits(max(0, cpus), max(0, memory_gb) * 2**30, self.pids_per_replica))
        except OSError as exc:
            raise SandboxError(f"cannot set the cgroup limits of {leaf}: {exc}") from exc
        return " ".join(str(p) for p in procs)

    def cgroup_spec(self, leaf: str, cpus: int, memory_gb: int) -> dict[str, Any] | None:
        """What the launcher needs to create the replica's cgroups (``cgroup`` does it here)."""
        if not self.cgroups.hierarchies:
            return None
        return {"leaf": leaf, "cpus": max(0, cpus), "memory": max(0, memory_gb) * 2**30,
                "pids": self.pids_per_replica}

    def finished(self, leaf: str, memory_gb: int) -> str:
        """Remove a finished replica's cgroups; a note on what the kernel stopped, if anything."""
        ev: Events = self.cgroups.events(leaf) if self.cgroups.hierarchies else Events()
        if self.cgroups.hierarchies and not self.cgroups.remove(leaf):
            self.retry_removal(leaf)
        return self.note(ev, memory_gb)

    def retry_removal(self, leaf: str) -> None:
        """A cgroup that was still busy (v1 may keep an emptied one a moment): ``collect`` retries."""
        with self._mutex:
            self._unremoved.add(leaf)

    def note(self, ev: Events, memory_gb: int) -> str:
        """What the kernel stopped, from a replica's cgroup counters ("" if nothing)."""
        notes = []
        if ev.oom_kills:
            notes.append(f"memory limit of {memory_gb} GiB per replica exceeded: killed by the kernel (OOM)")
        if ev.pids_denied:
            notes.append(f"process limit of {self.pids_per_replica} per replica reached")
        return "; ".join(notes)

    def collect(self) -> None:
        """Retry removing finished replicas' cgroups that were still busy (the monitor calls it)."""
        with self._mutex:
            todo, self._unremoved = self._unremoved, set()
        busy = {leaf for leaf in todo if not self.cgroups.remove(leaf)}
        if busy:
            with self._mutex:
                self._unremoved |= busy

    def close(self, wait_s: float = 1.0) -> None:
        """Remove what cgroups can go (a just-emptied v1 cgroup may stay busy a few ms)."""
        deadline = self._monotonic() + wait_s
        self.collect()
        while self._unremoved and self._monotonic() < deadline:
            time.sleep(0.01)
            self.collect()
        self.cgroups.close()

    # ---- signals ----------------------------------------------------------------------

    @staticmethod
    def init_pid(supervisor: int) -> int | None:
        """Host pid of the replica's namespace init: the supervisor's grandchild (via bwrap)."""
        bwrap = _only_child(supervisor)
        return _only_child(bwrap) if bwrap else None

    def signal(self, supervisor: int, sig: int) -> None:
        """SIGTERM: the job's process group (its session inside the namespace); SIGKILL: the
        namespace's init, whose death kills every process of the replica. Before the sandbox
        exists (the first milliseconds) the supervisor's group: bwrap dies with its parent."""
        init = self.init_pid(supervisor)
        try:
            if init is None:
                os.killpg(supervisor, sig)
            elif sig == signal.SIGKILL:
                os.kill(init, sig)
            else:
                os.killpg(init, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # ---- reporting --------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "mode": "unshare --setuid + bubblewrap user namespace" if self.privileged else "bubblewrap user namespace (unprivileged platform)",
            "bwrap": self.bwrap or None,
            "bwrap_version": self.bwrap_version or None,
            "runs_root": str(self.root),
            "uid_base": self.uid_base,
            "uid_count": self.uid_count,
            "network": self.network,
            "pids_per_replica": self.pids_per_replica,
            "cgroups": self.cgroups.describe(),
            "binds": [{"src": b.src, "dst": b.dst, "mode": b.mode} for b in self.binds],
            "refusal": self.refusal or None,
        }


def make_run_dir(work: Path, uid: int, *, privileged: bool) -> None:
    """Create a launch's run directory, owned by the tenant's uid, mode 0700 (the launcher
    does this, off the platform's threads). An existing one must be this launch's: a real
    directory (not a link) owned by that uid."""
    try:
        work.mkdir(mode=0o700)
    except FileExistsError:
        st = work.lstat()
        if not work.is_dir() or work.is_symlink() or (privileged and st.st_uid != uid):
            raise SandboxError(f"run directory {work} exists and is not this launch's") from None
    except OSError as exc:
        raise SandboxError(f"cannot create run directory {work}: {exc.strerror}") from exc
    try:
        if privileged:
            os.chown(work, uid, uid)
        os.chmod(work, 0o700)
    except OSError as exc:
        raise SandboxError(f"cannot give run directory {work} to uid {uid}: {exc.strerror}") from exc


def _only_child(pid: int) -> int | None:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if len(kids) == 1 else None


def _subid_overlap(lo: int, hi: int) -> str:
    """Which of /etc/subuid's ranges or /etc/passwd's uids fall in [lo, hi), if any."""
    for path in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(path).read_text().splitlines():
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    start, n = int(parts[1]), int(parts[2])
                    if start < hi and lo < start + n:
                        return f"{path} ({line.strip()})"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/etc/passwd").read_text().splitlines():
            parts = line.split(":")
            if len(parts) > 2 and parts[2].isdigit() and lo <= int(parts[2]) < hi:
                return f"/etc/passwd ({parts[0]})"
    return ""
