"""A real single-machine Slurm cluster for tests and benchmarks (no mocks).

Starts munged, slurmctld and two slurmd daemons (nodes ``n1`` and ``n2``, both on this host
on distinct ports, 4 CPUs each declared via ``SlurmdParameters=config_overrides``) in a temp
directory, so a gang of 2 really spans two Slurm nodes. ``Epilog=/bin/true`` makes Slurm
schedule on events instead of a once-a-second loop (see /work/shared/notes). Accounting is
off (``accounting_storage/none``), as on many small sites: the executor then relies on the
exit-code file its batch wrapper writes.

Needs Debian's ``slurm-wlm`` and ``munge`` (slurmctld, slurmd, sbatch, munged, mungekey)
and root (SlurmUser=root). If anything cannot start, :func:`start_cluster` raises
:class:`ClusterStartError` with the daemon's log, and the fixture turns it into a loud
``pytest.fail`` — never a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.net import free_ports

NODES = ("n1", "n2")
CPUS_PER_NODE = 4
REQUIRED = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")




class ClusterStartError(RuntimeError):
    pass


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    sock_dir: Path  # munged's socket: every parent must be searchable, so not under pytest's 0700 tmp
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands aimed at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for p in sorted((self.root / "log").glob("*")):
            text = p.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {p.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        """Stop the daemons we started (by pid, newest first) and wait for them."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()
        shutil.rmtree(self.sock_dir, ignore_errors=True)


def _conf_text(root: Path, sock_dir: Path, host: str, ctld_port: int, node_ports: list[int]) -> str:
    nodes = "\n".join(
        f"NodeName={name} NodeHostname={host} Port={port} CPUs={CPUS_PER_NODE} RealMemory=4000 State=UNKNOWN"
        for name, port in zip(NODES, node_ports, strict=True)
    )
    return f"""\
ClusterName=yungutest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={node_ports[0]}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock_dir}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=error
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
PriorityType=priority/basic
EnforcePartLimits=ALL
MaxJobCount=100000
MinJobAge=2
KillWait=2
MessageTimeout=10
ReturnToService=2
MailProg=/bin/true
MpiDefault=none
SlurmdParameters=config_overrides
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=200,bf_interval=30,bf_max_job_test=100
{nodes}
PartitionName=debug Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
Epilog=/bin/true
"""


def start_cluster(root: Path, timeout_s: float = 30.0) -> SlurmCluster:
    """Start munged + slurmctld + one slurmd per node under ``root``; wait until all nodes are idle."""
    missing = [b for b in REQUIRED if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        raise ClusterStartError(f"Slurm/munge binaries missing: {missing}; install Debian packages slurm-wlm munge")
    if os.geteuid() != 0:
        raise ClusterStartError("the test Slurm cluster runs its daemons as root (SlurmUser=root)")
    for sub in ("key", "state", "log", *(f"spool/{n}" for n in NODES)):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "key").chmod(0o700)
    sock_dir = Path(tempfile.mkdtemp(prefix="yungu-munge-", dir="/tmp"))
    sock_dir.chmod(0o755)  # munged insists that every client can reach its socket
    host = socket.gethostname().split(".")[0]
    ctld_port, *node_ports = free_ports(1 + len(NODES))
    conf = root / "slurm.conf"
    conf.write_text(_conf_text(root, sock_dir, host, ctld_port, node_ports))
    cluster = SlurmCluster(root=root, conf=conf, sock_dir=sock_dir)
    sbin = "/usr/sbin"

    def spawn(name: str, argv: list[str]) -> None:
        out = (root / "log" / f"{name}.out").open("wb")
        cluster.procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=cluster.env,
                                              start_new_session=True))

    try:
        subprocess.run([f"{sbin}/mungekey", "-c", "-k", str(root / "key/munge.key")], check=True,
                       capture_output=True)
        spawn("munged", [f"{sbin}/munged", "-F", f"--key-file={root}/key/munge.key",
                         f"--socket={sock_dir}/munge.socket", f"--pid-file={sock_dir}/munged.pid",
                         f"--seed-file={root}/key/seed", f"--log-file={root}/log/munged.log"])
        _wait_for(lambda: (sock_dir / "munge.socket").exists(), 10, "munged socket", cluster)
        spawn("slurmctld", [f"{sbin}/slurmctld", "-D", "-c", "-i", "-f", str(conf)])
        for node in NODES:
            spawn(f"slurmd-{node}", [f"{sbin}/slurmd", "-D", "-N", node, "-f", str(conf)])

        def all_idle() -> bool:
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=cluster.env, capture_output=True,
                               text=True, timeout=10)
            states = dict(line.split() for line in r.stdout.splitlines() if line.strip())
            return r.returncode == 0 and all(states.get(n, "").startswith("idle") for n in NODES)

        _wait_for(all_idle, timeout_s, "all Slurm nodes idle", cluster)
    except Exception:
        cluster.stop()
        raise
    return cluster


def _wait_for(pred: object, timeout_s: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in cluster.procs:
            if proc.poll() is not None:
                raise ClusterStartError(f"{proc.args[0]} exited with {proc.returncode} while waiting for {what}\n"
                                        + cluster.log_tail())
        try:
            if pred():  # type: ignore[operator]
                return
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
        time.sleep(0.2)
    raise ClusterStartError(f"timed out after {timeout_s:.0f}s waiting for {what}\n" + cluster.log_tail())
