"""Attack the job sandbox from inside a tenant's job (issue 10).

A victim tenant runs a job that prints a secret and keeps running; an attacker tenant's
job then tries every escape the issue lists and reports each attempt on its stdout:
read the admin key, the database and ``cert-signing.key`` (absolute paths, ``..`` from its
run dir, ``/proc/1/root``, ``/proc/self/root``, a symlink, a search of the whole file
system); read the victim's logs and run directory; write the victim's exit record and the
platform's data dir; signal the victim's processes (``kill -0``, by their host pids) and
everything it can (``kill -9 -1``); read the server's environment (the test puts a secret
in it); gain root through setuid binaries, ``setuid(0)``, new user namespaces or mounts.
Every attempt must fail, the attacker must have run to its last line (so a sandbox that
runs nothing cannot pass), and the victim must finish untouched with its own exit code.

Then the resource limits: a fork bomb is held to ``pids_per_replica`` while another
tenant's job runs normally, and a job that allocates three times its memory is killed by
the kernel with a reason that says so, while the platform carries on.

The same attack runs once more through a real ``yungu server`` with the embedded default
world (the one ``make run`` starts), through the HTTP API with tenant keys, against the
real admin key, database and signing key.

Nothing is mocked: real bubblewrap, real uids, real cgroups (v1 on the machines this was
written on). The tests need root and bubblewrap (``make system-deps``); they fail, not
skip, without them, because a platform without its sandbox must not pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.server import ServerProcess
from tests.executors.contract import make_launch, ok, read_all, wait_done, wait_until
from tests.executors.sandbox_env import BINDS
from yungu.adapters.executors.local import LocalExecutor
from yungu.adapters.executors.registry import build_executor
from yungu.adapters.executors.sandbox import TenantUids
from yungu.ports.executor import ExecPhase, Launch, ReplicaLaunch

SECRET = "TOPSECRET"
SERVER_ENV_SECRET = f"{SECRET}-server-env-{uuid.uuid4().hex[:8]}"  # the probe greps "server-env-"
FAST = {"poll_interval_s": 0.02, "gang_kill_grace_s": 1.0}

# Each probe prints "blocked <what>" or "LEAK <what>"; the test requires every expected
# "blocked" line, no "LEAK", no secret in any output, and the final marker.
ATTACK = r"""
set +e
say() { if [ "$1" = 0 ]; then echo "LEAK $2"; else echo "blocked $2"; fi; }
probe_read() {
  name=$1; shift
  for f in "$@"; do
    if cat -- "$f" 2>/dev/null | grep -qe "$SECRET" -e "$ADMIN" -e 'SQLite format' -e 'PRIVATE KEY'; then
      echo "LEAK read $name via $f"; else echo "blocked read $name via $f"; fi
  done
}
echo "whoami uid=$(id -u) gid=$(id -g) groups=$(id -G)"
probe_read admin-key "$DATA/admin.key" ../../../../admin.key ../../../../../admin.key /job/../../../../admin.key \
  "/proc/1/root$DATA/admin.key" "/proc/self/root$DATA/admin.key"
probe_read database "$DATA/yungu.db" ../../../../yungu.db "/proc/1/root$DATA/yungu.db"
probe_read signing-key "$DATA/cert-signing.key" ../../../../cert-signing.key
ln -s "$DATA/admin.key" /job/admin-link 2>/dev/null
probe_read symlink /job/admin-link
ln -s "$DATA" /job/data-link 2>/dev/null
probe_read symlink-dir /job/data-link/admin.key
found=$(find / \( -path /proc -o -path /usr -o -path /sys \) -prune -o \
  \( -name admin.key -o -name yungu.db -o -name cert-signing.key -o -name 'replica-*.exit' \) -print 2>/dev/null)
