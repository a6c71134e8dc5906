"""Durable ledger transfers per second on SQLite and PostgreSQL (issue 5 target: >= 20,000/s;
issue 15.4: >= 25,000/s on PostgreSQL).

    python bench/ledger_transfers.py [--n 200000] [--batch 5000] [--backends sqlite,pg]

Every transfer is committed durably before its batch returns: SQLite in WAL mode with
``synchronous=NORMAL`` (survives kill -9; the default) and ``FULL`` (survives power loss),
PostgreSQL with ``fsync=on, synchronous_commit=on`` on a throwaway server started here (as in
tests/conftest.py). Throughput comes from batching (one transaction per batch, as
TigerBeetle batches); the baseline in the same run is one transfer per transaction.
Transfers move money between 1,000 funded wallets with limits checked, each with a fresh
client-chosen id that the ledger checks for replays.

On PostgreSQL the batched run is made twice on the same server: the general path (the
``Book`` rules in Python, as before issue 15.4) and the set-based fast path (the default);
the ``vs general`` column is their ratio in this run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yungu.adapters.ledger.store import LedgerStore
from yungu.adapters.store.db import create_engine, migrate
from yungu.domain.clock import FixedClock
from yungu.engines.ledger import Account, AccountKind, Transfer

ACCOUNTS = 1000


def setup(url: str) -> LedgerStore:
    engine = create_engine(url)
    migrate(engine)
    s = LedgerStore(engine, FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    s.open_accounts(
        [Account("bank", AccountKind.EXTERNAL, credit_limit=None)]
        + [Account(f"w{i}", AccountKind.TENANT_WALLET, credit_limit=0) for i in range(ACCOUNTS)]
    )
    s.submit([Transfer(f"fund{i}", "bank", f"w{i}", 10**12) for i in range(ACCOUNTS)])
    return s


def run(s: LedgerStore, n: int, batch: int, tag: str, set_based: bool | None = None) -> float:
    if set_based is not None:
        s._set_based = set_based
    before = s._set_based_batches
    ts = [
        Transfer(f"{tag}.{i}", f"w{i % ACCOUNTS}", f"w{(i * 7 + 1) % ACCOUNTS}", 1 + i % 1000)
        for i in range(n)
    ]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        outs = s.submit(ts[i : i + batch])
        assert all(o.ok for o in outs)
    rate = n / (time.perf_counter() - t0)
    if set_based:
        assert s._set_based_batches - before == -(-n // batch), "a batch left the set-based path"
    elif set_based is False:
        assert s._set_based_batches == before
    return rate


def pg_server(root: Path) -> tuple[str, list[str], Path] | None:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    if not bins or not (bins[0] / "initdb").exists():
        return None
    bindir, data = bins[0], root / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "yungu", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    with (data / "postgresql.conf").open("a") as f:
        f.write(
            f"\nport={port}\nlisten_addresses='127.0.0.1'\nunix_socket_directories='{root}'\n"
            "fsync=on\nsynchronous_commit=on\nlog_checkpoints=on\nlog_autovacuum_min_duration=0\nlog_min_duration_statement=1000\n"
        )
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    import psycopg

    with psycopg.connect(f"postgresql://yungu@127.0.0.1:{port}/postgres", autocommit=True) as conn:
        conn.execute('CREATE DATABASE "bench"')
    return f"postgresql://yungu@127.0.0.1:{port}/bench", as_user, bindir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--single", type=int, default=1_000, help="transfers in the one-per-commit baseline")
    ap.add_argument("--backends", default="sqlite,pg", help="comma list of sqlite, pg")
    args = ap.parse_args()
    backends = set(args.backends.split(","))
    rows: list[tuple[str, float, float, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("NORMAL", "FULL") if "sqlite" in backends else ():
            os.environ["YUNGU_SQLITE_SYNC"] = sync
            s = setup(f"sqlite:///{tmp}/ledger-{sync}.db")
            base = run(s, args.single, 1, "single")
            rate = run(s, args.n, args.batch, "batch")
            rows.append((f"SQLite WAL synchronous={sync}", base, rate, None))
            s.engine.dispose()
        root = Path(tempfile.mkdtemp(prefix="yungu-bench-pg-"))  # traversable by the postgres user
        pg = pg_server(root) if "pg" in backends else None
        if "pg" not in backends:
            pass
        elif pg is None:
            print("PostgreSQL binaries not found under /usr/lib/postgresql: skipping the PostgreSQL row")
        else:
            url, as_user, bindir = pg
            try:
                s = setup(url)
                base = run(s, args.single, 1, "single", set_based=False)
                general = run(s, args.n, args.batch, "general", set_based=False)
                rate = run(s, args.n, args.batch, "batch", set_based=True)
                rows.append(("PostgreSQL general path (before 15.4)", base, general, None))
                rows.append(("PostgreSQL set-based path", base, rate, rate / general))
                s.engine.dispose()
            finally:
                subprocess.run(
                    [*as_user, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                    capture_output=True,
                )
                shutil.rmtree(root, ignore_errors=True)
    print(f"\nledger durable transfers ({args.n:,} transfers, batch {args.batch:,}; baseline: 1 per commit)")
    print("PostgreSQL: fsync=on synchronous_commit=on; vs general: set-based / general path, same run")
    print(f"{'backend':<44} {'1/commit /s':>12} {'batched /s':>12} {'ratio':>7} {'vs general':>11} "
          f"{'>=20k':>6} {'>=25k':>6}")
    for name, base, rate, vs in rows:
        print(
            f"{name:<44} {base:>12,.0f} {rate:>12,.0f} {rate / base:>7.1f} "
            f"{'' if vs is None else f'{vs:.2f}':>11} {'yes' if rate >= 20_000 else 'NO':>6} "
            f"{'yes' if rate >= 25_000 else 'NO':>6}"
        )


if __name__ == "__main__":
    main()
