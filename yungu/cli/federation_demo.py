"""Run several independent Yungu platforms on one machine and peer them (``yungu demo federation``).

Each platform is its own ``yungu server`` process with its own data dir, SQLite database,
keys, world and prices, as six operators would run them. The worlds (``world_toml``):
Beijing small, dear and coal-heavy; Horinger large, cheap and green; the others between.
Everything here talks HTTP only (the operator API and, between platforms, the signed protocol).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# id, name, name_zh, province, feed, pue, green contract, electricity, nodes, cpus/node, CPU price, GPU model,
# GPUs/node, GPU price
REGIONS: dict[str, tuple[str, str, str, str, float, float, str, int, int, str, str, int, str]] = {
    "horinger": ("Horinger (Hohhot)", "和林格尔", "Inner Mongolia", "cn-nm", 1.15, 0.82, "0.32", 8, 32, "0.06",
                 "H800", 8, "9.50"),
    "beijing": ("Beijing", "北京", "Beijing", "cn-bj", 1.30, 0.15, "0.68", 1, 2, "0.60", "A800", 8, "28.00"),
    "wuhu": ("Wuhu", "芜湖", "Anhui", "cn-ah", 1.25, 0.20, "0.58", 2, 8, "0.30", "L40S", 4, "14.00"),
    "guizhou": ("Gui'an (Guizhou)", "贵安", "Guizhou", "cn-gz", 1.20, 0.45, "0.38", 4, 16, "0.12", "Ascend-910B", 8,
                "11.00"),
    "chongqing": ("Chongqing", "重庆", "Chongqing", "cn-cq", 1.28, 0.30, "0.52", 2, 8, "0.25", "A100", 8, "16.00"),
    "suzhou": ("Suzhou", "苏州", "Jiangsu", "cn-js", 1.28, 0.25, "0.62", 2, 8, "0.40", "A800", 8, "22.00"),
}
ORDER = ("beijing", "horinger", "guizhou", "wuhu", "chongqing", "suzhou")
LATENCY = {("beijing", "horinger"): 12, ("beijing", "guizhou"): 30, ("horinger", "guizhou"): 30,
           ("beijing", "wuhu"): 22, ("beijing", "chongqing"): 35, ("beijing", "suzhou"): 20,
           ("horinger", "wuhu"): 30, ("horinger", "chongqing"): 35, ("horinger", "suzhou"): 30,
           ("guizhou", "wuhu"): 28, ("guizhou", "chongqing"): 10, ("guizhou", "suzhou"): 30,
           ("wuhu", "chongqing"): 25, ("wuhu", "suzhou"): 8, ("chongqing", "suzhou"): 28}


def latency(a: str, b: str) -> int:
    return LATENCY.get((a, b), LATENCY.get((b, a), 40))


def platform_id(region: str) -> str:
    return f"yungu-{region}"


def world_toml(region: str, others: Sequence[str], federation: Mapping[str, float] | None = None,
               shared: Path | None = None) -> str:
    """One platform's TOML; ``shared`` is bound read-write into its job sandbox (where demo jobs
    record that they ran, so the check can count them from outside)."""
    name, zh, _prov, feed, pue, green, elec, nodes, cpus, cpu_price, gpu, gpn, gpu_price = REGIONS[region]
    lines = [f'[platform]\nid = "{platform_id(region)}"\nname = "Yungu {name} 云谷·{zh}"\nhome_region = "{region}"\n',
             "[scheduler]\ndefault_latency_ms = 40\ntime_shift = false\n", "[scheduler.latency_ms]"]
    for o in others:
        lines.append(f'"{region}.{o}" = {latency(region, o)}')
    lines.append("")
    if federation:
        lines.append("[federation]")
        lines.extend(f"{k} = {v}" for k, v in federation.items())
        lines.append("")
    lines.append('[executor.local]\ntype = "local"\nmax_processes = 256')
    if shared is not None:
        lines.append(f'binds = [{{ src = "{shared}", dst = "{shared}", mode = "rw" }}]')
    lines.append("")
    regions = [region, *others]
    for r in regions:
        rn, rzh, rprov = REGIONS[r][0], REGIONS[r][1], REGIONS[r][2]
        lines.append(f'[[region]]\nid = "{r}"\nname = "{rn}"\nname_zh = "{rzh}"\nprovince = "{rprov}"\n'
                     f'home = {"true" if r == region else "false"}\n')
    lines.append(f'[[site]]\nid = "{region}-dc1"\nregion = "{region}"\nname = "{name} DC"\nname_zh = "{zh}数据中心"\n'
                 f'provider = "{name} Compute"\nlat = 40.0\nlon = 110.0\npue = {pue}\n'
                 f'electricity_price_cny_per_kwh = "{elec}"\ngreen_contract_share = {green}\n'
                 f'energy_feed = "modelled:{feed}"\nexecutor = "local"\n')
    lines.append(f'[[pool]]\nid = "{region}-cpu"\nsite = "{region}-dc1"\ncompute_class = "general"\nnodes = {nodes}\n'
                 f'cpus_per_node = {cpus}\nmemory_gb_per_node = {cpus * 4}\nprice_cny_per_cpu_hour = "{cpu_price}"\n')
    lines.append(f'[[pool]]\nid = "{region}-gpu"\nsite = "{region}-dc1"\ncompute_class = "intelligent"\n'
                 f'nodes = {max(1, nodes // 2)}\ncpus_per_node = {cpus}\nmemory_gb_per_node = {cpus * 8}\n'
                 f'accelerator = "{gpu}"\naccelerators_per_node = {gpn}\nprice_cny_per_device_hour = "{gpu_price}"\n'
                 f'price_cny_per_cpu_hour = "{cpu_price}"\n')
    return "\n".join(lines)


def yungu_exe() -> str:
    return shutil.which("yungu") or str(Path(sys.executable).parent / "yungu")


@dataclass
class Platform:
    region: str
    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    netns: str | None = None  # run inside this network namespace (tests)
    proc: subprocess.Popen[bytes] | None = None
    config: Path | None = None

    @property
    def id(self) -> str:
        return platform_id(self.region)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def api(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {self.key}"},
                            timeout=timeout, trust_env=False)

    def write_config(self, others: Sequence[str], federation: Mapping[str, float] | None,
                     shared: Path | None = None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = self.data_dir.parent / f"{self.region}.toml"
        self.config.write_text(world_toml(self.region, others, federation, shared or shared_dir(self.data_dir.parent)))

    def start(self) -> None:
        assert self.config is not None
        args = [yungu_exe(), "server", "--host", self.host, "--port", str(self.port), "--data-dir", str(self.data_dir),
                "--config", str(self.config)]
        if self.netns:
            args = ["ip", "netns", "exec", self.netns, *args]
        log = open(self.data_dir.parent / f"{self.region}.log", "ab")  # noqa: SIM115
        env = {**os.environ, **self.env}
        env.pop("YUNGU_DB_URL", None)
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.id} exited with {self.proc.returncode}; see {self.data_dir.parent}/"
                                   f"{self.region}.log")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1, trust_env=False).status_code == 200 and (
                        self.data_dir / "admin.key").exists():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.id} did not answer within {timeout:.0f} s")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_ports(n: int) -> list[int]:
    import socket

    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


_SHARED: dict[Path, Path] = {}


def shared_dir(root: Path) -> Path:
    """A directory bound into every platform's job sandbox, for demo jobs to record that they ran.

    It lies outside ``root`` (which may be private: the tenants' uids could not reach inside) in
    the system temp dir, traversable but not listable (0711); removed with ``remove_shared``."""
    path = _SHARED.get(root)
    if path is None:
        path = _SHARED[root] = Path(tempfile.mkdtemp(prefix="yungu-fed-shared-"))
        path.chmod(0o711)
    return path


def remove_shared(root: Path) -> None:
    path = _SHARED.pop(root, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def ran_file(root: Path, name: str = "ran.txt") -> Path:
    """A file every tenant's sandboxed jobs may append to (each platform gives its tenants own uids)."""
    path = shared_dir(root) / name
    path.touch()
    path.chmod(0o666)
    return path


def make_platforms(root: Path, n: int, federation: Mapping[str, float] | None = None) -> list[Platform]:
    regions = list(ORDER[:n])
    ports = free_ports(n)
    out = []
    for region, port in zip(regions, ports, strict=True):
        p = Platform(region, root / region, port)
        p.write_config([r for r in regions if r != region], federation)
        out.append(p)
    return out


def peer_all(platforms: Sequence[Platform], url_of: Callable[[Platform, Platform], str] | None = None) -> None:
    """Mutual peering: every operator registers every other (its id, URL and public key)."""
    idents = {}
    for p in platforms:
        idents[p.id] = httpx.get(p.url + "/federation/v1/platform", timeout=10, trust_env=False).json()
    for a in platforms:
        with a.api() as c:
            for b in platforms:
                if a is b:
                    continue
                url = url_of(a, b) if url_of else b.url
                r = c.post("/federation/peers", json={"id": b.id, "base_url": url, "name": idents[b.id]["name"],
                                                      "public_key": idents[b.id]["keys"][0]["public_key"],
                                                      "latency_ms": latency(a.region, b.region)})
                r.raise_for_status()


def wait_offers(platforms: Sequence[Platform], timeout: float = 20.0) -> None:
    """Until every platform sees every other healthy, reconciled and offering capacity."""
    deadline = time.monotonic() + timeout
    missing: list[str] = []
    while time.monotonic() < deadline:
        missing = []
        for p in platforms:
            try:
                with p.api() as c:
                    peers = c.get("/federation/peers").json()["items"]
            except httpx.HTTPError as exc:
                missing.append(f"{p.id}: {exc}")
                continue
            missing += [f"{p.id} sees {x['id']} {x['state']} with {x['offers']} offers" for x in peers
                        if not (x["offers"] > 0 and x["state"] == "healthy" and x.get("usable", True))]
            if len(peers) != len(platforms) - 1:
                missing.append(f"{p.id} has {len(peers)} peers")
        if not missing:
            return
        time.sleep(0.2)
    raise RuntimeError("peers did not exchange offers in time: " + "; ".join(missing))


@dataclass
class CheckResult:
    jobs: int
    delegated: int
    lost: int
    duplicated: int
    net_fen: int
    parties: int
    where: dict[str, int]
    problems: list[str]

    def line(self) -> str:
        return (f"federation check: {self.delegated} delegated, {self.lost} lost, {self.duplicated} duplicated, "
                f"clearing nets to {self.net_fen / 100:.2f} CNY across {self.parties} platforms")


def submit_jobs(origin: Platform, n: int, ran_file: Path, *, sleep_s: float = 3.0, tenant: str = "zgc-lab",
                labels: Mapping[str, str] | None = None, gpus: int = 4, prefix: str = "demo") -> list[str]:
    with origin.api() as c:
        t = c.post("/admin/tenants", json={"name": tenant})
        tid = t.json()["id"] if t.status_code in (200, 201) else next(
            x["id"] for x in c.get("/admin/tenants").json()["items"] if x["name"] == tenant)
        ids = []
        for i in range(n):
            body = {"name": f"{prefix}-{i:04d}", "tenant_id": tid, "objective": "cost",
                    "command": f"sleep {sleep_s}; echo {prefix}-{i:04d} >> {ran_file}",
                    "resources": {"cpus": 1, "accelerators": gpus},
                    "estimated_duration_s": max(1, int(sleep_s)), "data_location": origin.region,
                    "labels": dict(labels or {})}
            r = c.post("/jobs", json=body, headers={"Idempotency-Key": f"{prefix}-{i}"})
            r.raise_for_status()
            ids.append(r.json()["id"])
    return ids


def wait_jobs(origin: Platform, ids: Sequence[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    with origin.api() as c:
        while time.monotonic() < deadline and len(done) < len(ids):
            for jid in ids:
                if jid in done:
                    continue
                try:
                    j = c.get(f"/jobs/{jid}").json()
                except httpx.HTTPError:
                    continue
                if j.get("state") in ("succeeded", "failed", "cancelled"):
                    done[jid] = j
            if len(done) < len(ids):
                time.sleep(0.3)
        for jid in ids:
            if jid not in done:
                done[jid] = c.get(f"/jobs/{jid}").json()
    return done


def wait_receipts(platforms: Sequence[Platform], timeout: float) -> None:
    """Until every receipt issued anywhere is booked by its issuer and its origin."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        issued, received = {}, {}
        for p in platforms:
            with p.api() as c:
                for r in c.get("/federation/receipts").json()["items"]:
                    (issued if r["side"] == "issued" else received)[r["receipt_id"]] = r
        if all(r["booked"] for r in issued.values()) and set(issued) == {k for k, v in received.items() if v["booked"]}:
            return
        time.sleep(0.3)


def check(platforms: Sequence[Platform], origin: Platform, ids: Sequence[str], jobs: Mapping[str, Mapping[str, Any]],
          ran_file: Path, period: str) -> CheckResult:
    problems: list[str] = []
    lines = ran_file.read_text().split() if ran_file.exists() else []
    names = {j.get("name", ""): j for j in jobs.values()}
    counts: dict[str, int] = {}
    for ln in lines:
        counts[ln] = counts.get(ln, 0) + 1
    duplicated = sum(1 for c in counts.values() if c > 1)
    lost = sum(1 for j in jobs.values() if j.get("state") != "succeeded" or counts.get(j.get("name", ""), 0) == 0)
    where: dict[str, int] = {}
    delegated = 0
    for j in jobs.values():
        pool = (j.get("allocation") or {}).get("pool_id") or j.get("pool_id") or "?"
        plat = pool.split("/", 1)[0] if "/" in pool else origin.id
        where[plat] = where.get(plat, 0) + 1
        delegated += plat != origin.id
    del names
    # receipts booked once on both sides
    issued: dict[str, int] = {}
    received: dict[str, int] = {}
    for p in platforms:
        with p.api() as c:
            for r in c.get("/federation/receipts").json()["items"]:
                if r["booked"]:
                    (issued if r["side"] == "issued" else received)[r["receipt_id"]] = r["amount_fen"]
            books = c.get("/federation/books").json()
            if books["sum_fen"] != 0:
                problems.append(f"{p.id}: ledger does not balance ({books['sum_fen']} fen)")
    if issued != received:
        problems.append(f"receipts differ: {len(issued)} issued and booked, {len(received)} received and booked")
    # clearing
    with platforms[1 if len(platforms) > 1 and platforms[0] is origin else 0].api(timeout=120) as c:
        r = c.post("/federation/clearing/run", json={"period": period})
        if r.status_code != 200:
            problems.append(f"clearing failed: {r.text[:300]}")
            net, parties = 0, 0
        else:
            doc = r.json()
            net, parties = int(doc["net_sum_fen"]), len(doc["parties"])
            if not doc["statement"]["transfers"] and issued:
                problems.append("clearing produced no settlement although receipts were booked")
    for p in platforms:
        with p.api() as c:
            books = c.get("/federation/books").json()
            if books["sum_fen"] != 0:
                problems.append(f"{p.id}: ledger does not balance after settlement")
            net_acct = books["clearing"].get("peer:federation:netting", 0)
            if net_acct != 0:
                problems.append(f"{p.id}: netting account not zero after settlement ({net_acct})")
    if lost:
        problems.append(f"{lost} jobs lost or not succeeded")
    if duplicated:
        problems.append(f"{duplicated} jobs ran more than once")
    return CheckResult(len(ids), delegated, lost, duplicated, net, max(parties, len(platforms)) if parties else 0,
                       where, problems)
