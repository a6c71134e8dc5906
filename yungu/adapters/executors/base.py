"""Template-method base for every executor (local, Slurm, Ray).

The public methods of :class:`yungu.ports.executor.Executor` live here and do the same
four things around each backend call, so the backends stay small and alike:

1. time the call (on the injected ``Clock``'s monotonic reading) into a per-executor,
   per-operation latency histogram kept in memory (``stats()``; telemetry may export it);
2. log it as a structured record (``logging`` with ``extra=``; DEBUG for every call,
   WARNING for expected errors, ERROR with traceback for bugs);
3. map an unexpected exception to ``ExecError(INTERNAL)`` at the boundary, because the
   contract says exceptions never leave an executor;
4. keep the contract's shapes (``observe`` always answers every id asked).

A backend implements ``_submit``, ``_cancel``, ``_status``, ``_logs``, ``_list_active``,
``_check``, ``capabilities`` and, where the engine has a batch query, ``_observe``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, TypeVar

from yungu.adapters.system import SystemClock
from yungu.domain.clock import Clock
from yungu.ports.executor import (
    Capabilities,
    ExecError,
    ExecErrorCode,
    ExecStatus,
    Launch,
    LogChunk,
)

log = logging.getLogger("yungu.executor")

_T = TypeVar("_T")

# Geometric buckets from 10 µs to ~170 s, 8 per doubling (~9 % wide): quantiles are
# reported as the bucket's upper edge, so they are at most ~9 % pessimistic.
_BUCKETS_PER_DOUBLING = 8
_MIN_S = 10e-6
_N_BUCKETS = 8 * 24


class LatencyHistogram:
    """A fixed-memory latency histogram (log buckets), cheap enough for every call."""

    def __init__(self) -> None:
        self.counts = [0] * (_N_BUCKETS + 1)
        self.count = 0
        self.errors = 0
        self.total_s = 0.0
        self.max_s = 0.0

    def record(self, seconds: float, *, error: bool = False) -> None:
        if seconds <= _MIN_S:
            idx = 0
        else:
            idx = min(_N_BUCKETS, int(math.log2(seconds / _MIN_S) * _BUCKETS_PER_DOUBLING) + 1)
        self.counts[idx] += 1
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)
        if error:
            self.errors += 1

    def quantile(self, q: float) -> float:
        """Upper edge (seconds) of the bucket holding quantile ``q``; 0 when empty."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for idx, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                edge = _MIN_S * 2 ** (idx / _BUCKETS_PER_DOUBLING)
                return min(edge, self.max_s)
        return self.max_s

    def summary(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "errors": self.errors,
            "mean_ms": round(1000 * self.total_s / self.count, 4) if self.count else 0.0,
            "p50_ms": round(1000 * self.quantile(0.50), 4),
            "p99_ms": round(1000 * self.quantile(0.99), 4),
            "max_ms": round(1000 * self.max_s, 4),
        }