if [ -n "$found" ]; then echo "LEAK find $found"; else echo "blocked find platform files"; fi
probe_read victim-log "$VCTL/replica-0.stdout.log" "$VWORK/secret.txt"
if grep -rqs "$SECRET" /job /tmp /dev/shm /run 2>/dev/null; then echo "LEAK grep victim output"; else echo "blocked grep victim output"; fi
(echo 0 > "$VCTL/replica-0.exit") 2>/dev/null; say $? "write victim exit record"
(echo pwned > "$VWORK/pwned") 2>/dev/null; say $? "write victim run dir"
(echo pwned > "$DATA/pwned") 2>/dev/null; say $? "write platform data dir"
(echo pwned > /usr/pwned) 2>/dev/null; say $? "write /usr"
(echo pwned > /etc/pwned) 2>/dev/null; say $? "write /etc"
for p in $VPIDS; do kill -0 "$p" 2>/dev/null; say $? "signal victim pid $p"; done
kill -0 "$PLATFORM_PID" 2>/dev/null; say $? "signal platform pid"
n=$(ls /proc | grep -cE '^[0-9]+$'); if [ "$n" -le 8 ]; then echo "blocked see host processes ($n visible)"; else echo "LEAK see host processes ($n visible)"; fi
if env | grep -q server-env-; then echo "LEAK server env"; else echo "blocked server env"; fi
if cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -q server-env-; then echo "LEAK proc environ"; else echo "blocked proc environ"; fi
if ls -l /proc/self/fd/ 2>/dev/null | grep -q -e '\.args' -e '\.exit' -e '\.start'; then echo "LEAK supervisor fds"; else echo "blocked supervisor fds"; fi
cat /etc/shadow >/dev/null 2>&1; say $? "read /etc/shadow"
su -c true root </dev/null >/dev/null 2>&1; say $? "setuid su"
/usr/bin/mount -t tmpfs none /job >/dev/null 2>&1; say $? "setuid mount"
python3 -c 'import os; os.setuid(0)' 2>/dev/null; say $? "setuid(0)"
unshare -Ur true 2>/dev/null; say $? "new user namespace"
grep -E '^(NoNewPrivs|CapEff|CapBnd):' /proc/self/status
echo ATTACKER-DONE
"""


def _attack_env(data: Path, victim_ctl: Path, victim_work: Path, victim_pids: list[int], admin: str) -> dict[str, str]:
    return {
        "SECRET": SECRET,
        "ADMIN": admin,
        "DATA": str(data),
        "VCTL": str(victim_ctl),
        "VWORK": str(victim_work),
        "VPIDS": " ".join(map(str, victim_pids)),
        "PLATFORM_PID": str(os.getpid()),
    }


def _check_report(out: str) -> None:
    lines = out.splitlines()
    assert "ATTACKER-DONE" in lines, f"the attacker must have run to its end:\n{out}"
    leaks = [x for x in lines if x.startswith("LEAK")]
    assert leaks == [], "\n".join(leaks)
    blocked = [x for x in lines if x.startswith("blocked")]
    for what in ("read admin-key", "read database", "read signing-key", "read symlink", "find platform files",
                 "read victim-log", "write victim exit record", "write victim run dir", "write platform data dir",
                 "signal victim pid", "signal platform pid", "see host processes", "server env", "proc environ",
                 "setuid su", "setuid mount", "setuid(0)", "new user namespace", "read /etc/shadow",
                 "supervisor fds"):
        assert any(what in x for x in blocked), f"probe {what!r} did not run:\n{out}"
    status = dict(re.findall(r"^(NoNewPrivs|CapEff|CapBnd):\s+(\S+)$", out, re.M))
    assert status == {"NoNewPrivs": "1", "CapEff": "0000000000000000", "CapBnd": "0000000000000000"}, status


def _supervisor_tree(shim_pid: int) -> list[int]:
    proc = psutil.Process(shim_pid)
    return [shim_pid, *(c.pid for c in proc.children(recursive=True))]


@pytest.fixture
def platform(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, LocalExecutor]]:
    """A platform data dir with planted secrets and its local executor, as the registry makes it."""
    monkeypatch.setenv("YUNGU_TEST_SERVER_SECRET", SERVER_ENV_SECRET)
    data = tmp_path_factory.mktemp("platform")
    for name in ("admin.key", "yungu.db", "cert-signing.key"):
        (data / name).write_text(f"{SECRET}-{name}\n")
        (data / name).chmod(0o600)
    ex = build_executor("local", "local", {**FAST, "binds": BINDS}, data)
    assert isinstance(ex, LocalExecutor)
    yield data, ex
    ex.close()


def test_a_tenant_job_cannot_reach_the_platform_or_another_tenant(platform: tuple[Path, LocalExecutor]) -> None:
    data, ex = platform
    assert ex.check()["reachable"], ex.check()
    victim = Launch("victim.1", "victim", "tenant-victim", "p",
                    f"echo {SECRET}-victim-log; echo {SECRET}-victim-file > secret.txt; sleep 8; exit 3",
                    (ReplicaLaunch(0),))
    ok(ex.submit(victim))
    shim = int(wait_until(ex, "victim.1", lambda s: bool(s.native_id), 10, "spawned").native_id)
    ctl = ex.runs_dir / "victim.1"
    work = ex._sandbox.root / "victim.1"  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while not (work / "secret.txt").exists() or len(_supervisor_tree(shim)) < 4:
        assert time.monotonic() < deadline, "the victim never started"
        time.sleep(0.05)
    pids = _supervisor_tree(shim)

    env = _attack_env(data, ctl, work, pids, admin="no-admin-key-in-this-test")
    attacker = Launch("attacker.1", "attacker", "tenant-attacker", "p", ATTACK, (ReplicaLaunch(0),), env=env)
    ok(ex.submit(attacker))
    done = wait_done(ex, "attacker.1", 60)
    out = read_all(ex, "attacker.1").decode()
    err = read_all(ex, "attacker.1", "stderr").decode()
    assert done.phase is ExecPhase.SUCCEEDED, (done, out, err)
    _check_report(out)
    assert SECRET not in out + err

    # The attacker really was another uid, neither root nor the platform's.
    uids = TenantUids(ex._sandbox.uids.path, 0, 1).table()  # type: ignore[union-attr]
    a, v = uids["tenant-attacker"], uids["tenant-victim"]
    assert f"whoami uid={a} gid={a} groups={a}" in out
    assert a != v and not {a, v} & {0, os.getuid()} and min(a, v) >= 200_000
    # Its run dir is outside the data dir, owned by it, 0700; the victim's by the victim.
    for rid, uid in (("attacker.1", a), ("victim.1", v)):
        st = (ex._sandbox.root / rid).stat()  # type: ignore[union-attr]
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, uid, 0o700)
        assert data not in (ex._sandbox.root / rid).parents  # type: ignore[union-attr]
    # The control dir (records, logs, env) is the platform's alone.
    assert (ctl.stat().st_uid, ctl.parent.stat().st_mode & 0o777) == (os.geteuid(), 0o700)

    # Nothing of the victim was touched: still running, then its own outcome.
    assert not (ctl / "replica-0.exit").exists() and not (work / "pwned").exists() and not (data / "pwned").exists()
    assert psutil.pid_exists(shim)
    final = wait_done(ex, "victim.1", 20)
    assert (final.phase, final.exit_code) == (ExecPhase.FAILED, 3)
    assert read_all(ex, "victim.1").decode().strip() == f"{SECRET}-victim-log"


def test_kill_minus_one_reaches_only_the_attackers_own_sandbox(platform: tuple[Path, LocalExecutor]) -> None:
    _, ex = platform
    victim = make_launch("sleep 3; echo survived", request_id="v.1")
    ok(ex.submit(victim))
    wait_until(ex, "v.1", lambda s: s.phase is ExecPhase.RUNNING, 10)
    time.sleep(0.3)
    # kill(-1) signals every process the caller may signal but itself: in its namespace, none.
    killer = Launch("k.1", "k", "tenant-attacker", "p", "sleep 60 & kill -9 -1; wait; echo alone",
                    (ReplicaLaunch(0),))
    ok(ex.submit(killer))
    assert wait_done(ex, "k.1", 10).phase is ExecPhase.SUCCEEDED
    assert read_all(ex, "k.1") == b"alone\n"  # its own sleep died; nothing else was in reach
    done = wait_done(ex, "v.1", 15)
    assert (done.phase, read_all(ex, "v.1")) == (ExecPhase.SUCCEEDED, b"survived\n")


def _processes_of(uid: int) -> list[int]:
    return [p.pid for p in psutil.process_iter(["uids", "status"])
            if p.info["uids"] and p.info["uids"].real == uid and p.info["status"] != psutil.STATUS_ZOMBIE]


def _gone(uid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while _processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _processes_of(uid)


def test_daemons_and_escapees_die_with_the_job(platform: tuple[Path, LocalExecutor]) -> None:
    """A job that leaves a daemon behind (setsid, double fork) and one whose escapee ignores
    SIGTERM in a session of its own: nothing of either survives its end or its cancel."""
    _, ex = platform
    daemon = Launch("d.1", "d", "tenant-daemon", "p", "(setsid sleep 300 &); echo forked", (ReplicaLaunch(0),))
    ok(ex.submit(daemon))
    assert wait_done(ex, "d.1", 10).phase is ExecPhase.SUCCEEDED
    uid = ex._sandbox.uids.uid("tenant-daemon")  # type: ignore[union-attr]
    assert _gone(uid), f"left behind: {_processes_of(uid)}"

    escapee = Launch("e.1", "e", "tenant-escapee", "p",
                     "(setsid sh -c 'trap \"\" TERM; while :; do sleep 0.1; done' &); sleep 60", (ReplicaLaunch(0),))
    ok(ex.submit(escapee))
    uid = ex._sandbox.uids.uid("tenant-escapee")  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while len(_processes_of(uid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    ok(ex.cancel("e.1", grace_s=0.5))
    assert wait_done(ex, "e.1", 10).phase is ExecPhase.CANCELLED
    assert _gone(uid), f"left behind: {_processes_of(uid)}"


def test_a_fork_bomb_is_held_by_the_pids_limit_and_the_platform_carries_on(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    ex = LocalExecutor("bomb", {**FAST, "pids_per_replica": 64}, tmp_path_factory.mktemp("bomb") / "data")
    try:
        if ex.check()["sandbox"]["cgroups"]["pids"] is None:  # type: ignore[index]
            pytest.fail("no writable pids cgroup controller on this machine: the limit cannot be shown")
        # The bomb forks in a subshell; the job's own shell then execs sleep (no fork), so only
        # the cancel ends it, however starved of pids the cgroup is.
        bomb = Launch("bomb.1", "bomb", "tenant-bomber", "p", "(b() { b | b & }; b); exec sleep 30",
                      (ReplicaLaunch(0),))
        ok(ex.submit(bomb))
        leaf = ex._sandbox.cgroups.hierarchies["pids"].base / "bomb.1-r0"  # type: ignore[union-attr]
        # Watch at least 3 s, and up to 15 s until the bomb has grown (slowly on a loaded machine).
        peak, start = 0, time.monotonic()
        while time.monotonic() - start < 3 or (peak < 16 and time.monotonic() - start < 15):
            with contextlib.suppress(OSError, ValueError):
                peak = max(peak, int((leaf / "pids.current").read_text()))
            time.sleep(0.05)
        assert 16 <= peak <= 64, peak
        # Meanwhile another tenant's job starts and finishes as usual.
        other = Launch("fine.1", "fine", "tenant-other", "p", "echo fine", (ReplicaLaunch(0),))
        ok(ex.submit(other))
        assert wait_done(ex, "fine.1", 15).phase is ExecPhase.SUCCEEDED
        ok(ex.cancel("bomb.1", grace_s=0.5))
        done = wait_done(ex, "bomb.1", 15)
        assert done.phase is ExecPhase.CANCELLED, done
        deadline = time.monotonic() + 10  # cgroup v1 lets an emptied cgroup go a moment later
        while leaf.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not leaf.exists(), "every process of the bomb is gone and its cgroup removed"
    finally:
        ex.close()


def test_a_job_over_its_memory_is_killed_by_the_kernel_and_says_so(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    ex = LocalExecutor("mem", FAST, tmp_path_factory.mktemp("mem") / "data")
    try:
        if ex.check()["sandbox"]["cgroups"]["memory"] is None:  # type: ignore[index]
            pytest.fail("no writable memory cgroup controller on this machine: the limit cannot be shown")
        hog = Launch("hog.1", "hog", "tenant-hog", "p", "python3 -c 'x = b\"x\" * (3 << 30); print(len(x))'",
                     (ReplicaLaunch(0),), memory_gb_per_replica=1)
        ok(ex.submit(hog))
        done = wait_done(ex, "hog.1", 60)
        assert (done.phase, done.exit_code) == (ExecPhase.FAILED, 137), done
        assert "memory limit of 1 GiB" in done.reason, done.reason
        assert read_all(ex, "hog.1") == b""
        fine = make_launch("echo fine")
        ok(ex.submit(fine))
        assert wait_done(ex, fine.request_id, 15).phase is ExecPhase.SUCCEEDED
    finally:
        ex.close()


# ---- the same through a real server with the embedded default world ----------------------


def _wait_job(srv: ServerProcess, h: dict[str, str], jid: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{srv.url}/api/v1/jobs/{jid}", headers=h, timeout=10).json()
        if job["state"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def _logs(srv: ServerProcess, h: dict[str, str], jid: str, stream: str = "stdout") -> str:
    r = httpx.get(f"{srv.url}/api/v1/jobs/{jid}/logs", params={"stream": stream}, headers=h, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["data"])


@pytest.mark.slow
def test_the_attack_through_a_real_server_with_the_default_world(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YUNGU_TEST_SERVER_SECRET", SERVER_ENV_SECRET)
    data = tmp_path_factory.mktemp("server") / "data"
    data.mkdir()
    srv = ServerProcess(data).start()
    try:
        admin = srv.admin_key
        ah = {"Authorization": f"Bearer {admin}"}
        httpx.post(f"{srv.url}/api/v1/certs/verify", json={"body": {}, "signature": {}}, headers=ah, timeout=10)
        assert (data / "cert-signing.key").exists() and (data / "yungu.db").exists()

        def tenant(name: str) -> dict[str, str]:
            t = httpx.post(f"{srv.url}/api/v1/admin/tenants", json={"name": name}, headers=ah).json()["id"]
            k = httpx.post(f"{srv.url}/api/v1/admin/keys", json={"role": "tenant", "tenant_id": t, "name": name},
                           headers=ah).json()
            return {"Authorization": f"Bearer {k['secret']}"}

        vh, th = tenant("victim-lab"), tenant("attacker-lab")
        vjob = httpx.post(f"{srv.url}/api/v1/jobs", headers=vh, json={
            "name": "victim", "command": f"echo {SECRET}-victim-log; echo {SECRET} > secret.txt; sleep 10"}).json()["id"]
        assert _wait_job(srv, vh, vjob, {"running", "failed", "succeeded"})["state"] == "running"
        shims = [p for p in psutil.process_iter(["cmdline"]) if vjob in " ".join(p.info["cmdline"] or [])
                 and "yungu-shim" in (p.info["cmdline"] or [])]
        assert len(shims) == 1, shims
        vctl = Path(shims[0].info["cmdline"][4]).parent
        deadline = time.monotonic() + 10
        while len(_supervisor_tree(shims[0].pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        runs_root = Path(os.environ["YUNGU_RUNS_ROOT"])
        vwork = next(runs_root.glob(f"*/{vctl.name}"))
        env = _attack_env(data, vctl, vwork, _supervisor_tree(shims[0].pid), admin)
        env["PLATFORM_PID"] = str(srv.proc.pid if srv.proc else 1)
        ajob = httpx.post(f"{srv.url}/api/v1/jobs", headers=th,
                          json={"name": "attacker", "command": ATTACK, "env": env}).json()["id"]
        final = _wait_job(srv, th, ajob, {"succeeded", "failed"})
        out, err = _logs(srv, th, ajob), _logs(srv, th, ajob, "stderr")
        assert final["state"] == "succeeded", (final, out, err)
        _check_report(out)
        assert SECRET not in out + err and admin not in out + err
        assert not (vctl / "replica-0.exit").exists() or (vctl / "replica-0.exit").read_text() != "0\n"
        assert _wait_job(srv, vh, vjob, {"succeeded", "failed"})["state"] == "succeeded"
        assert f"{SECRET}-victim-log" in _logs(srv, vh, vjob)
        check = httpx.get(f"{srv.url}/api/v1/sites/check", headers=ah, timeout=30).json()["items"]
        assert all(i["engine"]["sandbox"]["enabled"] for i in check), json.dumps(check)[:500]
    finally:
        srv.stop()
