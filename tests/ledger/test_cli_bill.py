"""``yungu bill`` and ``yungu market`` against a real server process: a real job, metered,
booked, invoiced, exported as HTML."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import ServerProcess, run_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("bill") / "data"
    data.mkdir()
    srv = ServerProcess(data).start()
    yield srv
    srv.stop()


yungu = run_cli


def test_job_to_invoice_through_the_cli(server: ServerProcess, tmp_path: Path) -> None:
    t = json.loads(yungu(server, "admin", "tenant", "create", "bill-lab", "-o", "json").stdout)
    key = json.loads(yungu(server, "admin", "key", "create", "--role", "tenant", "--tenant", t["id"], "-o", "json").stdout)["secret"]
    yungu(server, "bill", "topup", t["id"], "500.00", "--id", "bank-0001", "--reason", "bank transfer")
    yungu(server, "bill", "topup", t["id"], "500.00", "--id", "bank-0001", "--reason", "bank transfer")  # a repeat is harmless
    bad = yungu(server, "bill", "topup", t["id"], "1.001", "--id", "bank-0002", "--reason", "bank transfer", check=False)
    assert bad.returncode == 2 and "错误 Error" in bad.stderr
    bal = json.loads(yungu(server, "bill", "balance", f"tenant:{t['id']}:wallet", "-o", "json", key=key).stdout)
    assert bal[0]["balance"] == "500.00"
    job = json.loads(yungu(server, "submit", "sleep 1.2", "--name", "billed", "-o", "json", key=key).stdout)
    for _ in range(300):
        if json.loads(yungu(server, "status", job["id"], "-o", "json", key=key).stdout)["state"] == "succeeded":
            break
        time.sleep(0.1)
    yungu(server, "bill", "run")
    yungu(server, "bill", "run")  # exactly once: a second pass books nothing new
    usage = json.loads(yungu(server, "bill", "usage", "-o", "json", key=key).stdout)
    assert [u["job_id"] for u in usage] == [job["id"]] and usage[0]["booked"]
    period = usage[0]["booked_period"]
    # A seconds-long CPU job costs less than a fen: metered and traceable, but nothing to invoice.
    assert usage[0]["amount"] == "0.00" and usage[0]["device_seconds"] >= 1
    closed = json.loads(yungu(server, "bill", "close", period, "-o", "json").stdout)
    assert closed["invoices"] == []
    assert "0.00" in yungu(server, "bill", "usage", key=key).stdout
    wallet = json.loads(yungu(server, "bill", "balance", f"tenant:{t['id']}:wallet", "-o", "json", key=key).stdout)[0]
    assert wallet["balance"] == "500.00"
    assert "挂牌价" in yungu(server, "market", "prices", key=key).stdout
