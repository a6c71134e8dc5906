"""The ``YUNGU_*`` environment every job sees, built in one place for every executor.

=======================  ==============================================================
variable                 value
=======================  ==============================================================
YUNGU_JOB_ID             the job's id (the same for every attempt)
YUNGU_REQUEST_ID         ``<job id>.<attempt>``: this attempt
YUNGU_TENANT_ID          the tenant that submitted the job
YUNGU_POOL_ID            the pool it was placed on
YUNGU_REPLICAS           the size of the gang
YUNGU_REPLICA            this replica's index, 0..N-1 (set per replica by the engine)
YUNGU_NODE               the pool node this replica was placed on (where the engine knows it)
YUNGU_DEVICES            the device indices assigned to this replica, comma-separated
YUNGU_CHECKPOINT_DIR     a directory per job that survives a requeue (see docs/jobs.md)
=======================  ==============================================================

The executors differ only in *how* the variables reach the processes (the local shim's
arguments, exports in a Slurm batch script, a Ray runtime environment), and in the
per-replica ones an engine fills in itself (Slurm and Ray set ``YUNGU_REPLICA`` from the
task rank).
"""

from __future__ import annotations

import os
from pathlib import Path

from yungu.ports.executor import Launch


def platform_env(launch: Launch) -> dict[str, str]:
    """The variables every replica of ``launch`` shares."""
    env = {
        "YUNGU_JOB_ID": launch.job_id,
        "YUNGU_REQUEST_ID": launch.request_id,
        "YUNGU_TENANT_ID": launch.tenant_id,
        "YUNGU_POOL_ID": launch.pool_id,
        "YUNGU_REPLICAS": str(len(launch.replicas)),
    }
    if launch.checkpoint_dir:
        env["YUNGU_CHECKPOINT_DIR"] = launch.checkpoint_dir
    return env


def replica_env(launch: Launch, index: int) -> dict[str, str]:
    """The variables of replica ``index``, for engines that start each replica themselves."""
    rep = launch.replicas[index]
    return {**platform_env(launch), "YUNGU_REPLICA": str(index), "YUNGU_NODE": str(rep.node),
            "YUNGU_DEVICES": ",".join(str(d) for d in rep.devices)}


def ensure_checkpoint_dir(launch: Launch) -> str:
    """Create the job's checkpoint directory (owner-only) if the launch names one; returns a
    problem, or "" (an engine whose nodes cannot see the path creates nothing useful here,
    which is why the platform's ``checkpoint_root`` must be shared storage on a cluster)."""
    if not launch.checkpoint_dir:
        return ""
    try:
        Path(launch.checkpoint_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(launch.checkpoint_dir, 0o700)
    except OSError as exc:
        return f"cannot create checkpoint directory {launch.checkpoint_dir}: {exc.strerror}"
    return ""
