"""Slurm executor: Yungu jobs as sbatch jobs on an HPC cluster.

How our concepts map to Slurm's:

==========================  ==========================================================
Yungu                       Slurm
==========================  ==========================================================
one attempt (``Launch``)    one batch job, ``sbatch --parsable --no-requeue``
request id                  job name ``<prefix><request id>`` and ``--comment``; the
                            platform re-adopts by name after a restart
gang of N replicas          one allocation of N tasks (``--ntasks=N``); the wrapper runs
                            the command once per task with ``srun``; Slurm picks the
                            nodes (``replicas[].node`` is our plan, not a constraint)
cpus / memory per replica   ``--cpus-per-task`` / ``--mem-per-cpu``
accelerators per replica    GRES, ``--gpus-per-task=N`` (``select/cons_tres``)
time limit                  ``--time`` (whole minutes, rounded up)
status                      ``squeue`` (one call for all our jobs), then ``sacct`` when
                            accounting is on, then the exit-code file our wrapper writes
run times (billing)         the wrapper's own start (``started_at``, epoch with ns) and the
                            exit-code file's mtime; else Slurm's StartTime/EndTime from
                            ``squeue``/``sacct``, else ``scontrol show job`` (whole seconds)
logs                        ``--output`` / ``--error`` files in the job directory
cancel                      ``scancel`` (Slurm sends SIGTERM, then SIGKILL after KillWait)
==========================  ==========================================================

Every request gets a directory ``<workdir>/<request id>/`` that must be visible to the
submitting host and the compute nodes (a shared filesystem on a real cluster): the batch
script, ``stdout``, ``stderr``, ``started_at`` (written by the wrapper when the allocation
starts it), ``exitcode`` (written by the wrapper when the command ends), ``slurm_job_id`` and
``cancelled`` (our intent, so a cancel is reported as such after Slurm has forgotten the job).

Idempotency: submit takes an exclusive ``flock`` on the request directory, then looks for
an earlier submission (recorded job id, a job of that name in ``squeue``, or an exit-code
file) before calling ``sbatch``. Jobs are submitted ``--no-requeue`` so Slurm never runs an
attempt twice on its own; retrying is the platform's decision (a new attempt, a new id).

Errors: slurmctld that does not answer (or a Slurm command that is missing) is
``UNREACHABLE``; anything else ``sbatch`` refuses is ``REJECTED`` with Slurm's message.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from yungu.adapters.executors.base import BaseExecutor
from yungu.adapters.executors.env import ensure_checkpoint_dir, platform_env
from yungu.domain.clock import Clock
from yungu.ports.executor import (
    Capabilities,
    ExecError,
    ExecErrorCode,
    ExecPhase,
    ExecStatus,
    Launch,
    LogChunk,
)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
_UNREACHABLE_HINTS = (
    "unable to contact slurm controller",
    "socket timed out",
    "zero bytes were transmitted",
    "connection refused",
    "munge",
    "could not establish a configuration source",
    "slurm_persist_conn",
)
_PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                   "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT"}
_RUNNING_STATES = {"RUNNING", "COMPLETING"}
_SQUEUE_FMT = "%i|%j|%T|%S|%e|%r|%N|%k"  # comment last: it is ours, but may hold '|'


@dataclass(frozen=True)
class SlurmConfig:
    """Connection settings of one Slurm site (from the site's TOML ``[executor]`` table)."""

    workdir: Path  # shared between this host and the compute nodes
    partition: str | None = None
    account: str | None = None
    slurm_conf: Path | None = None  # sets SLURM_CONF for the client commands
    bin_dir: Path | None = None  # where sbatch/squeue/... live, if not on PATH
    name_prefix: str = "yungu-"
    command_timeout_s: float = 20.0
    extra_sbatch_args: tuple[str, ...] = ()
    gpus: bool | None = None  # None: ask sinfo whether any node declares GRES gpu

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, object]) -> SlurmConfig:
        def opt_path(key: str) -> Path | None:
            v = cfg.get(key)
            return Path(str(v)) if v else None

        if not cfg.get("workdir"):
            raise ValueError("slurm executor needs `workdir` (a directory shared with the compute nodes)")
        return cls(
            workdir=Path(str(cfg["workdir"])),
            partition=str(cfg["partition"]) if cfg.get("partition") else None,
            account=str(cfg["account"]) if cfg.get("account") else None,
            slurm_conf=opt_path("slurm_conf"),
            bin_dir=opt_path("bin_dir"),
            name_prefix=str(cfg.get("name_prefix", "yungu-")),
            command_timeout_s=float(cfg.get("command_timeout_s", 20.0)),  # type: ignore[arg-type]
            extra_sbatch_args=tuple(str(a) for a in cfg.get("extra_sbatch_args", ()) or ()),  # type: ignore[attr-defined]
            gpus=bool(cfg["gpus"]) if "gpus" in cfg else None,
        )


