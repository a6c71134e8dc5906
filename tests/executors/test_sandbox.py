"""The sandbox's parts: settings, the tenant uid map, cgroup layouts, refusal without
bubblewrap, the unprivileged mode, and honest run times from the supervisor's records.

Real processes, real bubblewrap and real cgroup v1 throughout. The one stand-in: cgroup v2
is exercised on a directory laid out like a cgroup2 mount, because this machine mounts its
controllers as v1 only (its v2 mount offers none of cpu, memory, pids); the kernel-side
behaviour of v2 is not shown here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.executors.contract import make_launch, ok, read_all, wait_done, wait_file, wait_until
from tests.executors.sandbox_env import BINDS, shared_dir
from yungu.adapters.executors.local import LocalExecutor, LocalSettings
from yungu.adapters.executors.sandbox import Bind, SandboxError, TenantUids
from yungu.adapters.executors.sandbox_cgroups import Cgroups, Limits, parse_mounts
from yungu.domain.errors import InvalidInput
from yungu.ports.executor import ExecError, ExecErrorCode, ExecPhase

FAST = {"poll_interval_s": 0.02, "gang_kill_grace_s": 1.0, "binds": BINDS}


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"sandbox": "yes"}, "true or false"),
        ({"inherit_env": True}, "inherit_env = true would give tenant jobs"),
        ({"runs_root": "relative/dir"}, "absolute path"),
        ({"uid_base": 0}, "uid_base"),
        ({"uid_base": 999}, "uid_base"),
        ({"uid_count": 0}, "uid_count"),
        ({"pids_per_replica": 2}, "pids_per_replica"),
        ({"network": "bridge"}, "network"),
        ({"binds": "/data"}, "list"),
        ({"binds": [{"src": "data", "dst": "/data"}]}, "absolute path"),
        ({"binds": [{"src": "/data", "dst": "/job"}]}, "would hide"),
        ({"binds": [{"src": "/data", "dst": "/job/x"}]}, "would hide"),
        ({"binds": [{"src": "/data", "dst": "/proc/1"}]}, "would hide"),
        ({"binds": [{"src": "/dev/null", "dst": "/dev/x", "mode": "rw"}]}, "would hide"),
        ({"binds": [{"src": "/data", "dst": "/data", "mode": "rwx"}]}, "ro, rw or dev"),
        ({"binds": [{"src": "/data", "dst": "/data", "owner": "t"}]}, "unknown key"),
    ],
)
def test_bad_sandbox_settings_are_a_clear_error(settings: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        LocalSettings.parse(settings)


def test_sandbox_settings_parse() -> None:
    s = LocalSettings.parse({"binds": [{"src": "/srv/data/", "dst": "/data"}, {"src": "/dev/nvidia0", "mode": "dev"}],
                             "uid_base": 300_000, "network": "none", "sandbox": True, "inherit_env": False})
    assert s.binds == (Bind("/srv/data", "/data", "ro"), Bind("/dev/nvidia0", "/dev/nvidia0", "dev"))
    assert (s.uid_base, s.network, s.sandbox) == (300_000, "none", True)
    assert LocalSettings.parse({"sandbox": False, "inherit_env": True}).inherit_env is True


def test_runs_root_and_binds_may_not_expose_the_data_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    platform = tmp_path_factory.mktemp("plat")
    data = platform / "executors" / "local"
    with pytest.raises(InvalidInput, match="outside the platform's data dir"):
        LocalExecutor("local", {"runs_root": str(platform / "runs")}, data)
    with pytest.raises(InvalidInput, match="overlaps"):
        LocalExecutor("local", {"binds": [{"src": str(platform.parent), "dst": "/x"}]}, data)
    with pytest.raises(InvalidInput, match="does not exist"):
        LocalExecutor("local", {"binds": [{"src": "/no/such/dir", "dst": "/x"}]}, data)


# ---- tenant -> uid ------------------------------------------------------------------------


def test_tenant_uids_are_stable_distinct_persisted_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "tenant-uids.json"
    a = TenantUids(path, 200_000, 3)
    assert [a.uid("t1"), a.uid("t2"), a.uid("t1")] == [200_000, 200_001, 200_000]
    b = TenantUids(path, 200_000, 3)  # a restart, or another executor on the same runs root
    assert (b.uid("t2"), b.uid("t3")) == (200_001, 200_002)
    assert a.uid("t3") == 200_002, "the first instance sees the other's allocation"
    with pytest.raises(SandboxError, match="exhausted"):
        b.uid("t4")
    with pytest.raises(SandboxError):
        b.uid("")
    assert json.loads(path.read_text())["tenants"] == {"t1": 200_000, "t2": 200_001, "t3": 200_002}
    assert path.stat().st_mode & 0o777 == 0o600


def test_concurrent_first_use_never_gives_two_tenants_one_uid(tmp_path: Path) -> None:
    path = tmp_path / "tenant-uids.json"
    maps = [TenantUids(path, 500_000, 1000) for _ in range(4)]
    got: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(m: TenantUids, k: int) -> None:
        for i in range(25):
            uid = m.uid(f"tenant-{(i * 7 + k) % 50}")
            with lock:
                got.append((f"tenant-{(i * 7 + k) % 50}", uid))

    threads = [threading.Thread(target=work, args=(m, k)) for k, m in enumerate(maps)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_tenant: dict[str, set[int]] = {}
    for tenant, uid in got:
        by_tenant.setdefault(tenant, set()).add(uid)
    assert all(len(u) == 1 for u in by_tenant.values()), by_tenant
    uids = [next(iter(u)) for u in by_tenant.values()]
    assert len(set(uids)) == len(uids)


# ---- cgroups ------------------------------------------------------------------------------


def test_mounts_are_read_per_controller() -> None:
    text = textwrap.dedent("""\
        cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0
        cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0
        tmpfs /tmp tmpfs rw 0 0
    """)
    v2, v1 = parse_mounts(text)
    assert v2 == [Path("/sys/fs/cgroup/unified")]
    assert v1 == {"cpu": Path("/sys/fs/cgroup/cpu,cpuacct"), "memory": Path("/sys/fs/cgroup/memory")}


def _fake_v2(root: Path, key: str) -> None:
    """A directory laid out like a cgroup2 mount (stand-in: no v2 controllers here)."""
    for d in (root, root / "yungu", root / "yungu" / key):
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (d / "cgroup.subtree_control").write_text("\n")


def test_cgroup_v2_layout_and_limits(tmp_path: Path) -> None:
    root = tmp_path / "cg2"
    _fake_v2(root, "k")
    cg = Cgroups("k", mounts=f"cgroup2 {root} cgroup2 rw 0 0\n")
    assert cg.describe() == {"cpu": "v2", "memory": "v2", "pids": "v2"} and cg.problems == []
    for d in (root, root / "yungu", root / "yungu" / "k"):
        assert (d / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    leaf = root / "yungu" / "k" / "r.1-r0"
    leaf.mkdir()
    for name in ("memory.swap.max", "memory.oom.group"):
        (leaf / name).write_text("max\n")
    procs = cg.create("r.1-r0", Limits(cpus=2, memory_bytes=3 << 30, pids=100))
    assert procs == [leaf / "cgroup.procs"], "one v2 cgroup holds every controller"
    assert (leaf / "memory.max").read_text() == f"{3 << 30}\n"
    assert (leaf / "memory.swap.max").read_text() == "0\n" and (leaf / "memory.oom.group").read_text() == "1\n"
    assert (leaf / "cpu.max").read_text() == "200000 100000\n" and (leaf / "pids.max").read_text() == "100\n"
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    (leaf / "pids.events").write_text("max 0\n")
    ev = cg.events("r.1-r0")
    assert (ev.oom_kills, ev.pids_denied) == (1, 0)


def test_cgroup_hybrid_uses_v1_where_v2_offers_nothing(tmp_path: Path) -> None:
    """This machine's layout: a v2 mount with no controllers of ours, and v1 per controller."""
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    mounts = [f"cgroup2 {tmp_path / 'unified'} cgroup2 rw 0 0"]
    for ctl in ("cpu", "memory"):
        (tmp_path / ctl).mkdir()
        mounts.append(f"cgroup {tmp_path / ctl} cgroup rw,{ctl} 0 0")
    cg = Cgroups("k", mounts="\n".join(mounts))
    assert cg.describe() == {"cpu": "v1", "memory": "v1", "pids": None}
    assert any("pids: no cgroup controller" in p for p in cg.problems)
    procs = cg.create("r.1-r0", Limits(cpus=1, memory_bytes=1 << 30, pids=64))
    assert sorted(procs) == sorted(tmp_path / c / "yungu" / "k" / "r.1-r0" / "cgroup.procs" for c in ("cpu", "memory"))
    assert (tmp_path / "cpu/yungu/k/r.1-r0/cpu.cfs_quota_us").read_text() == "100000\n"
    assert (tmp_path / "memory/yungu/k/r.1-r0/memory.limit_in_bytes").read_text() == f"{1 << 30}\n"


