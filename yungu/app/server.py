"""``yungu server``: build the container, bootstrap an admin key, serve the API."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn

from yungu import web
from yungu.adapters.files import write_private
from yungu.api.app import create_app
from yungu.api.ratelimit import RateLimits
from yungu.app import demo as live_demo
from yungu.app.container import Container, build
from yungu.domain.job import JobSpec, Resources
from yungu.domain.tenancy import Role

log = logging.getLogger("yungu")

DEMO_JOBS = [
    ("hello-horinger", "echo '你好，和林格尔! Hello from Horinger'; uname -a; sleep 2; echo done"),
    ("count-primes", "python3 -c \"print(sum(1 for n in range(2, 20000) if all(n % d for d in range(2, int(n**0.5)+1))))\""),
    ("green-batch", "for i in 1 2 3 4 5; do echo step $i; sleep 1; done"),
]


def bootstrap_admin(c: Container) -> str | None:
    """On first start, create an admin key and store it in the data dir, created 0600 (never
    readable by anyone else, not even for a moment); return it once."""
    key_file = c.data_dir / "admin.key"
    if c.store.count_admin_keys():
        return None
    _, secret = c.store.create_key(c.ids.new(), Role.ADMIN, None, "bootstrap admin", c.clock.now())
    key_file.unlink(missing_ok=True)  # a stale file from a wiped database
    write_private(key_file, (secret + "\n").encode())
    return secret


def submit_demo(c: Container) -> list[str]:
    tenant = c.store.tenant_by_name("demo-lab") or c.store.create_tenant(c.ids.new(), "demo-lab", c.clock.now())
    ids = []
    for name, cmd in DEMO_JOBS:
        job, _ = c.store.submit(tenant.id, JobSpec(name=name, command=cmd, resources=Resources(cpus=1, memory_gb=1)),
                                c.clock.now(), c.ids.new(), idempotency_key=f"demo-{name}", body_hash="demo")
        ids.append(job.id)
    c.reconciler.wake()
    return ids


def print_token_demo(c: Container, url: str) -> None:
    from yungu.app import tokens

    tokens.demo(c)
    key_file = c.data_dir / "demo-token.key"
    if key_file.exists():
        print(f"  Tokens: model {tokens.DEMO_CHAT} starts as an inference job on a CPU pool (about a minute); then\n"
              f"    curl {url}/v1/chat/completions -H \"Authorization: Bearer $(cat {key_file})\" "
              f"-d '{{\"model\":\"{tokens.DEMO_CHAT}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'",
              flush=True)


def serve(host: str, port: int, data_dir: Path, config: Path | None, db_url: str | None, demo: bool,
          log_level: str = "warning", *, api_only: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations are routine at every start
    os.umask(0o077)  # whatever the platform creates (database, keys, logs, run dirs) is its own
    url = f"http://{host}:{port}"
    c = build(data_dir, config, db_url, address=url, start_loop=not api_only)
    c.api_only = api_only
    secret = bootstrap_admin(c)
    print(f"Yungu 云谷 — platform {c.world.platform_id}: {len(c.world.regions)} regions, "
          f"{len(c.world.sites)} sites, {len(c.world.pools)} pools ({c.config.source})", flush=True)
    print(f"  API  {url}/api/v1   docs {url}/api/v1/docs   data {c.data_dir}", flush=True)
    held = c.leader.lease or c.leader.leases.current(c.leader.name)
    if api_only:
        print(f"  Control loop: not here (--api-only) — {held.address if held and held.address else 'no server yet'} "
              "leads; this server serves the API only and never takes over", flush=True)
    elif c.leader.leading:
        print(f"  Control loop: this server leads (lease token {held.token if held else '?'})", flush=True)
    else:
        print(f"  Control loop: standby — {held.address if held and held.address else 'another server'} leads; "
              "this server serves the API and takes over if it goes away", flush=True)
    if secret:
        print("  Admin key created (saved to {}):\n    export YUNGU_URL={} YUNGU_API_KEY={}".format(
            c.data_dir / "admin.key", url, secret), flush=True)
    else:
        print(f"  Admin key: {c.data_dir / 'admin.key'}  (export YUNGU_API_KEY=$(cat {c.data_dir / 'admin.key'}))",
              flush=True)
    if demo:
        ids = submit_demo(c)
        print(f"  Demo tenant 'demo-lab': submitted {len(ids)} jobs — try: yungu jobs  /  yungu logs -f {ids[0]}",
              flush=True)
    app = create_app(c, RateLimits.from_env())
    web.mount(app)  # issue 13: the console at / and the big screen at /screen
    print(f"  Console 控制台  {url}/      big screen 大屏  {url}/screen  (`yungu screen` prints a kiosk link)",
          flush=True)
    if demo:
        live_demo.start(c, url)  # node agent for this machine + a trickle of jobs across regions
        print_token_demo(c, url)  # issue 14

    def _term(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _term)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                    loop="uvloop", http="httptools")
    finally:
        c.close()
        sys.stdout.flush()