@dataclass(frozen=True)
class QueueRow:
    """One job as ``squeue`` (or ``sacct``) reports it."""

    job_id: str
    name: str
    state: str
    start: datetime | None = None
    end: datetime | None = None
    reason: str = ""
    nodes: str = ""
    exit_code: int | None = None


@dataclass
class _Run:
    out: str
    err: str
    rc: int


class SlurmExecutor(BaseExecutor):
    kind: ClassVar[str] = "slurm"

    def __init__(self, name: str, config: SlurmConfig, clock: Clock | None = None) -> None:
        super().__init__(name, clock)
        self.config = config
        config.workdir.mkdir(parents=True, exist_ok=True)
        self._probe: dict[str, str] | None = None
        self._gpus: bool | None = config.gpus

    # ---- capabilities ----------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        unsupported: dict[str, str] = {}
        gpus = self._has_gpus()
        if gpus is False:
            unsupported["devices"] = "no node of this Slurm cluster declares GRES gpu (sinfo %G)"
        elif gpus is None:
            unsupported["devices"] = "unknown: slurmctld did not answer sinfo"
        energy = self._energy_accounting()
        if not energy:
            unsupported["energy_accounting"] = (
                "Slurm accounting or AcctGatherEnergyType is off, so sacct has no ConsumedEnergy"
            )
        unsupported["stderr_per_replica"] = "all tasks of a gang share one --output and one --error file"
        return Capabilities(name=self.name, gangs=True, devices=gpus is True, logs=True,
                            energy_accounting=energy, unsupported=unsupported)

    # ---- backend hooks -----------------------------------------------------------------

    def _submit(self, launch: Launch) -> ExecStatus | ExecError:
        bad = self._validate(launch)
        if bad:
            return ExecError(ExecErrorCode.REJECTED, bad)
        jdir = self._dir(launch.request_id)
        jdir.mkdir(parents=True, exist_ok=True)
        with self._locked(jdir):
            existing = self._find_existing(launch.request_id, jdir)
            if isinstance(existing, ExecError):
                return existing
            if existing is not None:
                return self._status(launch.request_id)
            problem = ensure_checkpoint_dir(launch)
            if problem:
                return ExecError(ExecErrorCode.REJECTED, problem)
            script = jdir / "job.sh"
            script.write_text(self._script(launch, jdir))
            script.chmod(0o755)
            run = self._run(["sbatch", "--parsable", *self._sbatch_args(launch, jdir), str(script)])
            if isinstance(run, ExecError):
                return run
            if run.rc != 0:
                return self._classify(run, default=ExecErrorCode.REJECTED)
            job_id = run.out.strip().split(";")[0]
            if not job_id.isdigit():
                return ExecError(ExecErrorCode.INTERNAL, f"sbatch printed no job id: {run.out!r} {run.err!r}")
            _write_atomic(jdir / "slurm_job_id", job_id)
        return ExecStatus(launch.request_id, ExecPhase.PENDING, native_id=job_id)

    def _cancel(self, request_id: str, grace_s: float) -> ExecStatus | ExecError:
        if not _SAFE_ID.match(request_id):
            return ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {request_id!r}")
        jdir = self._dir(request_id)
        current = self._status(request_id)
        if isinstance(current, ExecError) or current.done:
            return current
        _write_atomic(jdir / "cancelled", self.clock.now().isoformat())
        if current.phase is ExecPhase.RUNNING and grace_s > 0:
            # SIGTERM to every process of the job now; the hard stop (scancel: SIGTERM again, then
            # SIGKILL after the cluster's KillWait) once grace_s has passed, from the observer.
            _write_atomic(jdir / "kill_after", repr(self.clock.now().timestamp() + grace_s))
            run = self._run(["scancel", "--signal=TERM", "--full", current.native_id])
        else:
            run = self._run(["scancel", current.native_id])
        if isinstance(run, ExecError):
            return run
        if run.rc != 0:
            return self._classify(run, default=ExecErrorCode.INTERNAL)
        # Slurm cancels asynchronously; wait briefly so callers usually see the outcome.
        deadline = self.clock.monotonic() + min(grace_s, 5.0)
        while True:
            st = self._status(request_id)
            if isinstance(st, ExecError) or st.done or self.clock.monotonic() >= deadline:
                return st
            self.clock.sleep(0.1)

    def _status(self, request_id: str) -> ExecStatus | ExecError:
        return self._observe([request_id])[request_id]

    def _observe(self, request_ids: Sequence[str]) -> Mapping[str, ExecStatus | ExecError]:
        """One ``squeue`` for the whole batch (plus one ``sacct`` for jobs it no longer lists).

        Precedence, so that a job's outcome never flips: a recorded outcome, then the
        exit-code file, then Slurm's own state; the first final status seen is recorded.
        """
        out: dict[str, ExecStatus | ExecError] = {}
        known: dict[str, str] = {}  # request id -> Slurm job id ("" when not recorded)
        for rid in request_ids:
            if not _SAFE_ID.match(rid) or not self._dir(rid).is_dir():
                out[rid] = ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {rid!r}")
                continue
            recorded = _load_outcome(self._dir(rid) / "outcome.json")
            if recorded is not None:
                out[rid] = recorded
                continue
            known[rid] = _read(self._dir(rid) / "slurm_job_id")
            from_file = self._from_files(rid, known[rid])
            if from_file is not None:
                out[rid] = self._remember_outcome(from_file)
        pending = [rid for rid in known if rid not in out]
        if not pending:
            return out
        rows = self._squeue()
        if isinstance(rows, ExecError):
            for rid in pending:
                out[rid] = rows
            return out
        by_name = {r.name: r for r in rows}
        by_id = {r.job_id: r for r in rows}
        missing = []
        for rid in pending:
            job_id = known[rid]
            row = by_id.get(job_id) if job_id else by_name.get(self._job_name(rid))
            if row is not None:
                out[rid] = self._remember_outcome(self._from_row(rid, row))
                if not out[rid].done:
                    self._stop_after_grace(rid, row.job_id)
            else:
                missing.append(rid)
        acct = self._sacct([known[r] for r in missing if known[r]]) if missing else {}
        for rid in missing:
            row = acct.get(known[rid]) if known[rid] else None
            if row is not None:
                out[rid] = self._remember_outcome(self._from_row(rid, row))
            elif (self._dir(rid) / "cancelled").exists():
                out[rid] = self._remember_outcome(ExecStatus(rid, ExecPhase.CANCELLED, reason="cancelled (scancel)",
                                                   native_id=known[rid]))
            elif not known[rid]:
                out[rid] = ExecError(ExecErrorCode.NOT_FOUND, f"request {rid} was never submitted to Slurm")
            else:
                # Not recorded: an exit-code file may still appear late on a shared filesystem.
                out[rid] = ExecStatus(rid, ExecPhase.LOST, native_id=known[rid],
                                      reason="Slurm no longer knows the job and it left no exit code")
        return out

    def _stop_after_grace(self, rid: str, job_id: str) -> None:
        """A cancelled job still running when its grace period is over gets the hard stop."""
        jdir = self._dir(rid)
        due = _read(jdir / "kill_after")
        if not due or (jdir / "killed").exists():
            return
        try:
            if self.clock.now().timestamp() < float(due):
                return
        except ValueError:
            pass
        run = self._run(["scancel", job_id])
        if not isinstance(run, ExecError) and run.rc == 0:
            _write_atomic(jdir / "killed", self.clock.now().isoformat())

    def _remember_outcome(self, st: ExecStatus) -> ExecStatus:
        """Write a final status once (first writer wins); return the recorded one."""
        if not st.done or st.phase is ExecPhase.LOST:
            return st
        path = self._dir(st.request_id) / "outcome.json"
        tmp = path.with_name(f"outcome.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(_outcome_json(st)))
        try:
            os.link(tmp, path)  # atomic, fails if another observer recorded first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return _load_outcome(path) or st

    def _logs(self, request_id: str, stream: str, offset: int, limit: int) -> LogChunk | ExecError:
        if stream not in ("stdout", "stderr"):
            return ExecError(ExecErrorCode.REJECTED, f"stream must be stdout or stderr, got {stream!r}")
        if not _SAFE_ID.match(request_id) or not self._dir(request_id).is_dir():
            return ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {request_id!r}")
        path = self._dir(request_id) / stream
        data = b""
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read(limit)
        end = offset + len(data)
        eof = False
        if len(data) < limit:
            st = self._status(request_id)
            eof = isinstance(st, ExecStatus) and st.done and end >= (path.stat().st_size if path.exists() else 0)
        return LogChunk(data=data, next_offset=end, eof=eof)

    def _list_active(self) -> Sequence[ExecStatus] | ExecError:
        rows = self._squeue()
        if isinstance(rows, ExecError):
            return rows
        active = []
        for row in rows:
            rid = row.name[len(self.config.name_prefix):]
            st = self._from_row(rid, row)
            if not st.done:
                active.append(st)
                # A restarted platform (or another host) may not have the job id on disk yet.
                jdir = self._dir(rid)
                if _SAFE_ID.match(rid) and jdir.is_dir() and not (jdir / "slurm_job_id").exists():
                    _write_atomic(jdir / "slurm_job_id", row.job_id)
        return active

    def _check(self) -> Mapping[str, object]:
        run = self._run(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%T"])
        if isinstance(run, ExecError) or run.rc != 0:
            err = run if isinstance(run, ExecError) else self._classify(run, default=ExecErrorCode.UNREACHABLE)
            return {"reachable": False, "error": err.message}
        nodes: dict[str, dict[str, object]] = {}
        for line in run.out.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 5:
                continue
            name, cpus, mem, gres, state = parts
            # sinfo -N prints a node once per partition: keep the first.
            nodes.setdefault(name, {"cpus": _int(cpus), "memory_mb": _int(mem), "gpus": _gres_gpus(gres),
                                    "state": state})
        usable = {n: v for n, v in nodes.items() if not str(v["state"]).rstrip("*~#").startswith(
            ("down", "drain", "fail", "inval", "unk"))}
        return {
            "reachable": True,
            "nodes": len(nodes),
            "nodes_usable": len(usable),
            "cpus": sum(int(v["cpus"]) for v in usable.values()),  # type: ignore[call-overload]
            "memory_gb": round(sum(int(v["memory_mb"]) for v in usable.values()) / 1024, 1),  # type: ignore[call-overload]
            "gpus": sum(int(v["gpus"]) for v in usable.values()),  # type: ignore[call-overload]
            "node_states": {n: v["state"] for n, v in nodes.items()},
            "partition": self.config.partition or "(default)",
        }

    # ---- the batch script ----------------------------------------------------------------

    def _script(self, launch: Launch, jdir: Path) -> str:
        n = len(launch.replicas)
        env = {**launch.env, **platform_env(launch), "YUNGU_COMMAND": launch.command}
        exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
        exitcode = shlex.quote(str(jdir / "exitcode"))
        started = shlex.quote(str(jdir / "started_at"))
        if n > 1:
            # One task per replica; --kill-on-bad-exit makes the gang fail as a whole.
            run = ("srun --kill-on-bad-exit=1 --ntasks=\"$YUNGU_REPLICAS\" /bin/sh -c "
                   "'YUNGU_REPLICA=$SLURM_PROCID; export YUNGU_REPLICA; exec /bin/sh -c \"$YUNGU_COMMAND\"'")
        else:
            run = 'YUNGU_REPLICA=0; export YUNGU_REPLICA; /bin/sh -c "$YUNGU_COMMAND"'
        return (
            "#!/bin/sh\n"
            "# Written by Yungu. The exit-code file is how the platform learns the outcome when\n"
            "# Slurm accounting is off and the job has left squeue. A cancel signals every process\n"
            "# of the job; the wrapper outlives SIGTERM (a handler, which children do not inherit,\n"
            "# unlike an ignored signal) so it can record how the command ended.\n"
            "trap : TERM\n"
            f"date +%s.%N > {started}.tmp && mv -f {started}.tmp {started}\n"
            f"{exports}\n"
            f"{run}\n"
            "rc=$?\n"
            f"echo $rc > {exitcode}.tmp && mv -f {exitcode}.tmp {exitcode}\n"
            "exit $rc\n"
        )

    def _sbatch_args(self, launch: Launch, jdir: Path) -> list[str]:
        n = len(launch.replicas)
        mem_mb = math.ceil(launch.memory_gb_per_replica * 1024 / max(1, launch.cpus_per_replica))
        args = [
            f"--job-name={self._job_name(launch.request_id)}",
            f"--comment=yungu:{launch.request_id}",
            f"--ntasks={n}",
            f"--cpus-per-task={launch.cpus_per_replica}",
            f"--mem-per-cpu={mem_mb}M",
            f"--output={jdir / 'stdout'}",
            f"--error={jdir / 'stderr'}",
            f"--chdir={jdir}",
            "--no-requeue",
            "--export=ALL",  # the environment is the clean one _run passes, plus the script's exports
        ]
        if launch.accelerators_per_replica:
            args.append(f"--gpus-per-task={launch.accelerators_per_replica}")
        if launch.time_limit_s:
            args.append(f"--time={max(1, math.ceil(launch.time_limit_s / 60))}")
        if self.config.partition:
            args.append(f"--partition={self.config.partition}")
        if self.config.account:
            args.append(f"--account={self.config.account}")
        args.extend(self.config.extra_sbatch_args)
        return args

    @staticmethod
    def _validate(launch: Launch) -> str:
        if not _SAFE_ID.match(launch.request_id):
            return f"request id {launch.request_id!r} must match {_SAFE_ID.pattern} to be a Slurm job name"
        if not launch.replicas:
            return "a launch needs at least one replica"
        if launch.cpus_per_replica < 1 or launch.memory_gb_per_replica < 0 or launch.accelerators_per_replica < 0:
            return "cpus_per_replica must be >= 1; memory and accelerators must be >= 0"
        if launch.time_limit_s is not None and launch.time_limit_s <= 0:
            return "time_limit_s must be positive"
        bad_env = [k for k in launch.env if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k)]
        if bad_env:
            return f"invalid environment variable names: {bad_env}"
        return ""

    # ---- status sources --------------------------------------------------------------

    def _find_existing(self, request_id: str, jdir: Path) -> str | ExecError | None:
        """The Slurm job id of an earlier submission of this request, if any (caller holds the lock)."""
        job_id = _read(jdir / "slurm_job_id")
        if job_id or (jdir / "exitcode").exists():
            return job_id or "?"
        rows = self._squeue(name=self._job_name(request_id))
        if isinstance(rows, ExecError):
            return rows  # unknown whether it runs: do not risk a second copy
        if rows:
            _write_atomic(jdir / "slurm_job_id", rows[0].job_id)
            return rows[0].job_id
        return None

    def _squeue(self, name: str | None = None) -> list[QueueRow] | ExecError:
        argv = ["squeue", "--me", "--noheader", "--states=all", f"--format={_SQUEUE_FMT}"]
        if name:
            argv.append(f"--name={name}")
        run = self._run(argv)
        if isinstance(run, ExecError):
            return run
        if run.rc != 0:
            return self._classify(run, default=ExecErrorCode.UNREACHABLE)
        return [r for r in parse_squeue(run.out) if r.name.startswith(self.config.name_prefix)]

    def _sacct(self, job_ids: list[str]) -> dict[str, QueueRow]:
        if not job_ids or not self._accounting():
            return {}
        run = self._run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", ",".join(job_ids),
                         "--format=JobID,JobName,State,ExitCode,Start,End,Reason"])
        if isinstance(run, ExecError) or run.rc != 0:
            return {}
        return {r.job_id: r for r in parse_sacct(run.out)}

    def _scontrol_start(self, job_id: str) -> datetime | None:
        """Slurm's StartTime of a job (kept by slurmctld for MinJobAge after it ends), for a run
        whose wrapper left no ``started_at`` (written by an older wrapper, or lost)."""
        if not job_id.isdigit():
            return None
        run = self._run(["scontrol", "-o", "show", "job", job_id])
        if isinstance(run, ExecError) or run.rc != 0:
            return None
        return parse_scontrol_times(run.out)[0]

    def _from_row(self, rid: str, row: QueueRow) -> ExecStatus:
        """Slurm's view, for a job whose command has left no exit-code file (yet)."""
        ours = _SAFE_ID.match(rid) is not None and (self._dir(rid) / "cancelled").exists()
        state = row.state.split()[0] if row.state else ""
        started = (_read_epoch(self._dir(rid) / "started_at") if _SAFE_ID.match(rid) else None) or row.start
        base = ExecStatus(rid, ExecPhase.PENDING, native_id=row.job_id, started_at=started)
        if state in _PENDING_STATES:
            return replace(base, reason=row.reason if row.reason != "None" else "", started_at=None)
        if state in _RUNNING_STATES:
            return replace(base, phase=ExecPhase.RUNNING)
        if ours:
            return replace(base, phase=ExecPhase.CANCELLED, exit_code=row.exit_code, reason="cancelled (scancel)",
                           finished_at=row.end)
        if state == "COMPLETED":
            return _finished(rid, row.job_id, row.exit_code or 0, started, row.end)
        if state == "CANCELLED":
            reason = "cancelled outside the platform (scancel by an operator or by Slurm)"
        else:  # FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, BOOT_FAIL, DEADLINE, ...
            reason = state if state != "FAILED" else f"exited with {row.exit_code}"
        if row.reason and row.reason not in ("None", "NonZeroExitCode"):
            reason += f" ({row.reason})"
        return replace(base, phase=ExecPhase.FAILED, exit_code=row.exit_code, reason=reason, finished_at=row.end)

    def _from_files(self, rid: str, job_id: str) -> ExecStatus | None:
        """The outcome the batch wrapper wrote when the command ended, if it did."""
        jdir = self._dir(rid)
        ec_path = jdir / "exitcode"
        code = _read_int(ec_path)
        if code is None:
            return None
        finished = _mtime(ec_path)
        started = _read_epoch(jdir / "started_at") or self._scontrol_start(job_id)
        if (jdir / "cancelled").exists() and code != 0:
            return ExecStatus(rid, ExecPhase.CANCELLED, exit_code=code, reason="cancelled (scancel)",
                              native_id=job_id, started_at=started, finished_at=finished)
        st = _finished(rid, job_id, code, started, finished)
        if code > 128:
            st = replace(st, reason=f"exited with {code} (killed by signal {code - 128})")
        return st

    # ---- plumbing ----------------------------------------------------------------------

    def _job_name(self, request_id: str) -> str:
        return f"{self.config.name_prefix}{request_id}"

    def _dir(self, request_id: str) -> Path:
        return self.config.workdir / request_id

    @contextmanager
    def _locked(self, jdir: Path) -> Iterator[None]:
        with (jdir / ".lock").open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _env(self) -> dict[str, str]:
        """A clean environment: jobs must not inherit the platform's secrets (--export=ALL)."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ")}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["SLURM_TIME_FORMAT"] = "%s"  # epoch seconds: no time-zone guessing
        if self.config.slurm_conf:
            env["SLURM_CONF"] = str(self.config.slurm_conf)
        elif "SLURM_CONF" in os.environ:
            env["SLURM_CONF"] = os.environ["SLURM_CONF"]
        return env

    def _run(self, argv: list[str]) -> _Run | ExecError:
        exe = str(self.config.bin_dir / argv[0]) if self.config.bin_dir else argv[0]
        try:
            p = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, env=self._env(),
                               timeout=self.config.command_timeout_s, check=False)
        except FileNotFoundError:
            return ExecError(ExecErrorCode.UNREACHABLE, f"{argv[0]} not found (is the Slurm client installed?)")
        except subprocess.TimeoutExpired:
            return ExecError(ExecErrorCode.UNREACHABLE,
                             f"{argv[0]}: no answer from slurmctld within {self.config.command_timeout_s:g}s")
        return _Run(p.stdout, p.stderr, p.returncode)

    @staticmethod
    def _classify(run: _Run, default: ExecErrorCode) -> ExecError:
        msg = (run.err or run.out).strip() or f"exit status {run.rc}"
        low = msg.lower()
        if any(h in low for h in _UNREACHABLE_HINTS):
            return ExecError(ExecErrorCode.UNREACHABLE, msg)
        return ExecError(default, msg)

    def _config_probe(self) -> dict[str, str]:
        if self._probe is None:
            run = self._run(["scontrol", "show", "config"])
            if isinstance(run, ExecError) or run.rc != 0:
                return {}
            probe = {}
            for line in run.out.splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    probe[key.strip()] = value.strip()
            self._probe = probe
        return self._probe

    def _accounting(self) -> bool:
        return self._config_probe().get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none"

    def _energy_accounting(self) -> bool:
        return self._accounting() and self._config_probe().get(
            "AcctGatherEnergyType", "acct_gather_energy/none") != "acct_gather_energy/none"

    def _has_gpus(self) -> bool | None:
        if self._gpus is None:
            run = self._run(["sinfo", "-h", "-o", "%G"])
            if isinstance(run, ExecError) or run.rc != 0:
                return None
            self._gpus = any(_gres_gpus(line) > 0 for line in run.out.splitlines())
        return self._gpus


# ---- parsing (pure; unit-tested on captured output) ------------------------------------


def parse_squeue(text: str) -> list[QueueRow]:
    """Rows of ``squeue --format=%i|%j|%T|%S|%e|%r|%N|%k`` with SLURM_TIME_FORMAT=%s."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|", 7)
        if len(parts) < 7 or not parts[0]:
            continue
        job_id, name, state, start, end, reason, nodes = parts[:7]
        st = state.upper()
        rows.append(QueueRow(job_id=job_id, name=name, state=st,
                             start=None if st in _PENDING_STATES else _epoch(start),
                             end=_epoch(end) if st not in _PENDING_STATES | _RUNNING_STATES else None,
                             reason=reason, nodes=nodes))
    return rows