def test_an_unusable_cgroup_controller_is_reported_not_used(tmp_path: Path) -> None:
    """(Root may write anywhere, so "unusable" is a mount point that is not a directory.)"""
    (tmp_path / "not-a-dir").write_text("")
    cg = Cgroups("k", mounts=f"cgroup {tmp_path / 'not-a-dir'} cgroup rw,memory 0 0\n")
    assert cg.describe()["memory"] is None and any("memory (cgroup v1): cannot create" in p for p in cg.problems)


def test_real_cgroups_of_this_machine_hold_the_declared_limits(tmp_path_factory: pytest.TempPathFactory) -> None:
    ex = LocalExecutor("cglimits", FAST, tmp_path_factory.mktemp("cg") / "data")
    try:
        sb = ex._sandbox
        assert sb is not None and not sb.refusal
        if None in sb.cgroups.describe().values():
            pytest.fail(f"this test needs writable cpu, memory and pids controllers: {sb.cgroups.problems}")
        flag = shared_dir("cg") / "up"
        la = make_launch(f"touch {flag}; sleep 5", request_id="cg.1", cpus_per_replica=2, memory_gb_per_replica=3)
        ok(ex.submit(la))
        wait_file(flag, 10)
        h = sb.cgroups.hierarchies
        base = {c: h[c].base / "cg.1-r0" for c in h}
        if h["memory"].v2:
            assert (base["memory"] / "memory.max").read_text().strip() == str(3 << 30)
        else:
            assert (base["memory"] / "memory.limit_in_bytes").read_text().strip() == str(3 << 30)
            assert (base["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "200000"
        assert (base["pids"] / "pids.max").read_text().strip() == "4096"
        members = (base["pids"] / "cgroup.procs").read_text().split()
        shim = int(ok(ex.status("cg.1")).native_id)
        assert str(shim) not in members, "the supervisor stays outside the job's cgroup"
        assert len(members) >= 3  # bwrap, the namespace's init, the job
        ok(ex.cancel("cg.1", grace_s=0.2))
        wait_done(ex, "cg.1", 10)
    finally:
        ex.close()


# ---- refusal and the unprivileged platform ------------------------------------------------


def test_without_bubblewrap_every_launch_is_refused_in_both_languages(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path_factory.mktemp("nobin")
    monkeypatch.setenv("PATH", str(empty))
    data = tmp_path_factory.mktemp("refuse") / "data"
    ex = LocalExecutor("refuse", FAST, data)
    try:
        res = ex.submit(make_launch("true"))
        assert isinstance(res, ExecError) and res.code is ExecErrorCode.REJECTED
        assert "bwrap not found" in res.message and "拒绝" in res.message and "refuses" in res.message
        report = ex.check()
        assert report["reachable"] is False and "bwrap not found" in str(report["error"])
        assert list((data / "runs").iterdir()) == []
    finally:
        ex.close()


def test_sandbox_false_runs_as_the_platform_and_says_so(tmp_path_factory: pytest.TempPathFactory) -> None:
    ex = LocalExecutor("plain", {"sandbox": False, "poll_interval_s": 0.02}, tmp_path_factory.mktemp("p") / "data")
    try:
        ok(ex.submit(make_launch("id -u", request_id="p.1")))
        assert wait_done(ex, "p.1", 10).phase is ExecPhase.SUCCEEDED
        assert read_all(ex, "p.1").strip() == str(os.getuid()).encode()
        report = ex.check()
        assert report["sandbox"] == {"enabled": False}
        assert any("sandbox = false" in w for w in report["warnings"])  # type: ignore[attr-defined]
        assert "isolation" in ex.capabilities().unsupported
    finally:
        ex.close()


UNPRIVILEGED = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from yungu.adapters.executors.local import LocalExecutor
    from yungu.ports.executor import Launch, ReplicaLaunch
    data, runs, secret = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    ex = LocalExecutor("unpriv", {"runs_root": runs, "poll_interval_s": 0.02}, data)
    cmd = f"id -u; cat {secret} 2>&1 || echo no-secret; ls /proc | grep -cE '^[0-9]+$'"
    ex.submit(Launch("u.1", "u", "tenant-u", "p", cmd, (ReplicaLaunch(0),)))
    for _ in range(400):
        st = ex.status("u.1")
        if st.done:
            break
        time.sleep(0.05)
    print(json.dumps({"phase": st.phase.value, "out": ex.logs("u.1").data.decode(),
                      "check": ex.check(), "work_uid": (Path(runs) / ex._sandbox.key / "u.1").stat().st_uid}))
    ex.close()
    """
)


def test_an_unprivileged_platform_sandboxes_with_a_user_namespace() -> None:
    """The platform as ``nobody``: bubblewrap maps the tenant's uid onto it; the platform's
    files stay out of sight; cgroup limits are reported unavailable (nothing is delegated)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a platform as another (unprivileged) user")
    base = Path(tempfile.mkdtemp(prefix="yungu-unpriv-"))  # pytest's own dirs are 0700 root
    base.chmod(0o755)
    try:
        _run_unprivileged(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_unprivileged(base: Path) -> None:
    data, runs = base / "data", base / "runs"
    for d in (data, runs):
        d.mkdir()
        os.chown(d, 65534, 65534)
    secret = data / "admin.key"
    secret.write_text("TOPSECRET\n")
    os.chown(secret, 65534, 65534)
    secret.chmod(0o600)
    env = {"PATH": os.environ["PATH"], "HOME": str(base)}
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", UNPRIVILEGED,
         str(data), str(runs), str(secret)],
        capture_output=True, text=True, timeout=120, cwd=base, env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    out = res["out"].split()
    assert res["phase"] == "succeeded" and out[0] == "200000" and "no-secret" in res["out"], res
    assert int(out[-1]) <= 5, "only the job's own processes are visible"
    assert "TOPSECRET" not in res["out"]
    assert res["work_uid"] == 65534  # on the host the job is the platform's uid
    sandbox = res["check"]["sandbox"]
    assert sandbox["mode"].startswith("bubblewrap user namespace (unprivileged")
    assert set(sandbox["cgroups"].values()) == {None}
    assert any("cgroup limit unavailable" in w for w in res["check"]["warnings"])


# ---- honest run times ---------------------------------------------------------------------


def test_run_times_are_the_supervisors_records_not_when_the_platform_looked(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A job runs 1 s and finishes while the platform is down for 3 s; the restarted
    platform reports its real start and end (the records), not the restart time. Its pid
    file was never written (the platform died right after the spawn), as in the issue's
    crash rounds where such jobs were recorded without a start."""
    data = tmp_path_factory.mktemp("times") / "data"
    ex = LocalExecutor("times", FAST, data)
    t0 = datetime.now(UTC)
    ok(ex.submit(make_launch("sleep 1", request_id="t.1")))
    ex.close()
    (data / "runs" / "t.1" / "replica-0.pid").unlink(missing_ok=True)
    time.sleep(3)
    back = LocalExecutor("times", FAST, data)
    try:
        st = wait_done(back, "t.1", 10)
        assert st.phase is ExecPhase.SUCCEEDED and st.started_at and st.finished_at
        assert 0.9 <= (st.finished_at - st.started_at).total_seconds() <= 1.6, st
        assert (st.started_at - t0).total_seconds() < 2.5, "the start is the spawn's (< the 3 s down), not the restart's"
        assert (datetime.now(UTC) - st.finished_at).total_seconds() >= 1.0, "the end is the job's, not now"
    finally:
        back.close()


def test_a_running_job_reports_its_start_and_a_finished_one_its_end(tmp_path_factory: pytest.TempPathFactory) -> None:
    ex = LocalExecutor("times2", FAST, tmp_path_factory.mktemp("times2") / "data")
    try:
        la = make_launch("sleep 0.6", request_id="t.2", replicas=2)
        ok(ex.submit(la))
        running = wait_until(ex, "t.2", lambda s: s.phase is ExecPhase.RUNNING and s.started_at is not None, 5)
        time.sleep(1.5)  # nobody observes while it finishes
        done = ok(ex.status("t.2"))
        assert done.phase is ExecPhase.SUCCEEDED and done.finished_at and done.started_at
        assert abs((done.started_at - running.started_at).total_seconds()) < 0.1  # type: ignore[operator]
        assert 0.55 <= (done.finished_at - done.started_at).total_seconds() <= 1.2, done
    finally:
        ex.close()


def test_a_runs_root_others_can_write_is_refused(tmp_path_factory: pytest.TempPathFactory) -> None:
    shared = Path(tempfile.mkdtemp(prefix="yungu-ww-"))
    try:
        shared.chmod(0o1777)  # like /tmp: anyone could plant a symlink or a uid map there
        ex = LocalExecutor("ww", {**FAST, "runs_root": str(shared)}, tmp_path_factory.mktemp("ww") / "data")
        try:
            res = ex.submit(make_launch("true"))
            assert isinstance(res, ExecError) and "writable only by its owner" in res.message
            assert shared.stat().st_mode & 0o7777 == 0o1777, "an existing runs root is never chmod-ed"
        finally:
            ex.close()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_uid_map_entry_outside_the_range_fails_the_launch(
    tmp_path_factory: pytest.TempPathFactory, runs_root: Path
) -> None:
    """A tampered map (tenant -> uid 0) never runs the job as that uid."""
    ex = LocalExecutor("tamper", FAST, tmp_path_factory.mktemp("tamper") / "data")
    try:
        path = ex._sandbox.uids.path  # type: ignore[union-attr]
        table = json.loads(path.read_text()) if path.exists() else {"version": 1, "tenants": {}}
        table["tenants"]["tenant-evil"] = 0
        path.write_text(json.dumps(table))
        la = make_launch("id -u")
        la = la.__class__(**{**la.__dict__, "tenant_id": "tenant-evil"})
        ok(ex.submit(la))
        done = wait_done(ex, la.request_id, 10)
        assert done.phase is ExecPhase.FAILED and "outside this executor's range" in done.reason, done
        assert read_all(ex, la.request_id) == b""
    finally:
        table["tenants"].pop("tenant-evil", None)
        path.write_text(json.dumps(table))
        ex.close()


def test_a_checkpointing_job_runs_under_the_servers_umask(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``yungu server`` runs with umask 077: the checkpoints' parent must still be traversable
    by the tenants' uids (bubblewrap binds the job's own directory from there)."""
    old = os.umask(0o077)
    ex = LocalExecutor("ckpt-umask", FAST, tmp_path_factory.mktemp("ckpt-umask") / "data")
    try:
        la = make_launch('echo saved > "$YUNGU_CHECKPOINT_DIR/state" && cat "$YUNGU_CHECKPOINT_DIR/state"',
                         checkpoint_dir="/ckpt/job")
        ok(ex.submit(la))
        done = wait_done(ex, la.request_id, 20)
        assert done.phase is ExecPhase.SUCCEEDED, (done, read_all(ex, la.request_id, "stderr"))
        assert read_all(ex, la.request_id) == b"saved\n"
    finally:
        os.umask(old)
        ex.close()
