"""The live demo behind ``make run`` (``yungu server --demo``), so the big screen moves from the
first minute:

- a **node agent for this machine**, registered as one node of the home site's CPU pool, so
  power and energy come from telemetry (RAPL where the kernel exposes it, measured; else the
  catalogue's CPU power model driven by measured utilisation, flagged modelled) — never 0 W;
- a **tenant key for demo-lab**, kept in the data dir (0600) and printed at every start, so a
  new user can sign in to the console as a tenant;
- a **trickle of demo jobs** from every region (label ``origin``), a few seconds each, so the
  map shows flows between regions and the ticker shows settlements.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from yungu.api.routes.telemetry import telemetry_store
from yungu.domain.errors import Conflict
from yungu.domain.job import JobSpec, Objective, Resources
from yungu.domain.tenancy import Role

log = logging.getLogger("yungu.demo")
TRICKLE_S = 12.0  # one demo job about this often
TENANT = "demo-lab"
CPU_MODEL = "cpu-xeon-8480"


def _secret_file(path: Path, make: Any) -> str:
    if path.exists():
        return path.read_text().strip()
    secret = str(make())
    path.write_text(secret + "\n")
    os.chmod(path, 0o600)
    return secret


def tenant_key(c: Any) -> str:
    """demo-lab's tenant key (created once, stored 0600 in the data dir)."""
    tenant = c.store.tenant_by_name(TENANT) or c.store.create_tenant(c.ids.new(), TENANT, c.clock.now())
    return _secret_file(c.data_dir / "demo-lab.key",
                        lambda: c.store.create_key(c.ids.new(), Role.TENANT, tenant.id, "demo-lab console",
                                                   c.clock.now())[1])


def _home_cpu_pool(c: Any) -> Any:
    home = next((r.id for r in c.world.regions if r.home), c.world.regions[0].id)
    pools = [p for p in c.world.pools if c.world.site(p.site_id).region_id == home]
    return next((p for p in pools if not p.accelerators_per_node), pools[0] if pools else c.world.pools[0])


def start_agent(c: Any, url: str) -> tuple[str, subprocess.Popen[bytes]]:
    """Register this machine as a node and run ``yungu agent`` for it as a child process: a
    real agent, as on any node, and outside the server's process (its process scans must not
    compete with the API for the interpreter). It ends with the server (PR_SET_PDEATHSIG)."""
    pool = _home_cpu_pool(c)
    node_id = f"demo-{socket.gethostname()}"[:120]
    store = telemetry_store(c)
    key_file = c.data_dir / "agent.key"
    id_file = c.data_dir / "agent.node"
    if id_file.exists():
        node_id = id_file.read_text().strip() or node_id

    def register() -> str:
        return store.register_node(node_id, pool.site_id, pool.id, c.clock.now(), cpu_model=CPU_MODEL)

    if store.node(node_id) is None:  # a fresh database beside an old key file: register again
        key_file.unlink(missing_ok=True)
    try:
        key = _secret_file(key_file, register)
    except Conflict:  # registered by an earlier run whose key file is gone: a new node id
        node_id = f"{node_id}-{c.ids.new()[-6:]}"
        key = _secret_file(key_file, register)
    id_file.write_text(node_id + "\n")
    log_file = open(c.data_dir / "agent.log", "ab")  # noqa: SIM115  (the child keeps it open)
    args = [sys.executable, "-m", "yungu.app.entry", "agent", "--url", url, "--node-key", key, "--node-id", node_id,
            "--state-dir", str(c.data_dir / "agent"), "--interval", "1", "--send-interval", "1",
            "--cpu-model", CPU_MODEL]
    proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent, env={**os.environ, "YUNGU_NODE_KEY": ""})
    atexit.register(_stop, proc)
    return node_id, proc


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the server dies, even by kill -9 (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: atexit still stops it on a normal exit
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# (name, command, objective, accelerators): accelerators are declared devices (the local
# executor hands them to the job as YUNGU_DEVICES), so intelligent capacity shows as in use.
JOBS = (
    ("etl-{r}", "for i in 1 2 3 4 5 6; do echo batch $i; sleep 1; done", Objective.COST, 0),
    ("train-{r}", "python3 -c \"import time; [print('epoch', e, flush=True) or time.sleep(2) for e in range(8)]\"",
     Objective.GREEN, 8),
    ("infer-{r}", "for i in 1 2 3; do echo request $i ok; sleep 2; done", Objective.TIME, 1),
    ("sim-{r}", "python3 -c \"print(sum(i*i for i in range(3_000_000)))\"; sleep 3", Objective.BALANCED, 0),
)


AUCTION_EVERY = 5  # a small call auction every few demo jobs: trades on the ticker, points on the index


def demo_auction(c: Any, n: int) -> None:
    """One provider ask and two tenant bids for an hour of accelerators, cleared at once."""
    from datetime import timedelta

    from yungu.api.routes.ledger import services
    from yungu.engines.market import Order, Product

    pools = [p for p in c.world.pools if p.accelerators_per_node and p.price_cny_per_device_hour > 0]
    if not pools:
        return
    pool = pools[n % len(pools)]
    site = c.world.site(pool.site_id)
    now = c.clock.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    product = Product(site.region_id, pool.accelerator or "gpu", now, now + timedelta(hours=1))
    base = int(pool.price_cny_per_device_hour * 100)
    rnd = random.Random(n)
    tenant = c.store.tenant_by_name(TENANT)
    market = services(c).market
    market.place(product, "ask", Order(f"demo-ask-{n}-{c.ids.new()}", site.provider, 1, int(base * 0.8), pool.id))
    for k in range(2):
        market.place(product, "bid", Order(f"demo-bid-{n}-{k}-{c.ids.new()}", tenant.id, 1,
                                           int(base * rnd.uniform(0.85, 1.15))))
    market.run_auction(product)


def _trickle(c: Any, stop: threading.Event) -> None:
    tenant = c.store.tenant_by_name(TENANT)
    regions = [r.id for r in c.world.regions]
    rnd = random.Random()
    n = 0
    while not stop.wait(TRICKLE_S * rnd.uniform(0.5, 1.5)):
        n += 1
        origin = regions[n % len(regions)]
        name, cmd, objective, accs = JOBS[n % len(JOBS)]
        spec = JobSpec(name=name.format(r=origin), command=cmd,
                       resources=Resources(cpus=1, memory_gb=1, accelerators=accs),
                       estimated_duration_s=20, objective=objective, labels={"origin": origin, "demo": "trickle"})
        try:
            c.store.submit(tenant.id, spec, c.clock.now(), c.ids.new())
            c.reconciler.wake()
            if n % AUCTION_EVERY == 1:
                demo_auction(c, n)
        except Exception:
            log.exception("demo job or auction not submitted")


def start(c: Any, url: str) -> None:
    key = tenant_key(c)
    print(f"  Demo tenant key (saved to {c.data_dir / 'demo-lab.key'}): sign in to {url}/ with\n    {key}", flush=True)
    try:
        node_id, _proc = start_agent(c, url)
        print(f"  Node agent {node_id} for this machine (log {c.data_dir / 'agent.log'}): RAPL where the kernel "
              "exposes it (measured), else power model x measured utilisation (modelled)", flush=True)
    except Exception as exc:
        log.warning("demo node agent not started: %s", exc)
    stop = c.extras.setdefault("demo_stop", threading.Event())
    threading.Thread(target=_trickle, args=(c, stop), name="yungu-demo-trickle", daemon=True).start()
