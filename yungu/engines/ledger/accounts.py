"""The ledger account and transfer ids the platform uses (one place, so they never drift).

Every id is built from *stable ids* — tenant ids, provider ids, job ids — never from display
names: a provider called "Yungu Horinger" books into ``provider:yungu-horinger:receivable``.

Budget holds of a job are pending transfers from the tenant's wallet to escrow:
``budget:<job>`` at admission, then ``budget:<job>:x1``, ``:x2``… when the running job's
reservation is extended; each is closed (posted or voided) by ``<hold id>:settle``.
"""

from __future__ import annotations


def wallet(tenant_id: str) -> str:
    return f"tenant:{tenant_id}:wallet"


def arrears(tenant_id: str) -> str:
    return f"tenant:{tenant_id}:arrears"


def receivable(provider_id: str) -> str:
    return f"provider:{provider_id}:receivable"


def sys_account(name: str, currency: str = "CNY") -> str:
    return f"sys:{currency.lower()}:{name}"


def hold_id(job_id: str, n: int = 0) -> str:
    """The job's n-th budget hold: 0 is the admission reservation, 1.. are extensions."""
    return f"budget:{job_id}" if n == 0 else f"budget:{job_id}:x{n}"


def hold_number(job_id: str, transfer_id: str) -> int | None:
    """``n`` of one of the job's holds (``hold_id(job_id, n)``), None for any other id."""
    base = f"budget:{job_id}"
    if transfer_id == base:
        return 0
    tail = transfer_id.removeprefix(base + ":x")
    if tail != transfer_id and tail.isdigit() and not tail.startswith("0"):
        return int(tail)
    return None


def settle_id(hold: str) -> str:
    return f"{hold}:settle"


def job_ref(job_id: str) -> str:
    """The ``ref`` every budget transfer of a job carries (to find them again)."""
    return f"job:{job_id}"