def parse_sacct(text: str) -> list[QueueRow]:
    """Rows of ``sacct -P -X --format=JobID,JobName,State,ExitCode,Start,End,Reason``."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 6 or not parts[0]:
            continue
        job_id, name, state, exit_code, start, end = parts[:6]
        code_s, _, signal_s = exit_code.partition(":")
        code = int(code_s) if code_s.isdigit() else None
        if code == 0 and signal_s.isdigit() and int(signal_s):
            code = 128 + int(signal_s)  # killed by a signal, as a shell would report it
        rows.append(QueueRow(job_id=job_id, name=name, state=state.split()[0].upper() if state else "",
                             start=_epoch(start), end=_epoch(end), reason=parts[6] if len(parts) > 6 else "",
                             exit_code=code))
    return rows


def parse_scontrol_times(text: str) -> tuple[datetime | None, datetime | None]:
    """(StartTime, EndTime) from ``scontrol -o show job`` (SLURM_TIME_FORMAT=%s or ISO)."""
    fields = dict(tok.split("=", 1) for tok in text.split() if "=" in tok)
    return _epoch(fields.get("StartTime", "")), _epoch(fields.get("EndTime", ""))


def _read_epoch(path: Path) -> datetime | None:
    """An epoch time written by ``date +%s.%N`` (a date without %N writes a literal "N")."""
    whole, _, frac = _read(path).partition(".")
    if not whole.isdigit() or int(whole) <= 0:
        return None
    return datetime.fromtimestamp(int(whole), UTC).replace(microsecond=int(frac[:6].ljust(6, "0"))
                                                           if frac[:6].isdigit() else 0)


def _finished(rid: str, job_id: str, code: int, start: datetime | None, end: datetime | None) -> ExecStatus:
    phase = ExecPhase.SUCCEEDED if code == 0 else ExecPhase.FAILED
    return ExecStatus(rid, phase, exit_code=code, reason="" if code == 0 else f"exited with {code}",
                      native_id=job_id, started_at=start, finished_at=end)


def _outcome_json(st: ExecStatus) -> dict[str, object]:
    return {"request_id": st.request_id, "phase": st.phase.value, "exit_code": st.exit_code, "reason": st.reason,
            "native_id": st.native_id,
            "started_at": st.started_at.isoformat() if st.started_at else None,
            "finished_at": st.finished_at.isoformat() if st.finished_at else None}


def _load_outcome(path: Path) -> ExecStatus | None:
    try:
        d = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None

    def when(key: str) -> datetime | None:
        return datetime.fromisoformat(d[key]) if d.get(key) else None

    return ExecStatus(d["request_id"], ExecPhase(d["phase"]), exit_code=d.get("exit_code"),
                      reason=d.get("reason", ""), native_id=d.get("native_id", ""),
                      started_at=when("started_at"), finished_at=when("finished_at"))


def _epoch(s: str) -> datetime | None:
    s = s.strip()
    if s.isdigit() and int(s) > 0:
        return datetime.fromtimestamp(int(s), UTC)
    if re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$", s):  # sacct without SLURM_TIME_FORMAT
        return datetime.fromisoformat(s).astimezone(UTC)
    return None


def _gres_gpus(gres: str) -> int:
    """Number of GPUs in a GRES string such as ``gpu:a100:4(S:0-1),shard:8``."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _int(s: str) -> int:
    digits = re.match(r"\d+", s.strip())
    return int(digits.group()) if digits else 0


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""


def _read_int(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text.lstrip("-").isdigit() else None


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