class BaseExecutor:
    """Timing, logging and exception mapping around a backend's ``_`` methods."""

    kind: ClassVar[str] = "base"

    def __init__(self, name: str, clock: Clock | None = None) -> None:
        self.name = name
        self.clock: Clock = clock or SystemClock()  # every time reading of a backend goes through it
        self._hist: dict[str, LatencyHistogram] = {}
        self._hist_lock = threading.Lock()

    # ---- public contract -------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        raise NotImplementedError

    def submit(self, launch: Launch) -> ExecStatus | ExecError:
        return self._call("submit", launch.request_id, lambda: self._submit(launch))

    def cancel(self, request_id: str, grace_s: float = 10.0) -> ExecStatus | ExecError:
        if not (grace_s >= 0 and math.isfinite(grace_s)):
            return ExecError(ExecErrorCode.REJECTED, f"grace_s must be a finite number >= 0, got {grace_s!r}")
        return self._call("cancel", request_id, lambda: self._cancel(request_id, grace_s))

    def status(self, request_id: str) -> ExecStatus | ExecError:
        return self._call("status", request_id, lambda: self._status(request_id))

    def observe(self, request_ids: Sequence[str]) -> Mapping[str, ExecStatus | ExecError]:
        ids = list(request_ids)
        start = self.clock.monotonic()
        try:
            result = dict(self._observe(ids))
        except Exception as exc:
            self._record("observe", start, error=True)
            log.error(
                "executor observe failed",
                exc_info=True,
                extra={"executor": self.name, "op": "observe", "ids": len(ids)},
            )
            err = _internal(exc)
            return {rid: err for rid in ids}
        # The contract answers every id asked, even if a backend forgot one.
        for rid in ids:
            if rid not in result:
                result[rid] = ExecError(ExecErrorCode.NOT_FOUND, f"no answer for request {rid}")
        self._record("observe", start)
        return result

    def logs(
        self, request_id: str, stream: str = "stdout", offset: int = 0, limit: int = 1 << 20
    ) -> LogChunk | ExecError:
        if offset < 0 or limit <= 0:
            return ExecError(
                ExecErrorCode.REJECTED, f"offset must be >= 0 and limit > 0 (got {offset}, {limit})"
            )
        return self._call("logs", request_id, lambda: self._logs(request_id, stream, offset, limit))

    def list_active(self) -> Sequence[ExecStatus] | ExecError:
        start = self.clock.monotonic()
        try:
            result = self._list_active()
        except Exception as exc:
            self._record("list_active", start, error=True)
            log.error(
                "executor list_active failed",
                exc_info=True,
                extra={"executor": self.name, "op": "list_active"},
            )
            return _internal(exc)
        self._record("list_active", start, error=isinstance(result, ExecError))
        return result

    def check(self) -> Mapping[str, object]:
        start = self.clock.monotonic()
        try:
            result = dict(self._check())
        except Exception as exc:
            self._record("check", start, error=True)
            log.error("executor check failed", exc_info=True, extra={"executor": self.name, "op": "check"})
            return {
                "executor": self.name,
                "kind": self.kind,
                "reachable": False,
                "error": f"{type(exc).__name__}: {exc}",
            }
        self._record("check", start)
        result.setdefault("executor", self.name)
        result.setdefault("kind", self.kind)
        return result

    def close(self) -> None:
        try:
            self._close()
        except Exception:
            log.error("executor close failed", exc_info=True, extra={"executor": self.name, "op": "close"})

    def stats(self) -> dict[str, dict[str, float | int]]:
        """Latency per operation since this instance started: count, errors, mean/p50/p99/max ms."""
        with self._hist_lock:
            return {op: h.summary() for op, h in sorted(self._hist.items())}

    # ---- backend hooks ---------------------------------------------------------------

    def _submit(self, launch: Launch) -> ExecStatus | ExecError:
        raise NotImplementedError

    def _cancel(self, request_id: str, grace_s: float) -> ExecStatus | ExecError:
        raise NotImplementedError

    def _status(self, request_id: str) -> ExecStatus | ExecError:
        raise NotImplementedError

    def _observe(self, request_ids: Sequence[str]) -> Mapping[str, ExecStatus | ExecError]:
        """Default: one ``_status`` per id. Backends with a batch query override this."""
        out: dict[str, ExecStatus | ExecError] = {}
        for rid in request_ids:
            try:
                out[rid] = self._status(rid)
            except Exception as exc:
                log.error(
                    "executor status failed", exc_info=True, extra={"executor": self.name, "request_id": rid}
                )
                out[rid] = _internal(exc)
        return out

    def _logs(self, request_id: str, stream: str, offset: int, limit: int) -> LogChunk | ExecError:
        raise NotImplementedError

    def _list_active(self) -> Sequence[ExecStatus] | ExecError:
        raise NotImplementedError

    def _check(self) -> Mapping[str, object]:
        return {"reachable": True}

    def _close(self) -> None:
        return None

    # ---- plumbing --------------------------------------------------------------------

    def _call(self, op: str, request_id: str, fn: Callable[[], _T]) -> _T | ExecError:
        start = self.clock.monotonic()
        try:
            result = fn()
        except Exception as exc:
            self._record(op, start, error=True)
            log.error(
                "executor %s failed",
                op,
                exc_info=True,
                extra={"executor": self.name, "op": op, "request_id": request_id},
            )
            return _internal(exc)
        is_err = isinstance(result, ExecError)
        self._record(op, start, error=is_err)
        if isinstance(result, ExecError):
            log.warning(
                "executor %s: %s: %s",
                op,
                result.code.value,
                result.message,
                extra={"executor": self.name, "op": op, "request_id": request_id, "code": result.code.value},
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug(
                "executor %s",
                op,
                extra={"executor": self.name, "op": op, "request_id": request_id, "result": repr(result)},
            )
        return result

    def _record(self, op: str, start: float, *, error: bool = False) -> None:
        elapsed = self.clock.monotonic() - start
        with self._hist_lock:
            hist = self._hist.get(op)
            if hist is None:
                hist = self._hist[op] = LatencyHistogram()
            hist.record(elapsed, error=error)


def _internal(exc: BaseException) -> ExecError:
    return ExecError(ExecErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
